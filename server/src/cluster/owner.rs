//! Which node owns an object; taking an object over; handing it over.
//!
//! States of an object on a node: *remote* (another live node owns it:
//! forward) → *taking* (this node appends `own` expecting the subject's
//! last sequence, then rebuilds the object's file from the log) → *owned*
//! (its chain appends its batches) → *dropped* (fenced, an append failed,
//! or the lease lapsed: remote again) or *released* (shutdown: a `release`
//! record lets any node take it at once).
//!
//! Architecture Invariant: an object's file is rebuilt from the log —
//! snapshot plus the batches after it, up to this node's own `own` record
//! — every time this node takes it; a local file is never trusted across a
//! takeover (a stale one may hold batches whose appends were refused).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt as _;
use roost_protocol::{ErrorCode, ErrorDetail};
use tokio::sync::mpsc;

use super::log::{run_chain, ClusterLogError, Entry};
use super::nodes::NodeInfo;
use super::Cluster;
use crate::commitlog::record::{decode_segment, Record};
use crate::id::{object_path, ObjectId, ObjectKey};
use crate::runtime::{error, Runtime};

/// An object this node owns.
pub(crate) struct Owned {
    pub(super) chain: mpsc::UnboundedSender<super::log::Queued>,
    /// The subject's sequence of this node's last acknowledged record.
    pub(super) last: AtomicU64,
    /// Batch records since the newest snapshot.
    pub(super) since_snapshot: AtomicU64,
    /// The newest snapshot's name (deleted once a newer one is durable).
    pub(super) snapshot: std::sync::Mutex<Option<String>>,
}

/// Where an object's requests go.
#[derive(Debug)]
pub(crate) enum Route {
    /// This node owns it.
    Local,
    /// Another live node does.
    Remote(NodeInfo),
}

/// One record of an object's log, as read back.
pub(crate) struct LogEntry {
    pub(crate) seq: u64,
    pub(crate) kind: String,
    pub(crate) node: String,
    pub(crate) incarnation: String,
    pub(crate) snapshot: Option<String>,
    pub(crate) payload: bytes::Bytes,
}

/// The newest record of an object's subject.
struct Last {
    seq: u64,
    kind: String,
    node: String,
    inc: String,
}

fn moved(message: impl Into<String>) -> ErrorDetail {
    error(ErrorCode::ObjectMoved, message)
}

impl Cluster {
    /// Where requests for `key` go; takes the object over if no live node
    /// owns it.
    pub(crate) async fn route(
        &self,
        key: &ObjectKey,
        runtime: &Runtime,
    ) -> Result<Route, ErrorDetail> {
        if self.owns(&key.id) {
            return Ok(Route::Local);
        }
        let lock = self.lock(key.id);
        let held = lock.lock().await;
        let route = self.route_locked(key, runtime).await;
        drop(held);
        drop(lock);
        self.unlock(key.id);
        route
    }

    /// `route`, with the object's routing lock held.
    async fn route_locked(&self, key: &ObjectKey, runtime: &Runtime) -> Result<Route, ErrorDetail> {
        for attempt in 0..4 {
            if self.owns(&key.id) {
                return Ok(Route::Local);
            }
            let last = self.last_record(key, attempt > 0).await?;
            if let Some(owner) = self.live_owner(&last).await {
                return Ok(Route::Remote(owner));
            }
            if !self.0.nodes.lease_holds() {
                return Err(moved("this node is not in the cluster right now; retry"));
            }
            let seq = last.as_ref().map_or(0, |l| l.seq);
            match self.take_over(key, seq, runtime).await {
                Ok(()) => return Ok(Route::Local),
                Err(TakeOver::Fenced) => continue,
                Err(TakeOver::Failed(e)) => return Err(e),
            }
        }
        Err(moved("the object's ownership keeps changing; retry"))
    }

    /// The owner named by the last record, if it is a live node other than
    /// this process.
    async fn live_owner(&self, last: &Option<Last>) -> Option<NodeInfo> {
        let last = last.as_ref()?;
        if last.kind == "release" {
            return None;
        }
        let me = self.0.nodes.me();
        if last.node == me.node {
            // This node's own record: ours from this or an earlier process,
            // dropped since. Take it again.
            return None;
        }
        self.0.nodes.check(&last.node, &last.inc).await
    }

