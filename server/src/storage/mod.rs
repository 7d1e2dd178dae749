//! An object's own SQLite database: opening it, the batch transaction that
//! the actor wraps around events, and the size limits.
//!
//! One `Storage` owns one `rusqlite::Connection` and is owned by one actor;
//! nothing else touches the file while the object is live. This module does
//! not decide when to commit or how commits become durable — the actor and
//! the commit log do — but it offers the pieces: savepoints per event, the
//! changeset of a batch (captured on the connection, see `capture`), and an
//! fsync of the object's own files.

pub mod inspect;
mod kv;
pub(crate) mod wal;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use crate::id::ObjectId;

use crate::commitlog::changeset::{CaptureError, CapturingConnection, Mark};
use crate::commitlog::Unflushed;
pub use kv::ListOptions;

/// Size limits enforced on every object's storage.
#[derive(Debug, Clone)]
pub struct StorageLimits {
    /// Longest KV key, in bytes.
    pub max_key_bytes: usize,
    /// Largest KV value (its JSON encoding), in bytes.
    pub max_value_bytes: usize,
    /// Largest database file, in bytes.
    pub max_db_bytes: u64,
    /// Most memory one object's SQLite page cache may hold, in bytes.
    pub cache_bytes: u64,
    /// WAL size beyond which a background checkpoint starts (each object
    /// adds up to as much again, chosen by its id); see `wal.rs`.
    pub wal_checkpoint_bytes: u64,
}

impl Default for StorageLimits {
    fn default() -> Self {
        StorageLimits {
            max_key_bytes: 2048,
            max_value_bytes: 2 * 1024 * 1024,
            max_db_bytes: 1024 * 1024 * 1024,
            cache_bytes: 256 * 1024,
            wal_checkpoint_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key is {len} bytes; the limit is {limit}")]
    KeyTooLarge { len: usize, limit: usize },
    #[error("value is {len} bytes; the limit is {limit}")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("the object's database is full (limit {limit} bytes)")]
    DatabaseFull { limit: u64 },
    #[error("the object's database is full: it reached its size limit (--max-db-bytes) or the disk has no room")]
    Full,
    #[error("storage is read-only for this caller")]
    ReadOnly,
    #[error("stored value is not valid JSON: {0}")]
    Corrupt(String),
    #[error("value cannot be encoded as JSON: {0}")]
    Encode(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("injected fault: {0}")]
    Injected(String),
    #[error("change capture: {0}")]
    Capture(#[from] CaptureError),
    #[error("acknowledged batches could not be written to the object's file ({0}); they are safe in the commit log and are written once the disk has room")]
    Lost(String),
}

/// Decides whether a commit should fail, for tests. Called with the object's
/// `class/name` right before each commit.
pub type FaultHook = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// What one batch changed, known after its events ran and before commit.
#[derive(Debug)]
pub struct BatchChanges {
    /// The changeset of every row written in the batch (empty if none).
    pub changeset: Vec<u8>,
    /// The batch created, altered or dropped tables; its changes cannot be
    /// replayed from a changeset alone, so it must be synced to the object's
    /// own file before its outputs leave.
    pub schema_changed: bool,
    /// False if the changeset may not reproduce the batch (SQLite undid
    /// changes inside it that the capture could not attribute, see
    /// `capture`); like a schema change, such a batch is synced to the
    /// object's own file instead of being logged.
    pub replayable: bool,
}

impl BatchChanges {
    /// The batch must be made durable by fsyncing the object's own files:
    /// replaying its changeset would not reproduce it.
    pub fn needs_file_sync(&self) -> bool {
        self.schema_changed || !self.replayable
    }
}

pub struct Storage {
    /// The connection, with change capture installed for its whole life
    /// (removed when it is dropped, before the connection closes).
    conn: CapturingConnection,
    path: PathBuf,
    limits: StorageLimits,
    read_only: bool,
    schema_version_at_begin: i64,
    /// Where the running event's changes begin in the batch's capture.
    event_mark: Mark,
    /// The running event's savepoint (see [`EventSavepoint`]).
    event: std::cell::Cell<EventSavepoint>,
    /// Sequence number of the last batch that wrote anything (committed to
    /// the file, or pending in the open transaction).
    seq: u64,
    page_size: u64,
    /// A batch's savepoint is open (between `begin_batch` and its end).
    batch_open: bool,
    /// When the open transaction began, if one is open.
    txn_since: Option<std::time::Instant>,
    /// First `seq` in the open transaction that is not in the file yet.
    pending_from: Option<u64>,
    /// Where pending batches are announced to the log's checkpointer.
    unflushed: Option<(Arc<Unflushed>, ObjectId)>,
    /// Set when batches already handed to the log could not reach the file
    /// (a failed `COMMIT` or batch rollback): the object must not run again
    /// from this file until recovery replays the log at the next start.
    lost: Option<String>,
    /// The `_roost_alarm` row as last read or written here (`None`: not
    /// known); forgotten whenever an event or batch is rolled back.
    alarm_cache: std::cell::Cell<Option<Option<i64>>>,
}

/// An event's savepoint is opened lazily: by the first use of the
/// connection inside the event ([`Storage::db`], behind `sql()`, the KV API,
/// migrations and the alarm writes). An event that never touches SQL — a
/// Yjs update, an awareness message — costs no `SAVEPOINT`/`RELEASE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventSavepoint {
    /// No event is running.
    None,
    /// An event is running; its savepoint is not open yet.
    Pending,
    /// The event's savepoint is open.
    Open,
    /// Opening it failed: the event cannot be undone alone, so it fails
    /// the batch when it ends.
    Failed,
}

/// An internal error (`SQLITE_INTERNAL`) with `why`.
fn internal(why: &str) -> StorageError {
    StorageError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
        Some(why.into()),
    ))
}

