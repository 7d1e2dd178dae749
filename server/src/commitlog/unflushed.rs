//! Which objects have batches that are durable in the log but not yet
//! committed to their own file: objects list them here (`Storage::end_batch`)
//! and unlist them once their open transaction commits; the checkpointer
//! reads it before it syncs an object's files for a sealed segment.
//!
//! Architecture Invariant: an object's batch may reach its SQLite file after
//! its record is appended (objects keep batches in an open transaction for
//! up to `--file-commit-interval`), but it is listed in [`Unflushed`] before
//! its record is submitted and until its transaction has committed.

use crate::id::ObjectId;

/// Objects with batches that are durable in the commit log but not yet
/// committed to their own file (each object's first such `seq`). The log's
/// checkpointer syncs an object's files for a segment, and deletes the
/// segment, only once none of the object's batches in it is still listed.
#[derive(Default)]
pub(crate) struct Unflushed(std::sync::Mutex<std::collections::HashMap<ObjectId, u64>>);

impl Unflushed {
    pub(crate) fn insert(&self, id: ObjectId, seq: u64) {
        self.lock().entry(id).or_insert(seq);
    }

    pub(crate) fn remove(&self, id: ObjectId) {
        self.lock().remove(&id);
    }

    /// Whether batch `seq` of object `id` (or an earlier one) is still only
    /// in the log.
    pub(crate) fn holds(&self, id: ObjectId, seq: u64) -> bool {
        self.lock().get(&id).is_some_and(|first| *first <= seq)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ObjectId, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