    async fn last_record(
        &self,
        key: &ObjectKey,
        from_leader: bool,
    ) -> Result<Option<Last>, ErrorDetail> {
        let (shard, subject) = self.subject_of(&key.class, key.id);
        let stream = &self.0.streams[shard];
        let got = if from_leader {
            stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .map_err(|e| (e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound, e.to_string()))
        } else {
            stream
                .direct_get_last_for_subject(subject.clone())
                .await
                .map_err(|e| {
                    (
                        e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound,
                        e.to_string(),
                    )
                })
        };
        match got {
            Ok(m) => {
                let h = |name: &str| {
                    m.headers
                        .get(name)
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default()
                };
                Ok(Some(Last {
                    seq: m.sequence,
                    kind: h("Roost-Kind"),
                    node: h("Roost-Node"),
                    inc: h("Roost-Inc"),
                }))
            }
            Err((true, _)) => Ok(None),
            Err((false, e)) => Err(moved(format!("cannot read the object's log: {e}; retry"))),
        }
    }

    /// Appends `own` expecting `last`, rebuilds the file, starts the chain.
    async fn take_over(
        &self,
        key: &ObjectKey,
        last: u64,
        runtime: &Runtime,
    ) -> Result<(), TakeOver> {
        stop_local_actor(runtime, key)
            .await
            .map_err(TakeOver::Failed)?;
        let (_, subject) = self.subject_of(&key.class, key.id);
        let own = match self.append(&subject, last, "own", &[], Vec::new()).await {
            Ok(seq) => seq,
            Err(ClusterLogError::Fenced) => return Err(TakeOver::Fenced),
            Err(e) => return Err(TakeOver::Failed(moved(format!("{e}; retry")))),
        };
        let snapshot = match self.rebuild(key, own, runtime).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::error!(error = %e, class = %key.class, id = %key.id, "cluster: rebuilding the object from the log failed");
                return Err(TakeOver::Failed(error(
                    ErrorCode::ObjectBroken,
                    format!("cannot rebuild the object from the log: {e}"),
                )));
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.0.owned.insert(
            key.id,
            Owned {
                chain: tx,
                last: AtomicU64::new(own),
                since_snapshot: AtomicU64::new(0),
                snapshot: std::sync::Mutex::new(snapshot),
            },
        );
        tokio::spawn(run_chain(self.clone(), key.class.clone(), key.id, own, rx));
        self.0
            .metrics
            .cluster_takeovers
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(class = %key.class, id = %key.id, seq = own, "cluster: took the object over");
        Ok(())
    }

