//! `roost serve`'s cluster flags (`--cluster` and what goes with it).

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{parse_duration, ClusterConfig};

/// Cluster mode: several nodes behave as one server on NATS JetStream.
#[derive(clap::Args, Debug, Default)]
pub struct ClusterArgs {
    /// Run as one node of a cluster on these NATS JetStream servers
    /// (comma-separated `nats://host:port`; NATS 2.11 or newer, each with
    /// `jetstream { sync_interval: always }`). Without it, Roost is a single
    /// node with its own embedded storage.
    #[arg(long, env = "ROOST_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name, unique in the cluster (default: the host name and
    /// listen port).
    #[arg(long, env = "ROOST_NODE_ID", requires = "cluster")]
    pub node_id: Option<String>,
    /// The `host:port` other nodes reach this node's HTTP listener at
    /// (default: --listen, which then must not be a wildcard address).
    #[arg(long, env = "ROOST_CLUSTER_ADVERTISE", requires = "cluster")]
    pub cluster_advertise: Option<String>,
    /// The NATS servers' monitoring URLs (`http://host:8222`, comma-separated),
    /// read at start to refuse servers that do not fsync every write.
    #[arg(
        long,
        env = "ROOST_CLUSTER_MONITOR",
        value_delimiter = ',',
        requires = "cluster"
    )]
    pub cluster_monitor: Vec<String>,
    /// Start without checking `sync_interval: always` (no monitoring URLs to
    /// read). Lazy fsync on the NATS servers can lose acknowledged writes.
    #[arg(long, env = "ROOST_CLUSTER_SKIP_SYNC_CHECK", requires = "cluster")]
    pub cluster_skip_sync_check: bool,
    /// How long a node that stopped renewing its liveness keeps its objects
    /// before another node takes them over (crash failover takes about this
    /// long; a paused node stops serving after 3/4 of it).
    #[arg(long, env = "ROOST_CLUSTER_NODE_TTL", default_value = "3s", value_parser = parse_duration, requires = "cluster")]
    pub cluster_node_ttl: Duration,
    /// Log streams objects are spread over (their leaders spread over the
    /// NATS servers; about one per server does best: appends to one stream
    /// share its fsyncs). Fixed for the life of a cluster.
    #[arg(long, env = "ROOST_CLUSTER_SHARDS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=256), requires = "cluster")]
    pub cluster_shards: u32,
    /// Batch records after which an object's owner stores a snapshot of its
    /// file and trims the object's log before it (bounds what a takeover
    /// replays).
    #[arg(long, env = "ROOST_CLUSTER_SNAPSHOT_EVERY", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..), requires = "cluster")]
    pub cluster_snapshot_every: u64,
    /// JetStream replicas of every stream and bucket (3 survives the loss of
    /// any one NATS server; 1 for a single test server).
    #[arg(long, env = "ROOST_CLUSTER_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5), requires = "cluster")]
    pub cluster_replicas: u8,
}

impl ClusterArgs {
    /// The cluster settings, or `None` without `--cluster`.
    pub fn config(&self, listen: SocketAddr) -> Result<Option<ClusterConfig>, String> {
        if self.cluster.is_empty() {
            return Ok(None);
        }
        if self.cluster_monitor.is_empty() && !self.cluster_skip_sync_check {
            return Err("--cluster needs --cluster-monitor (the NATS servers' monitoring URLs, to check they fsync every write), or --cluster-skip-sync-check".into());
        }
        let advertise = match &self.cluster_advertise {
            Some(a) => a.clone(),
            None if listen.ip().is_unspecified() => {
                return Err(format!("--listen {listen} is a wildcard address: say where other nodes reach this one with --cluster-advertise host:port"));
            }
            None => listen.to_string(),
        };
        let node_id = self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), listen.port())
        });
        if node_id.is_empty()
            || !node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "--node-id {node_id:?}: use letters, digits, - and _"
            ));
        }
        Ok(Some(ClusterConfig {
            urls: self.cluster.clone(),
            node_id,
            advertise,
            node_ttl: self.cluster_node_ttl.max(Duration::from_millis(500)),
            shards: self.cluster_shards,
            replicas: usize::from(self.cluster_replicas),
            snapshot_every: self.cluster_snapshot_every,
            monitor_urls: self.cluster_monitor.clone(),
        }))
    }
}
