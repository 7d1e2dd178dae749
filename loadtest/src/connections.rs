//! `connections`: N idle WebSockets over M documents. Measures connect (and
//! initial sync) time, the server's resident memory per connection when its
//! PID is given, then wakes a sample — each sampled client sends one update
//! and one sync request — and checks that every other client of its document
//! receives the update and that the server still answers.
//!
//! With `--target room` the sockets are Roost `room` sockets
//! (`/v1/objects/room/{name}/ws`, M rooms): a socket counts as connected once
//! its `history` event arrived (the room admitted it), and the wake-up is a
//! `who` call from each sampled socket, which must be answered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};

use crate::args::{parse_duration, Common};
use crate::probe::Probes;
use crate::procstat::{rss_bytes, Proc};
use crate::progress::Progress;
use crate::report::{Latency, Report, Unit};
use crate::target::Target;
use crate::yclient::{self, Fleet, Phase, Spec};
use crate::yjs::{self, Protocol};

/// Which sockets `connections` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketTarget {
    /// y-websocket documents (in the layout of `--protocol`).
    Yjs,
    /// Roost's built-in `room` class (`/v1/objects/room/{name}/ws`, JSON envelope).
    Room,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionsArgs {
    /// Server URL: http://HOST:PORT for Roost and y-sweet, ws://HOST:PORT[/prefix] for y-websocket-server or Hocuspocus.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Wire protocol and URL layout of the server.
    #[arg(long, value_enum, default_value = "roost")]
    pub protocol: Protocol,
    /// Sockets to open: Yjs documents, or Roost rooms (then `--docs` is the number of rooms).
    #[arg(long, value_enum, default_value = "yjs")]
    pub target: SocketTarget,
    /// Connections to open (mind `ulimit -n` and the ephemeral port range).
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Documents the connections are spread over (connection i joins document i % docs).
    #[arg(long, default_value_t = 10)]
    pub docs: usize,
    /// Connections woken after the idle period (spread evenly over all connections).
    #[arg(long, default_value_t = 20)]
    pub sample: usize,
    /// How long the connections stay idle before the wake-up (lets a server hibernate objects).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub idle: Duration,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Give up waiting for all connections after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Give up waiting for the wake-up's deliveries after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wake_timeout: Duration,
    /// Document name prefix (default: conns-<random>).
    #[arg(long)]
    pub doc_prefix: Option<String>,
    /// Hocuspocus: token sent in its auth message. y-sweet: its server token (with `serve --auth`).
    #[arg(long, default_value = "")]
    pub token: String,
    /// Spread connections over source addresses 127.0.0.1..127.0.0.N (one
    /// address has ~28,000 ephemeral ports). Default: one address per 8,000
    /// connections when there are more than 20,000 and the target is
    /// 127.0.0.1, else 1 (the OS picks).
    #[arg(long)]
    pub source_ips: Option<u8>,
}

/// Source addresses connections are bound to, round robin (empty: the OS picks).
static SOURCES: OnceLock<Vec<IpAddr>> = OnceLock::new();
static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

fn set_sources(n: usize, target: SocketAddr) -> anyhow::Result<()> {
    if n <= 1 {
        return Ok(());
    }
    anyhow::ensure!(
        target.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST),
        "--source-ips needs a 127.0.0.1 target"
    );
    let ips = (1..=n as u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let _ = SOURCES.set(ips);
    Ok(())
}

/// Opens a TCP connection to `addr`, from the next source address if
/// `connections` set several.
pub async fn dial(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ips) = SOURCES.get().filter(|v| !v.is_empty()) else {
        return TcpStream::connect(addr).await;
    };
    let ip = ips[NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % ips.len()];
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

