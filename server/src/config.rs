//! Server configuration: every limit and tuning knob, with its default. The
//! CLI fills it from flags and `ROOST_*` variables; embedders build it in code.

use std::path::PathBuf;
use std::time::Duration;

use crate::commitlog::LogConfig;
use crate::runtime::AlarmConfig;
use crate::sockets::SocketLimits;
use crate::storage::inspect::ConsoleLimits;
use crate::storage::{FaultHook, StorageLimits};

/// How a batch is made durable before its replies leave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Appended to the shared commit log (one `fdatasync` for many objects'
    /// batches), checkpointed into the object files later, replayed after a
    /// crash.
    #[default]
    Log,
    /// Committed and fsynced in the object's own file, batch by batch; the
    /// commit log carries nothing but deletion marks. Slow and simple: the
    /// oracle the log mode is tested against.
    File,
}

/// Everything the server is configured with: the CLI fills it from
/// `roost serve`'s flags, embedders build it in code.
#[derive(Clone)]
pub struct Config {
    /// Where object files, the catalog and the commit log live.
    pub data_dir: PathBuf,
    /// An object with no event for this long is evicted from memory.
    pub idle_timeout: Duration,
    /// Commands an object may have queued before callers get `overloaded`.
    pub mailbox_depth: usize,
    /// Most events run in one batch (one commit).
    pub max_batch: usize,
    /// How long an object's batches may wait, durable in the commit log, in
    /// an open transaction before it is committed to the object's file
    /// (zero: each batch commits on its own).
    pub file_commit_interval: Duration,
    /// Largest HTTP request body.
    pub max_body_bytes: usize,
    /// Size limits of every object's storage (`--max-key-bytes`,
    /// `--max-value-bytes`, `--max-db-bytes`, `--object-cache-bytes`,
    /// `--wal-checkpoint-bytes`).
    pub storage: StorageLimits,
    /// Limits of object WebSockets (`--max-frame-bytes`,
    /// `--max-socket-queue-bytes`, `--max-sockets-per-object`, the awareness and
    /// rate limits, `--socket-ping-interval`).
    pub sockets: SocketLimits,
    /// How failed alarm handlers are retried (no flag; 2s doubling, 6 retries).
    pub alarms: AlarmConfig,
    /// Limits and compaction of Yjs documents (`--max-doc-bytes`,
    /// `--max-update-bytes`, `--history-retention`, `--ydoc-snapshot-rows`,
    /// `--ydoc-compact-after`).
    pub ydoc: crate::classes::ydoc::YdocConfig,
    /// Token verification and the admin token (`--auth-secret`,
    /// `--auth-secret-file`, `--admin-token`); the default lets anyone in.
    pub auth: crate::auth::Auth,
    /// Most open TCP connections (sockets included) from one client IP address, counted at accept (`http::serve`).
    pub max_connections_per_ip: usize,
    /// The global TCP connection cap and the header-read timeout
    /// (`http::serve`); the per-IP cap is `max_connections_per_ip`.
    pub connections: crate::http::serve::ConnLimits,
    /// Tuning of the shared commit log (`--checkpoint-interval`).
    pub log: LogConfig,
    /// How long a graceful shutdown (SIGTERM) waits for objects to finish
    /// what is queued and for sockets to close before it exits anyway.
    pub drain_timeout: Duration,
    /// Serve `/metrics` without a token on this address too.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How batches are made durable (`--durability`, default `log`).
    pub durability: Durability,
    /// The admin SQL console's time and byte budgets.
    pub admin_sql: ConsoleLimits,
    /// Origins (`scheme://host[:port]`, or `*`) whose pages may call the
    /// HTTP API (CORS) and open WebSockets; empty: same-origin only.
    pub cors_origins: Vec<String>,
    /// How long an object stays evicted before its WAL is folded into its
    /// database and removed (`storage::tidy`); zero: never.
    pub tidy_after: Duration,
    /// Most objects (files) the server holds; creating one more is refused
    /// (507 `insufficient_storage`).
    pub max_objects: u64,
    /// Cluster mode (`--cluster`); `None` runs a single node.
    pub cluster: Option<ClusterConfig>,
    /// Test hook: make commits fail (see `storage::FaultHook`).
    pub fault: Option<FaultHook>,
    /// The change feed and its webhook (`--feed`, `--webhook`).
    pub feed: crate::feed::FeedConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./roost-data"),
            idle_timeout: Duration::from_secs(10),
            mailbox_depth: 1024,
            max_batch: 256,
            file_commit_interval: Duration::from_millis(50),
            max_body_bytes: 1024 * 1024,
            storage: StorageLimits::default(),
            sockets: SocketLimits::default(),
            alarms: AlarmConfig::default(),
            ydoc: crate::classes::ydoc::YdocConfig::default(),
            auth: crate::auth::Auth::default(),
            max_connections_per_ip: 10_000,
            connections: crate::http::serve::ConnLimits::default(),
            log: LogConfig::default(),
            drain_timeout: Duration::from_secs(10),
            metrics_listen: None,
            durability: Durability::Log,
            admin_sql: ConsoleLimits::default(),
            cors_origins: Vec::new(),
            max_objects: 1_000_000,
            tidy_after: Duration::from_secs(60),
            cluster: None,
            fault: None,
            feed: crate::feed::FeedConfig::default(),
        }
    }
}

/// Settings of cluster mode.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`).
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// The HTTP address other nodes reach this one at (`host:port`).
    pub advertise: String,
    /// How long a silent node stays owner of its objects.
    pub node_ttl: Duration,
    /// Log streams objects are spread over.
    pub shards: u32,
    /// JetStream replicas of the streams and buckets (3 survives one loss).
    pub replicas: usize,
    /// Batch records after which the owner snapshots an object and trims
    /// its log (bounds what a takeover replays).
    pub snapshot_every: u64,
    /// Monitoring URLs (`http://host:8222`) to check `sync_interval: always`.
    pub monitor_urls: Vec<String>,
}

/// Parses a duration flag (`250ms`, `10s`, `5m`, `1h`, `2d`, or seconds):
/// `roost_protocol::duration`, shared with the load tester.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    roost_protocol::duration::parse(text)
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("durability", &self.durability)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5q").is_err());
    }
}
