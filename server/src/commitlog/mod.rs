//! The server-wide commit log: how many objects' commits share one fsync.
//!
//! Each object commits its batch to its own SQLite file with
//! `synchronous=OFF` (no fsync), then appends the batch's changeset here
//! and waits. One writer thread takes every record queued so far, writes them
//! with one `write`, calls `fdatasync` once and acknowledges them all — group
//! commit across objects. Only after that acknowledgement does the object
//! release the batch's outputs.
//!
//! Every `checkpoint_interval` (or when a segment grows past
//! `max_segment_bytes`) the writer seals the segment and starts a new one; the
//! checkpointer fsyncs the files of every object the sealed segments touched
//! (one object after another, so the disk never holds a flood of writes in
//! front of the log's next `fdatasync`), and only then deletes those
//! segments. On start-up, [`recovery`] replays any segments left behind into
//! the object files.
//!
//! - this file: [`CommitLog`], the handle objects append through, and its
//!   configuration and errors;
//! - `writer.rs`: the writer thread (group commit, sealing);
//! - `segments.rs`: segment files and the spare thread that makes the next
//!   one ahead of time;
//! - `checkpointer.rs`: the checkpointer thread;
//! - `unflushed.rs`: [`Unflushed`], batches in the log but not yet in their
//!   object's file;
//! - `record.rs`: the segment and record format;
//! - [`changeset`]: the row changes a record carries — captured on the
//!   object's connection, replayed by recovery;
//! - `recovery.rs`: start-up replay.
//!
//! The Architecture Invariants live with the code that keeps them: prefix
//! durability in `writer.rs`, listing unflushed batches in `unflushed.rs`,
//! syncing and deleting segments in `checkpointer.rs`.

pub(crate) mod changeset;
mod checkpointer;
pub(crate) mod record;
pub(crate) mod recovery;
mod segments;
mod unflushed;
mod writer;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use checkpointer::{checkpointer, Sealed};
use record::Record;
pub(crate) use segments::{list_segments, segment_path};
use segments::{make_spares, open_segment, PREALLOCATED_BYTES};
pub(crate) use unflushed::Unflushed;
pub(crate) use writer::ThenGuard;
use writer::{Append, Writer, WriterMsg};

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LogError {
    #[error("commit log write failed: {0}")]
    Io(String),
    #[error("commit log is broken after an earlier failure; restart the server")]
    Broken,
    #[error("commit log is shut down")]
    Closed,
    /// Cluster mode: another node took the object over (the append was
    /// fenced), or this node could not append and gave the object up.
    #[error("{0}")]
    Moved(String),
}

/// Tuning of the commit log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// How often the log seals its segment and checkpoints it into object
    /// files (`--checkpoint-interval`, default 5s).
    pub checkpoint_interval: Duration,
    /// Segment size past which the writer seals it early (default 64 MiB).
    pub max_segment_bytes: u64,
    /// Most bytes written per group commit.
    pub max_group_bytes: usize,
    /// Under load — the last group held more than one record, so records
    /// arrive faster than one per `fdatasync` — how long the writer sleeps
    /// after taking a group's records to gather more before it writes
    /// (`--log-group-delay`; zero, the default: never). A lone record is
    /// written at once.
    pub group_delay: Duration,
    /// How long the checkpointer waits for an object to commit the batches
    /// a sealed segment holds to its file before it keeps the segment for
    /// recovery instead (an object commits within `--file-commit-interval`
    /// unless a handler runs long, or its file refused the commit).
    pub unflushed_patience: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            checkpoint_interval: Duration::from_secs(5),
            max_segment_bytes: 64 * 1024 * 1024,
            max_group_bytes: 8 * 1024 * 1024,
            group_delay: Duration::ZERO,
            unflushed_patience: Duration::from_secs(5),
        }
    }
}

/// What the writer runs once a record's outcome is known (see
/// [`CommitLog::submit_then`]).
pub(crate) type Then = Box<dyn FnOnce(Result<(), LogError>) + Send>;

/// Handle to the log writer. Cloning is cheap; the writer thread stops when
/// the last handle is dropped, after writing and syncing what was queued.
#[derive(Clone)]
pub(crate) struct CommitLog {
    tx: mpsc::Sender<WriterMsg>,
    broken: Arc<AtomicBool>,
    unflushed: Arc<Unflushed>,
}

