//! `crash`: a crash suite that models time. It starts `roost serve` itself
//! (a temporary data directory, a free loopback port) with settings that
//! make a document's days pass in seconds (short history retention,
//! compaction after 300 ms of quiet, eviction after 1 s idle, tiny snapshot
//! and checkpoint intervals), then runs N cycles of:
//!
//! 1. writers at work for a random 0.3–2 s: HTTP `counter.increment`,
//!    `counter.increment_later` (applied by the object's alarm), room
//!    messages over the object WebSocket (one room with an alarm-driven
//!    follow-up), and Yjs edits from the official y-websocket client (a Node
//!    child process that lives through every cycle);
//! 2. `kill -9` of the server in the middle of that traffic; the Yjs
//!    providers are then disconnected until the check is done, so it reads
//!    what the server kept rather than what a provider re-sent;
//! 3. a restart on the same data directory (recovery replays the log);
//! 4. a check of every write acknowledged since the run began (`ledger.rs`).
//!
//! State is kept across cycles, so the same objects and documents go
//! through many compactions, evictions, checkpoints and recoveries. Any
//! loss fails the run, naming the write, and keeps the data directory.
//! Nothing here measures speed.
//!
//! Where things are: `suite.rs` runs the cycles (and states the accounting
//! invariant), `crew.rs` spawns and collects each cycle's writers,
//! `writers.rs` and `yjs_node.rs` are the writers, `ledger.rs` the checks,
//! `server.rs` the process under test, `settings.rs` the flags and the
//! server's settings, `summary.rs` the report.

mod crew;
mod ledger;
mod rng;
mod server;
mod settings;
mod suite;
mod summary;
mod writers;
mod yjs_node;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::args::Common;
use crate::report::Report;
pub(crate) use rng::Rng;
pub(crate) use settings::CrashArgs;
use suite::Suite;

/// The admin token of the server under test (loopback only, for the SQL console).
pub(crate) const ADMIN_TOKEN: &str = "crash-suite-admin";

/// The outcome: the report, and the losses (empty if none).
pub(crate) struct Outcome {
    pub report: Report,
    pub problems: Vec<String>,
}

/// Runs the suite (see the module doc). Losses are returned in the
/// outcome, not as an error: the report is printed either way. Whatever
/// happens, the Node writers are stopped and the server killed before this
/// returns.
pub(crate) async fn run(args: CrashArgs, common: &Common) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.cycles >= 1, "--cycles must be at least 1");
    anyhow::ensure!(args.min_run <= args.max_run, "--min-run exceeds --max-run");
    anyhow::ensure!(
        args.bin.exists(),
        "{} not found (cargo build -p roost, or pass --bin)",
        args.bin.display()
    );
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut suite = Suite::start(args, common, seed).await?;
    let result = suite.run_cycles().await;
    let elapsed = suite.started.elapsed();
    let ydoc_figures = summary::ydoc_history(&suite.target, &suite.names.ydocs).await;
    suite.shut_down().await;
    result?;
    let report = summary::report(&suite, common, elapsed, ydoc_figures);
    summary::outcome(&suite, report)
}
