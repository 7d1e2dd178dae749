//! What an unclean stop leaves beside object files, dealt with at
//! start-up (`Runtime::new`, from the walk that counts the objects), before
//! any object runs:
//!
//! - a rollback journal (`<id>.sqlite-journal`): a kill -9 while the file
//!   was being created, before it switched to WAL. Such a journal is *hot*:
//!   every read-only connection to the file fails (`SQLITE_READONLY_ROLLBACK`)
//!   until a read-write one rolls it back — so one half-created object made
//!   every `POST /v1/admin/backup` fail, and the admin console's reads of
//!   it, until a client happened to use that object again. It is rolled back
//!   here (a read-write open and one read; nothing committed is undone);
//! - a WAL beside an idle object: queued for the tidier (`tidy.rs`) as if
//!   the object had just been evicted.
//!
//! It does not check or repair anything else: a damaged file is the
//! object's own failure when it runs (`lifecycle.rs`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::tidy::Tidier;
use super::StorageError;

/// Rolls back the hot journal beside the database at `path`.
pub(crate) fn roll_back(path: &Path) -> Result<(), StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The first read of a file with a hot journal rolls it back (fsyncing
    // the database before the journal is deleted, `synchronous=FULL`).
    conn.execute_batch("PRAGMA synchronous=FULL;")?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// Rolls back every hot journal found, and queues every WAL found for
/// tidying.
pub(crate) fn deal_with(journals: &[PathBuf], wals: Vec<PathBuf>, tidier: &Tidier) {
    let mut rolled_back = 0;
    for db in journals {
        match roll_back(db) {
            Ok(()) => rolled_back += 1,
            Err(e) => {
                tracing::warn!(file = %db.display(), error = %e, "cannot roll back the journal a crash left beside an object file");
            }
        }
    }
    if !journals.is_empty() {
        tracing::info!(
            files = rolled_back,
            "rolled back the journals of object files whose creation a crash cut short"
        );
    }
    if !wals.is_empty() {
        tracing::info!(
            files = wals.len(),
            "object files with a WAL at start-up: tidying them once idle"
        );
    }
    for db in wals {
        tidier.evicted(db);
    }
}
