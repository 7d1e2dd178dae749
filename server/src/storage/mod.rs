//! An object's own SQLite database: opening it, the batch transaction that
//! the actor wraps around events, and the size limits.
//!
//! One `Storage` owns one `rusqlite::Connection` and is owned by one actor;
//! nothing else touches the file while the object is live. This module does
//! not decide when to commit or how commits become durable — the actor and
//! the commit log do — but it offers the pieces: savepoints per event, the
//! changeset of a batch (captured on the connection, see `capture`), and an
//! fsync of the object's own files.

pub mod capture;
pub mod inspect;
mod kv;
mod replay;
pub(crate) mod wal;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use capture::{CapturingConnection, Mark};
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
    Capture(#[from] capture::CaptureError),
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
    /// Sequence number of the last committed batch that wrote anything.
    seq: u64,
    page_size: u64,
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
            if let Some(parent) = path.parent() {
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
        // a large Yjs snapshot (more overflow pages); see docs/BENCHMARKS.md.
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
            seq: u64::try_from(seq).unwrap_or(0),
            page_size,
        })
    }

    /// Direct SQL on the object's own connection. Writes made while the
    /// caller is read-only fail (`PRAGMA query_only`).
    pub fn sql(&self) -> &Connection {
        &self.conn
    }

    pub fn limits(&self) -> &StorageLimits {
        &self.limits
    }

    /// Runs numbered schema migrations: `migrations[i]` moves the schema from
    /// version `i` to `i + 1` (`PRAGMA user_version`). Each runs once, ever.
    pub fn migrate(&self, migrations: &[&str]) -> Result<(), StorageError> {
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let current = usize::try_from(current).unwrap_or(0);
        for (i, step) in migrations.iter().enumerate().skip(current) {
            self.conn.execute_batch(step)?;
            self.conn
                .execute_batch(&format!("PRAGMA user_version={};", i + 1))?;
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

    /// Opens the batch transaction and starts capturing its row changes.
    pub(crate) fn begin_batch(&mut self) -> Result<(), StorageError> {
        self.run("BEGIN IMMEDIATE")?;
        self.conn.begin_capture();
        self.schema_version_at_begin = self.schema_version()?;
        Ok(())
    }

    /// Starts one event's savepoint inside the batch.
    pub(crate) fn begin_event(&mut self) -> Result<(), StorageError> {
        self.run("SAVEPOINT roost_event")?;
        self.event_mark = self.conn.start_event();
        Ok(())
    }

    /// Keeps (`keep = true`) or undoes the current event's writes (and drops
    /// them from the batch's capture).
    pub(crate) fn end_event(&mut self, keep: bool) -> Result<(), StorageError> {
        self.set_read_only(false)?;
        if !keep {
            self.conn
                .rollback_to(self.event_mark, || self.run("ROLLBACK TO roost_event"))?;
        }
        self.run("RELEASE roost_event")
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

    /// Commits the batch transaction (not yet durable by itself).
    pub(crate) fn commit(&mut self, wrote: bool) -> Result<(), StorageError> {
        self.run("COMMIT")?;
        // Whatever is still recorded (e.g. a constructor's writes) is durable
        // by other means now.
        self.conn.begin_capture();
        if wrote {
            self.seq += 1;
        }
        Ok(())
    }

    /// Undoes the batch transaction, if one is open, and its capture.
    pub(crate) fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK;") {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
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
        let mut stmt = self
            .conn
            .prepare_cached("SELECT at_ms FROM _roost_alarm WHERE k = 1")?;
        let mut rows = stmt.query([])?;
        Ok(match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        })
    }

    pub(crate) fn set_alarm(&self, at_ms: i64) -> Result<(), StorageError> {
        self.check_writable()?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO _roost_alarm(k, at_ms) VALUES(1, ?1)")?
            .execute([at_ms])?;
        Ok(())
    }

    pub(crate) fn delete_alarm(&self) -> Result<(), StorageError> {
        self.check_writable()?;
        self.conn
            .prepare_cached("DELETE FROM _roost_alarm WHERE k = 1")?
            .execute([])?;
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
    pub(crate) fn checkpoint_wal(&self) -> Result<(), StorageError> {
        self.checkpoint_wal_mode("TRUNCATE")
    }

    /// `PRAGMA wal_checkpoint(mode)` on the actor's own connection, with
    /// the fsyncs a checkpoint needs (`synchronous=NORMAL` while it runs).
    pub(crate) fn checkpoint_wal_mode(&self, mode: &str) -> Result<(), StorageError> {
        self.conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
        let done = self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
        self.conn.execute_batch("PRAGMA synchronous=OFF;")?;
        done?;
        Ok(())
    }

    /// fsyncs the object's database and WAL files, making every commit so far
    /// durable without the commit log.
    pub(crate) fn sync_files(&self) -> Result<(), StorageError> {
        File::open(&self.path)?.sync_all()?;
        let wal = wal_path(&self.path);
        if wal.exists() {
            File::open(&wal)?.sync_all()?;
        }
        Ok(())
    }
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
        cursor = d.parent();
    }
    Ok(())
}

fn sync_parent(path: &Path) -> Result<(), std::io::Error> {
    if let Some(parent) = path.parent() {
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