const META_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS _roost_kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _roost_meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
    INSERT OR IGNORE INTO _roost_meta(k, v) VALUES('commit_seq', 0);
    CREATE TABLE IF NOT EXISTS _roost_alarm(k INTEGER PRIMARY KEY CHECK (k = 1), at_ms INTEGER NOT NULL);
";

impl Storage {
    /// Opens (creating if needed) the database at `path`. A new file and the
    /// directories leading to it are made durable before this returns.
    pub fn open(path: &Path, limits: StorageLimits) -> Result<Storage, StorageError> {
        let created = !path.exists();
        if created {
            if let Some(parent) = parent_dir(path) {
                create_dir_all_durable(parent)?;
            }
        }
        let conn = CapturingConnection::install(Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?)?;
        // NORMAL in WAL mode: commits are not fsynced by SQLite (the commit log
        // or `sync_files` makes them durable), checkpoints are.
        // Normal (not exclusive) locking with the shared-memory WAL index, so
        // a second connection can checkpoint in the background while the
        // actor writes (`wal.rs`); the actor remains the only writer.
        // A restarted WAL is overwritten from its start, never truncated:
        // overwriting allocated blocks spares `fdatasync` the inode and the
        // filesystem a synchronous discard (this disk is mounted `discard`).
        // What is in use is read from the WAL index (`wal_used_bytes`).
        // 2 KiB pages for new files (an existing file keeps its own): every
        // commit writes whole pages to the WAL (the changed leaf and the
        // `seq` stamp), so smaller pages halve the WAL bytes, the disk writes
        // and the checkpoints. 1 KiB would halve them again but slows reading
        // a large Yjs snapshot (more overflow pages); measured: git log -p docs/BENCHMARKS.md.
        conn.execute_batch(
            "PRAGMA page_size=2048; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=0;",
        )?;
        // Closing must not checkpoint (two fsyncs per eviction): the WAL stays
        // and is recovered on the next open; the actor checkpoints a WAL that
        // has grown large instead (`wal.rs`, `checkpoint_wal`).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        // Waits out the background checkpointer's brief locks.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let max_pages = (limits.max_db_bytes / page_size.max(512) as u64).max(16);
        // A loaded object keeps its hot pages; the OS page cache holds the rest.
        let cache_kib = (limits.cache_bytes / 1024).max(16);
        conn.execute_batch(&format!(
            "PRAGMA max_page_count={max_pages}; PRAGMA cache_size=-{cache_kib};"
        ))?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE;{META_SCHEMA}COMMIT;"))?;
        // OFF: the actor's connection never fsyncs. Its commits are made
        // durable by the commit log (or `sync_files`); the checkpoints that
        // must fsync (WAL before the database is written, database before
        // the WAL starts over) run with NORMAL: on the background connection
        // (`wal.rs`), or switched on for the actor's own (`checkpoint_wal_mode`).
        // Unsynced here is only the header written when the WAL starts over:
        // until the log's checkpoint syncs this file, the log holds what follows.
        conn.execute_batch("PRAGMA synchronous=OFF;")?;
        let page_size = u64::try_from(page_size).unwrap_or(4096);
        if created {
            sync_parent(path)?;
        }
        let seq: i64 =
            conn.query_row("SELECT v FROM _roost_meta WHERE k='commit_seq'", [], |r| {
                r.get(0)
            })?;
        Ok(Storage {
            conn,
            path: path.to_owned(),
            limits,
            read_only: false,
            schema_version_at_begin: 0,
            event_mark: Mark::default(),
            event: std::cell::Cell::new(EventSavepoint::None),
            seq: u64::try_from(seq).unwrap_or(0),
            page_size,
            batch_open: false,
            txn_since: None,
            pending_from: None,
            unflushed: None,
            lost: None,
            alarm_cache: std::cell::Cell::new(None),
        })
    }

