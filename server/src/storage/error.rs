//! What storage reports: [`StorageError`], SQLite's errors mapped to the
//! object's limits (`classify`), and the fault-injection hook of tests.

use std::sync::Arc;

use super::StorageLimits;
use crate::commitlog::changeset::CaptureError;

/// What an object's storage can fail with; [`ObjectError`](crate::ObjectError)
/// maps each to the error code a caller sees.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A key longer than `--max-key-bytes`; nothing is written and the caller
    /// gets `too_large` (413).
    #[error("key is {len} bytes; the limit is {limit}")]
    KeyTooLarge {
        /// The key's length in bytes.
        len: usize,
        /// The longest key allowed, in bytes.
        limit: usize,
    },
    /// A value whose JSON encoding is larger than `--max-value-bytes`; nothing
    /// is written and the caller gets `too_large` (413).
    #[error("value is {len} bytes; the limit is {limit}")]
    ValueTooLarge {
        /// The encoded value's length in bytes.
        len: usize,
        /// The largest value allowed, in bytes.
        limit: usize,
    },
    /// SQLite reported the database or disk full during a storage call,
    /// reported against `--max-db-bytes`; the caller gets `too_large` (413).
    #[error("the object's database is full (limit {limit} bytes)")]
    DatabaseFull {
        /// The object's database size limit, in bytes.
        limit: u64,
    },
    /// SQLite reported the database or disk full to a handler's own SQL; the
    /// caller gets `too_large` (413).
    #[error("the object's database is full: it reached its size limit (--max-db-bytes) or the disk has no room")]
    Full,
    /// A write by a read-only caller (a `read` token), through the KV API or
    /// SQL; the caller gets `forbidden` (403).
    #[error("storage is read-only for this caller")]
    ReadOnly,
    /// A stored value or key read back is not valid JSON or UTF-8; the caller
    /// gets `storage` (500).
    #[error("stored value is not valid JSON: {0}")]
    Corrupt(String),
    /// A value given to `put` cannot be encoded as JSON; the caller gets
    /// `storage` (500).
    #[error("value cannot be encoded as JSON: {0}")]
    Encode(String),
    /// Any other SQLite error; the caller gets `storage` (500).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file system error; the caller gets `storage` (500).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A commit failure made by a test's [`FaultHook`]; the batch fails as
    /// any failed commit does.
    #[error("injected fault: {0}")]
    Injected(String),
    /// Capturing a batch's row changes for the commit log failed; the caller
    /// gets `storage` (500).
    #[error("change capture: {0}")]
    Capture(#[from] CaptureError),
    /// Batches already acknowledged through the commit log could not be
    /// written to the object's file; the storage refuses every later batch and
    /// the object answers `insufficient_storage` (507) until its file catches
    /// up from the log.
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
