//! `roost-load`: load scenarios against Roost and against peer Yjs servers
//! (y-websocket-server, Hocuspocus). Each scenario is bounded in count and
//! time, shows a progress bar on a terminal, and ends with a human table or
//! one JSON line (`--json`) that includes the generator's own CPU use.
//!
//! This binary only generates load and measures; starting servers and
//! comparing them is done by the scripts in `loadtest/` and `scripts/peers/`.

mod args;
mod durable;
mod http1;
mod pacing;
mod probe;
mod procstat;
mod progress;
mod promtext;
mod report;
mod target;
mod ws;
mod yjs;

use clap::{Parser, Subcommand};

use crate::args::Common;
use crate::report::Report;

#[derive(Parser, Debug)]
#[command(name = "roost-load", version, about = "Load scenarios against Roost and peer Yjs servers")]
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = if cli.common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
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