    /// Reads the subject up to `upto` and writes the object's file: the
    /// newest snapshot, then the batches after it.
    /// Returns the snapshot's name it started from.
    async fn rebuild(
        &self,
        key: &ObjectKey,
        upto: u64,
        runtime: &Runtime,
    ) -> anyhow::Result<Option<String>> {
        let mut snapshot: Option<String> = None;
        let mut records: Vec<Record> = Vec::new();
        for entry in self.read_log(key, Some(upto)).await? {
            match entry.kind.as_str() {
                "snapshot" => {
                    snapshot = entry.snapshot;
                    records.clear();
                }
                "batch" => {
                    for r in decode_segment(&entry.payload).0 {
                        if r.is_deletion() {
                            snapshot = None;
                            records.clear();
                        } else {
                            records.push(r);
                        }
                    }
                }
                _ => {}
            }
        }
        let path = object_path(&runtime.config().data_dir, &key.class, key.id);
        crate::sys::blocking(|| crate::storage::remove_object_files(&path))?;
        if let Some(name) = &snapshot {
            self.download(name, &path).await?;
        } else if records.is_empty() {
            // A new object (or a deleted one): it starts from nothing.
            return Ok(None);
        }
        let limits = runtime.config().storage.clone();
        let id = key.id;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            if !path.exists() {
                drop(crate::storage::Storage::open(&path, limits)?);
            }
            crate::commitlog::recovery::replay_records(&path, id, &records)?;
            Ok(())
        })
        .await??;
        runtime.catalog().register(key, crate::catalog::now_ms());
        // Its alarm fires here now.
        let path = object_path(&runtime.config().data_dir, &key.class, key.id);
        if let Some(at) = super::alarms::alarm_of_file(&path) {
            runtime.alarms().reindex_lazily(runtime, key, Some(at));
            runtime.alarms().schedule(key, at, 0);
        }
        Ok(snapshot)
    }

    /// Reads the object's log from its start, up to the record at `upto`
    /// (or to its current end).
    pub(crate) async fn read_log(
        &self,
        key: &ObjectKey,
        upto: Option<u64>,
    ) -> anyhow::Result<Vec<LogEntry>> {
        let (shard, subject) = self.subject_of(&key.class, key.id);
        let consumer = self.0.streams[shard]
            .create_consumer(OrderedConfig {
                filter_subject: subject,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut entries = Vec::new();
        loop {
            let wait = if upto.is_some() { 10 } else { 2 };
            let next = tokio::time::timeout(Duration::from_secs(wait), messages.next()).await;
            let m = match next {
                Ok(Some(m)) => m?,
                Ok(None) => anyhow::bail!("the log ended early"),
                Err(_) if upto.is_none() && entries.is_empty() => return Ok(entries),
                Err(_) => anyhow::bail!("reading the log timed out"),
            };
            let (seq, pending) = {
                let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
                (info.stream_sequence, info.pending)
            };
            let h = |name: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            entries.push(LogEntry {
                seq,
                kind: h("Roost-Kind").unwrap_or_default(),
                node: h("Roost-Node").unwrap_or_default(),
                incarnation: h("Roost-Inc").unwrap_or_default(),
                snapshot: h("Roost-Snapshot"),
                payload: m.payload.clone(),
            });
            let done = match upto {
                Some(upto) => seq >= upto,
                None => pending == 0,
            };
            if done {
                return Ok(entries);
            }
        }
    }

    /// Called by a chain after each acknowledged append of `batches`
    /// batch records (0 for other records).
    pub(super) fn appended(&self, id: ObjectId, seq: u64, batches: u64) {
        if let Some(o) = self.0.owned.get(&id) {
            o.last.store(seq, Ordering::Relaxed);
            o.since_snapshot.fetch_add(batches, Ordering::Relaxed);
        }
    }

    /// Whether the object's owner should snapshot it with its next batch.
    pub(crate) fn wants_snapshot(&self, id: &ObjectId) -> bool {
        self.0.owned.get(id).is_some_and(|o| {
            o.since_snapshot.load(Ordering::Relaxed) >= self.0.config.snapshot_every
        })
    }

    /// A snapshot record is durable at `seq`: trims the object's log before
    /// it and deletes the snapshot it replaces.
    pub(super) fn snapshotted(&self, class: &str, id: ObjectId, seq: u64, name: String) {
        let previous = match self.0.owned.get(&id) {
            Some(o) => {
                o.since_snapshot.store(0, Ordering::Relaxed);
                o.snapshot
                    .lock()
                    .map(|mut s| s.replace(name))
                    .unwrap_or(None)
            }
            None => None,
        };
        let (shard, subject) = self.subject_of(class, id);
        let cluster = self.clone();
        tokio::spawn(async move {
            let stream = &cluster.0.streams[shard];
            if let Err(e) = stream.purge().filter(subject).sequence(seq).await {
                tracing::warn!(error = %e, "cluster: trimming an object's log failed");
                return;
            }
            if let Some(old) = previous {
                let _ = cluster.0.snapshots.delete(&old).await;
            }
        });
    }

    /// Drops an object this node can no longer vouch for.
    pub(super) fn lose(&self, id: ObjectId) {
        self.0.owned.remove(&id);
    }

    /// Drops every owned object (the lease lapsed). Returns how many.
    pub(super) fn drop_all(&self) -> usize {
        let n = self.0.owned.len();
        self.0.owned.clear();
        n
    }

    /// Hands every owned object over: a `release` record each, so another
    /// node takes it at once instead of after the TTL. The runtime has
    /// stopped its actors (their batches are appended) before this.
    pub(crate) async fn release_all(&self) {
        let ids: Vec<ObjectId> = self.0.owned.iter().map(|e| *e.key()).collect();
        let mut waits = Vec::new();
        for id in ids {
            if let Ok(wait) = self.queue(id, Entry::Release, None) {
                waits.push(wait);
            }
            self.0.owned.remove(&id);
        }
        let n = waits.len();
        for w in waits {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
        self.0
            .metrics
            .cluster_released
            .fetch_add(n as u64, Ordering::Relaxed);
        self.0.nodes.deregister().await;
        tracing::info!(objects = n, "cluster: handed this node's objects over");
    }
}

enum TakeOver {
    Fenced,
    Failed(ErrorDetail),
}

/// A live actor of an object this node does not own (it lost it) is
/// stopped before its file is rebuilt: poked with a flush, it finds the
/// object is not its own any more and stops.
async fn stop_local_actor(runtime: &Runtime, key: &ObjectKey) -> Result<(), ErrorDetail> {
    for _ in 0..50 {
        if !runtime.is_live(&key.id) {
            return Ok(());
        }
        let _ = runtime.flush_file(key.id).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(moved("the object is still stopping on this node; retry"))
}
