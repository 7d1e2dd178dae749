//! Cluster mode (`roost serve --cluster`): several nodes behave as one
//! server on NATS JetStream. See docs/CLUSTER.md for the promise.
//!
//! - this file: [`ClusterConfig`], [`Cluster`] (the handle the runtime and
//!   the HTTP edge hold), connecting and checking the NATS servers, the
//!   JetStream streams and buckets;
//! - `nodes.rs`: this node's liveness key, the table of live nodes, and the
//!   lease that makes a paused node stop serving before others take over;
//! - `log.rs`: the replicated log — each object's records appended to its
//!   subject, each append fenced on the previous record's sequence;
//! - `owner.rs`: which node owns an object, taking one over (fenced) and
//!   rebuilding its file from the log, handing objects over on shutdown;
//! - `snapshot.rs`: an object's file as of a `seq`, in the Object Store;
//! - `alarms.rs`: the cluster-wide alarm index, swept by every node;
//! - `forward.rs`: HTTP requests for objects owned elsewhere go to the
//!   owner; `relay.rs`: so do WebSockets, and outlive the owner;
//! - `resume.rs`: a relayed object socket's signed state, kept by the relay
//!   and resumed on the next owner when the owner dies.
//!
//! Unlike a single node, cluster mode keeps an object that was only ever
//! read (`runtime/unwritten.rs` removes none here): its creation put its
//! file in the replicated log (`lifecycle::start`'s snapshot), which a
//! local removal would not undo and another node would rebuild from; a
//! removal would need a fenced deletion in that log.
//!
//! Architecture Invariant (one acknowledging writer): a node releases a
//! batch's outputs only after JetStream acknowledged its record appended
//! with `Nats-Expected-Last-Subject-Sequence` = the previous record it saw.
//! A node that took the object over appended in between, so a deposed
//! owner's append is refused: it drops the object, never acknowledges.

mod alarms;
mod forward;
mod log;
mod nodes;
mod owner;
mod relay;
mod resume;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use dashmap::DashMap;

pub(crate) use crate::config::ClusterConfig;
use crate::id::ObjectId;
pub(crate) use forward::route_layer;
pub(crate) use nodes::NodeInfo;
use owner::Owned;
pub(crate) use owner::Route;
pub(crate) use resume::{DATA as RELAY_DATA, RELAY, RESUME};

/// The oldest NATS server cluster mode accepts (per-key TTLs, markers).
const MIN_SERVER: (u64, u64) = (2, 11);

/// The cluster handle. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cluster(Arc<Inner>);

struct Inner {
    config: ClusterConfig,
    /// Tells this process's ownership records from an earlier run's.
    incarnation: String,
    js: jetstream::Context,
    streams: Vec<jetstream::stream::Stream>,
    nodes: nodes::Nodes,
    snapshots: jetstream::object_store::ObjectStore,
    /// Every object's next alarm (`alarms.rs`).
    alarms: jetstream::kv::Store,
    /// Objects this node owns, with their log position.
    owned: DashMap<ObjectId, Owned>,
    /// One at a time per object: takeovers and appends.
    locks: DashMap<ObjectId, Arc<tokio::sync::Mutex<()>>>,
    metrics: Arc<crate::metrics::Metrics>,
    http: forward::HttpClient,
    /// Signs relayed sockets' states (`resume.rs`), the same on every node.
    relay_key: Vec<u8>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.0.config.node_id)
            .field("owned", &self.0.owned.len())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS, checks the servers, makes sure the streams and
    /// buckets exist, and registers this node as live.
    pub(crate) async fn connect(
        config: ClusterConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Cluster> {
        let addrs = config
            .urls
            .iter()
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("--cluster {}: not NATS URLs", config.urls.join(",")))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("roost-{}", config.node_id))
            .retry_on_initial_connect()
            .connect(addrs)
            .await
            .with_context(|| format!("connecting to NATS at {}", config.urls.join(",")))?;
        wait_for_info(&client).await?;
        check_version(&client.server_info().version)?;
        check_sync(&config.monitor_urls).await?;
        let js = jetstream::new(client);
        // A stream without a leader (a NATS server just died) answers
        // after its election: retry for a while.
        let streams = patiently(|| log::ensure_streams(&js, &config)).await?;
        let nodes_kv = patiently(|| nodes::ensure_bucket(&js, &config)).await?;
        let snapshots = patiently(|| snapshot::ensure_store(&js, &config)).await?;
        let alarms = patiently(|| alarms::ensure_bucket(&js, &config)).await?;
        let relay_key = patiently(|| resume::relay_key(&js, &config)).await?;
        let incarnation = format!("{:016x}", rand_u64());
        let nodes = nodes::Nodes::new(nodes_kv, &config, incarnation.clone());
        let cluster = Cluster(Arc::new(Inner {
            incarnation,
            js,
            streams,
            nodes,
            snapshots,
            alarms,
            owned: DashMap::new(),
            locks: DashMap::new(),
            metrics,
            http: forward::HttpClient::new(),
            relay_key,
            config,
        }));
        patiently(|| cluster.0.nodes.register()).await?;
        Ok(cluster)
    }

    /// This node's name.
    pub(crate) fn node_id(&self) -> &str {
        &self.0.config.node_id
    }

    /// Whether this node owns the object now (and its lease holds).
    pub(crate) fn owns(&self, id: &ObjectId) -> bool {
        self.0.nodes.lease_holds() && self.0.owned.contains_key(id)
    }

    /// Objects this node owns.
    pub(crate) fn owned_count(&self) -> usize {
        self.0.owned.len()
    }

    /// The live nodes, this one included.
    /// Read afresh from the liveness bucket (the table is otherwise
    /// refreshed every TTL/4).
    pub(crate) async fn nodes(&self) -> Vec<NodeInfo> {
        self.0.nodes.refresh().await;
        self.0.nodes.snapshot()
    }

    /// Resolves once `node` is no longer live.
    pub(crate) async fn until_gone(&self, node: &NodeInfo) {
        self.0.nodes.until_gone(node).await;
    }

    fn lock(&self, id: ObjectId) -> Arc<tokio::sync::Mutex<()>> {
        self.0.locks.entry(id).or_default().clone()
    }

    /// Forgets an object's routing lock once nobody holds or waits for it
    /// (the map would otherwise keep one per object ever routed).
    fn unlock(&self, id: ObjectId) {
        self.0
            .locks
            .remove_if(&id, |_, l| Arc::strong_count(l) == 1);
    }

    /// Starts the liveness loop; it runs until `stop` resolves.
    pub(crate) fn spawn_heartbeat(&self, runtime: crate::runtime::WeakRuntime) {
        let cluster = self.clone();
        tokio::spawn(async move { cluster.0.nodes.run(runtime, cluster.clone()).await });
    }
}

