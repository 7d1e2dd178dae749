//! `trace`: replays a real editing trace (keystroke by keystroke, one Yjs
//! update each, as editor bindings send them) into R documents: per
//! document one writer per agent of the trace and `--readers` readers.
//! Measures keystrokes delivered per second and end-to-end latency (send to
//! receipt, same process), and checks every reader's text against the
//! text of what was sent (the whole trace: its `endContent`). `--verify`
//! only reads the documents back (after a restart, say) and checks them.
//!
//! - `replay.rs`: the trace into per-agent updates, and the text oracle;
//! - `key.rs`: which keystroke a received update is;
//! - `client.rs`: one writer or reader;
//! - `run.rs`: a round and `--find-max`; `check.rs`: the text checks and `--verify`.

mod cache;
mod check;
mod client;
mod key;
mod replay;
mod run;

use std::path::PathBuf;
use std::time::Duration;

use crate::args::{parse_duration, Common};
use crate::report::Report;
use crate::yjs::Protocol;

pub(crate) use run::run_trace;

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TraceArgs {
    /// Server URL: http://HOST:PORT for Roost and y-sweet, ws://HOST:PORT[/prefix] for y-websocket-server or Hocuspocus.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Wire protocol and URL layout of the server.
    #[arg(long, value_enum, default_value = "roost")]
    pub protocol: Protocol,
    /// The trace: a `.json` or `.json.gz` file of the editing-traces formats (sequential or concurrent).
    #[arg(long)]
    pub trace: PathBuf,
    /// Replay only the first N txns of the trace (0: all).
    #[arg(long, default_value_t = 0)]
    pub keystrokes: usize,
    /// Number of documents, each replaying the trace.
    #[arg(long, default_value_t = 1)]
    pub docs: usize,
    /// Readers per document (besides one writer per agent).
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    /// Keystrokes per second of each writer (a document's writers together
    /// send rate × agents, interleaved in trace order); 0: as fast as
    /// --window allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// With --rate 0: most updates of a writer not yet received by its document's first reader.
    #[arg(long, default_value_t = 32)]
    pub window: u32,
    /// Longest sending time (per round with --find-max); the trace may end sooner.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// After sending stops, wait up to this long for the remaining deliveries.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Document name prefix (default: trace-<random>).
    #[arg(long)]
    pub doc_prefix: Option<String>,
    /// Only read the documents `{prefix}-{d}` back and check each holds the
    /// (whole, or --keystrokes) trace's text; sends nothing.
    #[arg(long)]
    pub verify: bool,
    /// Raise --rate (×--step per round) until a round misses its schedule,
    /// delivery or --max-p99; then halve the gap twice.
    #[arg(long)]
    pub find_max: bool,
    /// With --find-max: the largest acceptable p99 latency.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub max_p99: Duration,
    /// With --find-max: rate multiplier between rounds.
    #[arg(long, default_value_t = 2.0)]
    pub step: f64,
    /// With --find-max: most rounds raising the rate.
    #[arg(long, default_value_t = 10)]
    pub max_rounds: usize,
    /// Connecting the clients.
    #[command(flatten)]
    pub connect: crate::fanout::ConnectArgs,
}

pub(crate) async fn run(args: TraceArgs, common: &Common) -> anyhow::Result<Vec<Report>> {
    anyhow::ensure!(
        args.docs >= 1 && args.readers >= 1,
        "--docs and --readers must be at least 1"
    );
    anyhow::ensure!(
        args.rate >= 0.0 && args.rate.is_finite(),
        "--rate must be 0 or positive"
    );
    anyhow::ensure!(args.window >= 1, "--window must be at least 1");
    anyhow::ensure!(!args.find_max || args.step > 1.0, "--step must be above 1");
    anyhow::ensure!(
        !args.find_max || args.rate > 0.0,
        "--find-max starts from a --rate above 0"
    );
    run_trace(args, common).await
}
