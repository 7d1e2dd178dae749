//! Opening an object's database: the file (and the directories leading to
//! it) made durable when new, the connection's settings, the meta tables
//! (`_roost_kv`, `_roost_meta` with the `commit_seq` stamp and, in a file
//! only constructors wrote, the `constructor_seq` mark, `_roost_alarm`)
//! and the change capture installed for the connection's whole life.
//!
//! Settings: 2 KiB pages and incremental auto-vacuum for new files (free
//! pages can be given back, `Storage::reclaim_free_pages`), WAL with normal locking and the
//! shared-memory WAL index (so `wal.rs` can checkpoint on a second
//! connection), no auto-checkpoint and no checkpoint on close,
//! `max_page_count` from `--max-db-bytes`, a page cache of
//! `--object-cache-bytes`, and `synchronous=OFF` on the actor's connection:
//! the commit log (or `sync_files`) makes its commits durable.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::files::{create_dir_all_durable, parent_dir, sync_parent};
use super::{EventSavepoint, Storage, StorageError, StorageLimits};
use crate::commitlog::changeset::{CapturingConnection, Mark};

// A new database (its `_roost_meta` still empty) gets the unwritten mark
// (`unwritten.rs`) in the transaction that creates it; a file made before
// the mark existed gets none, and is kept as written.
const META_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS _roost_kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _roost_meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
    INSERT INTO _roost_meta(k, v) SELECT 'constructor_seq', 0 WHERE NOT EXISTS (SELECT 1 FROM _roost_meta);
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
        let (conn, page_size) = connect(path, &limits)?;
        // Made durable by SQLite itself (FULL while it commits).
        conn.execute_batch(&format!(
            "PRAGMA synchronous=FULL; BEGIN IMMEDIATE;{META_SCHEMA}COMMIT; PRAGMA synchronous=OFF;"
        ))?;
        if created {
            sync_parent(path)?;
        }
        let (seq, constructor_seq): (i64, Option<i64>) = conn.query_row(
            "SELECT (SELECT v FROM _roost_meta WHERE k='commit_seq'),
                    (SELECT v FROM _roost_meta WHERE k='constructor_seq')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Storage {
            conn: Some(conn),
            path: path.to_owned(),
            limits,
            read_only: false,
            schema_version_at_begin: 0,
            event_mark: Mark::default(),
            event: std::cell::Cell::new(EventSavepoint::None),
            lone_event: false,
            seq: u64::try_from(seq).unwrap_or(0),
            constructor_seq: constructor_seq.and_then(|s| u64::try_from(s).ok()),
            page_size,
            batch_open: false,
            txn_since: None,
            pending_from: None,
            unflushed: None,
            lost: None,
            alarm_cache: std::cell::Cell::new(None),
        })
    }
}

/// Opens the connection, installs the change capture and applies the
/// settings; returns it with the file's page size. (The meta tables are
/// made by `open`, not here: a resumed connection finds them.)
pub(super) fn connect(
    path: &Path,
    limits: &StorageLimits,
) -> Result<(CapturingConnection, u64), StorageError> {
    let conn = CapturingConnection::install(Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?)?;
    let page_size = configure(&conn, limits)?;
    Ok((conn, u64::try_from(page_size).unwrap_or(4096)))
}

/// The connection's settings; returns the page size.
fn configure(conn: &Connection, limits: &StorageLimits) -> Result<i64, StorageError> {
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
    // Incremental auto-vacuum for a new (empty) file; it must precede the
    // first table: a Yjs document's compaction deletes most of its rows,
    // and without it their pages stay in the file for good. Nothing moves
    // until `reclaim_free_pages` asks; its cost on writes is a pointer-map
    // page per ~400 pages, touched only when a page is allocated. Only
    // when empty: on an existing file the pragma writes the header in a
    // transaction of its own (a WAL frame and an fsync at every open).
    // (After the page size: the pragma may write the new file's header.)
    let empty: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA page_size=2048;")?;
    if empty == 0 {
        conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")?;
    }
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
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
    // OFF: the actor's connection never fsyncs. Its commits are made
    // durable by the commit log (or `sync_files`); the checkpoints that
    // must fsync (WAL before the database is written, database before
    // the WAL starts over) run with NORMAL: on the background connection
    // (`wal.rs`), or switched on for the actor's own (`checkpoint_wal_mode`).
    // Unsynced here is only the header written when the WAL starts over:
    // until the log's checkpoint syncs this file, the log holds what follows.
    conn.execute_batch("PRAGMA synchronous=OFF;")?;
    Ok(page_size)
}
