//! `coldload`: how long a new client takes to fully sync a document that
//! holds U stored updates. `--phase fill` writes the updates (and waits
//! until the server has applied them), `--phase measure` times fresh clients
//! syncing the document; scripts restart the server between the two so the
//! document is loaded from storage (y-sweet: stop it with SIGINT, on which
//! it stores every loaded document). `--phase both` does both without a
//! restart.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::args::{parse_duration, Common};
use crate::progress::Progress;
use crate::report::{latency_histogram, Latency, Report, Unit};
use crate::target::Target;
use crate::ws::{Kind, WsConn};
use crate::yjs::{self, Author, Framer, Incoming, Protocol, Replica};
use crate::ysweet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColdPhase {
    Fill,
    Measure,
    Both,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ColdloadArgs {
    /// Server URL: http://HOST:PORT for Roost and y-sweet, ws://HOST:PORT[/prefix] for y-websocket-server or Hocuspocus.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Wire protocol and URL layout of the server.
    #[arg(long, value_enum, default_value = "roost")]
    pub protocol: Protocol,
    /// Document name (must be the same for the fill and measure phases).
    #[arg(long, default_value = "coldload")]
    pub doc: String,
    /// Updates written in the fill phase (and expected in the measure phase).
    #[arg(long, default_value_t = 10_000)]
    pub updates: usize,
    /// In the fill phase, wait for a sync round trip after this many updates (0: never).
    #[arg(long, default_value_t = 256)]
    pub fill_window: usize,
    /// Which phase to run.
    #[arg(long, value_enum, default_value = "both")]
    pub phase: ColdPhase,
    /// Fresh clients timed in the measure phase, one after another.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Give up on one phase step (the fill, or one client's full sync) after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Hocuspocus: token sent in its auth message. y-sweet: its server token (with `serve --auth`).
    #[arg(long, default_value = "")]
    pub token: String,
}

/// The document's socket path; for y-sweet this runs its token handshake
/// (`create`: also `POST /doc/new`, which would load a stored document, so
/// the measure phase only asks for a token and the load happens on connect).
async fn socket_path(
    args: &ColdloadArgs,
    target: &Target,
    create: bool,
    common: &Common,
) -> anyhow::Result<String> {
    let docs = [args.doc.clone()];
    let mut paths = ysweet::doc_paths(
        args.protocol,
        target,
        &docs,
        &args.token,
        create,
        common.allow_remote,
    )
    .await?;
    paths.pop().context("no socket path")
}

/// Opens a socket to the document and sends the opening messages.
async fn open(
    args: &ColdloadArgs,
    target: &Target,
    path: &str,
    framer: &mut Framer,
    author: &Author,
) -> anyhow::Result<WsConn> {
    let mut conn = WsConn::connect(target, path, &[]).await?;
    if let Some(a) = framer.auth(&args.token) {
        conn.send_binary(a).await?;
    }
    conn.send_binary(framer.step1(&author.state_vector()))
        .await?;
    Ok(conn)
}

/// Waits for the server's step 2; returns its payload. Answers the
/// server's step 1 with our own state.
async fn wait_step2(
    conn: &mut WsConn,
    protocol: Protocol,
    framer: &mut Framer,
    author: &Author,
) -> anyhow::Result<Vec<u8>> {
    loop {
        let mut owe = None;
        let mut got = None;
        {
            let Some(msg) = conn.next_message().await? else {
                bail!("server closed the connection before syncing");
            };
            if msg.kind == Kind::Close {
                bail!("server closed the socket before syncing");
            }
            if msg.kind == Kind::Binary {
                match yjs::classify(protocol, msg.payload)? {
                    Incoming::Step2(u) => got = Some(u.to_vec()),
                    Incoming::Step1(sv) => owe = Some(author.diff(&yjs::decode_state_vector(sv)?)),
                    _ => {}
                }
            }
        }
        if let Some(d) = owe {
            conn.send_binary(framer.step2(&d)).await?;
        }
        if let Some(u) = got {
            return Ok(u);
        }
    }
}

async fn fill(
    args: &ColdloadArgs,
    target: &Target,
    common: &Common,
    report: &mut Report,
) -> anyhow::Result<()> {
    let path = socket_path(args, target, true, common).await?;
    let mut author = Author::new(yjs::client_id(yjs::run_seed(), 0));
    let mut framer = Framer::new(args.protocol, &args.doc);
    let progress = Progress::phase(&format!("writing {} updates to {}", args.updates, args.doc));
    let t0 = Instant::now();
    let mut conn = open(args, target, &path, &mut framer, &author).await?;
    tokio::time::timeout(
        args.timeout,
        wait_step2(&mut conn, args.protocol, &mut framer, &author),
    )
    .await
    .context("initial sync timed out")??;
    for i in 0..args.updates {
        let m = yjs::write_marker(i as u64);
        let update = author.append(std::str::from_utf8(&m).unwrap_or("~"));
        conn.send_binary(framer.update(&update)).await?;
        // Read whatever the server sent meanwhile (echoes, acknowledgements),
        // so it never sees us as a slow reader.
        while conn.try_read_more()? > 0 {
            while let Some(msg) = conn.next_buffered()? {
                if msg.kind == Kind::Close {
                    bail!("server closed the socket during the fill");
                }
            }
        }
        conn.flush_control().await?;
        // Flow control: every `fill_window` updates, wait for a sync round
        // trip so a server with a bounded mailbox is never flooded.
        if args.fill_window > 0 && (i + 1) % args.fill_window == 0 {
            conn.send_binary(framer.step1(&author.state_vector()))
                .await?;
            tokio::time::timeout(
                args.timeout,
                wait_step2(&mut conn, args.protocol, &mut framer, &author),
            )
            .await
            .context("fill window round trip timed out")??;
        }
    }
    // A sync request after the updates: its answer means all were applied.
    conn.send_binary(framer.step1(&author.state_vector()))
        .await?;
    // Its answer comes after every update sent on this socket was handled.
    tokio::time::timeout(
        args.timeout,
        wait_step2(&mut conn, args.protocol, &mut framer, &author),
    )
    .await
    .context("waiting for the server to apply the updates timed out")??;
    let secs = t0.elapsed().as_secs_f64();
    progress.finish();
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    report
        .add("fill_updates", args.updates as f64, Unit::Count)
        .add("fill_s", secs, Unit::Seconds)
        .add(
            "fill_updates_per_s",
            args.updates as f64 / secs,
            Unit::PerSec,
        );
    Ok(())
}

/// Reads until the replica holds `want` markers; returns (first step 2
/// time, complete time, bytes received in sync payloads, markers found).
async fn sync_fully(
    conn: &mut WsConn,
    protocol: Protocol,
    framer: &mut Framer,
    author: &Author,
    want: usize,
    t0: Instant,
) -> anyhow::Result<(Option<Duration>, Duration, usize, usize)> {
    let mut replica = Replica::default();
    let mut first = None;
    let mut bytes = 0;
    loop {
        let mut owe = None;
        let mut applied = false;
        {
            let Some(msg) = conn.next_message().await? else {
                bail!("server closed the connection before the document was complete");
            };
            if msg.kind == Kind::Close {
                bail!("server closed the socket before the document was complete");
            }
            if msg.kind == Kind::Binary {
                match yjs::classify(protocol, msg.payload)? {
                    Incoming::Step2(u) => {
                        first.get_or_insert_with(|| t0.elapsed());
                        bytes += u.len();
                        replica.apply(u)?;
                        applied = true;
                    }
                    Incoming::Update(u) => {
                        bytes += u.len();
                        replica.apply(u)?;
                        applied = true;
                    }
                    Incoming::Step1(sv) => owe = Some(author.diff(&yjs::decode_state_vector(sv)?)),
                    _ => {}
                }
            }
        }
        if let Some(d) = owe {
            conn.send_binary(framer.step2(&d)).await?;
        }
        if applied && first.is_some() {
            let found = yjs::scan_markers(replica.text().as_bytes(), |_| ());
            if found >= want {
                return Ok((first, t0.elapsed(), bytes, found));
            }
        }
    }
}

async fn measure(
    args: &ColdloadArgs,
    target: &Target,
    common: &Common,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Untimed, as a real client would have its token before connecting.
    let path = socket_path(args, target, false, common).await?;
    let mut connect = latency_histogram();
    let mut first_sync = latency_histogram();
    let mut sync = latency_histogram();
    let mut doc_bytes = 0usize;
    let mut markers = 0usize;
    let mut incomplete = 0usize;
    let mut cold = None;
    for s in 0..args.samples.max(1) {
        let progress = Progress::phase(&format!(
            "syncing {} (client {} of {})",
            args.doc,
            s + 1,
            args.samples.max(1)
        ));
        let author = Author::new(yjs::client_id(yjs::run_seed(), 1));
        let mut framer = Framer::new(args.protocol, &args.doc);
        let t0 = Instant::now();
        let mut conn = open(args, target, &path, &mut framer, &author).await?;
        connect.saturating_record(t0.elapsed().as_micros() as u64);
        let res = tokio::time::timeout(
            args.timeout,
            sync_fully(
                &mut conn,
                args.protocol,
                &mut framer,
                &author,
                args.updates,
                t0,
            ),
        )
        .await;
        progress.finish();
        match res {
            Ok(Ok((first, done, bytes, found))) => {
                if let Some(f) = first {
                    first_sync.saturating_record(f.as_micros() as u64);
                }
                sync.saturating_record(done.as_micros() as u64);
                cold.get_or_insert(done);
                doc_bytes = bytes;
                markers = found;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => incomplete += 1,
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    }
    report
        .add("doc_bytes", doc_bytes as f64, Unit::Bytes)
        .add("doc_updates_found", markers as f64, Unit::Count)
        .add("incomplete", incomplete as f64, Unit::Count);
    report.latency("connect", &Latency::from_histogram(&connect));
    report.latency("first_step2", &Latency::from_histogram(&first_sync));
    report.latency("sync", &Latency::from_histogram(&sync));
    // The first client after a restart is the cold one; later ones find the document loaded.
    if let Some(c) = cold {
        report.add("first_client_sync_us", c.as_micros() as f64, Unit::Micros);
    }
    if incomplete > 0 {
        report.note(format!(
            "{incomplete} clients did not see all {} updates within {:?}",
            args.updates, args.timeout
        ));
    }
    Ok(())
}

pub(crate) async fn run(args: ColdloadArgs, common: &Common) -> anyhow::Result<Report> {
    let target = Target::parse(&args.url, common.allow_remote)?;
    let mut report = Report::new("coldload");
    report.label = common.label.clone();
    report
        .param("protocol", args.protocol.name())
        .param("updates", args.updates)
        .param("phase", format!("{:?}", args.phase).to_lowercase());
    if matches!(args.phase, ColdPhase::Fill | ColdPhase::Both) {
        fill(&args, &target, common, &mut report).await?;
    }
    if matches!(args.phase, ColdPhase::Measure | ColdPhase::Both) {
        report.param("samples", args.samples.max(1));
        measure(&args, &target, common, &mut report).await?;
    }
    Ok(report)
}
