//! The batch transaction the actor wraps around events.
//!
//! A batch is a savepoint (`roost_batch`) in one open transaction, begun by
//! the first batch; each event is a savepoint of its own inside it, opened
//! lazily with the event's first use of SQL (`Storage::db`). A batch that
//! ends (`end_batch`) stays in the open transaction — listed in
//! [`Unflushed`] from then on — until `flush` commits it to the file (not
//! fsynced: the commit log, or `sync_files`, makes it durable). A failed
//! batch rolls back to its savepoint only; a deferred foreign-key violation
//! fails the batch when it ends, because the later `COMMIT` must not fail.
//! If the transaction is lost anyway (a failed `COMMIT`), the storage
//! refuses every later batch (`Lost`) until the actor replays the object's
//! records from the log into the file.

use std::sync::Arc;

use super::error::internal;
use super::{EventSavepoint, Storage, StorageError};
use crate::commitlog::Unflushed;
use crate::id::ObjectId;

/// What one batch changed, known after its events ran and before commit.
#[derive(Debug)]
pub(crate) struct BatchChanges {
    /// The changeset of every row written in the batch (empty if none).
    pub changeset: Vec<u8>,
    /// The batch created, altered or dropped tables; its changes cannot be
    /// replayed from a changeset alone, so it must be synced to the object's
    /// own file before its outputs leave.
    pub schema_changed: bool,
    /// False if the changeset may not reproduce the batch (SQLite undid
    /// changes inside it that the capture could not attribute, see
    /// `commitlog::changeset::capture`); like a schema change, such a batch
    /// is synced to the object's own file instead of being logged.
    pub replayable: bool,
}

impl BatchChanges {
    /// The batch must be made durable by fsyncing the object's own files:
    /// replaying its changeset would not reproduce it.
    pub(crate) fn needs_file_sync(&self) -> bool {
        self.schema_changed || !self.replayable
    }
}

impl Storage {
    /// Announces this object's pending batches to the log's checkpointer
    /// (see [`Unflushed`]); without it, every batch must be `commit`ted.
    pub(crate) fn track_unflushed(&mut self, registry: Arc<Unflushed>, id: ObjectId) {
        self.unflushed = Some((registry, id));
    }

    /// Starts a batch: a savepoint in the open transaction (begun here if
    /// none is open), and the capture of its row changes.
    pub(crate) fn begin_batch(&mut self) -> Result<(), StorageError> {
        self.begin_batch_of(0)
    }

    /// [`begin_batch`](Self::begin_batch) for a batch of `events` events
    /// (0: not known). A batch of one lets its event use the batch's own
    /// savepoint: undoing the event is undoing the batch so far, and it
    /// saves a `SAVEPOINT`/`RELEASE` pair per batch.
    pub(crate) fn begin_batch_of(&mut self, events: usize) -> Result<(), StorageError> {
        self.lone_event = false;
        if let Some(why) = &self.lost {
            return Err(StorageError::Lost(why.clone()));
        }
        if self.conn().is_autocommit() {
            self.run("BEGIN IMMEDIATE")?;
            self.txn_since = Some(std::time::Instant::now());
        }
        if let Err(e) = self.run("SAVEPOINT roost_batch") {
            self.end_empty_transaction();
            return Err(e);
        }
        self.batch_open = true;
        self.lone_event = events == 1;
        self.conn().begin_capture();
        self.schema_version_at_begin = self.schema_version()?;
        Ok(())
    }

    /// Starts one event inside the batch; its savepoint opens with its
    /// first use of SQL ([`db`](Self::db)).
    pub(crate) fn begin_event(&mut self) -> Result<(), StorageError> {
        self.event_mark = self.conn().start_event();
        // Only the batch's first event, and only if it has no other.
        let lone = std::mem::take(&mut self.lone_event) && self.batch_open;
        self.event.set(if lone {
            EventSavepoint::Batch
        } else {
            EventSavepoint::Pending
        });
        Ok(())
    }

