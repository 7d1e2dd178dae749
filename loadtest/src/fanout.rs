//! `fanout`: R documents × C clients per document, every client writing
//! small Yjs text updates at a set rate (`--workload`: appending to its own
//! run of text, prepending to the shared text, or inserting after a random
//! character; see `yclient/scribe.rs`) over the y-websocket (or Hocuspocus)
//! protocol (y-sweet: after its token handshake, see `ysweet.rs`). Measures updates delivered per second and end-to-end latency
//! (sender's clock to receiver's clock, same process). `--find-max` raises
//! the rate round by round until delivery falls behind or p99 exceeds a bound.
//!
//! The search is bounded: at most `--max-rounds` rounds raising the rate by
//! `--step`, then, after the first failed round, at most `--refine` rounds
//! bisecting between the best passing rate and the lowest failing one; it
//! stops at once if the first round fails.

use std::time::{Duration, Instant};

use crate::args::{parse_duration, Common};
use crate::probe::Probes;
use crate::progress::Progress;
use crate::report::{Latency, Report, Unit};
use crate::target::Target;
use crate::yclient::{self, Fleet, Mirror, Phase, Spec, Totals, Workload};
use crate::yjs::{self, Protocol};
use crate::ysweet;

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct FanoutArgs {
    /// Server URL: http://HOST:PORT for Roost and y-sweet, ws://HOST:PORT[/prefix] for y-websocket-server or Hocuspocus.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Wire protocol and URL layout of the server.
    #[arg(long, value_enum, default_value = "roost")]
    pub protocol: Protocol,
    /// Number of documents.
    #[arg(long, default_value_t = 10)]
    pub docs: usize,
    /// Clients per document (each its own WebSocket).
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Updates each client sends per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long clients send (per round with --find-max).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Text bytes per update beyond the 19-byte timestamp marker.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// Where clients insert: append to their own run of text, prepend to
    /// the shared text, or after a random known character.
    #[arg(long, value_enum, default_value = "append")]
    pub workload: Workload,
    /// After sending stops, wait up to this long for the remaining deliveries.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Document name prefix (default: fanout-<random>, so every run starts from empty documents).
    #[arg(long)]
    pub doc_prefix: Option<String>,
    /// Raise the rate (×--step per round) until delivery falls behind or p99 exceeds --max-p99.
    #[arg(long)]
    pub find_max: bool,
    /// With --find-max: the largest acceptable p99 latency.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub max_p99: Duration,
    /// With --find-max: the smallest acceptable share of expected deliveries.
    #[arg(long, default_value_t = 0.99)]
    pub min_delivery: f64,
    /// With --find-max: rate multiplier between rounds.
    #[arg(long, default_value_t = 1.5)]
    pub step: f64,
    /// With --find-max: most rounds.
    #[arg(long, default_value_t = 12)]
    pub max_rounds: usize,
    /// With --find-max: after the first failed round, this many more rounds
    /// halve the gap between the best passing rate and the failed one.
    #[arg(long, default_value_t = 2)]
    pub refine: usize,
    /// Connecting the clients.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How a scenario's many clients connect (`fanout`, `trace`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnectArgs {
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Give up waiting for all clients to connect and sync after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Hocuspocus: token sent in its auth message. y-sweet: its server token (with `serve --auth`).
    #[arg(long, default_value = "")]
    pub token: String,
}

pub(crate) async fn run(args: FanoutArgs, common: &Common) -> anyhow::Result<Vec<Report>> {
    anyhow::ensure!(
        args.docs >= 1 && args.clients >= 1,
        "--docs and --clients must be at least 1"
    );
    anyhow::ensure!(args.docs * args.clients < (1 << 21), "at most 2^21 clients");
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    let prefix = args
        .doc_prefix
        .clone()
        .unwrap_or_else(|| format!("fanout-{:08x}", yjs::run_seed()));
    if !args.find_max {
        return Ok(vec![round(&args, common, args.rate, &prefix).await?]);
    }
    anyhow::ensure!(args.step > 1.0, "--step must be above 1");
    find_max(&args, common, &prefix).await
}

