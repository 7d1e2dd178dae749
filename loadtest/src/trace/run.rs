//! A trace round (connect every client, replay, drain, check every
//! reader's text), `--find-max` over rounds, and `--verify`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use super::check::{check_texts, documents, verify};
use super::client::{self, Counters, Ctx, DocShared, Outcome, Role};
use super::replay::Replay;
use super::TraceArgs;
use crate::args::Common;
use crate::probe::Probes;
use crate::report::{latency_histogram, merge_into, Latency, Report, Unit};
use crate::yclient::Phase;
use crate::yjs::{self, Protocol};

pub(crate) async fn run_trace(args: TraceArgs, common: &Common) -> anyhow::Result<Vec<Report>> {
    let t0 = Instant::now();
    let replay = Arc::new(Replay::load_cached(&args.trace, args.keystrokes)?);
    let prepared = t0.elapsed();
    let prefix = args
        .doc_prefix
        .clone()
        .unwrap_or_else(|| format!("trace-{:08x}", yjs::run_seed()));
    if args.verify {
        return Ok(vec![verify(&args, common, &replay, &prefix).await?]);
    }
    if !args.find_max {
        let mut rep = round(&args, common, &replay, args.rate, &prefix).await?;
        rep.add("prepare_s", prepared.as_secs_f64(), Unit::Seconds);
        fail_on_mismatch(&rep)?;
        return Ok(vec![rep]);
    }
    let mut reports = Vec::new();
    let mut best: Option<(f64, Report)> = None;
    let (mut rate, mut failed, mut refined) = (args.rate, None::<f64>, 0);
    let mut why = format!("reached --max-rounds {}", args.max_rounds);
    for r in 0..args.max_rounds + 2 {
        let rep = round(&args, common, &replay, rate, &format!("{prefix}-r{r}")).await?;
        fail_on_mismatch(&rep)?;
        match verdict(&args, rate, &rep) {
            Ok(()) => best = Some((rate, rep.clone())),
            Err(e) => (why, failed) = (e, Some(rate)),
        }
        reports.push(rep);
        rate = match (failed, &best) {
            (None, _) if r + 1 >= args.max_rounds => break,
            (None, _) => rate * args.step,
            (Some(_), None) => break,
            (Some(_), Some(_)) if refined == 2 => break,
            (Some(hi), Some((lo, _))) => {
                refined += 1;
                (lo + hi) / 2.0
            }
        };
    }
    reports.push(max_report(&args, common, best, &why));
    Ok(reports)
}

/// A reader whose text differs from what was sent fails the run.
pub(super) fn fail_on_mismatch(rep: &Report) -> anyhow::Result<()> {
    let bad = rep.get("text_mismatches").unwrap_or(0.0);
    if bad > 0.0 {
        eprint!("{}", rep.to_table());
        anyhow::bail!("{bad} readers ended with a text other than what was sent");
    }
    Ok(())
}

/// Whether a round at `rate` passed: on schedule, all delivered, p99 within bound.
fn verdict(args: &TraceArgs, rate: f64, rep: &Report) -> Result<(), String> {
    let ratio = rep.get("delivery_ratio").unwrap_or(0.0);
    let schedule = rep.get("schedule_ratio").unwrap_or(0.0);
    let p99 = rep.get("latency_p99_us").unwrap_or(f64::INFINITY);
    let errors = rep.get("errors").unwrap_or(0.0);
    if ratio >= 0.99 && schedule >= 0.95 && errors == 0.0 && p99 <= args.max_p99.as_micros() as f64
    {
        return Ok(());
    }
    Err(format!(
        "at {rate:.0}/s per writer: on schedule {schedule:.3}, delivery {ratio:.3}, p99 {:.1} ms, errors {errors}",
        p99 / 1000.0
    ))
}

fn max_report(args: &TraceArgs, common: &Common, best: Option<(f64, Report)>, why: &str) -> Report {
    let mut max = Report::new("trace-max");
    max.label = common.label.clone();
    max.param("trace", args.trace.display().to_string())
        .param("docs", args.docs)
        .param("readers", args.readers)
        .param("max_p99_ms", args.max_p99.as_secs_f64() * 1000.0);
    match best {
        Some((rate, rep)) => {
            max.add("max_rate_per_writer", rate, Unit::PerSec);
            for k in [
                "keystrokes_per_s",
                "delivered_per_s",
                "latency_p50_us",
                "latency_p99_us",
                "server_cpu_pct",
                "server_rss_bytes",
            ] {
                if let Some(v) = rep.get(k) {
                    max.add(k, v, crate::report::unit_for_key(k));
                }
            }
        }
        None => {
            max.add("max_rate_per_writer", 0.0, Unit::PerSec);
            max.note("even the first rate did not pass");
        }
    }
    max.note(format!("stopped: {why}"));
    max
}