    /// Keeps (`keep = true`) or undoes the current event's writes (and drops
    /// them from the batch's capture).
    pub(crate) fn end_event(&mut self, keep: bool) -> Result<(), StorageError> {
        let event = self.event.replace(EventSavepoint::None);
        self.set_read_only(false)?;
        match event {
            EventSavepoint::Open => {
                if !keep {
                    self.alarm_cache.set(None);
                    self.conn()
                        .rollback_to(self.event_mark, || self.run("ROLLBACK TO roost_event"))?;
                }
                self.run("RELEASE roost_event")
            }
            // The batch's savepoint stays open: `ROLLBACK TO` keeps it.
            EventSavepoint::Batch if !keep => {
                self.alarm_cache.set(None);
                self.conn()
                    .rollback_to(self.event_mark, || self.run("ROLLBACK TO roost_batch"))
            }
            EventSavepoint::Batch => Ok(()),
            // Without a savepoint nothing may have been written: a change
            // recorded anyway came by a path that bypassed `db`, and only
            // undoing the whole batch can take it back.
            EventSavepoint::Pending | EventSavepoint::None
                if !self.conn().changed_since(self.event_mark) =>
            {
                Ok(())
            }
            EventSavepoint::Failed => Err(internal("the event's savepoint could not be opened")),
            EventSavepoint::Pending | EventSavepoint::None => Err(internal(
                "the event wrote without its savepoint (a path that bypassed Storage::db)",
            )),
        }
    }

    /// Returns what the batch changed; if it changed anything, it takes the
    /// next sequence number when it ends. The transaction stays open.
    pub(crate) fn finish_batch(&mut self) -> Result<Option<BatchChanges>, StorageError> {
        let schema_changed = self.schema_version()? != self.schema_version_at_begin;
        let captured = self.conn().take_changes();
        if captured.bytes.is_empty() && captured.replayable && !schema_changed {
            return Ok(None);
        }
        Ok(Some(BatchChanges {
            changeset: captured.bytes,
            schema_changed,
            replayable: captured.replayable,
        }))
    }

