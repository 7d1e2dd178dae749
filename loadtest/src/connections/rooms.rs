//! `--target room`: idle Roost room sockets, socket `i` in room
//! `{prefix}-{i % --docs}`. A socket counts as connected once the room
//! admitted it (its `history` event arrived); on the wake-up each sampled
//! socket calls `who`, which must be answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roost_protocol::{ClientFrame, ServerFrame};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{Connected, ConnectionsArgs, Sample, ServerRss};
use crate::args::Common;
use crate::probe::Probes;
use crate::progress::Progress;
use crate::report::{Report, Unit};
use crate::rooms::event_kind;
use crate::target::{encode_segment, Target};
use crate::ws::{Kind, WsConn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hold,
    Wake,
    Stop,
}

/// The id of the sampled sockets' `who` call.
const WHO_ID: u64 = 1;

#[derive(Default)]
struct Counts {
    connected: AtomicUsize,
    failed: AtomicUsize,
    answered: AtomicUsize,
}

pub(super) async fn run(
    args: &ConnectionsArgs,
    common: &Common,
    target: &Target,
    source_ips: usize,
    prefix: &str,
) -> anyhow::Result<Report> {
    let sample = Sample::new(args);
    let mut rss = ServerRss::start(common);
    let probes = Probes::start(common, Some(target)).await?;

    let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
    let counts = Arc::new(Counts::default());
    let progress = Progress::phase(&format!("opening {} room sockets", args.conns));
    let t0 = Instant::now();
    let tasks = spawn_sockets(args, target, prefix, sample, &phase_rx, &counts);
    wait_connected(&counts, args.conns, t0 + args.connect_timeout).await;
    let connect_wall = t0.elapsed();
    progress.finish();
    let connected = counts.connected.load(Ordering::Relaxed);
    rss.connected_now();

    let idle = Progress::phase(&format!(
        "{connected} room sockets idle for {:?}",
        args.idle
    ));
    tokio::time::sleep(args.idle).await;
    idle.finish();
    rss.idle_now();

    let woken = if connected > 0 { sample.n } else { 0 };
    let wake_wait = wake(&phase_tx, &counts, woken, args.wake_timeout).await;
    let _ = phase_tx.send(Phase::Stop);
    let mut errors = Vec::new();
    for t in tasks {
        if let Ok(Some(e)) = t.await {
            errors.push(e);
        }
    }

    let mut report = Report::new("connections");
    report.label = common.label.clone();
    probes.finish(&mut report).await;
    report.param("protocol", "roost").param("target", "room");
    let connect = Connected {
        source_ips,
        sample: sample.n,
        connected,
        failed: errors.len(),
        synced: connected,
        wall: connect_wall,
    };
    let mut f = connect.figures(&mut report, args);
    rss.add_figures(&mut f, connected);
    let answered = counts.answered.load(Ordering::Relaxed);
    f.add("woken", woken as f64, Unit::Count)
        .add("woken_sync_ok", answered as f64, Unit::Count)
        .add("wake_wait_s", wake_wait.as_secs_f64(), Unit::Seconds);
    f.figures.append(&mut report.figures);
    report.figures = f.figures;
    if let Some(e) = errors.first() {
        report.note(format!("{} room sockets failed; first: {e}", errors.len()));
    }
    if answered < woken {
        report.note(format!(
            "{} woken room sockets got no answer to `who`",
            woken - answered
        ));
    }
    Ok(report)
}

/// One task per socket; at most `--connect-concurrency` connect at once.
fn spawn_sockets(
    args: &ConnectionsArgs,
    target: &Target,
    prefix: &str,
    sample: Sample,
    phase_rx: &watch::Receiver<Phase>,
    counts: &Arc<Counts>,
) -> Vec<JoinHandle<Option<String>>> {
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let room = format!("{prefix}-{}", i % args.docs);
        let path = target.path(&format!("/v1/objects/room/{}/ws", encode_segment(&room)));
        tasks.push(tokio::spawn(client(
            target.clone(),
            path,
            sample.picks(i),
            phase_rx.clone(),
            counts.clone(),
            gate.clone(),
        )));
    }
    tasks
}