/// The KV bucket `name` (history 1, entries expiring after `max_age`
/// unless zero, `replicas` copies), created if missing.
async fn ensure_kv(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> anyhow::Result<jetstream::kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(jetstream::kv::Config {
        bucket: name.into(),
        history: 1,
        max_age,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the {name} bucket"))
}

/// Runs `step` until it succeeds or 30 s passed (then its last error).
async fn patiently<T, F, Fut>(mut step: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = std::time::Instant::now();
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() > Duration::from_secs(30) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: NATS is not ready yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn wait_for_info(client: &async_nats::Client) -> anyhow::Result<()> {
    for _ in 0..100 {
        if client.connection_state() == async_nats::connection::State::Connected
            && !client.server_info().version.is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no NATS server answered within 10 s")
}

/// Refuses servers older than [`MIN_SERVER`].
fn check_version(version: &str) -> anyhow::Result<()> {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if (major, minor) < MIN_SERVER {
        bail!(
            "NATS server {version} is too old for cluster mode: it needs {}.{} or newer \
             (per-key TTLs; Debian's nats-server 2.9 is not enough — see scripts/install-nats.sh)",
            MIN_SERVER.0,
            MIN_SERVER.1
        );
    }
    Ok(())
}

/// With monitoring URLs given, refuses servers that do not fsync every
/// write (`jetstream { sync_interval: always }`): with JetStream's default
/// lazy fsync an acknowledged write can be lost.
/// Servers that cannot be reached now are skipped (a restart while one NATS
/// server is down), but at least one must answer.
async fn check_sync(monitors: &[String]) -> anyhow::Result<()> {
    let mut reached = 0;
    for url in monitors {
        let varz = match forward::get_json(&format!("{}/varz", url.trim_end_matches('/'))).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%url, error = %e, "cluster: cannot read a NATS server's /varz; not checked");
                continue;
            }
        };
        reached += 1;
        let config = &varz["jetstream"]["config"];
        if config["sync_always"].as_bool() != Some(true) {
            bail!(
                "the NATS server at {url} does not fsync every write: set \
                 `jetstream {{ sync_interval: always }}` in its configuration \
                 (lazy fsync can lose acknowledged writes)"
            );
        }
    }
    if reached == 0 && !monitors.is_empty() {
        bail!(
            "no NATS monitoring endpoint answered ({}): cannot check that the servers fsync every write",
            monitors.join(",")
        );
    }
    Ok(())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_servers_are_refused() {
        assert!(check_version("2.9.10").is_err());
        assert!(check_version("2.10.22").is_err());
        assert!(check_version("2.11.0").is_ok());
        assert!(check_version("2.15.1").is_ok());
        assert!(check_version("v3.0.0-beta").is_ok());
        assert!(check_version("").is_err());
    }
}
