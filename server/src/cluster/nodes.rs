//! Node liveness: each node keeps a key in the `roost-nodes` bucket, whose
//! entries expire `node_ttl` after their last write; a node rewrites its
//! own every `node_ttl / 4` and reads the others' on the same beat.
//!
//! Liveness is only a hint for when to try a takeover; safety is the fence
//! in the log. But a node also holds a *lease*: it serves the objects it
//! owns only while its last successful renewal is younger than
//! `node_ttl − margin`. A node that was paused (SIGSTOP, a long GC-like
//! stall, a partition) therefore stops serving before any other node may
//! think it dead, and on waking drops what it owned: someone may have taken
//! it over, and its next append would be fenced anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterConfig};

const BUCKET: &str = "roost-nodes";

/// One live node, as its key says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeInfo {
    /// The node's name.
    pub node: String,
    /// Its process's incarnation (ownership records name it).
    pub incarnation: String,
    /// Its HTTP address.
    pub addr: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
}

pub(super) struct Nodes {
    kv: kv::Store,
    me: NodeInfo,
    ttl: Duration,
    table: Mutex<HashMap<String, NodeInfo>>,
    /// When the lease ends: the last renewal's start plus TTL minus margin.
    lease_until: Mutex<Instant>,
}

pub(super) async fn ensure_bucket(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> anyhow::Result<kv::Store> {
    super::ensure_kv(js, BUCKET, config.node_ttl, config.replicas).await
}

impl Nodes {
    pub(super) fn new(kv: kv::Store, config: &ClusterConfig, incarnation: String) -> Nodes {
        Nodes {
            kv,
            me: NodeInfo {
                node: config.node_id.clone(),
                incarnation,
                addr: config.advertise.clone(),
                started_ms: crate::catalog::now_ms().max(0) as u64,
            },
            ttl: config.node_ttl,
            table: Mutex::new(HashMap::new()),
            lease_until: Mutex::new(Instant::now()),
        }
    }

    pub(super) fn me(&self) -> &NodeInfo {
        &self.me
    }

    fn margin(&self) -> Duration {
        self.ttl / 4
    }

    /// Writes this node's key and reads the table; starts the lease.
    pub(super) async fn register(&self) -> anyhow::Result<()> {
        self.renew()
            .await
            .context("registering this node in NATS")?;
        self.refresh().await;
        Ok(())
    }

    async fn renew(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let value = serde_json::to_vec(&self.me)?;
        tokio::time::timeout(self.ttl / 2, self.kv.put(&self.me.node, value.into()))
            .await
            .context("renewal timed out")??;
        let mut lease = self.lease_until.lock().unwrap_or_else(|p| p.into_inner());
        *lease = started + self.ttl.saturating_sub(self.margin());
        Ok(())
    }

    /// Reads every node's key into the table.
    pub(super) async fn refresh(&self) {
        let Ok(keys) = self.kv.keys().await else {
            return;
        };
        use futures_util::StreamExt as _;
        let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
        let mut table = HashMap::new();
        for key in keys {
            if let Ok(Some(bytes)) = self.kv.get(&key).await {
                if let Ok(info) = serde_json::from_slice::<NodeInfo>(&bytes) {
                    table.insert(info.node.clone(), info);
                }
            }
        }
        table.insert(self.me.node.clone(), self.me.clone());
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// Whether this node may serve what it owns.
    pub(super) fn lease_holds(&self) -> bool {
        Instant::now() < *self.lease_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node with this name and incarnation, if its key is live.
    pub(super) fn live(&self, node: &str, incarnation: &str) -> Option<NodeInfo> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(node)
            .filter(|n| n.incarnation == incarnation)
            .cloned()
    }

    /// Like [`live`](Self::live), but a node missing from the table is
    /// looked up in the bucket first (it may have started since the last
    /// refresh).
    pub(super) async fn check(&self, node: &str, incarnation: &str) -> Option<NodeInfo> {
        if let Some(n) = self.live(node, incarnation) {
            return Some(n);
        }
        let bytes = self.kv.get(node).await.ok()??;
        let info: NodeInfo = serde_json::from_slice(&bytes).ok()?;
        if info.incarnation != incarnation {
            return None;
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.insert(info.node.clone(), info.clone());
        Some(info)
    }

    pub(super) fn snapshot(&self) -> Vec<NodeInfo> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut nodes: Vec<NodeInfo> = table.values().cloned().collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }

    /// Renews and refreshes every `ttl / 4` until the runtime is gone; a
    /// lapsed lease drops every owned object.
    pub(super) async fn run(&self, runtime: crate::runtime::WeakRuntime, cluster: Cluster) {
        let beat = self.ttl / 4;
        loop {
            tokio::time::sleep(beat).await;
            let Some(rt) = runtime.upgrade() else { return };
            if rt.is_shutting_down() {
                return;
            }
            drop(rt);
            // A lapsed lease drops what this node owned before it renews:
            // someone may have taken the objects over meanwhile.
            if !self.lease_holds() {
                let dropped = cluster.drop_all();
                if dropped > 0 {
                    tracing::warn!(dropped, "cluster: this node's lease lapsed (paused or cut off); dropped every owned object");
                }
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(error = %e, "cluster: could not renew this node's liveness");
            }
            self.refresh().await;
            if let Some(rt) = runtime.upgrade() {
                cluster.sweep_alarms(&rt).await;
            }
        }
    }

    /// Resolves once `node` is no longer live (its key expired or it
    /// restarted).
    pub(super) async fn until_gone(&self, node: &NodeInfo) {
        loop {
            tokio::time::sleep(self.ttl / 4).await;
            if self.live(&node.node, &node.incarnation).is_none() {
                return;
            }
        }
    }

    /// Deletes this node's key (a clean shutdown).
    pub(super) async fn deregister(&self) {
        let _ = self.kv.delete(&self.me.node).await;
    }
}