    /// Direct SQL on the object's own connection. Writes made while the
    /// caller is read-only fail (`PRAGMA query_only`).
    pub fn sql(&self) -> &Connection {
        self.db()
    }

    /// The connection, for a use that may write during an event: opens the
    /// event's savepoint first if it is not open yet. Every path by which
    /// an event reaches SQL goes through here.
    pub(crate) fn db(&self) -> &CapturingConnection {
        if self.event.get() == EventSavepoint::Pending {
            let opened = self.run("SAVEPOINT roost_event");
            self.event.set(if opened.is_ok() {
                EventSavepoint::Open
            } else {
                EventSavepoint::Failed
            });
        }
        &self.conn
    }

    pub fn limits(&self) -> &StorageLimits {
        &self.limits
    }

    /// Runs numbered schema migrations: `migrations[i]` moves the schema from
    /// version `i` to `i + 1` (`PRAGMA user_version`). Each runs once, ever.
    pub fn migrate(&self, migrations: &[&str]) -> Result<(), StorageError> {
        let conn = self.db();
        let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let current = usize::try_from(current).unwrap_or(0);
        for (i, step) in migrations.iter().enumerate().skip(current) {
            conn.execute_batch(step)?;
            conn.execute_batch(&format!("PRAGMA user_version={};", i + 1))?;
        }
        Ok(())
    }

    pub(crate) fn commit_seq(&self) -> u64 {
        self.seq
    }

