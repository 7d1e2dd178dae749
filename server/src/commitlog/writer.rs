//! The writer thread: group commit across objects.
//!
//! One thread takes every record queued so far (up to
//! `LogConfig::max_group_bytes`), writes them with one `write`, calls
//! `fdatasync` once and answers them all, in submission order: each
//! record's `then` first (the output gate releases the batch's outputs
//! there), then its waiter. Every `checkpoint_interval` (or when a segment
//! grows past `max_segment_bytes`) it seals the segment — takes the spare
//! the spare thread made ahead — and hands the sealed one to the
//! checkpointer. A failed write or fsync breaks the log: every later record
//! is refused and the process must restart.
//!
//! With `LogConfig::group_delay` set (`--log-group-delay`; off by
//! default), a busy writer — its last group held more than one record, so
//! records arrive faster than one per `fdatasync` — sleeps that long after
//! taking a group's records and takes what arrived meanwhile too. Each
//! `fdatasync` costs CPU as well as time (on a virtual disk, ~70 µs), and
//! over 100 objects the log wrote groups of 4–5 records, 4,000 a second;
//! with 200 µs, about 12 per group and a third of the fsyncs. It is off by
//! default because the sleep adds latency and, on a contended CPU, can
//! oversleep (docs/BENCHMARKS.md). A lone record is written at once.
//!
//! Architecture Invariant: records of one object are appended in `seq` order
//! and become durable in that order (an object pipelines up to 4 batches;
//! a failed write fails every later record), so the durable part of the log
//! always holds a prefix of every object's batches.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::checkpointer::Sealed;
use super::segments::{open_segment, room_after, segment_path};
use super::{LogConfig, LogError, Then};
use crate::id::ObjectId;
use crate::metrics::Metrics;

/// One record queued for the writer, encoded.
pub(super) struct Append {
    pub(super) bytes: Vec<u8>,
    pub(super) object: (String, ObjectId),
    pub(super) seq: u64,
    /// A deletion mark ([`Record::is_deletion`](super::record::Record::is_deletion)).
    pub(super) deletion: bool,
    /// Run by the writer with the outcome, before `done` is answered.
    pub(super) then: ThenGuard,
    pub(super) done: oneshot::Sender<Result<(), LogError>>,
}

/// A record's `then`, run exactly once: with the outcome, or — if the record
/// is dropped unanswered (queued when the writer stopped) — with `Closed`,
/// so the outputs it holds fail instead of vanishing.
pub(crate) struct ThenGuard(pub(crate) Option<Then>);

impl ThenGuard {
    pub(crate) fn run(mut self, result: Result<(), LogError>) {
        if let Some(then) = self.0.take() {
            then(result);
        }
    }
}

impl Drop for ThenGuard {
    fn drop(&mut self) {
        if let Some(then) = self.0.take() {
            then(Err(LogError::Closed));
        }
    }
}

/// Takes `first` and every record queued behind it, up to `max_bytes`,
/// into `group` and their bytes into `buf`; with `wait` (the writer is busy)
/// it then sleeps that long and takes what arrived meanwhile too. A sleep,
/// not a wait on the channel: a waiting receiver is woken by every record
/// sent, and those wake-ups cost more than the fsyncs saved. Returns the
/// answer to a `close` met on the way (the records before it are in the
/// group).
pub(super) fn gather(
    rx: &mpsc::Receiver<WriterMsg>,
    first: Append,
    wait: Option<std::time::Duration>,
    max_bytes: usize,
    group: &mut Vec<Append>,
    buf: &mut Vec<u8>,
) -> Option<oneshot::Sender<()>> {
    buf.clear();
    buf.extend_from_slice(&first.bytes);
    group.push(first);
    let closed = take_queued(rx, max_bytes, group, buf);
    match wait {
        Some(wait) if closed.is_none() && buf.len() < max_bytes => {
            thread::sleep(wait);
            take_queued(rx, max_bytes, group, buf)
        }
        _ => closed,
    }
}