/// Waits until all `conns` sockets were admitted or failed, or `deadline`.
async fn wait_connected(counts: &Counts, conns: usize, deadline: Instant) {
    loop {
        let done = counts.connected.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed);
        if done >= conns || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wakes the sockets and waits (at most `timeout`) until `woken` `who`
/// calls were answered; returns the time waited.
async fn wake(
    phase_tx: &watch::Sender<Phase>,
    counts: &Counts,
    woken: usize,
    timeout: Duration,
) -> Duration {
    let w0 = Instant::now();
    let _ = phase_tx.send(Phase::Wake);
    while counts.answered.load(Ordering::Relaxed) < woken && w0.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w0.elapsed()
}

/// One room socket: connects, waits for its `history` event, then holds;
/// on `Wake` a sampled socket calls `who` and counts the answer. Returns
/// its error, if it failed.
async fn client(
    target: Target,
    path: String,
    sampled: bool,
    mut phase: watch::Receiver<Phase>,
    counts: Arc<Counts>,
    gate: Arc<Semaphore>,
) -> Option<String> {
    let res: anyhow::Result<()> = async {
        let permit = gate.acquire_owned().await?;
        let mut conn = WsConn::connect(&target, &path, &[]).await?;
        admitted(&mut conn).await?;
        drop(permit);
        counts.connected.fetch_add(1, Ordering::Relaxed);
        hold(&mut conn, sampled, &mut phase, &counts).await?;
        let _ = conn.close().await;
        Ok(())
    }
    .await;
    res.err().map(|e| {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        format!("{e:#}")
    })
}

/// Reads until the room's `history` event has arrived (the socket is
/// admitted).
async fn admitted(conn: &mut WsConn) -> anyhow::Result<()> {
    let mut admitted = false;
    loop {
        // The `history` event may have come in with the upgrade
        // response: look at what is buffered before reading more.
        while let Some(msg) = conn.next_buffered()? {
            match msg.kind {
                Kind::Close => anyhow::bail!("server closed the socket"),
                Kind::Binary => {}
                Kind::Text => admitted |= event_kind(msg.payload) == Some(b"history"),
            }
        }
        if admitted {
            return Ok(());
        }
        if conn.read_more().await? == 0 {
            anyhow::bail!("server closed the connection before admitting it");
        }
    }
}

/// Holds the admitted socket until `Stop`; on `Wake` a sampled socket
/// calls `who` (once) and counts a successful answer.
async fn hold(
    conn: &mut WsConn,
    sampled: bool,
    phase: &mut watch::Receiver<Phase>,
    counts: &Counts,
) -> anyhow::Result<()> {
    let mut asked = false;
    loop {
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let now = *phase.borrow_and_update();
                match now {
                    Phase::Wake if sampled && !asked => {
                        asked = true;
                        conn.send_text(&ClientFrame::call(WHO_ID, "who", serde_json::json!({}))).await?;
                    }
                    Phase::Stop => return Ok(()),
                    _ => {}
                }
            }
            n = conn.read_more() => {
                if n? == 0 {
                    anyhow::bail!("server closed the connection");
                }
                while let Some(msg) = conn.next_buffered()? {
                    match msg.kind {
                        Kind::Close => anyhow::bail!("server closed the socket"),
                        Kind::Binary => {}
                        Kind::Text if asked => {
                            let frame = std::str::from_utf8(msg.payload).ok().and_then(|s| ServerFrame::decode(s).ok());
                            if let Some(ServerFrame::Result { id: WHO_ID, ok: Some(_), .. }) = frame {
                                counts.answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Kind::Text => {}
                    }
                }
            }
        }
    }
}