    /// Whether the current event runs for a read-only caller.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn set_read_only(&mut self, read_only: bool) -> Result<(), StorageError> {
        if self.read_only != read_only {
            self.conn.execute_batch(if read_only {
                "PRAGMA query_only=1;"
            } else {
                "PRAGMA query_only=0;"
            })?;
            self.read_only = read_only;
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<(), StorageError> {
        if self.read_only {
            Err(StorageError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn schema_version(&self) -> Result<i64, StorageError> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA schema_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// Runs a fixed statement through the statement cache (no re-parse).
    fn run(&self, sql: &str) -> Result<(), StorageError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Announces this object's pending batches to the log's checkpointer
    /// (see [`Unflushed`]); without it, every batch must be `commit`ted.
    pub(crate) fn track_unflushed(&mut self, registry: Arc<Unflushed>, id: ObjectId) {
        self.unflushed = Some((registry, id));
    }

    /// Starts a batch: a savepoint in the open transaction (begun here if
    /// none is open), and the capture of its row changes.
    pub(crate) fn begin_batch(&mut self) -> Result<(), StorageError> {
        if let Some(why) = &self.lost {
            return Err(StorageError::Lost(why.clone()));
        }
        if self.conn.is_autocommit() {
            self.run("BEGIN IMMEDIATE")?;
            self.txn_since = Some(std::time::Instant::now());
        }
        if let Err(e) = self.run("SAVEPOINT roost_batch") {
            self.end_empty_transaction();
            return Err(e);
        }
        self.batch_open = true;
        self.conn.begin_capture();
        self.schema_version_at_begin = self.schema_version()?;
        Ok(())
    }

    /// Starts one event inside the batch; its savepoint opens with its
    /// first use of SQL ([`db`](Self::db)).
    pub(crate) fn begin_event(&mut self) -> Result<(), StorageError> {
        self.event_mark = self.conn.start_event();
        self.event.set(EventSavepoint::Pending);
        Ok(())
    }

    /// Keeps (`keep = true`) or undoes the current event's writes (and drops
    /// them from the batch's capture).
    pub(crate) fn end_event(&mut self, keep: bool) -> Result<(), StorageError> {
        let event = self.event.replace(EventSavepoint::None);
        self.set_read_only(false)?;
        match event {
            EventSavepoint::Open => {
                if !keep {
                    self.alarm_cache.set(None);
                    self.conn
                        .rollback_to(self.event_mark, || self.run("ROLLBACK TO roost_event"))?;
                }
                self.run("RELEASE roost_event")
            }
            // Without a savepoint nothing may have been written: a change
            // recorded anyway came by a path that bypassed `db`, and only
            // undoing the whole batch can take it back.
            EventSavepoint::Pending | EventSavepoint::None
                if !self.conn.changed_since(self.event_mark) =>
            {
                Ok(())
            }
            EventSavepoint::Failed => Err(internal("the event's savepoint could not be opened")),
            EventSavepoint::Pending | EventSavepoint::None => Err(internal(
                "the event wrote without its savepoint (a path that bypassed Storage::db)",
            )),
        }
    }

    /// Returns what the batch changed and, if it changed anything, stamps it
    /// with the next sequence number. The transaction stays open. The stamp
    /// itself is not in the changeset: replay sets it from the log record.
    pub(crate) fn finish_batch(&mut self) -> Result<Option<BatchChanges>, StorageError> {
        let schema_changed = self.schema_version()? != self.schema_version_at_begin;
        let captured = self.conn.take_changes();
        if captured.bytes.is_empty() && captured.replayable && !schema_changed {
            return Ok(None);
        }
        let next = self.seq + 1;
        self.conn
            .prepare_cached("UPDATE _roost_meta SET v = ?1 WHERE k = 'commit_seq'")?
            .execute([i64::try_from(next).unwrap_or(i64::MAX)])?;
        Ok(Some(BatchChanges {
            changeset: captured.bytes,
            schema_changed,
            replayable: captured.replayable,
        }))
    }

    /// Ends the batch inside the open transaction; it reaches the file with
    /// the next [`flush`](Self::flush). A batch that wrote is listed as
    /// unflushed *before* this returns, so before its log record exists.
    pub(crate) fn end_batch(&mut self, wrote: bool) -> Result<(), StorageError> {
        // The transaction's `COMMIT` comes later, after the batch is logged
        // and acknowledged, so what would fail it must fail the batch now.
        if self.conn.deferred_fk_violations() {
            return Err(StorageError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some("FOREIGN KEY constraint failed (deferred)".into()),
            )));
        }
        self.run("RELEASE roost_batch")?;
        self.batch_open = false;
        // Whatever is still recorded (e.g. a constructor's writes) is
        // made durable by other means.
        self.conn.begin_capture();
        if wrote {
            self.seq += 1;
            if self.pending_from.is_none() {
                self.pending_from = Some(self.seq);
                if let Some((registry, id)) = &self.unflushed {
                    registry.insert(*id, self.seq);
                }
            }
        }
        Ok(())
    }

    /// Ends the batch and commits the transaction (not yet durable by
    /// itself). For a batch not handed to the log yet: if the commit fails,
    /// the batch is undone and earlier batches stay pending.
    pub(crate) fn commit(&mut self, wrote: bool) -> Result<(), StorageError> {
        let earlier = self.pending_from;
        self.end_batch(wrote)?;
        if earlier.is_some() || self.conn.is_autocommit() {
            return self.flush();
        }
        match self.run("COMMIT") {
            Ok(()) => {
                self.committed();
                Ok(())
            }
            Err(e) => {
                // Only this batch was pending: forget it, nothing else is lost.
                if self.clear_pending() {
                    self.seq -= 1;
                }
                self.end_empty_transaction();
                Err(e)
            }
        }
    }

    /// The open transaction committed: nothing is pending any more.
    fn committed(&mut self) {
        self.txn_since = None;
        self.clear_pending();
    }

    /// Forgets the pending batches (and unlists them); whether there were any.
    fn clear_pending(&mut self) -> bool {
        let had = self.pending_from.take().is_some();
        if had {
            if let Some((registry, id)) = &self.unflushed {
                registry.remove(*id);
            }
        }
        had
    }

    /// Commits the open transaction, if any, to the file (not fsynced: the
    /// log, or `sync_files`, makes it durable). On failure the pending
    /// batches stay listed as unflushed, so the log keeps them for recovery,
    /// and the storage refuses every later batch.
    pub(crate) fn flush(&mut self) -> Result<(), StorageError> {
        if let Some(why) = &self.lost {
            return Err(StorageError::Lost(why.clone()));
        }
        if self.conn.is_autocommit() {
            // SQLite itself rolled the transaction back (after an I/O error).
            if let Some(first) = self.pending_from {
                return Err(self.lose(format!(
                    "the transaction holding batches from seq {first} was rolled back"
                )));
            }
            self.txn_since = None;
            return Ok(());
        }
        match self.run("COMMIT") {
            Ok(()) => {
                self.committed();
                Ok(())
            }
            Err(e) if self.pending_from.is_some() => Err(self.lose(format!("commit failed: {e}"))),
            Err(e) => {
                self.end_empty_transaction();
                Err(e)
            }
        }
    }

    fn lose(&mut self, why: String) -> StorageError {
        tracing::error!(reason = %why, "batches acknowledged through the commit log could not be written to the object's file; the object catches its file up from the log before it serves again");
        self.lost = Some(why.clone());
        StorageError::Lost(why)
    }

    /// Why the storage refuses batches, if it does (see [`flush`](Self::flush)).
    pub(crate) fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// How long the open transaction has been open, if one is that can
    /// still be committed (never for a lost storage: it has nothing to do).
    pub(crate) fn open_for(&self) -> Option<std::time::Duration> {
        if self.lost.is_some() {
            return None;
        }
        self.txn_since.map(|t| t.elapsed())
    }

    fn end_empty_transaction(&mut self) {
        if self.pending_from.is_none() && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK;") {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
        if self.conn.is_autocommit() {
            self.txn_since = None;
        }
    }

    /// Undoes the current batch, if one is open, and its capture; earlier
    /// batches of the open transaction stay.
    pub(crate) fn rollback(&mut self) {
        self.alarm_cache.set(None);
        if self.batch_open && !self.conn.is_autocommit() {
            if let Err(e) = self
                .conn
                .execute_batch("ROLLBACK TO roost_batch; RELEASE roost_batch;")
            {
                if self.pending_from.is_some() {
                    let _ = self.lose(format!("batch rollback failed: {e}"));
                } else {
                    tracing::warn!(error = %e, "rollback failed");
                }
            }
        }
        self.batch_open = false;
        self.end_empty_transaction();
        self.conn.begin_capture();
        let _ = self.set_read_only(false);
    }

    /// Frees the page cache's unused pages (after a constructor that read
    /// the whole database, such as a Yjs document loading its snapshot).
    pub(crate) fn release_memory(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory;") {
            tracing::debug!(error = %e, "shrink_memory failed");
        }
    }

    /// The object's alarm time (ms since the epoch), if one is set.
    pub(crate) fn alarm(&self) -> Result<Option<i64>, StorageError> {
        if let Some(known) = self.alarm_cache.get() {
            return Ok(known);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT at_ms FROM _roost_alarm WHERE k = 1")?;
        let mut rows = stmt.query([])?;
        let at = match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        };
        self.alarm_cache.set(Some(at));
        Ok(at)
    }

    pub(crate) fn set_alarm(&self, at_ms: i64) -> Result<(), StorageError> {
        self.check_writable()?;
        self.db()
            .prepare_cached("INSERT OR REPLACE INTO _roost_alarm(k, at_ms) VALUES(1, ?1)")?
            .execute([at_ms])?;
        self.alarm_cache.set(Some(Some(at_ms)));
        Ok(())
    }

    pub(crate) fn delete_alarm(&self) -> Result<(), StorageError> {
        self.check_writable()?;
        self.db()
            .prepare_cached("DELETE FROM _roost_alarm WHERE k = 1")?
            .execute([])?;
        self.alarm_cache.set(Some(None));
        Ok(())
    }

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
        self.conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
        let done = self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
        self.conn.execute_batch("PRAGMA synchronous=OFF;")?;
        done?;
        Ok(())
    }

