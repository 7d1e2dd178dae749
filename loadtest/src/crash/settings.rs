//! The crash suite's flags, and the `roost serve` command line they make:
//! the settings that make a document's days pass in seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::args::parse_duration;

use super::ADMIN_TOKEN;

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct CrashArgs {
    /// The `roost` binary to start.
    #[arg(long, default_value = "target/debug/roost")]
    pub bin: PathBuf,
    /// Kill -9 cycles to run.
    #[arg(long, default_value_t = 5)]
    pub cycles: u64,
    /// Start no new cycle after this long (the report says how many ran).
    #[arg(long, value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
    /// Shortest time writers run before the kill.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    pub min_run: Duration,
    /// Longest time writers run before the kill.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub max_run: Duration,
    /// Seed of the random run times, delays and edits (printed at the start).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Data directory and logs (default: a new directory under the temp dir,
    /// removed after a run without losses).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the directory even after a run without losses.
    #[arg(long)]
    pub keep: bool,
    /// Counter objects written with `increment`, one writer each.
    #[arg(long, default_value_t = 3)]
    pub counters: usize,
    /// Counter objects written with `increment_later` (alarms), one writer each.
    #[arg(long, default_value_t = 2)]
    pub alarm_counters: usize,
    /// Longest `delay_ms` of an `increment_later`.
    #[arg(long, default_value = "800ms", value_parser = parse_duration)]
    pub alarm_max_delay: Duration,
    /// Plain rooms (a follow-up room is added unless --no-followup).
    #[arg(long, default_value_t = 2)]
    pub rooms: usize,
    /// Writers per room, each its own WebSocket.
    #[arg(long, default_value_t = 2)]
    pub room_clients: usize,
    /// `after_ms` of the follow-up room's alarm-driven message.
    #[arg(long, default_value = "150ms", value_parser = parse_duration)]
    pub followup_after: Duration,
    /// No follow-up room.
    #[arg(long)]
    pub no_followup: bool,
    /// Yjs documents edited by the Node client.
    #[arg(long, default_value_t = 2)]
    pub ydocs: usize,
    /// y-websocket providers per document.
    #[arg(long, default_value_t = 2)]
    pub yjs_clients: usize,
    /// Run without the Node Yjs client.
    #[arg(long)]
    pub no_yjs: bool,
    /// The Node.js executable.
    #[arg(long, default_value = "node")]
    pub node: String,
    /// The y-websocket writer script (needs `npm ci` in its directory).
    #[arg(long, default_value = "tests/node/crash-client.js")]
    pub node_script: PathBuf,
    /// Server: `--idle-timeout`.
    #[arg(long, default_value = "1s")]
    pub idle_timeout: String,
    /// Server: `--ydoc-compact-after` (keep it below --idle-timeout).
    #[arg(long, default_value = "300ms")]
    pub ydoc_compact_after: String,
    /// Server: `--history-retention`.
    #[arg(long, default_value = "2s")]
    pub history_retention: String,
    /// Server: `--ydoc-snapshot-rows`.
    #[arg(long, default_value_t = 16)]
    pub ydoc_snapshot_rows: u64,
    /// Server: `--checkpoint-interval`.
    #[arg(long, default_value = "500ms")]
    pub checkpoint_interval: String,
    /// Server: `--wal-checkpoint-bytes`.
    #[arg(long, default_value_t = 65536)]
    pub wal_checkpoint_bytes: u64,
    /// Further `roost serve` arguments (repeat for each).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Self-test of the checks: delete the data directory before the restart
    /// of this cycle (counted from 1); the run must then fail.
    #[arg(long)]
    pub self_test_wipe: Option<u64>,
    /// Print a progress line every this many cycles.
    #[arg(long, default_value_t = 10)]
    pub progress_every: u64,
}

pub(super) fn server_args(args: &CrashArgs, port: u16, data: &Path) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data".into(),
        data.display().to_string(),
        "--admin-token".into(),
        ADMIN_TOKEN.into(),
        "--idle-timeout".into(),
        args.idle_timeout.clone(),
        "--ydoc-compact-after".into(),
        args.ydoc_compact_after.clone(),
        "--history-retention".into(),
        args.history_retention.clone(),
        "--ydoc-snapshot-rows".into(),
        args.ydoc_snapshot_rows.to_string(),
        "--checkpoint-interval".into(),
        args.checkpoint_interval.clone(),
        "--wal-checkpoint-bytes".into(),
        args.wal_checkpoint_bytes.to_string(),
    ];
    v.extend(args.server_args.iter().cloned());
    v
}