/// Takes what is queued now, up to `max_bytes`, stopping at a `close`.
fn take_queued(
    rx: &mpsc::Receiver<WriterMsg>,
    max_bytes: usize,
    group: &mut Vec<Append>,
    buf: &mut Vec<u8>,
) -> Option<oneshot::Sender<()>> {
    while buf.len() < max_bytes {
        match rx.try_recv() {
            Ok(WriterMsg::Append(a)) => {
                buf.extend_from_slice(&a.bytes);
                group.push(a);
            }
            Ok(WriterMsg::Close(done)) => return Some(done),
            Err(_) => break,
        }
    }
    None
}

/// Answers one record: its `then` first, then its waiter.
fn answer(
    then: ThenGuard,
    done: oneshot::Sender<Result<(), LogError>>,
    result: Result<(), LogError>,
) {
    then.run(result.clone());
    let _ = done.send(result);
}

pub(super) enum WriterMsg {
    Append(Append),
    /// Write what is queued, seal, wait for the checkpointer, then answer.
    Close(oneshot::Sender<()>),
}

/// The writer thread's state; [`CommitLog::start`](super::CommitLog::start)
/// builds it.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) file: File,
    pub(super) segment: u64,
    pub(super) segment_bytes: u64,
    pub(super) touched: HashMap<(String, ObjectId), u64>,
    pub(super) deleted: HashSet<ObjectId>,
    pub(super) rx: mpsc::Receiver<WriterMsg>,
    pub(super) spare_rx: mpsc::Receiver<(u64, File)>,
    /// The room the spare thread gives the segment after the next one.
    pub(super) room: Arc<AtomicUsize>,
    pub(super) seal_tx: mpsc::Sender<Sealed>,
    pub(super) config: LogConfig,
    pub(super) broken: Arc<AtomicBool>,
    pub(super) metrics: Arc<Metrics>,
}

