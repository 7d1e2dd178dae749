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
//!
//! Every wait is bounded: connecting by `--connect-timeout`, idling by
//! `--idle`, the wake-up by `--wake-timeout`. `documents.rs` and `rooms.rs` run
//! the two targets; this file has the flags, the source addresses, the
//! sample and the figures both report.

mod documents;
mod rooms;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::args::{parse_duration, Common};
use crate::procstat::{rss_bytes, Proc};
use crate::report::{Report, Unit};
use crate::target::Target;
use crate::yjs::{run_seed, Protocol};

/// Which sockets `connections` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SocketTarget {
    /// y-websocket documents (in the layout of `--protocol`).
    Yjs,
    /// Roost's built-in `room` class (`/v1/objects/room/{name}/ws`, JSON envelope).
    Room,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnectionsArgs {
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
pub(crate) async fn dial(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ips) = SOURCES.get().filter(|v| !v.is_empty()) else {
        return TcpStream::connect(addr).await;
    };
    let ip = ips[NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % ips.len()];
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

pub(crate) async fn run(args: ConnectionsArgs, common: &Common) -> anyhow::Result<Report> {
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
        .unwrap_or_else(|| format!("conns-{:08x}", run_seed()));
    if args.target == SocketTarget::Room {
        anyhow::ensure!(
            args.protocol == Protocol::Roost,
            "--target room needs --protocol roost"
        );
        return rooms::run(&args, common, &target, source_ips, &prefix).await;
    }
    documents::run(&args, common, &target, source_ips, &prefix).await
}

/// Which connections are woken: `--sample` of them (at most all), spread
/// evenly: every `stride`-th from the first.
#[derive(Debug, Clone, Copy)]
struct Sample {
    n: usize,
    stride: usize,
}

impl Sample {
    fn new(args: &ConnectionsArgs) -> Sample {
        let n = args.sample.min(args.conns);
        Sample {
            n,
            stride: args.conns.checked_div(n).unwrap_or(usize::MAX),
        }
    }

    /// Whether connection `i` is woken.
    fn picks(self, i: usize) -> bool {
        self.n > 0 && i.is_multiple_of(self.stride) && i / self.stride < self.n
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

/// The server's resident memory before connecting, once connected and
/// once idle (each only when `--server-pid` was given and it could be
/// read).
struct ServerRss {
    server: Option<Proc>,
    before: Option<u64>,
    connected: Option<u64>,
    idle: Option<u64>,
}

impl ServerRss {
    /// Reads the "before" figure now.
    fn start(common: &Common) -> ServerRss {
        let server = common.server_pid.map(Proc::Pid);
        ServerRss {
            server,
            before: read_rss(server),
            connected: None,
            idle: None,
        }
    }

    fn connected_now(&mut self) {
        self.connected = read_rss(self.server);
    }

    fn idle_now(&mut self) {
        self.idle = read_rss(self.server);
    }

    /// Server RSS before connecting, once connected and once idle, and per
    /// connection (`n` connections; each figure only when it was measured).
    fn add_figures(&self, f: &mut Report, n: usize) {
        let (Some(b), Some(c)) = (self.before, self.connected) else {
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
        if let Some(i) = self.idle {
            f.add("server_rss_idle_bytes", i as f64, Unit::Bytes);
            if n > 0 {
                f.add("server_rss_per_conn_idle_bytes", per_conn(i), Unit::Bytes);
            }
        }
    }
}

fn read_rss(server: Option<Proc>) -> Option<u64> {
    server.and_then(|p| rss_bytes(p).ok())
}