/// `--find-max`: one report per round (documents `{prefix}-r{round}`, so
/// each round starts from empty documents), then a `fanout-max` report.
async fn find_max(args: &FanoutArgs, common: &Common, prefix: &str) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    let mut best: Option<(f64, Report)> = None;
    let mut rate = args.rate;
    let mut why = format!("reached --max-rounds {}", args.max_rounds);
    // The lowest rate that failed, once one has.
    let mut failed: Option<f64> = None;
    let mut refined = 0;
    for r in 0..args.max_rounds.max(1) + args.refine {
        let rep = round(args, common, rate, &format!("{prefix}-r{r}")).await?;
        let verdict = verdict(args, rate, &rep);
        reports.push(rep.clone());
        match verdict {
            Ok(()) => best = Some((rate, rep)),
            Err(e) => {
                why = e;
                failed = Some(rate);
            }
        }
        match (failed, &best) {
            (None, _) if r + 1 >= args.max_rounds.max(1) => break,
            (None, _) => rate *= args.step,
            // Nothing passed, or the refinement rounds are spent.
            (Some(_), None) => break,
            (Some(_), Some(_)) if refined == args.refine => break,
            (Some(hi), Some((lo, _))) => {
                refined += 1;
                rate = (lo + hi) / 2.0;
            }
        }
    }
    reports.push(max_report(args, common, best, &why));
    Ok(reports)
}

/// Whether a round at `rate` passed: enough delivered, p99 within bound,
/// no errors; if not, why (noting a saturated load generator).
fn verdict(args: &FanoutArgs, rate: f64, rep: &Report) -> Result<(), String> {
    let ratio = rep.get("delivery_ratio").unwrap_or(0.0);
    let p99 = rep.get("latency_p99_us").unwrap_or(f64::INFINITY);
    let errors = rep.get("errors").unwrap_or(0.0);
    let cpu = rep.get("client_cpu_pct").unwrap_or(0.0);
    if ratio >= args.min_delivery && p99 <= args.max_p99.as_micros() as f64 && errors == 0.0 {
        return Ok(());
    }
    Err(format!(
        "at {rate:.1}/s per client: delivery {ratio:.3}, p99 {:.1} ms, errors {errors}{}",
        p99 / 1000.0,
        if cpu > 90.0 {
            " (the load generator was saturated: this may be its limit, not the server's)"
        } else {
            ""
        }
    ))
}

/// The `fanout-max` report: the best passing rate and its round's main
/// figures, and why the search stopped.
fn max_report(
    args: &FanoutArgs,
    common: &Common,
    best: Option<(f64, Report)>,
    why: &str,
) -> Report {
    let mut max = Report::new("fanout-max");
    max.label = common.label.clone();
    max.param("docs", args.docs)
        .param("clients", args.clients)
        .param("duration_s", args.duration.as_secs_f64())
        .param("max_p99_ms", args.max_p99.as_secs_f64() * 1000.0)
        .param("min_delivery", args.min_delivery);
    match best {
        Some((rate, rep)) => {
            max.add("max_rate_per_client", rate, Unit::PerSec);
            for k in [
                "delivered_per_s",
                "latency_p50_us",
                "latency_p99_us",
                "client_cpu_pct",
                "server_cpu_pct",
            ] {
                if let Some(v) = rep.get(k) {
                    max.add(k, v, crate::report::unit_for_key(k));
                }
            }
        }
        None => {
            max.add("max_rate_per_client", 0.0, Unit::PerSec);
            max.note("even the first rate did not pass");
        }
    }
    max.note(format!("stopped: {why}"));
    max
}

/// One round at `rate` per client on documents `{prefix}-{d}`: connect
/// and sync every client, send for `--duration`, drain, report.
async fn round(
    args: &FanoutArgs,
    common: &Common,
    rate: f64,
    prefix: &str,
) -> anyhow::Result<Report> {
    let target = Target::parse(&args.url, common.allow_remote)?;
    let origin = Instant::now();
    let (specs, mirrors) = specs(args, common, &target, prefix).await?;
    let connecting = Progress::phase(&format!("connecting {} clients", specs.len()));
    let t_connect = Instant::now();
    let fleet = Fleet::spawn(specs, &target, origin, args.connect.connect_concurrency);
    let synced = fleet.wait_synced(args.connect.connect_timeout).await;
    let connect_wall = t_connect.elapsed();
    connecting.finish();
    if synced == 0 {
        let results = fleet.finish().await;
        let first = results
            .iter()
            .find_map(|(_, s)| s.error.clone())
            .unwrap_or_else(|| "timed out".into());
        anyhow::bail!("no client could connect and sync: {first}");
    }

    let metrics = (args.protocol == Protocol::Roost).then_some(&target);
    let probes = Probes::start(common, metrics).await?;
    let drained = send_and_drain(args, &fleet, rate).await;
    let mut report = Report::new("fanout");
    report.label = common.label.clone();
    probes.finish(&mut report).await;
    let results = fleet.finish().await;
    for m in mirrors {
        if let Err(e) = m.finish().await {
            report.note(format!("a prepend observer failed: {e:#}"));
        }
    }
    let t = yclient::totals(&results);
    report
        .param("protocol", args.protocol.name())
        .param("docs", args.docs)
        .param("clients", args.clients)
        .param("rate", rate)
        .param("duration_s", args.duration.as_secs_f64())
        .param("pad", args.pad)
        .param("workload", format!("{:?}", args.workload).to_lowercase())
        .param("threads", common.threads);
    add_figures(args, &mut report, &t, connect_wall, drained);
    Ok(report)
}

