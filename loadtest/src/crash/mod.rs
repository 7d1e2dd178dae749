//! `crash`: a crash suite that models time. It starts `roost serve` itself
//! (a temporary data directory, a free loopback port) with settings that
//! make a document's days pass in seconds (short history retention,
//! compaction after 300 ms of quiet, eviction after 1 s idle, tiny snapshot
//! and checkpoint intervals), then runs N cycles of:
//!
//! 1. writers at work for a random 0.3–2 s: HTTP `counter.increment`,
//!    `counter.increment_later` (applied by the object's alarm), room
//!    messages over the object WebSocket (one room with an alarm-driven
//!    follow-up), and Yjs edits from the official y-websocket client (a Node
//!    child process that lives through every cycle);
//! 2. `kill -9` of the server in the middle of that traffic; the Yjs
//!    providers are then disconnected until the check is done, so it reads
//!    what the server kept rather than what a provider re-sent;
//! 3. a restart on the same data directory (recovery replays the log);
//! 4. a check of every write acknowledged since the run began (`ledger.rs`).
//!
//! State is kept across cycles, so the same objects and documents go
//! through many compactions, evictions, checkpoints and recoveries. Any
//! loss fails the run, naming the write, and keeps the data directory.
//! Nothing here measures speed.

mod ledger;
mod rng;
mod server;
mod settings;
mod writers;
mod yjs_node;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::Common;
use crate::http1::{get_text, HttpConn};
use crate::promtext::sample;
use crate::report::{Report, Unit};
use crate::target::Target;
use ledger::Ledger;
pub use rng::Rng;
use server::RoostProcess;
use settings::server_args;
pub use settings::CrashArgs;
use writers::{CallTally, RoomTally};
use yjs_node::NodeWriters;

/// The admin token of the server under test (loopback only, for the SQL console).
pub(crate) const ADMIN_TOKEN: &str = "crash-suite-admin";
/// How long writers may take to notice the kill and return.
const WRITER_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Server counters summed over every server process (read just before each kill).
#[derive(Debug, Default)]
struct ServerStats {
    evictions: f64,
    object_starts: f64,
    alarms_fired: f64,
    log_fsyncs: f64,
}

impl ServerStats {
    async fn add_scrape(&mut self, target: &Target) {
        let text = tokio::time::timeout(Duration::from_millis(300), get_text(target, "/metrics"));
        if let Ok(Ok(text)) = text.await {
            let get = |n: &str| sample(&text, n).unwrap_or(0.0);
            self.evictions += get("roost_evictions_total");
            self.object_starts += get("roost_object_starts_total");
            self.alarms_fired += get("roost_alarms_fired_total");
            self.log_fsyncs += get("roost_log_fsyncs_total");
        }
    }
}

enum Writer {
    Counter(String, JoinHandle<CallTally>),
    Alarm(String, JoinHandle<CallTally>),
    Room(usize, JoinHandle<RoomTally>),
}

struct Names {
    counters: Vec<String>,
    alarms: Vec<String>,
    rooms: Vec<String>,
    followup_room: Option<usize>,
    ydocs: Vec<String>,
}

