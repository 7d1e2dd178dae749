//! Keeping an object's WAL small without stopping the object.
//!
//! Every commit appends whole pages to the object's WAL; SQLite folds them
//! back into the database file with a *checkpoint*, which fsyncs the WAL and
//! then the database. Run by the actor, that checkpoint stopped the object
//! for 10–280 ms on a busy disk, and every client of the object waited.
//!
//! So the copying and the fsyncs run on a second connection in a blocking
//! thread (`PRAGMA wal_checkpoint(PASSIVE)`: it never blocks the writer),
//! while the actor keeps committing. SQLite restarts the WAL from its start
//! at the first commit after a checkpoint that left nothing behind; frames
//! committed while the background checkpoint ran leave something behind, so
//! another, shorter background round follows for them; after `MAX_ROUNDS`
//! the actor folds in the rest itself (most of the WAL is already synced, so
//! this is short). Should the WAL still outgrow `HARD_LIMIT` times its
//! threshold, the actor checkpoints it all itself, as before.
//!
//! Architecture Invariant: the background connection only checkpoints; it
//! never writes rows. An actor joins its checkpoint before it closes or
//! deletes the object's files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::task::JoinHandle;

use super::files::wal_path;
use super::{Storage, StorageError};
use crate::metrics::Metrics;

/// Look at the WAL's size after this many committed batches, and checkpoint
/// it in the background beyond `StorageLimits::wal_checkpoint_bytes` plus up
/// to as much again chosen by the object's id (so objects started together
/// do not all flush at once).
const CHECK_EVERY: u64 = 64;
/// Background rounds in a row, each for what the one before left behind,
/// before the actor folds in the rest itself.
const MAX_ROUNDS: u32 = 3;
/// The actor checkpoints itself once the WAL is this many times its threshold.
const HARD_LIMIT: u64 = 8;

type Job = JoinHandle<Result<Duration, StorageError>>;

/// One object's WAL upkeep, driven by its actor.
pub(crate) struct WalKeeper {
    path: PathBuf,
    threshold: u64,
    batches: u64,
    job: Option<Job>,
    /// Batches committed since the running job started.
    during_job: u64,
    /// Background rounds since the WAL last started over.
    rounds: u32,
}

impl WalKeeper {
    pub(crate) fn new(path: PathBuf, base_bytes: u64, id_bytes: [u8; 2]) -> WalKeeper {
        let spread = u64::from(u16::from_le_bytes(id_bytes)) * (base_bytes >> 16);
        WalKeeper {
            path,
            threshold: base_bytes + spread,
            batches: 0,
            job: None,
            during_job: 0,
            rounds: 0,
        }
    }

    /// Called before each batch: a background round that has ended is
    /// followed up (see the module's text). Never waits for the disk unless
    /// rounds kept leaving a remainder, or the WAL hit its hard limit.
    pub(crate) fn before_batch(&mut self, storage: &mut Storage, metrics: &Metrics) {
        if self.job.as_ref().is_some_and(|j| j.is_finished()) {
            self.poll(storage, metrics);
        }
    }

    /// Called after each batch that wrote.
    pub(crate) fn after_commit(&mut self, storage: &mut Storage, metrics: &Metrics) {
        self.batches += 1;
        if self.job.is_some() {
            self.during_job += 1;
            return;
        }
        if self.batches < CHECK_EVERY {
            return;
        }
        self.batches = 0;
        let bytes = storage.wal_used_bytes();
        if bytes > self.threshold * HARD_LIMIT {
            stall(storage, metrics, "TRUNCATE");
        } else if bytes > self.threshold {
            self.start();
        }
    }