    /// Ends the batch inside the open transaction; it reaches the file with
    /// the next [`flush`](Self::flush). A batch that wrote is listed as
    /// unflushed *before* this returns, so before its log record exists.
    pub(crate) fn end_batch(&mut self, wrote: bool) -> Result<(), StorageError> {
        // The transaction's `COMMIT` comes later, after the batch is logged
        // and acknowledged, so what would fail it must fail the batch now.
        if self.conn().deferred_fk_violations() {
            return Err(StorageError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some("FOREIGN KEY constraint failed (deferred)".into()),
            )));
        }
        self.run("RELEASE roost_batch")?;
        self.batch_open = false;
        // Whatever is still recorded (e.g. a constructor's writes) is
        // made durable by other means.
        self.conn().begin_capture();
        if wrote {
            self.seq += 1;
            if self.pending_from.is_none() {
                self.pending_from = Some(self.seq);
                if let Some((registry, id)) = &self.unflushed {
                    registry.insert(*id, self.seq);
                }
            }
        }
        Ok(())
    }

    /// Ends the batch and commits the transaction (not yet durable by
    /// itself). For a batch not handed to the log yet: if the commit fails,
    /// the batch is undone and earlier batches stay pending.
    pub(crate) fn commit(&mut self, wrote: bool) -> Result<(), StorageError> {
        let earlier = self.pending_from;
        self.end_batch(wrote)?;
        if earlier.is_some() || self.conn().is_autocommit() {
            return self.flush();
        }
        match self.stamp_and_commit() {
            Ok(()) => {
                self.committed();
                Ok(())
            }
            Err(e) => {
                // Only this batch was pending: forget it, nothing else is lost.
                if self.clear_pending() {
                    self.seq -= 1;
                }
                self.end_empty_transaction();
                Err(e)
            }
        }
    }

    /// Stamps the file with the `seq` of the last pending batch, if any,
    /// and commits the open transaction: the stamp reaches the file in the
    /// same transaction as the batches it counts, once per file commit
    /// rather than once per batch. Replay sets it from the log's records.
    fn stamp_and_commit(&mut self) -> Result<(), StorageError> {
        if self.pending_from.is_some() {
            let seq = i64::try_from(self.seq).unwrap_or(i64::MAX);
            self.conn()
                .prepare_cached("UPDATE _roost_meta SET v = ?1 WHERE k = 'commit_seq'")?
                .execute([seq])?;
            // The stamp is no batch's change.
            self.conn().begin_capture();
        }
        self.run("COMMIT")
    }

    /// The open transaction committed: nothing is pending any more.
    fn committed(&mut self) {
        self.txn_since = None;
        self.clear_pending();
    }

    /// Forgets the pending batches (and unlists them); whether there were any.
    fn clear_pending(&mut self) -> bool {
        let had = self.pending_from.take().is_some();
        if had {
            if let Some((registry, id)) = &self.unflushed {
                registry.remove(*id);
            }
        }
        had
    }

    /// Commits the open transaction, if any, to the file (not fsynced: the
    /// log, or `sync_files`, makes it durable). On failure the pending
    /// batches stay listed as unflushed, so the log keeps them for recovery,
    /// and the storage refuses every later batch.
    pub(crate) fn flush(&mut self) -> Result<(), StorageError> {
        if let Some(why) = &self.lost {
            return Err(StorageError::Lost(why.clone()));
        }
        if self.is_suspended() {
            // Suspended only with nothing open (`suspend.rs`).
            return Ok(());
        }
        if self.conn().is_autocommit() {
            // SQLite itself rolled the transaction back (after an I/O error).
            if let Some(first) = self.pending_from {
                return Err(self.lose(format!(
                    "the transaction holding batches from seq {first} was rolled back"
                )));
            }
            self.txn_since = None;
            return Ok(());
        }
        match self.stamp_and_commit() {
            Ok(()) => {
                self.committed();
                Ok(())
            }
            Err(e) if self.pending_from.is_some() => Err(self.lose(format!("commit failed: {e}"))),
            Err(e) => {
                self.end_empty_transaction();
                Err(e)
            }
        }
    }

    fn lose(&mut self, why: String) -> StorageError {
        tracing::error!(reason = %why, "batches acknowledged through the commit log could not be written to the object's file; the object catches its file up from the log before it serves again");
        self.lost = Some(why.clone());
        StorageError::Lost(why)
    }

    /// Why the storage refuses batches, if it does (see [`flush`](Self::flush)).
    pub(crate) fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// How long the open transaction has been open, if one is that can
    /// still be committed (never for a lost storage: it has nothing to do).
    pub(crate) fn open_for(&self) -> Option<std::time::Duration> {
        if self.lost.is_some() {
            return None;
        }
        self.txn_since.map(|t| t.elapsed())
    }

    fn end_empty_transaction(&mut self) {
        if self.pending_from.is_none() && !self.conn().is_autocommit() {
            if let Err(e) = self.conn().execute_batch("ROLLBACK;") {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
        if self.conn().is_autocommit() {
            self.txn_since = None;
        }
    }

    /// Undoes the current batch, if one is open, and its capture; earlier
    /// batches of the open transaction stay.
    pub(crate) fn rollback(&mut self) {
        self.alarm_cache.set(None);
        if self.is_suspended() {
            return;
        }
        if self.batch_open && !self.conn().is_autocommit() {
            if let Err(e) = self
                .conn()
                .execute_batch("ROLLBACK TO roost_batch; RELEASE roost_batch;")
            {
                if self.pending_from.is_some() {
                    let _ = self.lose(format!("batch rollback failed: {e}"));
                } else {
                    tracing::warn!(error = %e, "rollback failed");
                }
            }
        }
        self.batch_open = false;
        self.end_empty_transaction();
        self.conn().begin_capture();
        let _ = self.set_read_only(false);
    }
}
