//! `--target yjs`: idle y-websocket clients (`yclient`), connection `i` on
//! document `i % --docs`. A socket counts as connected once it synced. The
//! wake-up: each sampled client sends one update and one sync request; the
//! update must reach every other client of its document, and the sync
//! request must be answered.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Connected, ConnectionsArgs, Sample, ServerRss};
use crate::args::Common;
use crate::probe::Probes;
use crate::procstat::{rss_bytes, Proc};
use crate::progress::Progress;
use crate::report::{Latency, Report, Unit};
use crate::target::Target;
use crate::yclient::{self, Fleet, Phase, Spec, Totals};
use crate::yjs::{self, Protocol};

pub(super) async fn run(
    args: &ConnectionsArgs,
    common: &Common,
    target: &Target,
    source_ips: usize,
    prefix: &str,
) -> anyhow::Result<Report> {
    let sample = Sample::new(args);
    let specs = specs(args, common, target, prefix, sample).await?;
    let senders = specs.iter().filter(|s| s.sender).count();

    let mut rss = ServerRss::start(common);
    let client_rss_before = rss_bytes(Proc::This).ok();
    let metrics = (args.protocol == Protocol::Roost).then_some(target);
    let probes = Probes::start(common, metrics).await?;

    let (fleet, synced, connect_wall) = open(args, target, specs).await?;
    rss.connected_now();
    let client_rss_connected = rss_bytes(Proc::This).ok();

    let idle = Progress::phase(&format!("{synced} connections idle for {:?}", args.idle));
    tokio::time::sleep(args.idle).await;
    idle.finish();
    rss.idle_now();

    let waited = wake(args, &fleet, senders).await;
    let mut report = Report::new("connections");
    report.label = common.label.clone();
    probes.finish(&mut report).await;
    let results = fleet.finish().await;
    let t = yclient::totals(&results);
    let woken_ok = results
        .iter()
        .filter(|(s, st)| s.sender && st.resyncs > 0)
        .count();

    report.param("protocol", args.protocol.name());
    let connect = Connected {
        source_ips,
        sample: sample.n,
        connected: t.connected,
        failed: t.errors.len(),
        synced,
        wall: connect_wall,
    };
    let mut f = connect.figures(&mut report, args);
    f.latency("connect", &Latency::from_histogram(&t.connect));
    rss.add_figures(&mut f, synced);
    if let (Some(b), Some(c)) = (client_rss_before, client_rss_connected) {
        if synced > 0 {
            f.add(
                "client_rss_per_conn_bytes",
                (c as f64 - b as f64) / synced as f64,
                Unit::Bytes,
            );
        }
    }
    add_wake_figures(&mut f, &t, senders, woken_ok, waited);
    f.figures.append(&mut report.figures);
    report.figures = f.figures;
    if let Some(e) = t.errors.first() {
        report.note(format!("{} connections failed; first: {e}", t.errors.len()));
    }
    if woken_ok < senders {
        report.note(format!(
            "{} woken connections got no answer to their sync request",
            senders - woken_ok
        ));
    }
    Ok(report)
}

/// Opens every connection (at most `--connect-concurrency` at once) and
/// waits until all synced or failed, or `--connect-timeout` passed.
/// Returns the fleet, how many synced and the time it took; fails if none
/// synced.
async fn open(
    args: &ConnectionsArgs,
    target: &Target,
    specs: Vec<Spec>,
) -> anyhow::Result<(Fleet, usize, Duration)> {
    let origin = Instant::now();
    let progress = Progress::phase(&format!("opening {} connections", args.conns));
    let t0 = Instant::now();
    let fleet = Fleet::spawn(specs, target, origin, args.connect_concurrency);
    let synced = fleet.wait_synced(args.connect_timeout).await;
    let connect_wall = t0.elapsed();
    progress.finish();
    if synced == 0 {
        let results = fleet.finish().await;
        let first = results
            .iter()
            .find_map(|(_, s)| s.error.clone())
            .unwrap_or_else(|| "timed out".into());
        anyhow::bail!("no connection could be opened and synced: {first}");
    }
    Ok((fleet, synced, connect_wall))
}

/// Every connection: the sampled ones are senders; client ids come from a
/// fresh run seed.
async fn specs(
    args: &ConnectionsArgs,
    common: &Common,
    target: &Target,
    prefix: &str,
    sample: Sample,
) -> anyhow::Result<Vec<Spec>> {
    let seed = yjs::run_seed();
    let docs: Vec<String> = (0..args.docs).map(|d| format!("{prefix}-{d}")).collect();
    let paths = crate::ysweet::doc_paths(
        args.protocol,
        target,
        &docs,
        &args.token,
        true,
        common.allow_remote,
    )
    .await?;
    Ok((0..args.conns)
        .map(|i| {
            let doc = docs[i % args.docs].clone();
            Spec {
                index: i,
                protocol: args.protocol,
                path: paths[i % args.docs].clone(),
                doc,
                sender: sample.picks(i),
                pad: 0,
                workload: crate::yclient::Workload::Append,
                first: None,
                client_id: yjs::client_id(seed, i),
                token: args.token.clone(),
            }
        })
        .collect())
}

/// The wake-up: each sampled sender sends one update plus a sync request;
/// waits (at most `--wake-timeout`) until every other client of the
/// senders' documents received them, then 200 ms for the sync answers.
/// Returns the time waited for the deliveries.
async fn wake(args: &ConnectionsArgs, fleet: &Fleet, senders: usize) -> Duration {
    let d0 = fleet.shared.delivered.load(Ordering::Relaxed);
    let per_doc = args.conns.div_ceil(args.docs);
    let want = d0 + (senders * per_doc.saturating_sub(1)) as u64;
    fleet.set(Phase::Send {
        start: Instant::now(),
        rate: 0.0,
        once: true,
    });
    let waited = fleet.wait_delivered(|_| want, args.wake_timeout).await;
    // Give the sync answers a moment beyond the deliveries.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fleet.set(Phase::Drain);
    waited
}

fn add_wake_figures(f: &mut Report, t: &Totals, senders: usize, woken_ok: usize, waited: Duration) {
    f.add("woken", senders as f64, Unit::Count)
        .add("woken_sync_ok", woken_ok as f64, Unit::Count)
        .add("wake_delivered", t.delivered as f64, Unit::Count)
        .add("wake_expected", t.expected as f64, Unit::Count)
        .add(
            "wake_delivery_ratio",
            if t.expected > 0 {
                t.delivered as f64 / t.expected as f64
            } else {
                f64::NAN
            },
            Unit::Ratio,
        )
        .add("wake_wait_s", waited.as_secs_f64(), Unit::Seconds);
    f.latency("wake", &Latency::from_histogram(&t.latency));
}