/// Every client of the round: `--clients` per document, all senders, with
/// client ids from a fresh run seed; for `prepend`, each document's
/// observer (`yclient::Mirror`), connected and synced first.
async fn specs(
    args: &FanoutArgs,
    common: &Common,
    target: &Target,
    prefix: &str,
) -> anyhow::Result<(Vec<Spec>, Vec<Mirror>)> {
    let seed = yjs::run_seed();
    let docs: Vec<String> = (0..args.docs).map(|d| format!("{prefix}-{d}")).collect();
    let paths = ysweet::doc_paths(
        args.protocol,
        target,
        &docs,
        &args.connect.token,
        true,
        common.allow_remote,
    )
    .await?;
    let mut specs = Vec::with_capacity(args.docs * args.clients);
    let mut mirrors = Vec::new();
    for (d, (doc, path)) in docs.iter().zip(&paths).enumerate() {
        let first = if args.workload == Workload::Prepend {
            let m = Mirror::start(
                target,
                args.protocol,
                path,
                doc,
                &args.connect.token,
                args.connect.connect_timeout,
            )
            .await?;
            let first = m.first.clone();
            mirrors.push(m);
            Some(first)
        } else {
            None
        };
        for c in 0..args.clients {
            let index = d * args.clients + c;
            specs.push(Spec {
                index,
                protocol: args.protocol,
                path: path.clone(),
                doc: doc.clone(),
                sender: true,
                pad: args.pad,
                workload: args.workload,
                first: first.clone(),
                client_id: yjs::client_id(seed, index),
                token: args.connect.token.clone(),
            });
        }
    }
    Ok((specs, mirrors))
}

/// Sends at `rate` for `--duration` (from 20 ms from now), then drains
/// until every update reached the other clients of its document or
/// `--drain` passed; returns the time spent draining.
async fn send_and_drain(args: &FanoutArgs, fleet: &Fleet, rate: f64) -> Duration {
    let start = Instant::now() + Duration::from_millis(20);
    fleet.set(Phase::Send {
        start,
        rate,
        once: false,
    });
    let progress = Progress::timed(
        "fanout",
        args.duration,
        fleet.shared.clone_delivered(),
        "delivered",
    );
    tokio::time::sleep_until((start + args.duration).into()).await;
    fleet.set(Phase::Drain);
    progress.finish();
    let peers = (args.clients - 1) as u64;
    fleet
        .wait_delivered(
            |s| s.sent.load(std::sync::atomic::Ordering::Relaxed) * peers,
            args.drain,
        )
        .await
}

/// The round's figures, placed before the probes' readings already in
/// `report`, and its notes.
fn add_figures(
    args: &FanoutArgs,
    report: &mut Report,
    t: &Totals,
    connect_wall: Duration,
    drained: Duration,
) {
    let window = args.duration + drained;
    let mut figures = Report::new("fanout");
    figures
        .add(
            "clients_total",
            (args.docs * args.clients) as f64,
            Unit::Count,
        )
        .add("connected", t.connected as f64, Unit::Count)
        .add("connect_wall_s", connect_wall.as_secs_f64(), Unit::Seconds)
        .add("sent", t.sent as f64, Unit::Count)
        .add(
            "sent_per_s",
            t.sent as f64 / args.duration.as_secs_f64(),
            Unit::PerSec,
        )
        .add("delivered", t.delivered as f64, Unit::Count)
        .add(
            "delivered_per_s",
            t.delivered as f64 / window.as_secs_f64(),
            Unit::PerSec,
        )
        .add("expected", t.expected as f64, Unit::Count)
        .add(
            "delivery_ratio",
            if t.expected > 0 {
                t.delivered as f64 / t.expected as f64
            } else {
                f64::NAN
            },
            Unit::Ratio,
        )
        .add("drain_s", drained.as_secs_f64(), Unit::Seconds)
        .add("echoes", t.echoes as f64, Unit::Count)
        .add("skipped_sends", t.skipped as f64, Unit::Count)
        .add("errors", t.errors.len() as f64, Unit::Count);
    figures.latency("latency", &Latency::from_histogram(&t.latency));
    figures.latency("connect", &Latency::from_histogram(&t.connect));
    // Scenario figures first, then the probes' readings.
    figures.figures.append(&mut report.figures);
    report.figures = figures.figures;
    if let Some(e) = t.errors.first() {
        report.note(format!("{} clients failed; first: {e}", t.errors.len()));
    }
    if t.skipped > 0 {
        report.note("some sends were skipped because clients fell behind their schedule (generator overloaded)");
    }
}
