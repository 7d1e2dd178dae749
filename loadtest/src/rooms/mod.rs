//! `rooms`: Roost's `room` class over the object WebSocket
//! (`/v1/objects/room/{name}/ws`, JSON envelope). R rooms × C clients: each
//! client connects (and receives the history), calls `join`, then calls
//! `send` at a set rate; every `message` event is timed end to end. At the
//! end each client calls `who` to check presence.
//!
//! Events are recognised and timed on the raw text (no JSON parsing per
//! event); call results, which arrive at the send rate, are decoded with
//! `roost_protocol::ServerFrame`.
//!
//! The run goes through phases, each bounded in time: joining (until every
//! client joined or failed, at most `--connect-timeout`), sending
//! (`--duration`), draining (until every expected event arrived, at most
//! `--drain`), then stop. One member is in `client.rs`.

mod client;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::args::{parse_duration, Common};
use crate::probe::Probes;
use crate::progress::Progress;
use crate::report::{latency_histogram, merge_into, Latency, Report, Unit};
use crate::target::{encode_segment, Target};
use crate::yclient::Phase;
use crate::yjs;
pub(crate) use client::event_kind;
use client::{Member, Stats};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RoomsArgs {
    /// Roost base URL.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Number of rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Clients per room (each its own WebSocket).
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Messages each client sends per second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// How long clients send.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Text bytes per message beyond the 19-byte timestamp marker.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// After sending stops, wait up to this long for the remaining events.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Room name prefix (default: rooms-<random>).
    #[arg(long)]
    pub room_prefix: Option<String>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Give up waiting for all clients to join after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

/// Counters shared by all members of a run (for waiting and progress).
#[derive(Default)]
struct Shared {
    joined: AtomicUsize,
    failed: AtomicUsize,
    sent: AtomicU64,
    delivered: AtomicU64,
}

pub(crate) async fn run(args: RoomsArgs, common: &Common) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.rooms >= 1 && args.clients >= 1,
        "--rooms and --clients must be at least 1"
    );
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    let target = Target::parse(&args.url, common.allow_remote)?;
    let prefix = args
        .room_prefix
        .clone()
        .unwrap_or_else(|| format!("rooms-{:08x}", yjs::run_seed()));
    let (tx, rx) = watch::channel(Phase::Hold);
    let shared = Arc::new(Shared::default());
    let tasks = spawn_members(&args, &target, &prefix, &rx, &shared);
    let join_wall = wait_joined(&shared, tasks.len(), args.connect_timeout).await;
    let joined = shared.joined.load(Ordering::Relaxed);

    let probes = Probes::start(common, Some(&target)).await?;
    if joined > 0 {
        send_for(&args, &tx, &shared).await;
    }
    let _ = tx.send(Phase::Drain);
    let drained = drain(&shared, (args.clients - 1) as u64, args.drain).await;
    let mut report = Report::new("rooms");
    report.label = common.label.clone();
    probes.finish(&mut report).await;
    let _ = tx.send(Phase::Stop);
    let totals = Totals::collect(tasks, args.clients).await;
    totals.report(&args, common, &mut report, joined, join_wall, drained);
    Ok(report)
}

/// Spawns `--clients` members for each of `--rooms` rooms
/// (`{prefix}-{r}`); at most `--connect-concurrency` connect at once.
fn spawn_members(
    args: &RoomsArgs,
    target: &Target,
    prefix: &str,
    rx: &watch::Receiver<Phase>,
    shared: &Arc<Shared>,
) -> Vec<JoinHandle<Stats>> {
    let origin = Instant::now();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.rooms * args.clients);
    for r in 0..args.rooms {
        let room = encode_segment(&format!("{prefix}-{r}"));
        for c in 0..args.clients {
            let index = r * args.clients + c;
            let member = Member {
                index,
                target: target.clone(),
                path: target.path(&format!("/v1/objects/room/{room}/ws?name=u{index}")),
                origin,
                pad: args.pad,
            };
            tasks.push(tokio::spawn(client::run(
                member,
                rx.clone(),
                shared.clone(),
                gate.clone(),
            )));
        }
    }
    tasks
}

/// Waits until all `total` members joined or failed, or `timeout` passed;
/// returns the time it took.
async fn wait_joined(shared: &Shared, total: usize, timeout: Duration) -> Duration {
    let connecting = Progress::phase(&format!("joining {total} clients"));
    let t_join = Instant::now();
    let deadline = t_join + timeout;
    while shared.joined.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let join_wall = t_join.elapsed();
    connecting.finish();
    join_wall
}