pub async fn run(args: ConnectionsArgs, common: &Common) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.conns >= 1 && args.docs >= 1,
        "--conns and --docs must be at least 1"
    );
    anyhow::ensure!(args.conns < (1 << 21), "at most 2^21 connections");
    let target = Target::parse(&args.url, common.allow_remote)?;
    let loopback1 = target.addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST);
    let source_ips = match args.source_ips {
        Some(n) => usize::from(n.max(1)),
        None if args.conns > 20_000 && loopback1 => args.conns.div_ceil(8_000),
        None => 1,
    };
    anyhow::ensure!(source_ips <= 254, "at most 254 source addresses");
    set_sources(source_ips, target.addr)?;
    let prefix = args
        .doc_prefix
        .clone()
        .unwrap_or_else(|| format!("conns-{:08x}", yjs::run_seed()));
    if args.target == SocketTarget::Room {
        anyhow::ensure!(
            args.protocol == Protocol::Roost,
            "--target room needs --protocol roost"
        );
        return rooms::run(&args, common, &target, source_ips, &prefix).await;
    }
    let sample = args.sample.min(args.conns);
    let stride = args.conns.checked_div(sample).unwrap_or(usize::MAX);
    let seed = yjs::run_seed();
    let docs: Vec<String> = (0..args.docs).map(|d| format!("{prefix}-{d}")).collect();
    let paths = crate::ysweet::doc_paths(
        args.protocol,
        &target,
        &docs,
        &args.token,
        true,
        common.allow_remote,
    )
    .await?;
    let specs: Vec<Spec> = (0..args.conns)
        .map(|i| {
            let doc = docs[i % args.docs].clone();
            Spec {
                index: i,
                protocol: args.protocol,
                path: paths[i % args.docs].clone(),
                doc,
                sender: sample > 0 && i % stride == 0 && i / stride < sample,
                pad: 0,
                client_id: yjs::client_id(seed, i),
                token: args.token.clone(),
            }
        })
        .collect();
    let senders = specs.iter().filter(|s| s.sender).count();

    let server = common.server_pid.map(Proc::Pid);
    let rss_before = server.and_then(|p| rss_bytes(p).ok());
    let client_rss_before = rss_bytes(Proc::This).ok();
    let metrics = (args.protocol == Protocol::Roost).then_some(&target);
    let probes = Probes::start(common, metrics).await?;

    let origin = Instant::now();
    let progress = Progress::phase(&format!("opening {} connections", args.conns));
    let t0 = Instant::now();
    let fleet = Fleet::spawn(specs, &target, origin, args.connect_concurrency);
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
    let rss_connected = server.and_then(|p| rss_bytes(p).ok());
    let client_rss_connected = rss_bytes(Proc::This).ok();

    let idle = Progress::phase(&format!("{synced} connections idle for {:?}", args.idle));
    tokio::time::sleep(args.idle).await;
    idle.finish();
    let rss_idle = server.and_then(|p| rss_bytes(p).ok());

    // Wake-up: each sampled sender sends one update plus a sync request.
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
        sample,
        connected: t.connected,
        failed: t.errors.len(),
        synced,
        wall: connect_wall,
    };
    let mut f = connect.figures(&mut report, &args);
    f.latency("connect", &Latency::from_histogram(&t.connect));
    add_rss_figures(&mut f, rss_before, rss_connected, rss_idle, synced);
    if let (Some(b), Some(c)) = (client_rss_before, client_rss_connected) {
        if synced > 0 {
            f.add(
                "client_rss_per_conn_bytes",
                (c as f64 - b as f64) / synced as f64,
                Unit::Bytes,
            );
        }
    }
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

/// `--target room`: idle Roost room sockets.
mod rooms {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use roost_protocol::{ClientFrame, ServerFrame};
    use tokio::sync::{watch, Semaphore};

    use super::ConnectionsArgs;
    use crate::args::Common;
    use crate::probe::Probes;
    use crate::procstat::{rss_bytes, Proc};
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