impl CommitLog {
    /// Starts the writer and checkpointer threads. `data_dir/log` must hold
    /// no segments (recovery has consumed them).
    pub(crate) fn start(
        data_dir: &Path,
        config: LogConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<CommitLog> {
        let dir = data_dir.join("log");
        crate::storage::create_dir_all_durable(&dir)?;
        let first = list_segments(&dir)?.last().map_or(1, |n| n + 1);
        let file = open_segment(&dir, first, PREALLOCATED_BYTES)?;
        // A rendezvous channel: the spare thread makes segment n + 1 and
        // waits, holding it, until the writer seals segment n and takes it.
        let (spare_tx, spare_rx) = mpsc::sync_channel::<(u64, File)>(0);
        let spare_dir = dir.clone();
        // The room for the next spare, set by the writer as it seals.
        let room = Arc::new(AtomicUsize::new(PREALLOCATED_BYTES));
        let spare_room = room.clone();
        let spares = thread::Builder::new()
            .name("roost-log-spare".into())
            .spawn(move || make_spares(&spare_dir, first + 1, spare_tx, &spare_room))?;
        let (tx, rx) = mpsc::channel::<WriterMsg>();
        let (seal_tx, seal_rx) = mpsc::channel::<Sealed>();
        let broken = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            dir: dir.clone(),
            file,
            segment: first,
            segment_bytes: 0,
            touched: HashMap::new(),
            deleted: HashSet::new(),
            rx,
            spare_rx,
            room,
            seal_tx,
            config,
            broken: broken.clone(),
            metrics,
        };
        let data_dir = data_dir.to_owned();
        let unflushed = Arc::new(Unflushed::default());
        let pending = unflushed.clone();
        let patience = writer.config.unflushed_patience;
        let checkpoint = thread::Builder::new()
            .name("roost-checkpoint".into())
            .spawn(move || checkpointer(&data_dir, &dir, seal_rx, &pending, patience))?;
        thread::Builder::new()
            .name("roost-commitlog".into())
            .spawn(move || writer.run(checkpoint, spares))?;
        Ok(CommitLog {
            tx,
            broken,
            unflushed,
        })
    }

    /// Whether a write or `fdatasync` of the log failed: every commit is
    /// refused from then on, until a restart (the probes say so).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Where objects list the batches that are in the log but not yet
    /// committed to their own files (see [`Unflushed`]).
    pub(crate) fn unflushed(&self) -> Arc<Unflushed> {
        self.unflushed.clone()
    }

    /// Appends one batch and resolves once it is durable (tests; the
    /// runtime submits and awaits the acknowledgement itself).
    #[cfg(test)]
    pub(crate) async fn append(&self, record: Record) -> Result<(), LogError> {
        self.submit(record)?.await.unwrap_or(Err(LogError::Closed))
    }

    /// Queues one batch; the receiver resolves once it is durable. Records
    /// become durable in submission order.
    pub(crate) fn submit(
        &self,
        record: Record,
    ) -> Result<oneshot::Receiver<Result<(), LogError>>, LogError> {
        self.submit_inner(record, None)
    }

    /// Like [`submit`](Self::submit), and the writer thread itself runs
    /// `then` with the outcome as soon as it is known — before the receiver
    /// resolves and before any later record's `then`. The output gate uses
    /// it to release a batch's outputs without waiting for its object's task
    /// to be scheduled. `then` must be quick and must not block.
    pub(crate) fn submit_then(
        &self,
        record: Record,
        then: Then,
    ) -> Result<oneshot::Receiver<Result<(), LogError>>, LogError> {
        self.submit_inner(record, Some(then))
    }

    fn submit_inner(
        &self,
        record: Record,
        then: Option<Then>,
    ) -> Result<oneshot::Receiver<Result<(), LogError>>, LogError> {
        // A refused record's `then` still runs, with the error: it may hold
        // outputs that must fail rather than vanish.
        let then = ThenGuard(then);
        let refuse = |then: ThenGuard, e: LogError| {
            then.run(Err(e.clone()));
            Err(e)
        };
        if self.broken.load(Ordering::Acquire) {
            return refuse(then, LogError::Broken);
        }
        let mut bytes = Vec::with_capacity(record.changeset.len() + 64);
        record.encode_into(&mut bytes);
        let (done, wait) = oneshot::channel();
        let deletion = record.is_deletion();
        let sent = self.tx.send(WriterMsg::Append(Append {
            bytes,
            object: (record.class, record.id),
            seq: record.seq,
            deletion,
            then,
            done,
        }));
        match sent {
            Ok(()) => Ok(wait),
            Err(mpsc::SendError(WriterMsg::Append(a))) => refuse(a.then, LogError::Closed),
            Err(_) => Err(LogError::Closed),
        }
    }

    /// Writes and syncs everything queued, checkpoints it into the object
    /// files and stops the log threads. Later appends fail with `Closed`.
    pub(crate) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(WriterMsg::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

#[cfg(test)]
mod tests;