fn spawn_writers(
    args: &CrashArgs,
    names: &Names,
    target: &Target,
    cycle: u64,
    rng: &mut Rng,
    stop: &watch::Receiver<bool>,
) -> Vec<Writer> {
    let mut out = Vec::new();
    // Some objects sit out the start of a cycle, long enough to be evicted
    // (they were just read by the check): wake-ups from the file.
    let start_after = |rng: &mut Rng| {
        if rng.range(0, 9) < 3 {
            Duration::from_millis(rng.range(1_100, 2_200))
        } else {
            Duration::ZERO
        }
    };
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

async fn collect(writers: Vec<Writer>, ledger: &mut Ledger) -> anyhow::Result<()> {
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

fn temp_dir(seed: u64) -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "roost-crash-{}-{seed:x}-{nanos:x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Turns on the follow-up room's alarm-driven message.
async fn set_followup(target: &Target, room: &str, after: Duration) -> anyhow::Result<()> {
    let mut conn = HttpConn::connect(target).await?;
    let path = format!("/v1/objects/room/{room}/call/followup");
    let body = serde_json::json!({ "after_ms": after.as_millis() as u64, "text": "followup" });
    let (status, reply) = conn.post_json(&path, Bytes::from(body.to_string())).await?;
    anyhow::ensure!(
        status.is_success(),
        "{path}: HTTP {status}: {}",
        String::from_utf8_lossy(&reply)
    );
    Ok(())
}

/// The outcome: the report, and the losses (empty if none).
pub struct Outcome {
    pub report: Report,
    pub problems: Vec<String>,
}

pub async fn run(args: CrashArgs, common: &Common) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.cycles >= 1, "--cycles must be at least 1");
    anyhow::ensure!(args.min_run <= args.max_run, "--min-run exceeds --max-run");
    anyhow::ensure!(
        args.bin.exists(),
        "{} not found (cargo build -p roost, or pass --bin)",
        args.bin.display()
    );
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temp_dir(seed)?,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let target = Target::parse(&format!("http://127.0.0.1:{port}"), common.allow_remote)?;
    eprintln!(
        "crash: seed {seed}, {} cycles, server {} on port {port}, data and logs in {}",
        args.cycles,
        args.bin.display(),
        dir.display()
    );

    let names = Names {
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
    };
    let mut ledger = Ledger::new(&names.rooms, names.followup_room, &names.ydocs);
    let mut server = RoostProcess::new(
        &args.bin,
        server_args(&args, port, &dir.join("data")),
        dir.join("server.log"),
        target.clone(),
    );
    server.start().await?;
    if let Some(i) = names.followup_room {
        set_followup(&target, &names.rooms[i], args.followup_after).await?;
    }
    let mut node = if names.ydocs.is_empty() {
        None
    } else {
        Some(NodeWriters::spawn(
            &args.node,
            &args.node_script,
            &format!("ws://127.0.0.1:{port}/v1/yjs"),
            &names.ydocs,
            args.yjs_clients,
            seed,
            &dir.join("node.log"),
        )?)
    };

    let started = Instant::now();
    let mut stats = ServerStats::default();
    let mut restart_total = Duration::ZERO;
    let mut restart_max = Duration::ZERO;
    let mut cycles_done = 0u64;
    let result: anyhow::Result<()> = async {
        for cycle in 0..args.cycles {
            if args.max_duration.is_some_and(|m| started.elapsed() >= m) {
                break;
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            let writers = spawn_writers(&args, &names, &target, cycle, &mut rng, &stop_rx);
            let run_for = rng.range(
                args.min_run.as_millis() as u64,
                args.max_run.as_millis() as u64,
            );
            tokio::time::sleep(Duration::from_millis(run_for)).await;
            if let Some(status) = server.exited() {
                anyhow::bail!(
                    "roost exited by itself ({status}) in cycle {cycle}:\n{}",
                    server.log_tail(20)
                );
            }
            stats.add_scrape(&target).await;
            server.kill9().await?;
            if let Some(n) = node.as_mut() {
                n.pause().await?;
            }
            let _ = stop_tx.send(true);
            collect(writers, &mut ledger).await?;
            if args.self_test_wipe == Some(cycle + 1) {
                eprintln!("crash: self-test: deleting the data directory before the restart");
                std::fs::remove_dir_all(dir.join("data"))?;
            }
            let took = server.start().await?;
            restart_total += took;
            restart_max = restart_max.max(took);
            if let Some(n) = node.as_mut() {
                n.check_alive()?;
                for (doc, marker) in n.drain() {
                    ledger.add_yjs(&doc, marker);
                }
            }
            if let Err(e) = ledger.verify(&target, ADMIN_TOKEN).await {
                // A read that failed recorded nothing; one more try, said out loud.
                anyhow::ensure!(ledger.problems.is_empty(), e);
                eprintln!(
                    "crash: cycle {}: the check could not read the server ({e:#}); again in 1 s",
                    cycle + 1
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                ledger.verify(&target, ADMIN_TOKEN).await?;
            }
            cycles_done = cycle + 1;
            if !ledger.problems.is_empty() {
                break;
            }
            if let Some(n) = node.as_mut() {
                n.resume().await?;
            }
            if args.progress_every > 0 && cycles_done.is_multiple_of(args.progress_every) {
                let t: Vec<String> = ledger
                    .totals()
                    .iter()
                    .map(|(k, t)| format!("{k} {}", t.acked))
                    .collect();
                eprintln!(
                    "crash: cycle {cycles_done}/{}: acknowledged {}; lost 0; {:.0} s",
                    args.cycles,
                    t.join(", "),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        // Every ack arrived before the last pause, so the last check saw them all.
        if let Some(mut n) = node.take() {
            n.stop().await;
            eprintln!(
                "crash: y-websocket providers connected {} times",
                n.connects()
            );
        }
        Ok(())
    }
    .await;
    let elapsed = started.elapsed();
    let ydoc_figures = ydoc_history(&target, &names.ydocs).await;
    if let Some(mut n) = node.take() {
        n.stop().await;
    }
    let _ = server.kill9().await;
    result?;

    let mut report = Report::new("crash");
    report.label = common.label.clone();
    report
        .param("seed", seed)
        .param("bin", args.bin.display().to_string())
        .param("run_s", format!("{:?}..{:?}", args.min_run, args.max_run))
        .param("idle_timeout", args.idle_timeout.clone())
        .param("ydoc_compact_after", args.ydoc_compact_after.clone())
        .param("history_retention", args.history_retention.clone());
    report.add("cycles", cycles_done as f64, Unit::Count);
    let mut lost_total = 0;
    for (kind, t) in ledger.totals() {
        report.add(&format!("{kind}_acked"), t.acked as f64, Unit::Count);
        if let Some(a) = t.attempted {
            report.add(&format!("{kind}_attempted"), a as f64, Unit::Count);
        }
        report.add(&format!("{kind}_lost"), t.lost as f64, Unit::Count);
        lost_total += t.lost;
    }
    report
        .add("lost", lost_total as f64, Unit::Count)
        .add("elapsed_s", elapsed.as_secs_f64(), Unit::Seconds)
        .add(
            "restart_mean_s",
            restart_total.as_secs_f64() / cycles_done.max(1) as f64,
            Unit::Seconds,
        )
        .add("restart_max_s", restart_max.as_secs_f64(), Unit::Seconds)
        .add("server_evictions", stats.evictions, Unit::Count)
        .add("server_object_starts", stats.object_starts, Unit::Count)
        .add("server_alarms_fired", stats.alarms_fired, Unit::Count)
        .add("server_log_fsyncs", stats.log_fsyncs, Unit::Count);
    for (k, v) in ydoc_figures {
        report.add(&k, v, Unit::Count);
    }
    report
        .note("server_* counters are summed over every server process, read just before each kill");
    let problems = ledger.problems.clone();
    if problems.is_empty() {
        let nothing: Vec<&str> = ledger
            .totals()
            .iter()
            .filter(|(k, t)| {
                t.acked == 0
                    && !(args.no_yjs && *k == "yjs")
                    && !(args.no_followup && *k == "followup")
            })
            .map(|(k, _)| *k)
            .collect();
        if !nothing.is_empty() {
            anyhow::bail!(
                "no acknowledged {} writes: the suite checked nothing of that kind (logs in {})",
                nothing.join(", "),
                dir.display()
            );
        }
        if !args.keep && args.dir.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    } else {
        report.note(format!(
            "LOST WRITES; data and logs kept in {}; rerun with --seed {seed}",
            dir.display()
        ));
    }
    Ok(Outcome { report, problems })
}

/// How far the Yjs documents' logs have been compacted: update rows appended
/// (ids never go back) and still kept, and snapshots kept.
async fn ydoc_history(target: &Target, docs: &[String]) -> Vec<(String, f64)> {
    let mut appended = 0;
    let mut kept = 0;
    let mut snapshots = 0;
    let Ok(mut conn) = HttpConn::connect(target).await else {
        return Vec::new();
    };
    conn.set_bearer(ADMIN_TOKEN);
    for doc in docs {
        let sql = "SELECT max(coalesce((SELECT max(id) FROM updates), 0), \
                   coalesce((SELECT max(upto) FROM snapshots), 0))";
        appended += ledger::sql_int(&mut conn, "ydoc", doc, sql)
            .await
            .unwrap_or(0);
        let sql = "SELECT count(*) FROM updates";
        kept += ledger::sql_int(&mut conn, "ydoc", doc, sql)
            .await
            .unwrap_or(0);
        let sql = "SELECT count(*) FROM snapshots";
        snapshots += ledger::sql_int(&mut conn, "ydoc", doc, sql)
            .await
            .unwrap_or(0);
    }
    vec![
        ("ydoc_update_rows_appended".into(), appended as f64),
        ("ydoc_update_rows_kept".into(), kept as f64),
        ("ydoc_snapshots_kept".into(), snapshots as f64),
    ]
}
