//! The replicated log: JetStream streams `roost-log-{n}`, an object's
//! records on subject `roost.obj.{class}.{id}` of stream `hash(id) % shards`.
//!
//! Records carry headers: `Roost-Kind` (`own`, `batch`, `snapshot`,
//! `release`), `Roost-Node` and `Roost-Inc` (who appended). A `batch`
//! payload is [`SEGMENT_MAGIC`] then framed commit-log records (one or more
//! batches, or a deletion mark) — the same bytes as the local log.
//!
//! Each owned object has a *chain*: a task that appends the object's
//! records one message at a time, each expecting the subject's previous
//! sequence (`Nats-Expected-Last-Subject-Sequence`), batches that queued
//! meanwhile joined in one message. A retry after a timeout or a leader
//! election reuses the message id (`Nats-Msg-Id`), so JetStream stores it
//! once. A refused append (wrong last sequence) means another node took
//! the object: the chain fails that record and every later one and the
//! node drops the object. Any other failure past the retry deadline also
//! drops it: its records' fate is unknown, so only the log is trusted.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use tokio::sync::{mpsc, oneshot};

use super::{Cluster, ClusterConfig};
use crate::commitlog::record::{Record, SEGMENT_MAGIC};
use crate::commitlog::{LogError, Then, ThenGuard};
use crate::id::ObjectId;

/// How long a chain retries an append that timed out or found no leader
/// (a stream leader election takes 5–9 s).
const RETRY_FOR: Duration = Duration::from_secs(20);
/// Most bytes of batches joined in one message.
const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// Why an append failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ClusterLogError {
    /// Another node appended first.
    #[error("another node took the object over")]
    Fenced,
    /// JetStream did not take the record in time.
    #[error("the replicated log did not take the record: {0}")]
    Unavailable(String),
}

/// What a chain appends.
pub(super) enum Entry {
    /// A batch or a deletion mark.
    Batch(Record),
    /// The object's file as of `seq`, stored under `name`.
    Snapshot { seq: u64, name: String },
    /// Handing the object over (shutdown): any node may take it at once.
    Release,
}

pub(super) struct Queued {
    pub entry: Entry,
    pub then: ThenGuard,
    pub done: oneshot::Sender<Result<(), LogError>>,
}

pub(super) fn subject(class: &str, id: ObjectId) -> String {
    format!("roost.obj.{class}.{id}")
}

pub(super) fn shard_of(id: ObjectId, shards: usize) -> usize {
    let n = u32::from_le_bytes([id.0[4], id.0[5], id.0[6], id.0[7]]) as usize;
    n % shards.max(1)
}

pub(super) async fn ensure_streams(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> anyhow::Result<Vec<jetstream::stream::Stream>> {
    let mut streams = Vec::new();
    for n in 0..config.shards {
        let name = format!("roost-log-{n}");
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("roost.s{n}.obj.>")],
                num_replicas: config.replicas,
                storage: jetstream::stream::StorageType::File,
                allow_direct: true,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating stream {name}: {e}"))?;
        streams.push(stream);
    }
    Ok(streams)
}

impl Cluster {
    /// The subject of an object, within its shard's stream.
    pub(super) fn subject_of(&self, class: &str, id: ObjectId) -> (usize, String) {
        let shard = shard_of(id, self.0.streams.len());
        (
            shard,
            format!(
                "roost.s{shard}.{}",
                subject(class, id).trim_start_matches("roost.")
            ),
        )
    }

    /// Queues a record on the object's chain: `then` runs, and the receiver
    /// resolves, once JetStream acknowledged it (or it failed).
    pub(crate) fn submit(
        &self,
        record: Record,
        then: Option<Then>,
    ) -> Result<oneshot::Receiver<Result<(), LogError>>, LogError> {
        let id = record.id;
        self.queue(id, Entry::Batch(record), then)
    }

    pub(super) fn queue(
        &self,
        id: ObjectId,
        entry: Entry,
        then: Option<Then>,
    ) -> Result<oneshot::Receiver<Result<(), LogError>>, LogError> {
        let then = ThenGuard(then);
        let moved = || LogError::Moved("this node no longer owns the object; retry".into());
        let Some(owned) = self.0.owned.get(&id) else {
            then.run(Err(moved()));
            return Err(moved());
        };
        let (done, wait) = oneshot::channel();
        match owned.chain.send(Queued { entry, then, done }) {
            Ok(()) => Ok(wait),
            Err(mpsc::error::SendError(q)) => {
                q.then.run(Err(moved()));
                Err(moved())
            }
        }
    }

