//! Who writes in a cycle: the names of the objects, rooms and documents
//! the suite writes to (the same ones every cycle, so their state goes
//! through many kills), the writer tasks spawned at the start of each
//! cycle, and their tallies, collected into the ledger after the kill.

use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ledger::Ledger;
use super::writers::{self, CallTally, RoomTally};
use super::{CrashArgs, Rng};
use crate::target::Target;

/// How long writers may take to notice the kill and return.
const WRITER_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the suite writes to, fixed for the whole run.
pub(super) struct Names {
    /// Counters written with `increment`.
    pub counters: Vec<String>,
    /// Counters written with `increment_later` (applied by an alarm).
    pub alarms: Vec<String>,
    /// Rooms; the follow-up room, if any, is the last.
    pub rooms: Vec<String>,
    /// The index in `rooms` of the room with an alarm-driven follow-up.
    pub followup_room: Option<usize>,
    /// Yjs documents (written by the Node writers, not here).
    pub ydocs: Vec<String>,
}

impl Names {
    /// The names `args` asks for: `crash-c{i}`, `crash-a{i}`, `crash-r{i}`
    /// (then `crash-followup`) and `crash-y{i}`.
    pub(super) fn new(args: &CrashArgs) -> Names {
        Names {
            counters: (0..args.counters).map(|i| format!("crash-c{i}")).collect(),
            alarms: (0..args.alarm_counters)
                .map(|i| format!("crash-a{i}"))
                .collect(),
            rooms: (0..args.rooms)
                .map(|i| format!("crash-r{i}"))
                .chain((!args.no_followup).then(|| "crash-followup".to_string()))
                .collect(),
            followup_room: (!args.no_followup).then_some(args.rooms),
            ydocs: if args.no_yjs {
                Vec::new()
            } else {
                (0..args.ydocs).map(|i| format!("crash-y{i}")).collect()
            },
        }
    }
}

/// A running writer task and what its tally is about.
pub(super) enum Writer {
    Counter(String, JoinHandle<CallTally>),
    Alarm(String, JoinHandle<CallTally>),
    Room(usize, JoinHandle<RoomTally>),
}

/// Spawns cycle `cycle`'s writers: one per counter and alarm counter, and
/// `--room-clients` per room. They write until `stop` turns true.
///
/// The random draws, in order (a seed replays the same run): for each
/// counter, then each alarm counter, its start delay and its own stream;
/// for each room, its start delay, then one stream per client.
pub(super) fn spawn_writers(
    args: &CrashArgs,
    names: &Names,
    target: &Target,
    cycle: u64,
    rng: &mut Rng,
    stop: &watch::Receiver<bool>,
) -> Vec<Writer> {
    let mut out = Vec::new();
    for (name, later) in names
        .counters
        .iter()
        .map(|n| (n, None))
        .chain(names.alarms.iter().map(|n| {
            let max = args.alarm_max_delay.as_millis() as u64;
            (n, Some(max))
        }))
    {
        let method = if later.is_some() {
            "increment_later"
        } else {
            "increment"
        };
        let path = format!("/v1/objects/counter/{name}/call/{method}");
        let h = tokio::spawn(writers::counter_writer(
            target.clone(),
            path,
            later,
            start_after(rng),
            rng.fork(),
            stop.clone(),
        ));
        out.push(if later.is_some() {
            Writer::Alarm(name.clone(), h)
        } else {
            Writer::Counter(name.clone(), h)
        });
    }
    for (i, room) in names.rooms.iter().enumerate() {
        let after = start_after(rng);
        for c in 0..args.room_clients {
            let tag = format!("k{cycle}c{c}");
            let h = tokio::spawn(writers::room_writer(
                target.clone(),
                room.clone(),
                tag,
                after,
                rng.fork(),
                stop.clone(),
            ));
            out.push(Writer::Room(i, h));
        }
    }
    out
}

/// Some objects sit out the start of a cycle, long enough to be evicted
/// (they were just read by the check): wake-ups from the file. Three
/// times in nine a delay of 1.1–2.2 s, else none.
fn start_after(rng: &mut Rng) -> Duration {
    if rng.range(0, 9) < 3 {
        Duration::from_millis(rng.range(1_100, 2_200))
    } else {
        Duration::ZERO
    }
}

/// Waits for every writer (they were told to stop) and adds its tally to
/// the ledger. A writer that does not stop in time fails the run.
pub(super) async fn collect(writers: Vec<Writer>, ledger: &mut Ledger) -> anyhow::Result<()> {
    for w in writers {
        match w {
            Writer::Counter(name, h) => ledger.add_counter(&name, join(h).await?),
            Writer::Alarm(name, h) => ledger.add_alarm(&name, join(h).await?),
            Writer::Room(i, h) => ledger.add_room(i, join(h).await?),
        }
    }
    Ok(())
}

async fn join<T>(h: JoinHandle<T>) -> anyhow::Result<T> {
    tokio::time::timeout(WRITER_STOP_TIMEOUT, h)
        .await
        .context("a writer did not stop after the kill")?
        .context("a writer panicked")
}
