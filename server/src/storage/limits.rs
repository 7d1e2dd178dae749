//! The size limits every object's storage enforces (`--max-key-bytes`,
//! `--max-value-bytes`, `--max-db-bytes`, `--object-cache-bytes`,
//! `--wal-checkpoint-bytes`). KV limits are checked before anything is
//! written; the database size is SQLite's `max_page_count`, set at open.

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
