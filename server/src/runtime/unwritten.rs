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
//! 1. its database, then its WAL and WAL index, are unlinked (holding the
//!    tidier's turn, `storage::remove_object_files`) and the directory is
//!    fsynced;
//! 2. the count of object files drops (`--max-objects` has room again);
//! 3. its catalog row is removed, durably.
//!
//! Crash safety (kill -9 or power loss at any point): an unwritten object
//! has no record in the commit log (a batch that wrote would have moved
//! its stamp past its mark), so recovery and the checkpointer never touch
//! its file, and nothing can be replayed into a removed one. Before 1 the
//! object is whole; within 1 a database without its WAL is an earlier
//! state of the same unwritten object, and a WAL without its database is
//! deleted by SQLite at the next open; between 1 and 3 its row stays
//! without a file (allowed by the catalog's invariant: listed until the
//! name is used again or deleted). Unwritten objects live at a kill -9 are
//! not swept at start-up (that would open every file): each stays,
//! counted, until its name is next used and its actor stops again.
//! `lifecycle::open` registers an unwritten file again at each start, for
//! files whose rows a data directory from before durable rows lost.
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

/// Removes a stopped unwritten object (its connection closed): its files
/// (the directory entry made durable), then its catalog row. Returns
/// whether it is gone; if not, the file stays as an ordinary object and is
/// tried again at its next stop.
pub(super) async fn remove(runtime: &Runtime, key: &ObjectKey) -> bool {
    let path = object_path(&runtime.config().data_dir, &key.class, key.id);
    let removed = crate::sys::blocking(|| {
        crate::storage::remove_object_files(&path)?;
        if let Some(dir) = crate::storage::parent_dir(&path) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok::<(), std::io::Error>(())
    });
    if let Err(e) = removed {
        tracing::warn!(error = %e, "cannot remove an unwritten object's files");
        if path.exists() {
            return false;
        }
    }
    runtime.object_removed();
    // A row without its file is allowed (the listing shows it until the
    // name is used again or deleted); a file without its row is not.
    if let Err(e) = runtime.catalog().forget_durably(key.id).await {
        tracing::warn!(error = %e, "cannot remove an unwritten object's catalog row");
    }
    // An alarm indexed early for a batch that then failed: nothing to run.
    runtime.alarms().unschedule(key.id);
    runtime
        .metrics()
        .unwritten_removed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!("unwritten object removed");
    true
}
