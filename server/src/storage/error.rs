//! What storage reports: [`StorageError`], SQLite's errors mapped to the
//! object's limits (`classify`), and the fault-injection hook of tests.

use std::sync::Arc;

use super::StorageLimits;
use crate::commitlog::changeset::CaptureError;

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

/// An internal error (`SQLITE_INTERNAL`) with `why`.
pub(super) fn internal(why: &str) -> StorageError {
    StorageError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
        Some(why.into()),
    ))
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