/// Tells the members to send at `--rate` for `--duration` (starting 20 ms
/// from now), showing deliveries on the progress bar.
async fn send_for(args: &RoomsArgs, tx: &watch::Sender<Phase>, shared: &Shared) {
    let start = Instant::now() + Duration::from_millis(20);
    let _ = tx.send(Phase::Send {
        start,
        rate: args.rate,
        once: false,
    });
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::timed("rooms", args.duration, counter.clone(), "events");
    while Instant::now() < start + args.duration {
        counter.store(shared.delivered.load(Ordering::Relaxed), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish();
}

/// Waits (at most `timeout`) until every message sent reached its `peers`
/// other members, then 300 ms more for the `who` answers; returns the time
/// waited.
async fn drain(shared: &Shared, peers: u64, timeout: Duration) -> Duration {
    let t_drain = Instant::now();
    while t_drain.elapsed() < timeout
        && shared.delivered.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed) * peers
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the `who` answers arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    t_drain.elapsed()
}

/// Every member's figures added up.
struct Totals {
    calls: Histogram<u64>,
    events: Histogram<u64>,
    joins: Histogram<u64>,
    sent: u64,
    delivered: u64,
    own: u64,
    call_errors: u64,
    /// Members that failed (and tasks that panicked), each with its error.
    errors: Vec<String>,
    /// Members whose `who` listed the whole room.
    who_ok: usize,
    /// The longest history a member received on joining.
    history: usize,
}

impl Totals {
    /// Waits for every member (they were told to stop) and adds up their
    /// figures; `clients` is the room size `who` must report.
    async fn collect(tasks: Vec<JoinHandle<Stats>>, clients: usize) -> Totals {
        let mut t = Totals {
            calls: latency_histogram(),
            events: latency_histogram(),
            joins: latency_histogram(),
            sent: 0,
            delivered: 0,
            own: 0,
            call_errors: 0,
            errors: Vec::new(),
            who_ok: 0,
            history: 0,
        };
        for task in tasks {
            let st = match task.await {
                Ok(st) => st,
                Err(e) => {
                    t.errors.push(format!("client task failed: {e}"));
                    continue;
                }
            };
            merge_into(&mut t.calls, &st.calls);
            if let Some(h) = &st.events {
                merge_into(&mut t.events, h);
            }
            if let Some(j) = st.join {
                t.joins.saturating_record(j.as_micros() as u64);
            }
            t.sent += st.sent;
            t.delivered += st.delivered;
            t.own += st.own;
            t.call_errors += st.call_errors;
            t.history = t.history.max(st.history_len);
            if st.who == Some(clients) {
                t.who_ok += 1;
            }
            if let Some(e) = st.error {
                t.errors.push(e);
            }
        }
        t
    }

    /// Fills `report` (which holds the probes' readings): parameters, then
    /// the scenario's figures before the probes', then notes.
    fn report(
        &self,
        args: &RoomsArgs,
        common: &Common,
        report: &mut Report,
        joined: usize,
        join_wall: Duration,
        drained: Duration,
    ) {
        let expected = self.sent * (args.clients - 1) as u64;
        let window = args.duration.as_secs_f64() + drained.as_secs_f64();
        report
            .param("rooms", args.rooms)
            .param("clients", args.clients)
            .param("rate", args.rate)
            .param("duration_s", args.duration.as_secs_f64())
            .param("threads", common.threads);
        let mut f = Report::new("rooms");
        f.add("joined", joined as f64, Unit::Count)
            .add("join_wall_s", join_wall.as_secs_f64(), Unit::Seconds)
            .add("sent", self.sent as f64, Unit::Count)
            .add(
                "sent_per_s",
                self.sent as f64 / args.duration.as_secs_f64(),
                Unit::PerSec,
            )
            .add("delivered", self.delivered as f64, Unit::Count)
            .add(
                "delivered_per_s",
                self.delivered as f64 / window,
                Unit::PerSec,
            )
            .add("expected", expected as f64, Unit::Count)
            .add(
                "delivery_ratio",
                if expected > 0 {
                    self.delivered as f64 / expected as f64
                } else {
                    f64::NAN
                },
                Unit::Ratio,
            )
            .add("own_events", self.own as f64, Unit::Count)
            .add("presence_ok", self.who_ok as f64, Unit::Count)
            .add("max_history_on_join", self.history as f64, Unit::Count)
            .add(
                "errors",
                (self.errors.len() as u64 + self.call_errors) as f64,
                Unit::Count,
            );
        f.latency("join", &Latency::from_histogram(&self.joins));
        f.latency("call", &Latency::from_histogram(&self.calls));
        f.latency("event", &Latency::from_histogram(&self.events));
        f.figures.append(&mut report.figures);
        report.figures = f.figures;
        self.notes(report, joined);
    }

    fn notes(&self, report: &mut Report, joined: usize) {
        if let Some(e) = self.errors.first() {
            report.note(format!("{} clients failed; first: {e}", self.errors.len()));
        }
        if self.call_errors > 0 {
            report.note(format!(
                "{} calls returned an error or were never answered",
                self.call_errors
            ));
        }
        if self.who_ok < joined {
            report.note(format!(
                "`who` listed the whole room for {} of {joined} clients",
                self.who_ok
            ));
        }
    }
}