    /// One room socket: connects, waits for its `history` event, then holds;
    /// on `Wake` a sampled socket calls `who` and counts the answer.
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
                    break;
                }
                if conn.read_more().await? == 0 {
                    anyhow::bail!("server closed the connection before admitting it");
                }
            }
            drop(permit);
            counts.connected.fetch_add(1, Ordering::Relaxed);
            let mut asked = false;
            loop {
                tokio::select! {
                    changed = phase.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let now = *phase.borrow_and_update();
                        match now {
                            Phase::Wake if sampled && !asked => {
                                asked = true;
                                conn.send_text(&ClientFrame::call(WHO_ID, "who", serde_json::json!({}))).await?;
                            }
                            Phase::Stop => break,
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
            let _ = conn.close().await;
            Ok(())
        }
        .await;
        res.err().map(|e| {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            format!("{e:#}")
        })
    }

    pub(super) async fn run(
        args: &ConnectionsArgs,
        common: &Common,
        target: &Target,
        source_ips: usize,
        prefix: &str,
    ) -> anyhow::Result<Report> {
        let sample = args.sample.min(args.conns);
        let stride = args.conns.checked_div(sample).unwrap_or(usize::MAX);
        let server = common.server_pid.map(Proc::Pid);
        let rss_before = server.and_then(|p| rss_bytes(p).ok());
        let probes = Probes::start(common, Some(target)).await?;

        let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
        let counts = Arc::new(Counts::default());
        let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
        let progress = Progress::phase(&format!("opening {} room sockets", args.conns));
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(args.conns);
        for i in 0..args.conns {
            let room = format!("{prefix}-{}", i % args.docs);
            let path = target.path(&format!("/v1/objects/room/{}/ws", encode_segment(&room)));
            let sampled = sample > 0 && i % stride == 0 && i / stride < sample;
            tasks.push(tokio::spawn(client(
                target.clone(),
                path,
                sampled,
                phase_rx.clone(),
                counts.clone(),
                gate.clone(),
            )));
        }
        let deadline = t0 + args.connect_timeout;
        loop {
            let done =
                counts.connected.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed);
            if done >= args.conns || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect_wall = t0.elapsed();
        progress.finish();
        let connected = counts.connected.load(Ordering::Relaxed);
        let rss_connected = server.and_then(|p| rss_bytes(p).ok());

        let idle = Progress::phase(&format!(
            "{connected} room sockets idle for {:?}",
            args.idle
        ));
        tokio::time::sleep(args.idle).await;
        idle.finish();
        let rss_idle = server.and_then(|p| rss_bytes(p).ok());

        let woken = if connected > 0 { sample } else { 0 };
        let w0 = Instant::now();
        let _ = phase_tx.send(Phase::Wake);
        while counts.answered.load(Ordering::Relaxed) < woken && w0.elapsed() < args.wake_timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wake_wait = w0.elapsed();
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
        let connect = super::Connected {
            source_ips,
            sample,
            connected,
            failed: errors.len(),
            synced: connected,
            wall: connect_wall,
        };
        let mut f = connect.figures(&mut report, args);
        super::add_rss_figures(&mut f, rss_before, rss_connected, rss_idle, connected);
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
}

/// How the connecting went, for either target's report.
struct Connected {
    source_ips: usize,
    sample: usize,
    connected: usize,
    failed: usize,
    /// Connections through their first exchange (the rate counts these).
    synced: usize,
    wall: Duration,
}

impl Connected {
    /// Sets the run's shared parameters on `report` and returns the figures
    /// that open the report: counts, connect time and rate.
    fn figures(&self, report: &mut Report, args: &ConnectionsArgs) -> Report {
        report
            .param("conns", args.conns)
            .param("docs", args.docs)
            .param("source_ips", self.source_ips)
            .param("sample", self.sample)
            .param("idle_s", args.idle.as_secs_f64());
        let mut f = Report::new("connections");
        f.add("connected", self.connected as f64, Unit::Count)
            .add("failed", self.failed as f64, Unit::Count)
            .add("connect_wall_s", self.wall.as_secs_f64(), Unit::Seconds)
            .add(
                "connects_per_s",
                self.synced as f64 / self.wall.as_secs_f64().max(1e-9),
                Unit::PerSec,
            );
        f
    }
}

/// Server RSS before connecting, once connected and once idle, and per
/// connection (`n` connections; each figure only when it was measured).
fn add_rss_figures(
    f: &mut Report,
    before: Option<u64>,
    connected: Option<u64>,
    idle: Option<u64>,
    n: usize,
) {
    let (Some(b), Some(c)) = (before, connected) else {
        return;
    };
    let per_conn = |rss: u64| (rss as f64 - b as f64) / n as f64;
    f.add("server_rss_before_bytes", b as f64, Unit::Bytes).add(
        "server_rss_connected_bytes",
        c as f64,
        Unit::Bytes,
    );
    if n > 0 {
        f.add("server_rss_per_conn_bytes", per_conn(c), Unit::Bytes);
    }
    if let Some(i) = idle {
        f.add("server_rss_idle_bytes", i as f64, Unit::Bytes);
        if n > 0 {
            f.add("server_rss_per_conn_idle_bytes", per_conn(i), Unit::Bytes);
        }
    }
}
