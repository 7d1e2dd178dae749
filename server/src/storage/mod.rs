//! An object's own SQLite database: opening it, the batch transaction that
//! the actor wraps around events, and the size limits.
//!
//! One `Storage` owns one `rusqlite::Connection` and is owned by one actor;
//! nothing else touches the file while the object is live. This module does
//! not decide when to commit or how commits become durable — the actor and
//! the commit log do — but it offers the pieces: savepoints per event, the
//! changeset of a batch (captured on the connection, see
//! `commitlog::changeset`), and an
//! fsync of the object's own files.
//!
//! - this file: [`Storage`] and its small accessors: SQL, migrations,
//!   read-only mode, the cached alarm row;
//! - `open.rs`: opening the file and the connection's settings;
//! - `batch.rs`: the batch transaction, event savepoints, lazy file commits;
//! - `suspend.rs`: a quiet loaded object's connection closed and reopened;
//! - `files.rs`: durable directories and fsyncs of the object's files;
//! - `unwritten.rs`: the mark of a file only constructors wrote;
//! - `wal.rs`: keeping the WAL small (background checkpoints); `tidy.rs`:
//!   idle files' WALs folded in; `leftovers.rs`: what a crash left beside
//!   object files, dealt with at start-up;
//! - `kv.rs`: the KV API; `inspect.rs`: the admin SQL console;
//! - `limits.rs`, `error.rs`: size limits and errors.
//!
//! The changeset format, its capture and its replay belong to the commit
//! log they serve.

mod batch;
mod error;
mod files;
pub(crate) mod inspect;
mod kv;
pub(crate) mod leftovers;
mod limits;
mod open;
mod suspend;
pub(crate) mod tidy;
mod unwritten;
pub(crate) mod wal;

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;

use crate::commitlog::changeset::{CapturingConnection, Mark};
use crate::commitlog::Unflushed;
use crate::id::ObjectId;

pub(crate) use batch::BatchChanges;
pub(crate) use error::classify;
pub use error::{FaultHook, StorageError};
pub(crate) use files::{
    create_dir_all_durable, parent_dir, remove_object_files, sync_object_files, write_file_durably,
};
pub use kv::ListOptions;
pub use limits::StorageLimits;
pub(crate) use suspend::WAL_KEEP_BYTES;

/// An object's database, owned by its actor (see the module doc).
pub struct Storage {
    /// The connection, with change capture installed for its whole life
    /// (removed when it is dropped, before the connection closes); `None`
    /// while a quiet object's storage is suspended (`suspend.rs`).
    conn: Option<CapturingConnection>,
    path: PathBuf,
    limits: StorageLimits,
    read_only: bool,
    schema_version_at_begin: i64,
    /// Where the running event's changes begin in the batch's capture.
    event_mark: Mark,
    /// The running event's savepoint (see [`EventSavepoint`]).
    event: std::cell::Cell<EventSavepoint>,
    /// The open batch holds one event, not begun yet: its savepoint serves
    /// as the event's (`begin_batch_of`).
    lone_event: bool,
    /// Sequence number of the last batch that wrote anything (committed to
    /// the file, or pending in the open transaction).
    seq: u64,
    /// The file's unwritten mark: the `seq` up to which only constructors
    /// wrote to it, if they alone ever did (`unwritten.rs`).
    constructor_seq: Option<u64>,
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
    /// The batch holds this event alone: the batch's savepoint, open since
    /// the batch began with nothing written in it, undoes the event.
    Batch,
}

impl Storage {
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
        self.conn()
    }

    /// The open connection. The actor resumes a suspended storage before
    /// any event, commit or console query reaches it (`suspend.rs`).
    fn conn(&self) -> &CapturingConnection {
        self.conn
            .as_ref()
            .expect("a suspended storage is resumed before it is used")
    }

    /// The size limits this storage enforces.
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
            self.conn().execute_batch(if read_only {
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
            .conn()
            .prepare_cached("PRAGMA schema_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// Runs a fixed statement through the statement cache (no re-parse).
    fn run(&self, sql: &str) -> Result<(), StorageError> {
        self.conn().prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Frees the page cache's unused pages (after a constructor that read
    /// the whole database, such as a Yjs document loading its snapshot).
    pub(crate) fn release_memory(&self) {
        if let Err(e) = self.conn().execute_batch("PRAGMA shrink_memory;") {
            tracing::debug!(error = %e, "shrink_memory failed");
        }
    }

    /// Gives the file's free pages back (`PRAGMA incremental_vacuum`, in
    /// the open transaction: the file shrinks when it reaches the file)
    /// once they are at least a quarter of it. Files made before
    /// auto-vacuum (`open.rs`) keep them: there this is a no-op. Moving
    /// pages changes no row, so the change capture records nothing.
    /// Returns the pages freed.
    pub(crate) fn reclaim_free_pages(&self) -> Result<u64, StorageError> {
        let pages = |sql: &str| -> Result<u64, StorageError> {
            let n: i64 = self.conn().query_row(sql, [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let free = pages("PRAGMA freelist_count")?;
        if free == 0 || free * 4 < pages("PRAGMA page_count")? {
            return Ok(0);
        }
        if pages("PRAGMA auto_vacuum")? != 2 {
            return Ok(0);
        }
        // One page per step: run it to the end.
        let mut stmt = self.conn().prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        Ok(free.saturating_sub(pages("PRAGMA freelist_count")?))
    }

    /// The object's alarm time (ms since the epoch), if one is set.
    pub(crate) fn alarm(&self) -> Result<Option<i64>, StorageError> {
        if let Some(known) = self.alarm_cache.get() {
            return Ok(known);
        }
        let mut stmt = self
            .conn()
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
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod alarm_cache_tests;

#[cfg(test)]
mod event_savepoint_tests;

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}
