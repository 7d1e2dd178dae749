//! Objects that were never written leave nothing behind. A read of an
//! unused name starts its object as ever (file, constructor, catalog row,
//! counted against `--max-objects`), but when its actor stops (idle,
//! shutdown) with only constructors ever having written to its file
//! (`storage/unwritten.rs`), no socket left in its table and not in cluster
//! mode, the file and its row go: a later start makes the same object
//! again from nothing. A scanner or a read-only token holder thus cannot
//! fill the disk or the object cap with reads.
//!
//! Architecture Invariant: an unwritten object's removal runs in its
//! stopping actor, behind its directory tombstone, after its connection is
//! closed and before the tombstone goes: no other actor of the id runs
//! meanwhile, and the next one finds no file and creates it (counted and
//! registered anew). In order:
//! 1. its catalog row is removed, durably;
//! 2. its database, then its WAL and WAL index, are unlinked (holding the
//!    tidier's turn, `storage::remove_object_files`);
//! 3. the count of object files drops (`--max-objects` has room again).
//!
//! Crash safety (kill -9 at any point): an unwritten object has no record
//! in the commit log (a batch that wrote would have moved its stamp past
//! its mark), so recovery and the checkpointer never touch its file, and
//! nothing can be replayed into a removed one. Before step 1 the object is
//! whole; between 1 and 2 its file stays without a row, and its next start
//! lists it again (`lifecycle::open` registers an unwritten file at every
//! start); within 2 a database without its WAL is an earlier state of the
//! same unwritten object, and a WAL without its database is deleted by
//! SQLite at the next open. Such leftovers, and unwritten objects live at
//! a kill -9, are not swept at start-up (that would open every file): each
//! stays, counted, until its name is next used and its actor stops again.
//!
//! Not here: an object with sockets open keeps its file until they close
//! (the last close wakes it and it stops again); cluster mode keeps every
//! object (its creation is in the replicated log, `cluster/mod.rs`).

use super::state::ObjectState;
use super::Runtime;
use crate::id::{object_path, ObjectKey};

/// Whether a stopping actor's object may be removed: loaded, unwritten,
/// with no socket in its table, on a single node.
pub(super) fn removable<T>(runtime: &Runtime, key: &ObjectKey, object: &ObjectState<T>) -> bool {
    runtime.cluster().is_none()
        && object.live().is_some_and(|l| l.ctx.storage.is_unwritten())
        && runtime.sockets_of(&key.id) == 0
}

/// Removes a stopped unwritten object (its connection closed): its catalog
/// row, then its files. Returns whether it is gone; if not, the file stays
/// as an ordinary object and is tried again at its next stop.
pub(super) async fn remove(runtime: &Runtime, key: &ObjectKey) -> bool {
    if let Err(e) = runtime.catalog().forget_durably(key.id).await {
        tracing::warn!(error = %e, "cannot remove an unwritten object's catalog row; its file stays");
        return false;
    }
    let path = object_path(&runtime.config().data_dir, &key.class, key.id);
    if let Err(e) = crate::sys::blocking(|| crate::storage::remove_object_files(&path)) {
        tracing::warn!(error = %e, "cannot remove an unwritten object's files");
        if path.exists() {
            return false;
        }
    }
    runtime.object_removed();
    // An alarm indexed early for a batch that then failed: nothing to run.
    runtime.alarms().unschedule(key.id);
    runtime
        .metrics()
        .unwritten_removed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!("unwritten object removed");
    true
}