impl Writer {
    /// Runs until every handle is dropped or `close` is asked, then seals
    /// what was written and joins the checkpointer and the spare thread.
    pub(super) fn run(
        mut self,
        checkpoint: thread::JoinHandle<()>,
        spares: thread::JoinHandle<()>,
    ) {
        let mut last_seal = Instant::now();
        // `Some(delay)` while busy: the last group held more than one record.
        let mut wait = None;
        let mut group: Vec<Append> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut closing: Option<oneshot::Sender<()>> = None;
        while closing.is_none() {
            let first = match self.rx.recv_timeout(self.config.checkpoint_interval) {
                Ok(WriterMsg::Append(a)) => Some(a),
                Ok(WriterMsg::Close(done)) => {
                    closing = Some(done);
                    None
                }
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if let Some(first) = first {
                let max = self.config.max_group_bytes;
                closing = gather(&self.rx, first, wait, max, &mut group, &mut buf);
                let delay = self.config.group_delay;
                wait = (group.len() > 1 && !delay.is_zero()).then_some(delay);
                if !self.commit_group(&mut group, &buf) {
                    self.refuse_everything();
                    return;
                }
            }
            self.seal_if_due(&mut last_seal);
        }
        self.finish(checkpoint, spares, closing);
    }

    /// Writes the group with one `write` and one `fdatasync`, notes what
    /// the segment now holds and answers every record. False if the write
    /// failed: the log is broken from now on.
    fn commit_group(&mut self, group: &mut Vec<Append>, buf: &[u8]) -> bool {
        let started = Instant::now();
        let result = self.write_group(buf);
        self.metrics.log_fsync(started.elapsed(), group.len());
        if let Err(e) = &result {
            tracing::error!(error = %e, "commit log write failed; refusing further commits");
            self.broken.store(true, Ordering::Release);
        }
        for a in group.drain(..) {
            let Append {
                object,
                seq,
                deletion,
                then,
                done,
                ..
            } = a;
            if deletion {
                self.deleted.insert(object.1);
            }
            let last = self.touched.entry(object).or_insert(seq);
            *last = (*last).max(seq);
            answer(
                then,
                done,
                result.clone().map_err(|e| LogError::Io(e.to_string())),
            );
        }
        result.is_ok()
    }

    /// After a failed write: refuses everything else until every handle is
    /// gone; the process must restart.
    fn refuse_everything(&self) {
        while let Ok(msg) = self.rx.recv() {
            match msg {
                WriterMsg::Append(a) => answer(a.then, a.done, Err(LogError::Broken)),
                WriterMsg::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Seals the segment once `checkpoint_interval` has passed since the
    /// last seal or it has grown past `max_segment_bytes` (an empty one is
    /// kept and its clock restarted).
    fn seal_if_due(&mut self, last_seal: &mut Instant) {
        let due = last_seal.elapsed() >= self.config.checkpoint_interval
            || self.segment_bytes >= self.config.max_segment_bytes;
        if due && self.segment_bytes > 0 {
            if let Err(e) = self.seal(false) {
                tracing::error!(error = %e, "cannot start a new commit log segment");
            }
            *last_seal = Instant::now();
        } else if due {
            *last_seal = Instant::now();
        }
    }

    /// Closing (or every handle dropped): everything queued is written;
    /// seal so the checkpointer syncs the files and removes the segment.
    fn finish(
        mut self,
        checkpoint: thread::JoinHandle<()>,
        spares: thread::JoinHandle<()>,
        closing: Option<oneshot::Sender<()>>,
    ) {
        if self.segment_bytes > 0 {
            let _ = self.seal(true);
        }
        // The spare thread removes the segment it made ahead and stops; both
        // threads are gone before `close` returns, so a server started next
        // on the same directory finds the log as this one left it.
        let Writer {
            seal_tx,
            spare_rx,
            dir,
            segment,
            segment_bytes,
            ..
        } = self;
        drop(seal_tx);
        drop(spare_rx);
        let _ = checkpoint.join();
        let _ = spares.join();
        // The current segment holds no record (all were sealed): it is only
        // zeros made ahead (up to 4 MiB), and a stopped server keeps none.
        // Its removal need not be durable: an empty segment replays nothing.
        if segment_bytes == 0 {
            if let Err(e) = fs::remove_file(segment_path(&dir, segment)) {
                tracing::warn!(error = %e, segment, "cannot remove the empty commit log segment");
            }
        }
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    fn write_group(&mut self, buf: &[u8]) -> Result<(), std::sync::Arc<std::io::Error>> {
        self.file.write_all(buf).map_err(Arc::new)?;
        self.file.sync_data().map_err(Arc::new)?;
        self.segment_bytes += buf.len() as u64;
        Ok(())
    }

    /// `closing`: the last seal of a closing log (see `Sealed::closing`).
    fn seal(&mut self, closing: bool) -> std::io::Result<()> {
        let next = self.segment + 1;
        // Before taking the spare: the spare thread makes the one after it
        // as soon as this one is taken.
        self.room
            .store(room_after(self.segment_bytes), Ordering::Release);
        self.file = match self.spare_rx.recv() {
            Ok((n, file)) if n == next => file,
            Ok((n, _)) => {
                return Err(std::io::Error::other(format!(
                    "spare segment {n} is not the next one ({next})"
                )))
            }
            // The spare thread failed (logged there): make it here. A file
            // of that name is a spare that never held a record (the spare
            // thread may have stopped half-way): make it anew.
            Err(_) => {
                let _ = fs::remove_file(segment_path(&self.dir, next));
                open_segment(&self.dir, next, room_after(self.segment_bytes))?
            }
        };
        let sealed = Sealed {
            segment: self.segment,
            objects: std::mem::take(&mut self.touched),
            deleted: std::mem::take(&mut self.deleted),
            closing,
        };
        self.segment = next;
        self.segment_bytes = 0;
        let _ = self.seal_tx.send(sealed);
        Ok(())
    }
}