struct Task {
    doc: usize,
    reader: bool,
    handle: tokio::task::JoinHandle<Outcome>,
}

/// One round on documents `{prefix}-{d}`.
async fn round(
    args: &TraceArgs,
    common: &Common,
    replay: &Arc<Replay>,
    rate: f64,
    prefix: &str,
) -> anyhow::Result<Report> {
    let origin = Instant::now();
    let (target, names, paths) = documents(args, common, prefix, true).await?;
    let agents = replay.agents.len();
    let counters = Arc::new(Counters::default());
    let gate = Arc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let (phase, rx) = watch::channel(Phase::Hold);
    let shared: Vec<Arc<DocShared>> = (0..args.docs)
        .map(|_| Arc::new(DocShared::new(agents)))
        .collect();
    let mut tasks = Vec::new();
    for (d, (name, path)) in names.iter().zip(&paths).enumerate() {
        for c in 0..agents + args.readers {
            let role = Role {
                protocol: args.protocol,
                doc: name.clone(),
                path: path.clone(),
                token: args.connect.token.clone(),
                agent: (c < agents).then_some(c),
                first_reader: c == agents,
                rate,
                window: args.window,
            };
            let ctx = Ctx {
                replay: replay.clone(),
                doc: shared[d].clone(),
                counters: counters.clone(),
                origin,
            };
            let handle = tokio::spawn(client::run(
                role,
                ctx,
                target.clone(),
                rx.clone(),
                gate.clone(),
            ));
            tasks.push(Task {
                doc: d,
                reader: c >= agents,
                handle,
            });
        }
    }
    let clients = tasks.len() as u32;
    let deadline = Instant::now() + args.connect.connect_timeout;
    while counters.synced.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)
        < clients
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_wall = origin.elapsed();
    let probes = Probes::start(
        common,
        (args.protocol == Protocol::Roost).then_some(&target),
    )
    .await?;
    let (sending, drained) = replay_and_drain(args, &phase, &counters, &shared, agents).await;
    let mut report = Report::new("trace");
    report.label = common.label.clone();
    probes.finish(&mut report).await;
    let _ = phase.send(Phase::Stop);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        let o = t.handle.await.unwrap_or_else(|e| Outcome {
            error: Some(format!("client task failed: {e}")),
            ..Outcome::default()
        });
        outcomes.push((t.doc, t.reader, o));
    }
    let sent: Vec<Vec<usize>> = shared
        .iter()
        .map(|s| {
            s.sent
                .iter()
                .map(|a| a.load(Ordering::Acquire) as usize)
                .collect()
        })
        .collect();
    let (mismatches, incomplete) = check_texts(replay, &sent, &outcomes)?;
    report
        .param("protocol", args.protocol.name())
        .param("trace", args.trace.display().to_string())
        .param("docs", args.docs)
        .param("agents", agents)
        .param("readers", args.readers)
        .param("rate", rate)
        .param("window", args.window)
        .param("whole_trace", !replay.truncated);
    let figures = Figures {
        replay,
        args,
        rate,
        sent: &sent,
        outcomes: &outcomes,
        sending,
        drained,
        connect_wall,
        mismatches,
        incomplete,
    };
    figures.add_to(&mut report);
    Ok(report)
}

/// Sends until every writer finished the trace, a client failed or
/// `--duration` passed, then
/// drains until everything sent reached every other client of its document
/// or `--drain` passed. Returns (sending time, draining time).
async fn replay_and_drain(
    args: &TraceArgs,
    phase: &watch::Sender<Phase>,
    counters: &Counters,
    shared: &[Arc<DocShared>],
    agents: usize,
) -> (Duration, Duration) {
    let start = Instant::now() + Duration::from_millis(20);
    let _ = phase.send(Phase::Send {
        start,
        rate: args.rate,
        once: false,
    });
    let writers = (args.docs * agents) as u32;
    tokio::time::sleep_until(start.into()).await;
    // A failed client ends the sending: its writer will never finish.
    while start.elapsed() < args.duration
        && counters.writers_done.load(Ordering::Relaxed) < writers
        && counters.failed.load(Ordering::Relaxed) == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sending = start.elapsed();
    let _ = phase.send(Phase::Drain);
    let t = Instant::now();
    let peers = (agents + args.readers - 1) as u64;
    let expected = || -> u64 {
        shared
            .iter()
            .flat_map(|s| s.sent.iter())
            .map(|a| u64::from(a.load(Ordering::Acquire)) * peers)
            .sum()
    };
    while t.elapsed() < args.drain && counters.delivered.load(Ordering::Relaxed) < expected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (sending, t.elapsed())
}

