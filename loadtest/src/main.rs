//! `roost-load`: load scenarios against Roost and against peer Yjs servers
//! (y-websocket-server, y-sweet, Hocuspocus). Each scenario is bounded in count and
//! time, shows a progress bar on a terminal, and ends with a human table or
//! one JSON line (`--json`) that includes the generator's own CPU use.
//!
//! This binary only generates load and measures; starting servers and
//! comparing them is done by the scripts in `loadtest/` and `scripts/peers/`.
//! The exception is `crash`, which must kill -9 and restart the server
//! itself, many times per run.

mod args;
mod coldload;
mod connections;
mod crash;
mod durable;
mod fanout;
mod http1;
mod pacing;
mod probe;
mod procstat;
mod progress;
mod promtext;
mod report;
mod rooms;
mod selfcheck;
mod summarize;
mod target;
mod trace;
mod ws;
mod yclient;
mod yjs;
mod ysweet;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::args::{parse_duration, Common};
use crate::report::Report;

#[derive(Parser, Debug)]
#[command(
    name = "roost-load",
    version,
    about = "Load scenarios against Roost and peer Yjs servers"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// counter.increment RPCs over HTTP/1.1 keep-alive: calls/s and latency.
    Durable(durable::DurableArgs),
    /// Yjs updates fanned out to every client of a document: delivered/s and end-to-end latency.
    Fanout(fanout::FanoutArgs),
    /// A real editing trace replayed keystroke by keystroke (one writer per agent, readers check the text).
    Trace(trace::TraceArgs),
    /// N idle WebSockets over M documents: connect time, server RSS per connection, then wake a sample.
    Connections(connections::ConnectionsArgs),
    /// Roost's room class over the object WebSocket: chat messages, history and presence.
    Rooms(rooms::RoomsArgs),
    /// Time for a new client to fully sync a document holding U stored updates.
    Coldload(coldload::ColdloadArgs),
    /// Kill -9 cycles of a Roost it starts itself, under writers of every kind; checks every acknowledged write after each restart.
    Crash(crash::CrashArgs),
    /// How many small frames/s the generator itself can receive and time on one core (no server).
    Selfcheck(selfcheck::SelfcheckArgs),
    /// Medians of repeated runs, from files of `--json` report lines.
    Summarize(summarize::SummarizeArgs),
    /// One target (by label) against the others, with ratios, from `--json` report lines.
    Compare(summarize::CompareArgs),
    /// Print a free TCP port on 127.0.0.1 (for scripts starting servers).
    FreePort,
    /// Wait until a server answers HTTP at the URL (any status), or fail after --timeout.
    WaitReady(WaitReadyArgs),
}

#[derive(clap::Args, Debug)]
struct WaitReadyArgs {
    /// URL to poll (e.g. http://127.0.0.1:8787/healthz).
    #[arg(long)]
    url: String,
    /// Give up after this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    timeout: Duration,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = if cli.common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.common.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roost-load: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roost-load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let common = cli.common;
    let reports: Vec<Report> = match cli.scenario {
        Scenario::Durable(a) => vec![durable::run(a, &common).await?],
        Scenario::Fanout(a) => fanout::run(a, &common).await?,
        Scenario::Trace(a) => trace::run(a, &common).await?,
        Scenario::Connections(a) => vec![connections::run(a, &common).await?],
        Scenario::Rooms(a) => vec![rooms::run(a, &common).await?],
        Scenario::Coldload(a) => vec![coldload::run(a, &common).await?],
        Scenario::Crash(a) => {
            let outcome = crash::run(a, &common).await?;
            if common.json {
                println!("{}", outcome.report.to_json());
            } else {
                print!("{}", outcome.report.to_table());
            }
            if outcome.problems.is_empty() {
                return Ok(());
            }
            for p in &outcome.problems {
                eprintln!("LOST: {p}");
            }
            anyhow::bail!(
                "{} acknowledged-write checks failed",
                outcome.problems.len()
            );
        }
        Scenario::Selfcheck(a) => vec![selfcheck::run(a, &common).await?],
        Scenario::Summarize(a) => {
            print!("{}", summarize::summarize(&a)?);
            return Ok(());
        }
        Scenario::Compare(a) => {
            print!("{}", summarize::compare(&a)?);
            return Ok(());
        }
        Scenario::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            return Ok(());
        }
        Scenario::WaitReady(a) => return wait_ready(&a, &common).await,
    };
    for r in reports {
        if common.json {
            println!("{}", r.to_json());
        } else {
            print!("{}", r.to_table());
        }
    }
    Ok(())
}

/// Polls the URL until any HTTP response arrives, bounded by the timeout.
async fn wait_ready(a: &WaitReadyArgs, common: &Common) -> anyhow::Result<()> {
    let target = target::Target::parse(&a.url, common.allow_remote)?;
    let path = if target.base_path.is_empty() {
        "/".to_string()
    } else {
        target.base_path.clone()
    };
    let deadline = Instant::now() + a.timeout;
    loop {
        if let Ok(mut c) = http1::HttpConn::connect(&target).await {
            if c.get(&path).await.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{} did not answer within {:?}", a.url, a.timeout);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