    fn start(&mut self) {
        let path = self.path.clone();
        self.during_job = 0;
        self.rounds += 1;
        self.job = Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            checkpoint_in_background(&path)?;
            Ok(started.elapsed())
        }));
    }

    /// A finished background round: fold in what arrived meanwhile.
    fn poll(&mut self, storage: &mut Storage, metrics: &Metrics) {
        let Some(job) = self.job.take() else { return };
        let Some(result) = futures_util::FutureExt::now_or_never(job) else {
            return;
        };
        match result {
            Ok(Ok(took)) => metrics.wal_checkpoint.observe(took),
            Ok(Err(e)) => tracing::warn!(error = %e, "background WAL checkpoint failed"),
            Err(e) => tracing::warn!(error = %e, "background WAL checkpoint panicked"),
        }
        if self.during_job == 0 {
            // Nothing left behind: the next commit restarts the WAL.
            self.rounds = 0;
        } else if storage.wal_used_bytes() > self.threshold * HARD_LIMIT {
            self.rounds = 0;
            stall(storage, metrics, "TRUNCATE");
        } else if self.rounds < MAX_ROUNDS {
            self.start();
        } else {
            self.rounds = 0;
            stall(storage, metrics, "PASSIVE");
        }
    }

    /// Waits for a running background round; call before closing or
    /// deleting the object's files.
    pub(crate) async fn join(&mut self) {
        if let Some(job) = self.job.take() {
            let _ = job.await;
        }
    }
}

/// A checkpoint on the actor's own connection (off the async worker).
fn stall(storage: &mut Storage, metrics: &Metrics, mode: &str) {
    let started = Instant::now();
    let done = crate::sys::blocking(|| storage.checkpoint_wal_mode(mode));
    metrics.wal_checkpoint_stall.observe(started.elapsed());
    if let Err(e) = done {
        tracing::warn!(error = %e, mode, "WAL checkpoint failed");
    }
}

/// One background checkpoint at a time in the whole process: each one
/// flushes megabytes, and several at once queue in front of the commit
/// log's small `fdatasync`, which every object's commits wait for.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the process-wide turn for work that checkpoints a file in the
/// background (this module, `tidy.rs`).
pub(super) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copies the WAL into the database file on a connection of its own,
/// fsyncing the WAL first and the database after (`synchronous=NORMAL`).
pub(crate) fn checkpoint_in_background(path: &Path) -> Result<(), StorageError> {
    let _turn = one_at_a_time();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Closing must leave the WAL alone: the actor's connection is the owner.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    Ok(())
}

impl Storage {
    /// Size of the object's WAL file, in bytes (what it has ever held).
    pub(crate) fn wal_file_bytes(&self) -> u64 {
        std::fs::metadata(wal_path(&self.path)).map_or(0, |m| m.len())
    }

    /// Bytes of the WAL in use since it last started over: `mxFrame` from
    /// the WAL index header (a `u32` in native byte order at byte 16 of the
    /// `-shm` file; sqlite.org/walformat.html) times the frame size. Read
    /// without SQLite's locks, so at worst a moment stale; 0 if unreadable.
    pub(crate) fn wal_used_bytes(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut shm = self.path.as_os_str().to_owned();
        shm.push("-shm");
        let mut frames = [0u8; 4];
        let read = File::open(PathBuf::from(shm)).and_then(|f| f.read_exact_at(&mut frames, 16));
        match read {
            Ok(()) => u64::from(u32::from_ne_bytes(frames)) * (self.page_size + 24),
            Err(_) => 0,
        }
    }

    /// Copies the WAL into the database file (fsyncing both) and empties it.
    /// Blocking: call it through `sys::blocking`.
    pub(crate) fn checkpoint_wal(&mut self) -> Result<(), StorageError> {
        self.checkpoint_wal_mode("TRUNCATE")
    }

