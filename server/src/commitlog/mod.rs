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
//! front of the log's next `fdatasync`), and only then deletes those segments. On start-up, [`recovery`] replays any
//! segments left behind into the object files.
//!
//! The next segment is always made ahead of time by a third thread (created,
//! stamped, zero-filled, fsynced with its directory entry), so sealing is a
//! swap of file handles: creating a file and fsyncing a directory on a busy
//! disk took up to hundreds of milliseconds, and every object's commits
//! waited behind it.
//!
//! Architecture Invariant: an object's batch may reach its SQLite file after
//! its record is appended (objects keep batches in an open transaction for
//! up to `--file-commit-interval`), but it is listed in [`Unflushed`] before
//! its record is submitted and until its transaction has committed. The
//! checkpointer syncs an object's files for a segment only once none of
//! the object's batches in the segment is listed, so the commits are in the
//! page cache of the file and its fsyncs make them durable there; a segment
//! with a batch still listed after `LogConfig::unflushed_patience` is kept
//! for recovery instead of deleted; every later round tries the kept ones
//! again (without waiting), and a lost object's stay until the next
//! start-up replays them.
//!
//! Architecture Invariant: a segment holding an object's deletion mark is
//! deleted only while no kept segment holds a record of that object: the
//! mark is what keeps recovery from replaying a kept segment's batches of
//! the deleted object into a new object of the same name.
//!
//! Architecture Invariant: records of one object are appended in `seq` order
//! and the object waits for each to be durable before running its next batch,
//! so the durable part of the log always holds a prefix of every object's
//! batches.

pub mod changeset;
pub mod record;
pub mod recovery;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::id::ObjectId;
use crate::metrics::Metrics;
pub use crate::storage::Unflushed;
use record::{Record, SEGMENT_MAGIC};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("commit log write failed: {0}")]
    Io(String),
    #[error("commit log is broken after an earlier failure; restart the server")]
    Broken,
    #[error("commit log is shut down")]
    Closed,
}

/// Tuning of the commit log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub checkpoint_interval: Duration,
    pub max_segment_bytes: u64,
    /// Most bytes written per group commit.
    pub max_group_bytes: usize,
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
            unflushed_patience: Duration::from_secs(5),
        }
    }
}

struct Append {
    bytes: Vec<u8>,
    object: (String, ObjectId),
    seq: u64,
    /// A deletion mark ([`Record::is_deletion`]).
    deletion: bool,
    /// Run by the writer with the outcome, before `done` is answered.
    then: ThenGuard,
    done: oneshot::Sender<Result<(), LogError>>,
}

/// What the writer runs once a record's outcome is known (see
/// [`CommitLog::submit_then`]).
pub type Then = Box<dyn FnOnce(Result<(), LogError>) + Send>;

/// A record's `then`, run exactly once: with the outcome, or — if the record
/// is dropped unanswered (queued when the writer stopped) — with `Closed`,
/// so the outputs it holds fail instead of vanishing.
struct ThenGuard(Option<Then>);

impl ThenGuard {
    fn run(mut self, result: Result<(), LogError>) {
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

/// Answers one record: its `then` first, then its waiter.
fn answer(
    then: ThenGuard,
    done: oneshot::Sender<Result<(), LogError>>,
    result: Result<(), LogError>,
) {
    then.run(result.clone());
    let _ = done.send(result);
}

enum WriterMsg {
    Append(Append),
    /// Write what is queued, seal, wait for the checkpointer, then answer.
    Close(oneshot::Sender<()>),
}

/// Handle to the log writer. Cloning is cheap; the writer thread stops when
/// the last handle is dropped, after writing and syncing what was queued.
#[derive(Clone)]
pub struct CommitLog {
    tx: mpsc::Sender<WriterMsg>,
    broken: Arc<AtomicBool>,
    unflushed: Arc<Unflushed>,
}

pub(crate) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016x}.log"))
}

