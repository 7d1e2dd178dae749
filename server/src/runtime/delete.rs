//! The `Delete` command: an object's deletion runs alone, after every
//! command queued before it, and removes the object's files (and writes
//! set aside for it at start-up), sockets (closed with 1001), catalog
//! entry and alarm.
//!
//! With the change feed on, the deletion first waits for the feed index to
//! take every event the object published: the object's file is the only
//! copy of events not indexed yet (`feed/recover.rs`), so deleting it
//! before would let a kill -9 lose committed events. If the index cannot
//! take them (its file not writable), the deletion is refused: retry.
//!
//! Architecture Invariant: the deletion is acknowledged only once it is
//! durable in the commit log (a deletion mark, logged after the files are
//! gone). Recovery then forgets the deleted object's logged batches instead
//! of replaying them into a new object of the same name, whose `seq`s
//! start again from 1.

use roost_protocol::{ErrorCode, ErrorDetail};

use super::actor::Actor;
use super::command::DeleteReply;
use super::state::ObjectState;
use super::{error, Runtime};
use crate::commitlog::LogError;
use crate::id::{object_path, ObjectKey};
use crate::object::DurableObject;

impl<T: DurableObject> Actor<T> {
    /// Deletes the object once every earlier batch has reached its clients,
    /// and answers `reply`. The object is unloaded; a `Missing` state stays.
    pub(super) async fn delete(&mut self, reply: DeleteReply) {
        // Let every earlier batch reach its clients first.
        self.pipeline.settle(&self.runtime, self.key.id).await;
        self.wal.join().await;
        self.object.flush(&self.metrics);
        if let Some(feed) = self.runtime.0.feed.get() {
            let wait = std::time::Duration::from_secs(15);
            if feed.config().feeds(&self.key.class) && !feed.indexed_all(wait).await {
                let _ = reply.send(Err(error(
                    ErrorCode::Storage,
                    "the change feed cannot index this object's last events yet (its index \
                     is not writable); deleting now could lose them: retry the deletion",
                )));
                return;
            }
        }
        let live = self.object.unload();
        crate::sys::blocking(|| drop(live));
        let deleted = match delete_object(&self.runtime, &self.key) {
            Ok(()) => log_deletion(&self.runtime, &self.key).await,
            Err(e) => Err(e),
        };
        if deleted.is_ok() {
            // Whatever the old file missed is void (the deletion mark is
            // durable): a new object of this name starts afresh.
            self.object = ObjectState::Unloaded;
            if let Some(feed) = self.runtime.0.feed.get() {
                feed.forget(self.key.id);
            }
        }
        let _ = reply.send(deleted);
    }
}

/// Deletes an unloaded object's files, its sockets, catalog entry and alarm.
fn delete_object(runtime: &Runtime, key: &ObjectKey) -> Result<(), ErrorDetail> {
    for outbox in runtime.sockets().remove_object(&key.id) {
        outbox.push(crate::sockets::OutFrame::Close(
            1001,
            "object deleted".into(),
        ));
    }
    let data_dir = &runtime.config().data_dir;
    // First the writes set aside for it at start-up (`recovery`), if any:
    // a crash between the two then leaves the damaged file, never set-aside
    // writes that would replay into a new, empty file.
    let aside = crate::commitlog::recovery::quarantine_path(data_dir, key.id);
    match std::fs::remove_file(&aside) {
        Ok(()) => {
            if let Some(dir) = aside.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            tracing::info!(class = %key.class, id = %key.id, "set-aside writes deleted");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(error(
                ErrorCode::Storage,
                format!("cannot delete {}: {e}", aside.display()),
            ))
        }
    }
    let path = object_path(data_dir, &key.class, key.id);
    match crate::sys::blocking(|| crate::storage::remove_object_files(&path)) {
        Ok(true) => runtime.object_removed(),
        Ok(false) => {}
        Err(e) => {
            return Err(error(
                ErrorCode::Storage,
                format!("cannot delete {}: {e}", path.display()),
            ))
        }
    }
    if let Some(dir) = crate::storage::parent_dir(&path) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    runtime.alarms().unschedule(key.id);
    runtime.alarms().reindex_lazily(runtime, key, None);
    runtime.catalog().forget(key.id);
    tracing::info!(class = %key.class, id = %key.id, "object deleted");
    Ok(())
}

/// Makes the deletion durable in the commit log (after the files are gone,
/// before it is acknowledged and before the object can be created again):
/// recovery then forgets the deleted object's logged batches instead of
/// replaying them into a new object of the same name.
async fn log_deletion(runtime: &Runtime, key: &ObjectKey) -> Result<(), ErrorDetail> {
    let record = crate::commitlog::record::Record::deletion(&key.class, key.id);
    let durable = match runtime.submit(record, None) {
        Ok(ack) => ack.await.unwrap_or(Err(LogError::Closed)),
        Err(e) => Err(e),
    };
    if durable.is_ok() {
        // Batches the object's file never took (a lost transaction) are void
        // now: the checkpointer need not wait for them, nor for a new object
        // of the same name to commit its own.
        runtime.log().unflushed().remove(key.id);
    }
    durable.map_err(|e| {
        tracing::error!(error = %e, class = %key.class, id = %key.id, "the deletion could not be logged");
        error(
            ErrorCode::Storage,
            format!("the object's files are deleted, but the deletion could not be made durable: {e}"),
        )
    })
}