    /// `PRAGMA wal_checkpoint(mode)` on the actor's own connection, with
    /// the fsyncs a checkpoint needs (`synchronous=NORMAL` while it runs).
    /// Commits the open transaction first.
    pub(crate) fn checkpoint_wal_mode(&mut self, mode: &str) -> Result<(), StorageError> {
        self.flush()?;
        self.conn().execute_batch("PRAGMA synchronous=NORMAL;")?;
        let done = self
            .conn()
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
        self.conn().execute_batch("PRAGMA synchronous=OFF;")?;
        done?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageLimits;

    fn insert(storage: &Storage, n: usize) {
        for _ in 0..n {
            storage
                .sql()
                .execute("INSERT INTO t(x) VALUES (randomblob(1500))", [])
                .expect("insert");
        }
    }

    /// A new object file with one table `t`; keep the directory alive.
    fn fresh() -> (tempfile::TempDir, PathBuf, Storage) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.sqlite");
        let storage = Storage::open(&path, StorageLimits::default()).expect("open");
        storage
            .sql()
            .execute_batch("CREATE TABLE t(x BLOB)")
            .expect("schema");
        (dir, path, storage)
    }

    fn count(storage: &Storage) -> i64 {
        storage
            .sql()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    /// A checkpoint on a second connection runs while the owner keeps
    /// committing; the owner folds in the remainder, and its next commit
    /// starts the WAL over (in place: the file keeps its size), with every
    /// row still there.
    #[test]
    fn background_checkpoint_runs_beside_the_writer_and_the_wal_restarts() {
        let (_dir, path, mut storage) = fresh();
        insert(&storage, 600);
        let before = storage.wal_used_bytes();
        assert!(before > 1024 * 1024, "WAL holds {before} bytes");
        assert!(storage.wal_file_bytes() >= before);
        let background = {
            let path = path.clone();
            std::thread::spawn(move || checkpoint_in_background(&path))
        };
        // The writer is never blocked by the checkpointer.
        insert(&storage, 50);
        background
            .join()
            .expect("no panic")
            .expect("background checkpoint");
        storage.checkpoint_wal_mode("PASSIVE").expect("remainder");
        insert(&storage, 1);
        let after = storage.wal_used_bytes();
        assert!(after < 64 * 1024, "WAL still holds {after} bytes");
        // It started over in place: the file keeps its size.
        assert!(storage.wal_file_bytes() >= before);
        assert_eq!(count(&storage), 651);
        let ok: String = storage
            .sql()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(ok, "ok");
        drop(storage);
        let reopened = Storage::open(&path, StorageLimits::default()).expect("reopen");
        assert_eq!(count(&reopened), 651);
    }

    /// Driven the way the actor drives it, the keeper checkpoints in the
    /// background and the WAL keeps starting over, while every write lands.
    /// (How far the WAL grows during one background round depends on the
    /// disk and the machine's load, so that is not asserted.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_keeper_bounds_the_wal_under_steady_writes() {
        let (_dir, path, mut storage) = fresh();
        let metrics = Metrics::default();
        // Each commit below writes ~4 pages (the new leaf, its parent, the
        // header, and the auto-vacuum pointer map): 64 commits between two
        // checks must stay under the hard limit (8 x base) for a background
        // round to start rather than a stall.
        let base = 96 * 1024;
        let mut keeper = WalKeeper::new(path.clone(), base, [0, 0]);
        let mut largest = 0;
        let mut restarts = 0;
        let mut previous = 0;
        // A busy document: a commit every half millisecond or so.
        for _ in 0..1500 {
            keeper.before_batch(&mut storage, &metrics);
            insert(&storage, 1);
            keeper.after_commit(&mut storage, &metrics);
            let used = storage.wal_used_bytes();
            if used < previous {
                restarts += 1;
            }
            previous = used;
            largest = largest.max(used);
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        keeper.join().await;
        eprintln!(
            "largest WAL {largest} B, {restarts} restarts; background rounds {}, stalls {}",
            metrics.wal_checkpoint.count(),
            metrics.wal_checkpoint_stall.count()
        );
        // 1,500 commits of ~3 KiB each would be a 5 MiB WAL without them.
        assert!(restarts >= 2, "the WAL started over {restarts} times");
        assert!(
            metrics.wal_checkpoint.count() > 0,
            "no background checkpoint ran"
        );
        assert_eq!(count(&storage), 1500);
    }
}