struct Figures<'a> {
    replay: &'a Replay,
    args: &'a TraceArgs,
    rate: f64,
    sent: &'a [Vec<usize>],
    outcomes: &'a [(usize, bool, Outcome)],
    sending: Duration,
    drained: Duration,
    connect_wall: Duration,
    mismatches: usize,
    incomplete: usize,
}

impl Figures<'_> {
    fn add_to(&self, report: &mut Report) {
        let mut latency = latency_histogram();
        let (mut delivered, mut to_readers, mut unknown, mut connected) = (0u64, 0u64, 0u64, 0u64);
        let mut errors = Vec::new();
        for (_, reader, o) in self.outcomes {
            delivered += o.delivered;
            unknown += o.unknown;
            connected += u64::from(o.connected);
            if *reader {
                to_readers += o.delivered;
            }
            if let Some(h) = &o.latency {
                merge_into(&mut latency, h);
            }
            errors.extend(o.error.clone());
        }
        let agents = self.replay.agents.len();
        let sent: u64 = self.sent.iter().flatten().map(|&n| n as u64).sum();
        let peers = (agents + self.args.readers - 1) as u64;
        // Keystrokes due by the end of sending, over the documents.
        let on_schedule: f64 = if self.rate > 0.0 {
            let due = (self.replay.total() as f64)
                .min((self.rate * agents as f64 * self.sending.as_secs_f64()).floor() + 1.0);
            sent as f64 / (due * self.sent.len() as f64).max(1.0)
        } else {
            1.0
        };
        let window = (self.sending + self.drained).as_secs_f64();
        // Keystrokes (over all documents) that reached the readers.
        let readers = self.args.readers as f64;
        let mut f = Report::new("trace");
        f.add("trace_keystrokes", self.replay.total() as f64, Unit::Count)
            .add(
                "clients_total",
                (self.sent.len() as u64 * (peers + 1)) as f64,
                Unit::Count,
            )
            .add("connected", connected as f64, Unit::Count)
            .add(
                "connect_wall_s",
                self.connect_wall.as_secs_f64(),
                Unit::Seconds,
            )
            .add("sending_s", self.sending.as_secs_f64(), Unit::Seconds)
            .add("sent", sent as f64, Unit::Count)
            .add(
                "sent_per_s",
                sent as f64 / self.sending.as_secs_f64(),
                Unit::PerSec,
            )
            .add("schedule_ratio", on_schedule, Unit::Ratio)
            .add(
                "keystrokes_per_s",
                to_readers as f64 / readers / window,
                Unit::PerSec,
            )
            .add("delivered", delivered as f64, Unit::Count)
            .add("delivered_per_s", delivered as f64 / window, Unit::PerSec)
            .add(
                "delivery_ratio",
                delivered as f64 / (sent * peers).max(1) as f64,
                Unit::Ratio,
            )
            .add("drain_s", self.drained.as_secs_f64(), Unit::Seconds)
            .add("text_mismatches", self.mismatches as f64, Unit::Count)
            .add("readers_incomplete", self.incomplete as f64, Unit::Count)
            .add("errors", errors.len() as f64, Unit::Count);
        f.latency("latency", &Latency::from_histogram(&latency));
        f.figures.append(&mut report.figures);
        report.figures = f.figures;
        if let Some(e) = errors.first() {
            report.note(format!("{} clients failed; first: {e}", errors.len()));
        }
        if unknown > 0 {
            report.note(format!(
                "{unknown} received updates were not keystrokes of the trace"
            ));
        }
        if self.replay.ambiguous > 0 {
            report.note(format!(
                "{} keystrokes share a key with another (counted for the first)",
                self.replay.ambiguous
            ));
        }
    }
}