/// Segment numbers present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".log") {
            if let Ok(n) = u64::from_str_radix(hex, 16) {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Most room written as zeros into a new segment. Overwriting blocks that
/// are already allocated and on disk lets `fdatasync` skip the inode (the
/// file's size does not change): measured ~25% faster per group commit
/// (measured: git log -p docs/BENCHMARKS.md). A segment that outgrows its room is appended to.
const PREALLOCATED_BYTES: usize = 4 * 1024 * 1024;

/// Room is written in chunks of this size, and never less than one.
const ROOM_CHUNK: usize = 256 * 1024;

/// The room for the next segment: twice what the last sealed one held
/// (within [`ROOM_CHUNK`] and [`PREALLOCATED_BYTES`]). A server sealing a
/// trickle of writes every few seconds would otherwise write 4 MiB of
/// zeros, and fsync them, at every seal (about 70 GB a day at one seal
/// every 5 s), and a log group waited behind each of those writes.
fn room_after(sealed_bytes: u64) -> usize {
    let want = usize::try_from(sealed_bytes.saturating_mul(2)).unwrap_or(PREALLOCATED_BYTES);
    want.div_ceil(ROOM_CHUNK)
        .saturating_mul(ROOM_CHUNK)
        .clamp(ROOM_CHUNK, PREALLOCATED_BYTES)
}

/// Creates segment `n`: the magic, then `room` bytes of zeros (rounded to
/// [`ROOM_CHUNK`]), all fsynced with the directory entry. The returned file
/// is positioned right after the magic. If that fails (a full disk), the
/// half-made file is removed, so a later attempt can make it again.
fn open_segment(dir: &Path, n: u64, room: usize) -> std::io::Result<File> {
    let path = segment_path(dir, n);
    let made = make_segment(dir, &path, room);
    if made.is_err() {
        let _ = fs::remove_file(&path);
    }
    made
}

fn make_segment(dir: &Path, path: &Path, room: usize) -> std::io::Result<File> {
    let mut file = OpenOptions::new().create_new(true).write(true).open(path)?;
    file.write_all(SEGMENT_MAGIC)?;
    let zeros = vec![0u8; ROOM_CHUNK];
    for _ in 0..room.div_ceil(ROOM_CHUNK).max(1) {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    file.seek(SeekFrom::Start(SEGMENT_MAGIC.len() as u64))?;
    Ok(file)
}

impl CommitLog {
    /// Starts the writer and checkpointer threads. `data_dir/log` must hold
    /// no segments (recovery has consumed them).
    pub fn start(
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

    /// Where objects list the batches that are in the log but not yet
    /// committed to their own files (see [`Unflushed`]).
    pub fn unflushed(&self) -> Arc<Unflushed> {
        self.unflushed.clone()
    }

    /// Appends one batch and resolves once it is durable.
    pub async fn append(&self, record: Record) -> Result<(), LogError> {
        self.submit(record)?.await.unwrap_or(Err(LogError::Closed))
    }

    /// Queues one batch; the receiver resolves once it is durable. Records
    /// become durable in submission order.
    pub fn submit(
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
    pub fn submit_then(
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
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(WriterMsg::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// A sealed segment and the objects whose files must be synced before it
/// can go, each with the last `seq` of its batches in the segment, and the
/// objects whose deletion marks it holds.
struct Sealed {
    segment: u64,
    objects: HashMap<(String, ObjectId), u64>,
    deleted: HashSet<ObjectId>,
}

struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    segment_bytes: u64,
    touched: HashMap<(String, ObjectId), u64>,
    deleted: HashSet<ObjectId>,
    rx: mpsc::Receiver<WriterMsg>,
    spare_rx: mpsc::Receiver<(u64, File)>,
    /// The room the spare thread gives the segment after the next one.
    room: Arc<AtomicUsize>,
    seal_tx: mpsc::Sender<Sealed>,
    config: LogConfig,
    broken: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn run(mut self, checkpoint: thread::JoinHandle<()>, spares: thread::JoinHandle<()>) {
        let mut last_seal = Instant::now();
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
                buf.clear();
                buf.extend_from_slice(&first.bytes);
                group.push(first);
                while buf.len() < self.config.max_group_bytes {
                    match self.rx.try_recv() {
                        Ok(WriterMsg::Append(a)) => {
                            buf.extend_from_slice(&a.bytes);
                            group.push(a);
                        }
                        Ok(WriterMsg::Close(done)) => {
                            closing = Some(done);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let started = Instant::now();
                let result = self.write_group(&buf);
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
                if result.is_err() {
                    // Refuse everything else; the process must restart.
                    while let Ok(msg) = self.rx.recv() {
                        match msg {
                            WriterMsg::Append(a) => answer(a.then, a.done, Err(LogError::Broken)),
                            WriterMsg::Close(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                    return;
                }
            }
            let due = last_seal.elapsed() >= self.config.checkpoint_interval
                || self.segment_bytes >= self.config.max_segment_bytes;
            if due && self.segment_bytes > 0 {
                if let Err(e) = self.seal() {
                    tracing::error!(error = %e, "cannot start a new commit log segment");
                }
                last_seal = Instant::now();
            } else if due {
                last_seal = Instant::now();
            }
        }
        // Closing (or every handle dropped): everything queued is written;
        // seal so the checkpointer syncs the files and removes the segment.
        if self.segment_bytes > 0 {
            let _ = self.seal();
        }
        // The spare thread removes the segment it made ahead and stops; both
        // threads are gone before `close` returns, so a server started next
        // on the same directory finds the log as this one left it.
        let Writer {
            seal_tx, spare_rx, ..
        } = self;
        drop(seal_tx);
        drop(spare_rx);
        let _ = checkpoint.join();
        let _ = spares.join();
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

    fn seal(&mut self) -> std::io::Result<()> {
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
        };
        self.segment = next;
        self.segment_bytes = 0;
        let _ = self.seal_tx.send(sealed);
        Ok(())
    }
}

/// Makes segments `n`, `n + 1`, … ahead of the writer, one at a time (each
/// with the `room` the writer asked for when it took the one before), until
/// the writer is gone; a spare it never took is removed.
fn make_spares(dir: &Path, mut n: u64, tx: mpsc::SyncSender<(u64, File)>, room: &AtomicUsize) {
    loop {
        let file = match open_segment(dir, n, room.load(Ordering::Acquire)) {
            Ok(file) => file,
            Err(e) => {
                tracing::error!(error = %e, segment = n, "cannot make the next commit log segment ahead; the writer will make it");
                return;
            }
        };
        if tx.send((n, file)).is_err() {
            let _ = fs::remove_file(segment_path(dir, n));
            return;
        }
        n += 1;
    }
}

/// fsyncs an object's database and WAL (if present) and its directory.
pub(crate) fn sync_object_files(path: &Path) -> std::io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match File::open(PathBuf::from(wal)) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = crate::storage::parent_dir(path) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Waits (up to `patience`) until none of the object's batches up to `seq`
/// is only in the log.
fn wait_flushed(unflushed: &Unflushed, id: ObjectId, seq: u64, patience: Duration) -> bool {
    let started = Instant::now();
    while unflushed.holds(id, seq) {
        if started.elapsed() >= patience {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Sealed segments the checkpointer handles together, with the objects
/// whose files must be synced first and the objects whose deletion marks
/// they hold.
struct Round {
    segments: Vec<u64>,
    objects: HashMap<(String, ObjectId), u64>,
    deleted: HashSet<ObjectId>,
}

fn checkpointer(
    data_dir: &Path,
    log_dir: &Path,
    rx: mpsc::Receiver<Sealed>,
    unflushed: &Unflushed,
    patience: Duration,
) {
    // Rounds kept for recovery, oldest first. Each new round tries them
    // again first (without waiting): an object that was only slow has
    // committed by then, and its segments can go.
    let mut kept: Vec<Round> = Vec::new();
    while let Ok(first) = rx.recv() {
        // Segments sealed while the last round ran are taken together: each
        // object file is synced once for all of them.
        let mut round = Round {
            segments: vec![first.segment],
            objects: first.objects,
            deleted: first.deleted,
        };
        while let Ok(more) = rx.try_recv() {
            round.segments.push(more.segment);
            round.objects.extend(more.objects);
            round.deleted.extend(more.deleted);
        }
        for earlier in std::mem::take(&mut kept) {
            let segments = earlier.segments.clone();
            match checkpoint_round(earlier, None, &kept, data_dir, log_dir, unflushed) {
                Some(still) => kept.push(still),
                None => tracing::info!(?segments, "checkpointed segments kept by an earlier round"),
            }
        }
        if let Some(r) =
            checkpoint_round(round, Some(patience), &kept, data_dir, log_dir, unflushed)
        {
            kept.push(r);
        }
    }
}

/// Syncs a round's objects and deletes its segments; returns the round if
/// its segments must be kept for recovery instead. `patience`: how long to
/// wait for an object still committing (`None`: a kept round tried again,
/// which does not wait, and syncs nothing unless every object has
/// committed). `earlier`: the rounds still kept before this one.
fn checkpoint_round(
    round: Round,
    patience: Option<Duration>,
    earlier: &[Round],
    data_dir: &Path,
    log_dir: &Path,
    unflushed: &Unflushed,
) -> Option<Round> {
    let started = Instant::now();
    let Round {
        segments, objects, ..
    } = &round;
    // A deletion mark must stay while a kept segment holds records of its
    // object: recovery would replay them into a new object of the name.
    let blocked = round.deleted.iter().find(|id| {
        earlier
            .iter()
            .any(|r| r.objects.keys().any(|(_, o)| o == *id))
    });
    if let Some(id) = blocked {
        if patience.is_some() {
            tracing::warn!(%id, ?segments, "keeping the segments with the deletion mark of an object whose earlier batches a kept segment holds");
        }
        return Some(round);
    }
    if patience.is_none()
        && objects
            .iter()
            .any(|((_, id), seq)| unflushed.holds(*id, *seq))
    {
        return Some(round);
    }
    // Each touched object's files, one after another (database, WAL,
    // directory). A single `syncfs` is cheaper in all, but it queues every
    // dirty page of the filesystem at once in front of the commit log's
    // next `fdatasync`: at 100 documents x 5 clients it took p99 from
    // 84-94 ms to 333-596 ms (measured: git log -p docs/BENCHMARKS.md).
    let mut waiting = None;
    let synced = objects.iter().try_for_each(|((class, id), seq)| {
        // One object still pending keeps the segments anyway: wait for no
        // other (a round must not take 5 s per stuck object).
        if waiting.is_some() {
            return Ok(());
        }
        if !wait_flushed(unflushed, *id, *seq, patience.unwrap_or_default()) {
            waiting = Some(*id);
            return Ok(());
        }
        sync_object_files(&crate::id::object_path(data_dir, class, *id))
    });
    if let Err(e) = synced {
        tracing::error!(error = %e, ?segments, "checkpoint fsync failed; keeping the segments");
        return Some(round);
    }
    if let Some(id) = waiting {
        tracing::warn!(%id, ?segments, "an object has not committed its logged batches to its file yet; keeping the segments for recovery");
        return Some(round);
    }
    for segment in segments {
        if let Err(e) = fs::remove_file(segment_path(log_dir, *segment)) {
            tracing::warn!(error = %e, segment, "cannot remove checkpointed segment");
        }
    }
    tracing::debug!(
        ?segments,
        objects = objects.len(),
        ms = started.elapsed().as_millis() as u64,
        "checkpoint done"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Storage, StorageLimits};

    async fn wait_for(what: impl Fn() -> bool) -> bool {
        for _ in 0..300 {
            if what() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// A new segment gets room for twice what the last sealed one held:
    /// after a segment of one small record, 256 KiB of zeros, not 4 MiB.
    #[tokio::test]
    async fn a_new_segment_gets_room_for_what_the_last_one_held() -> anyhow::Result<()> {
        assert_eq!(room_after(0), ROOM_CHUNK);
        assert_eq!(room_after(200 * 1024), 512 * 1024);
        assert_eq!(room_after(64 * 1024 * 1024), PREALLOCATED_BYTES);
        let dir = tempfile::tempdir()?;
        let config = LogConfig {
            checkpoint_interval: Duration::from_millis(400),
            ..LogConfig::default()
        };
        let log = CommitLog::start(dir.path(), config, Arc::new(Metrics::default()))?;
        let log_dir = dir.path().join("log");
        let size = |n: u64| fs::metadata(segment_path(&log_dir, n)).map(|m| m.len());
        let room = |bytes: usize| (SEGMENT_MAGIC.len() + bytes) as u64;
        // Segment 1 and the spare made at start (2) have the most room.
        assert_eq!(size(1)?, room(PREALLOCATED_BYTES));
        let id = ObjectId::derive("counter", "small");
        log.append(Record {
            class: "counter".into(),
            id,
            seq: 1,
            changeset: vec![7; 64],
        })
        .await?;
        // Sealing 1 takes 2 and asks for the room of 3.
        assert!(wait_for(|| size(3).is_ok()).await, "no segment 3");
        // Let the spare thread finish writing it (4 MiB took 13-16 ms).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(size(3)?, room(ROOM_CHUNK));
        // Once 3 is the segment written to (its spare, 4, exists), records
        // beyond its room are appended and all read back.
        let mut seq = 2;
        while size(4).is_err() {
            log.append(Record {
                class: "counter".into(),
                id,
                seq,
                changeset: vec![7; 64],
            })
            .await?;
            seq += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = seq;
        let mut waits = Vec::new();
        for _ in 0..400 {
            waits.push(log.submit(Record {
                class: "counter".into(),
                id,
                seq,
                changeset: vec![9; 1024],
            })?);
            seq += 1;
        }
        for wait in waits {
            wait.await??;
        }
        let bytes = fs::read(segment_path(&log_dir, 3))?;
        assert!(bytes.len() > room(ROOM_CHUNK) as usize, "not past its room");
        let (records, _) = record::decode_segment(&bytes);
        let big: Vec<u64> = records
            .iter()
            .filter(|r| r.changeset.len() == 1024)
            .map(|r| r.seq)
            .collect();
        assert_eq!(big, (first..seq).collect::<Vec<_>>());
        log.close().await;
        Ok(())
    }

    /// A sealed segment whose batch is not yet committed to its object's
    /// file is neither synced nor deleted until the object commits it.
    #[tokio::test]
    async fn the_checkpointer_waits_for_batches_still_in_an_open_transaction() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let config = LogConfig {
            checkpoint_interval: Duration::from_millis(50),
            ..LogConfig::default()
        };
        let log = CommitLog::start(dir.path(), config, Arc::new(Metrics::default()))?;
        let id = ObjectId::derive("counter", "lazy");
        let path = crate::id::object_path(dir.path(), "counter", id);
        let mut s = Storage::open(&path, StorageLimits::default())?;
        s.track_unflushed(log.unflushed(), id);
        s.begin_batch()?;
        s.put("k", &1)?;
        let changes = s.finish_batch()?.expect("the batch wrote");
        s.end_batch(true)?;
        log.append(Record {
            class: "counter".into(),
            id,
            seq: s.commit_seq(),
            changeset: changes.changeset,
        })
        .await?;
        let log_dir = dir.path().join("log");
        let first = segment_path(&log_dir, 1);
        // The segment is sealed after the interval (the writer seals on its
        // next wake-up), then left alone while the batch is pending.
        assert!(wait_for(|| list_segments(&log_dir).is_ok_and(|s| s.len() >= 3)).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            first.exists(),
            "a segment with an unflushed batch was deleted"
        );
        s.flush()?;
        assert!(
            wait_for(|| !first.exists()).await,
            "the segment outlived the flush"
        );
        log.close().await;
        Ok(())
    }

    /// `then` runs on the writer, in submission order, before the record's
    /// receiver resolves; a record that reaches a closed log runs its `then`
    /// with an error.
    #[tokio::test]
    async fn then_runs_in_order_before_the_waiter_is_answered() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = CommitLog::start(
            dir.path(),
            LogConfig::default(),
            Arc::new(Metrics::default()),
        )?;
        let id = ObjectId::derive("counter", "then");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waits = Vec::new();
        for seq in 1..=50u64 {
            let seen = seen.clone();
            let record = Record {
                class: "counter".into(),
                id,
                seq,
                changeset: vec![seq as u8; 16],
            };
            let then: Then = Box::new(move |r| seen.lock().expect("lock").push((seq, r.is_ok())));
            waits.push((seq, log.submit_then(record, then)?));
        }
        for (seq, wait) in waits {
            wait.await??;
            let seen = seen.lock().expect("lock");
            assert!(
                seen.len() >= seq as usize,
                "record {seq} answered before its `then` ran"
            );
        }
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen, (1..=50).map(|s| (s, true)).collect::<Vec<_>>());
        log.close().await;
        // After `close`, a record is refused, or taken and dropped by the
        // stopping writer: either way its `then` runs with an error.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let refused = log.submit_then(
            Record {
                class: "counter".into(),
                id,
                seq: 51,
                changeset: vec![1],
            },
            Box::new(move |r| flag.store(r.is_err(), Ordering::SeqCst)),
        );
        if let Ok(wait) = refused {
            assert!(wait.await.map_or(true, |r| r.is_err()));
        }
        assert!(
            ran.load(Ordering::SeqCst),
            "a refused record's `then` did not run"
        );
        Ok(())
    }
}
