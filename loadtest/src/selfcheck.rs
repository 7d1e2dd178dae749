//! `selfcheck`: how many small Yjs update frames the generator can receive
//! and time on one core, with no server in the way. An in-process sender
//! (plain threads, blocking sockets) blasts y-websocket update frames with
//! fresh latency markers at the same client code the scenarios use; the
//! report gives frames per second and frames per CPU-second of the thread
//! running the clients.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::args::{parse_duration, Common};
use crate::procstat::{CpuMeter, Proc};
use crate::report::{Latency, Report, Unit};
use crate::target::Target;
use crate::yclient::{self, Fleet, Spec};
use crate::yjs::{self, Author, Framer, Protocol};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SelfcheckArgs {
    /// Connections receiving frames.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// How long to receive.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Frames written per socket write by the sender.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
}

/// The handshake answer for roost-load's fixed key.
const UPGRADE_RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// An unmasked server frame.
fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x82];
    if payload.len() < 126 {
        v.push(payload.len() as u8);
    } else {
        v.push(126);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn accept_one(listener: &TcpListener) -> std::io::Result<TcpStream> {
    let (mut s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Err(std::io::Error::other("bad handshake"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    s.write_all(UPGRADE_RESPONSE)?;
    // Answer the client's step 1 with an empty step 2 so it counts as synced.
    let mut f = Framer::new(Protocol::YWebsocket, "");
    s.write_all(&server_frame(f.step2(&[0, 0])))?;
    Ok(s)
}

pub(crate) async fn run(args: SelfcheckArgs, common: &Common) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.conns >= 1 && args.batch >= 1,
        "--conns and --batch must be at least 1"
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let frame = MarkedFrame::new()?;
    let frame_len = frame.bytes.len();
    let sender = spawn_sender(listener, frame, &args, origin, stop.clone());

    let target = Target::parse(&format!("ws://{addr}"), false)?;
    let specs = (0..args.conns)
        .map(|i| Spec {
            index: i,
            protocol: Protocol::YWebsocket,
            doc: "selfcheck".into(),
            path: "/selfcheck".into(),
            sender: false,
            pad: 0,
            workload: crate::yclient::Workload::Append,
            first: None,
            client_id: yjs::client_id(2, i),
            token: String::new(),
        })
        .collect();
    let fleet = Fleet::spawn(specs, &target, origin, 64);
    let synced = fleet.wait_synced(Duration::from_secs(10)).await;
    anyhow::ensure!(
        synced == args.conns,
        "only {synced} of {} self-check connections synced",
        args.conns
    );
    let m = measure(&fleet, args.duration).await?;
    stop.store(true, Ordering::Relaxed);
    let results = fleet.finish().await;
    let written = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    let t = yclient::totals(&results);

    let mut r = Report::new("selfcheck");
    r.label = common.label.clone();
    r.param("conns", args.conns)
        .param("batch", args.batch)
        .param("threads", common.threads);
    r.add("frame_bytes", frame_len as f64, Unit::Bytes)
        .add("frames_received", m.received as f64, Unit::Count)
        .add("frames_per_s", m.received as f64 / m.wall, Unit::PerSec)
        .add("client_thread_cpu_pct", m.thread_pct, Unit::Percent)
        .add("process_cpu_pct", m.process_pct, Unit::Percent)
        .add(
            "frames_per_cpu_s",
            if m.thread_s > 0.0 {
                m.received as f64 / m.thread_s
            } else {
                f64::NAN
            },
            Unit::PerSec,
        )
        .add("frames_written", written as f64, Unit::Count);
    r.latency("latency", &Latency::from_histogram(&t.latency));
    if common.threads > 1 {
        r.note("with --threads > 1 the clients run on several threads: client_thread_cpu_pct covers only one");
    }
    r.note("frames_per_cpu_s = frames received per CPU-second of the thread running every client: the one-core capacity");
    Ok(r)
}

/// One server frame carrying a Yjs update whose latency marker sits at
/// `at`: its 16 hex digits are patched per batch.
struct MarkedFrame {
    bytes: Vec<u8>,
    at: usize,
}

impl MarkedFrame {
    fn new() -> anyhow::Result<MarkedFrame> {
        let mut author = Author::new(yjs::client_id(1, 0x1f_ffff));
        let marker = yjs::write_marker(yclient::marker_value(0xff_ffff, 0));
        let update = author.append(std::str::from_utf8(&marker).unwrap_or("~"));
        let bytes = server_frame(Framer::new(Protocol::YWebsocket, "").update(&update));
        let at = bytes
            .windows(yjs::MARKER_LEN)
            .position(|w| w == marker)
            .context("marker not found in the frame")?;
        Ok(MarkedFrame { bytes, at })
    }
}

/// The sender thread: accepts `--conns` connections, then until `stop`
/// writes `--batch` frames stamped with the current time to each in turn;
/// returns the frames written (it ends early, without error, when a
/// client goes away).
fn spawn_sender(
    listener: TcpListener,
    frame: MarkedFrame,
    args: &SelfcheckArgs,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<std::io::Result<u64>> {
    let (conns, batch) = (args.conns, args.batch);
    std::thread::spawn(move || -> std::io::Result<u64> {
        let mut socks = Vec::with_capacity(conns);
        for _ in 0..conns {
            socks.push(accept_one(&listener)?);
        }
        let MarkedFrame { bytes: frame, at } = frame;
        let mut buf = Vec::with_capacity(frame.len() * batch);
        let mut written = 0u64;
        while !stop.load(Ordering::Relaxed) {
            buf.clear();
            let v = yclient::marker_value(0xff_ffff, origin.elapsed().as_micros() as u64);
            let m = yjs::write_marker(v);
            for _ in 0..batch {
                let start = buf.len();
                buf.extend_from_slice(&frame);
                buf[start + at..start + at + yjs::MARKER_LEN].copy_from_slice(&m);
            }
            for s in &mut socks {
                if s.write_all(&buf).is_err() {
                    return Ok(written);
                }
                written += batch as u64;
            }
        }
        Ok(written)
    })
}

/// What the clients received over the measured window, and the CPU used.
struct Measured {
    received: u64,
    wall: f64,
    /// CPU seconds and percent of the thread running the clients.
    thread_s: f64,
    thread_pct: f64,
    process_pct: f64,
}

/// Counts the frames received over `duration`, with the CPU time of this
/// thread (which runs every client with `--threads 1`) and the process.
async fn measure(fleet: &Fleet, duration: Duration) -> anyhow::Result<Measured> {
    let thread_cpu = CpuMeter::start(Proc::ThisThread)?;
    let process_cpu = CpuMeter::start(Proc::This)?;
    let d0 = fleet.shared.delivered.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    let received = fleet.shared.delivered.load(Ordering::Relaxed) - d0;
    let wall = t0.elapsed().as_secs_f64();
    let (thread_s, thread_pct) = thread_cpu.read()?;
    let (_, process_pct) = process_cpu.read()?;
    Ok(Measured {
        received,
        wall,
        thread_s,
        thread_pct,
        process_pct,
    })
}