    /// Commits the open transaction and fsyncs the object's database and WAL
    /// files, making every batch so far durable without the commit log.
    pub(crate) fn sync_files(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        File::open(&self.path)?.sync_all()?;
        let wal = wal_path(&self.path);
        if wal.exists() {
            File::open(&wal)?.sync_all()?;
        }
        Ok(())
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
    if let Some(parent) = parent_dir(path) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn wal_path(path: &Path) -> PathBuf {
    let mut os = path.as_os_str().to_owned();
    os.push("-wal");
    PathBuf::from(os)
}

/// `create_dir_all`, then fsync each directory whose entry it may have added.
pub(crate) fn create_dir_all_durable(dir: &Path) -> Result<(), std::io::Error> {
    if dir.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let mut cursor = Some(dir);
    // Sync the new directories and their parents, up to 4 levels (objects/<class>/<xx>).
    for _ in 0..4 {
        let Some(d) = cursor else { break };
        File::open(d)?.sync_all()?;
        cursor = parent_dir(d);
    }
    Ok(())
}

/// The directory holding `path`: `.` for a bare relative name (whose
/// `Path::parent` is the empty path, which cannot be opened).
pub(crate) fn parent_dir(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

fn sync_parent(path: &Path) -> Result<(), std::io::Error> {
    if let Some(parent) = parent_dir(path) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Maps SQLite's "database or disk is full" to the explicit limit error.
pub(crate) fn classify(e: rusqlite::Error, limits: &StorageLimits) -> StorageError {
    if let rusqlite::Error::SqliteFailure(code, _) = &e {
        if code.code == rusqlite::ErrorCode::DiskFull {
            return StorageError::DatabaseFull {
                limit: limits.max_db_bytes,
            };
        }
        if code.code == rusqlite::ErrorCode::ReadOnly {
            return StorageError::ReadOnly;
        }
    }
    StorageError::Sqlite(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, PathBuf, Storage) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.sqlite");
        let mut s = Storage::open(&path, StorageLimits::default()).expect("open");
        s.begin_batch().expect("begin");
        s.sql()
            .execute_batch(
                "CREATE TABLE p(id INTEGER PRIMARY KEY);
                 CREATE TABLE c(x INTEGER PRIMARY KEY,
                   p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);",
            )
            .expect("schema");
        s.finish_batch().expect("finish");
        s.commit(true).expect("commit");
        (dir, path, s)
    }

    fn batch(s: &mut Storage, sql: &str) -> Result<(), StorageError> {
        s.begin_batch()?;
        let ran = s.sql().execute_batch(sql).map_err(StorageError::from);
        let ended = ran
            .and_then(|()| s.finish_batch())
            .and_then(|c| s.end_batch(c.is_some()));
        if ended.is_err() {
            s.rollback();
        }
        ended
    }

    fn rows(path: &Path) -> i64 {
        let other = Connection::open(path).expect("second connection");
        other
            .query_row("SELECT count(*) FROM p", [], |r| r.get(0))
            .expect("count")
    }

    /// Ended batches wait in one open transaction: listed as unflushed from
    /// the first, invisible to other connections, kept when a later batch
    /// is undone, and in the file once flushed.
    #[test]
    fn batches_wait_in_the_open_transaction_until_flushed() {
        let (_dir, path, mut s) = fresh();
        let registry = Arc::new(Unflushed::default());
        let id = ObjectId::derive("t", "lazy");
        s.track_unflushed(registry.clone(), id);
        let seq0 = s.commit_seq();
        batch(&mut s, "INSERT INTO p VALUES(1)").expect("first");
        batch(&mut s, "INSERT INTO p VALUES(2)").expect("second");
        assert_eq!(s.commit_seq(), seq0 + 2);
        assert!(registry.holds(id, seq0 + 1) && registry.holds(id, seq0 + 2));
        assert!(!registry.holds(id, seq0), "earlier batches are in the file");
        assert!(s.open_for().is_some());
        assert_eq!(rows(&path), 0, "not committed to the file yet");
        // A failing batch is undone alone.
        let failed = batch(&mut s, "INSERT INTO p VALUES(3); INSERT INTO p VALUES(1)");
        assert!(failed.is_err());
        assert_eq!(s.commit_seq(), seq0 + 2);
        // A deferred foreign key is checked when the batch ends, not at the
        // (later) commit: the batch fails and the transaction stays good.
        let dangling = batch(&mut s, "INSERT INTO c VALUES(1, 99)");
        assert!(
            dangling.is_err(),
            "a dangling deferred reference fails its batch"
        );
        s.flush().expect("flush");
        assert!(!registry.holds(id, seq0 + 2));
        assert!(s.open_for().is_none());
        assert_eq!(rows(&path), 2);
        let n: i64 = s
            .sql()
            .query_row("SELECT count(*) FROM c", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0);
        // The file's stamp is the last batch's.
        drop(s);
        let reopened = Storage::open(&path, StorageLimits::default()).expect("reopen");
        assert_eq!(reopened.commit_seq(), seq0 + 2);
    }

    /// If the open transaction is lost (here: rolled back behind the
    /// storage's back), the pending batches stay listed, so the log keeps
    /// them, and the storage refuses every later batch with `Lost`.
    #[test]
    fn a_lost_transaction_refuses_later_batches() {
        let (_dir, path, mut s) = fresh();
        let registry = Arc::new(Unflushed::default());
        let id = ObjectId::derive("t", "lost");
        s.track_unflushed(registry.clone(), id);
        batch(&mut s, "INSERT INTO p VALUES(1)").expect("batch");
        let seq = s.commit_seq();
        s.sql().execute_batch("ROLLBACK").expect("rollback");
        assert!(matches!(s.flush(), Err(StorageError::Lost(_))));
        assert!(s.lost().is_some());
        assert!(
            s.open_for().is_none(),
            "nothing left for the actor to commit"
        );
        assert!(registry.holds(id, seq), "the log must keep the batch");
        assert!(matches!(s.begin_batch(), Err(StorageError::Lost(_))));
        assert!(matches!(s.flush(), Err(StorageError::Lost(_))));
        assert_eq!(rows(&path), 0);
    }

    /// With `commit`, a batch that fails to commit is undone and forgotten:
    /// its `seq` is not used, nothing stays listed, no transaction stays
    /// open, and the next batch commits as usual.
    #[test]
    fn commit_forgets_a_batch_it_could_not_commit() {
        let (_dir, path, mut s) = fresh();
        let registry = Arc::new(Unflushed::default());
        let id = ObjectId::derive("t", "now");
        s.track_unflushed(registry.clone(), id);
        let seq0 = s.commit_seq();
        let commit_one = |s: &mut Storage, sql: &str| {
            s.begin_batch()?;
            s.sql().execute_batch(sql)?;
            let wrote = s.finish_batch()?.is_some();
            s.commit(wrote)
        };
        // A commit hook that vetoes turns the COMMIT into a rollback.
        s.sql().commit_hook(Some(|| true));
        assert!(commit_one(&mut s, "INSERT INTO p VALUES(1)").is_err());
        assert_eq!(s.commit_seq(), seq0, "the failed batch's seq is unused");
        assert!(!registry.holds(id, seq0 + 1), "nothing stays listed");
        assert!(s.open_for().is_none());
        assert!(s.lost().is_none(), "only this batch was at stake");
        assert_eq!(rows(&path), 0);
        s.sql().commit_hook(None::<fn() -> bool>);
        commit_one(&mut s, "INSERT INTO p VALUES(2)").expect("next batch");
        assert_eq!(s.commit_seq(), seq0 + 1);
        assert!(!registry.holds(id, seq0 + 1));
        assert_eq!(rows(&path), 1);
    }
}

#[cfg(test)]
mod alarm_cache_tests {
    use super::*;

    /// The alarm is read from memory after the first read, and an undone
    /// event or batch that set or cleared it is not remembered.
    #[test]
    fn the_cached_alarm_follows_undone_events_and_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s =
            Storage::open(&dir.path().join("a.sqlite"), StorageLimits::default()).expect("open");
        s.begin_batch().expect("begin");
        s.begin_event().expect("event");
        s.set_alarm(100).expect("set");
        s.end_event(true).expect("keep");
        assert_eq!(s.alarm().expect("read"), Some(100));
        s.begin_event().expect("event");
        s.set_alarm(200).expect("set");
        assert_eq!(s.alarm().expect("read"), Some(200));
        s.end_event(false).expect("undo");
        assert_eq!(s.alarm().expect("read"), Some(100), "undone event");
        let changes = s.finish_batch().expect("finish");
        s.commit(changes.is_some()).expect("commit");
        s.begin_batch().expect("begin");
        s.begin_event().expect("event");
        s.delete_alarm().expect("delete");
        s.end_event(true).expect("keep");
        assert_eq!(s.alarm().expect("read"), None);
        s.rollback();
        assert_eq!(s.alarm().expect("read"), Some(100), "undone batch");
    }
}

#[cfg(test)]
mod event_savepoint_tests {
    use super::*;

    fn no_event_savepoint(s: &Storage) -> bool {
        // `RELEASE` of a savepoint that is not open fails.
        s.conn.execute_batch("RELEASE roost_event").is_err()
    }

    /// An event opens its savepoint with its first use of SQL: one that
    /// touches none costs no statement, one that does is still undone
    /// alone, and a write that bypasses the lazy opening fails the event
    /// instead of escaping its undo.
    #[test]
    fn an_event_opens_its_savepoint_with_its_first_use_of_sql() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s =
            Storage::open(&dir.path().join("a.sqlite"), StorageLimits::default()).expect("open");
        s.sql().execute_batch("CREATE TABLE t(x)").expect("create");
        let count = |s: &Storage| -> i64 {
            s.conn
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("count")
        };
        s.begin_batch().expect("begin");

        s.begin_event().expect("event");
        assert!(no_event_savepoint(&s), "nothing used SQL yet");
        s.end_event(false)
            .expect("an event without SQL ends either way");

        s.begin_event().expect("event");
        s.sql()
            .execute("INSERT INTO t VALUES(1)", [])
            .expect("insert");
        s.end_event(true).expect("keep");

        s.begin_event().expect("event");
        s.put("k", &1).expect("put");
        s.sql()
            .execute("INSERT INTO t VALUES(2)", [])
            .expect("insert");
        s.end_event(false).expect("undo");
        assert_eq!(count(&s), 1, "the failed event is undone alone");
        assert_eq!(s.get::<i64>("k").expect("get"), None);

        s.begin_event().expect("event");
        s.conn
            .execute("INSERT INTO t VALUES(3)", [])
            .expect("a write that bypasses db()");
        assert!(no_event_savepoint(&s));
        let refused = s.end_event(true).map_err(|e| e.to_string());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("without its savepoint")),
            "a change made without the event's savepoint fails the event: {refused:?}"
        );
        s.rollback();
        assert_eq!(count(&s), 0, "the whole batch is undone");
    }
}