    /// Appends one message to the subject, expecting `last` before it,
    /// retrying what may be transient until [`RETRY_FOR`] passed. Returns
    /// the new sequence.
    pub(super) async fn append(
        &self,
        subject: &str,
        last: u64,
        kind: &str,
        extra: &[(&str, String)],
        payload: Vec<u8>,
    ) -> Result<u64, ClusterLogError> {
        let mut headers = HeaderMap::new();
        headers.insert("Roost-Kind", kind);
        headers.insert("Roost-Node", self.0.config.node_id.as_str());
        headers.insert("Roost-Inc", self.0.incarnation.as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            last.to_string().as_str(),
        );
        let msg_id = format!("{}-{kind}-{subject}-{last}", self.0.incarnation);
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        for (k, v) in extra {
            headers.insert(*k, v.as_str());
        }
        let payload = bytes::Bytes::from(payload);
        let started = Instant::now();
        loop {
            let attempt = async {
                let ack = self
                    .0
                    .js
                    .publish_with_headers(subject.to_owned(), headers.clone(), payload.clone())
                    .await?;
                ack.await
            };
            let result = tokio::time::timeout(Duration::from_secs(5), attempt).await;
            let err = match result {
                Ok(Ok(ack)) => {
                    self.0
                        .metrics
                        .cluster_appended
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.0
                        .metrics
                        .cluster_append_latency
                        .observe(started.elapsed());
                    return Ok(ack.sequence);
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    self.0
                        .metrics
                        .cluster_fenced
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(ClusterLogError::Fenced);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no acknowledgement within 5 s".to_owned(),
            };
            if started.elapsed() > RETRY_FOR {
                return Err(ClusterLogError::Unavailable(err));
            }
            tracing::debug!(error = %err, subject, "cluster: append retried");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs one owned object's chain until its sender is dropped (the object
/// was dropped or handed over) or an append fails.
pub(super) async fn run_chain(
    cluster: Cluster,
    class: String,
    id: ObjectId,
    mut last: u64,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let (_, subject) = cluster.subject_of(&class, id);
    let mut carry: Option<Queued> = None;
    loop {
        let first = match carry.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut group = vec![first];
        let (kind, extra, payload) = match &group[0].entry {
            Entry::Batch(_) => {
                // Join the batches queued meanwhile, up to a message's worth.
                let mut bytes = SEGMENT_MAGIC.to_vec();
                if let Entry::Batch(r) = &group[0].entry {
                    r.encode_into(&mut bytes);
                }
                while bytes.len() < MAX_MESSAGE_BYTES {
                    match rx.try_recv() {
                        Ok(q) => match &q.entry {
                            Entry::Batch(r) => {
                                r.encode_into(&mut bytes);
                                group.push(q);
                            }
                            _ => {
                                carry = Some(q);
                                break;
                            }
                        },
                        Err(_) => break,
                    }
                }
                ("batch", Vec::new(), bytes)
            }
            Entry::Snapshot { seq, name } => (
                "snapshot",
                vec![
                    ("Roost-Seq", seq.to_string()),
                    ("Roost-Snapshot", name.clone()),
                ],
                Vec::new(),
            ),
            Entry::Release => ("release", Vec::new(), Vec::new()),
        };
        let extra: Vec<(&str, String)> = extra.into_iter().collect();
        match cluster.append(&subject, last, kind, &extra, payload).await {
            Ok(seq) => {
                last = seq;
                let batches = if kind == "batch" {
                    group.len() as u64
                } else {
                    0
                };
                cluster.appended(id, seq, batches);
                if let Entry::Snapshot { name, .. } = &group[0].entry {
                    cluster.snapshotted(&class, id, seq, name.clone());
                }
                for q in group {
                    q.then.run(Ok(()));
                    let _ = q.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, class, %id, "cluster: append failed; dropping the object");
                cluster.lose(id);
                let err = LogError::Moved(format!("{e}; retry"));
                for q in group.into_iter().chain(carry.take()) {
                    q.then.run(Err(err.clone()));
                    let _ = q.done.send(Err(err.clone()));
                }
                rx.close();
                while let Ok(q) = rx.try_recv() {
                    q.then.run(Err(err.clone()));
                    let _ = q.done.send(Err(err.clone()));
                }
                return;
            }
        }
    }
}
