//! The actor's named states. An actor has two: its [`Phase`] — how it waits
//! for commands, from its start to its end — and its [`ObjectState`] — what
//! it holds of its object. They are separate because they change for
//! separate reasons: a draining actor may hold no object, a loaded one, or
//! one whose file misses batches.
//!
//! ```text
//! Phase:  Running ──idle, start failed, senders gone──▶ Draining
//!         Running, Draining ──mailbox empty, nothing in flight──▶ Stopping
//! Object: Unloaded ──a batch starts it──▶ Loaded ──a batch broke──▶ Unloaded
//!         Loaded (lost: its file refused batches) ──catch-up──▶ Unloaded, or Missing
//!         Missing ──catch-up, at most once a second──▶ Unloaded
//!         any ──durable deletion──▶ Unloaded
//! ```
//!
//! Architecture Invariant (file prefix): an object whose file misses
//! batches the log acknowledged is never started from that file and never
//! evicted; every command is answered 507 until the file is caught up (a
//! deletion behind such a batch still runs, and once durable leaves
//! `Unloaded`: the deleted object's missing batches are void).

use std::time::Instant;

use crate::ctx::Ctx;
use crate::metrics::Metrics;

/// A loaded object: the user's value and its context (storage, sockets).
pub(super) struct Live<T> {
    pub(super) object: T,
    pub(super) ctx: Ctx,
}

/// How the actor waits for its next command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Phase {
    /// The mailbox is open. The actor waits for a command with two timers:
    /// the file commit (an open transaction is committed to the file after
    /// `--file-commit-interval`) and the idle timer (`--idle-timeout`).
    /// In: the actor starts.
    /// Out: → `Draining` when the idle timer fires on an object that is not
    /// behind (eviction: tombstone, then the mailbox closes); when the
    /// object fails to start (the next command starts a fresh actor); when
    /// every sender is gone (the runtime's shutdown) and batches are in
    /// flight. → `Stopping` when every sender is gone and nothing is.
    Running,
    /// The mailbox is closed, or its senders are gone: run what is still
    /// queued, with no timers, and let the in-flight batches land.
    /// Out: → `Stopping` once the mailbox is empty and nothing is in flight.
    Draining,
    /// Terminal: the loop has ended; the actor closes the object (its
    /// transaction committed to the file, a large WAL folded in), touches
    /// the catalog — or, for an object never written, removes its row and
    /// files (`unwritten.rs`) — and removes its directory slot.
    Stopping,
}

/// What the actor holds of its object.
// One per actor, inline in its task as the loaded object always was:
// boxing `Loaded` would only add an allocation per start.
#[allow(clippy::large_enum_variant)]
pub(super) enum ObjectState<T> {
    /// Nothing in memory; the next batch starts the object from its file
    /// (`lifecycle::start`).
    /// In: the actor starts; a batch broke (`retire`); a deletion; a catch-up
    /// succeeded.
    /// Out: → `Loaded` when a batch starts the object (a failed start stays
    /// here, and the actor drains).
    Unloaded,
    /// In memory, serving batches. Its storage may turn *lost* at any commit
    /// to the file (`Storage::lost`, a failed `COMMIT` of batches the log
    /// already acknowledged): the storage decides, so lost is asked of it
    /// (`is_lost`) rather than kept here. A lost object refuses every
    /// batch and stays loaded (starting it from its file would miss what
    /// clients have seen).
    /// Out: → `Unloaded` when a batch breaks and the storage is not lost,
    /// or on deletion; → `Missing` (or `Unloaded`) when a lost object is
    /// caught up (`catch_up`).
    Loaded(Live<T>),
    /// Not in memory, and the file misses batches the log acknowledged:
    /// a catch-up (replaying them from the log into the file) failed.
    /// Every command gets 507; never evicted; the catch-up is tried again
    /// with the next command or idle timer, at most once a second.
    /// In: a catch-up of a lost object that did not succeed.
    /// Out: → `Unloaded` once a catch-up succeeds. A deletion does not
    /// leave this state.
    Missing(Missing),
}

/// Why an object's file misses acknowledged batches.
pub(super) struct Missing {
    /// Why the file refused them.
    pub(super) why: String,
    /// The last attempt to catch the file up (one a second at most).
    pub(super) tried: Instant,
}

impl<T> ObjectState<T> {
    pub(super) fn live(&self) -> Option<&Live<T>> {
        match self {
            ObjectState::Loaded(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn live_mut(&mut self) -> Option<&mut Live<T>> {
        match self {
            ObjectState::Loaded(l) => Some(l),
            _ => None,
        }
    }

    /// Why the loaded object's file refuses batches, if it does.
    pub(super) fn lost(&self) -> Option<&str> {
        self.live().and_then(|l| l.ctx.storage.lost())
    }

    /// Whether the loaded object's file refused batches the log holds.
    pub(super) fn is_lost(&self) -> bool {
        self.lost().is_some()
    }

    /// Whether the file misses acknowledged batches (lost or missing): such
    /// an object answers 507 until caught up and is never evicted.
    pub(super) fn is_behind(&self) -> bool {
        self.is_lost() || matches!(self, ObjectState::Missing(_))
    }

    /// How long the loaded object's transaction has been open, if it can
    /// still be committed.
    pub(super) fn open_for(&self) -> Option<std::time::Duration> {
        self.live().and_then(|l| l.ctx.storage.open_for())
    }

    /// Closes a quiet loaded object's connection (`Storage::suspend`): its
    /// value and sockets stay, its SQLite memory goes.
    pub(super) fn suspend_storage(&mut self) {
        if let Some(l) = self.live_mut() {
            crate::sys::blocking(|| l.ctx.storage.suspend());
        }
    }

    /// Opens a suspended object's connection again before a command runs.
    /// If it cannot be opened, the object is dropped: the command starts it
    /// afresh from its file and meets the error there.
    pub(super) fn resume_storage(&mut self) {
        let Some(l) = self.live_mut().filter(|l| l.ctx.storage.is_suspended()) else {
            return;
        };
        if let Err(e) = crate::sys::blocking(|| l.ctx.storage.resume()) {
            tracing::warn!(error = %e, "reopening the quiet object's storage failed");
            *self = ObjectState::Unloaded;
        }
    }

    /// Takes the loaded object out of memory (→ `Unloaded`); a `Missing`
    /// state stays as it is.
    pub(super) fn unload(&mut self) -> Option<Live<T>> {
        match std::mem::replace(self, ObjectState::Unloaded) {
            ObjectState::Loaded(l) => Some(l),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Commits the object's open transaction to its file. If the file
    /// refuses batches that the log already holds, the storage is lost (see
    /// `Storage::flush`): it refuses every later batch.
    pub(super) fn flush(&mut self, metrics: &Metrics) {
        if let Some(l) = self.live_mut() {
            if let Err(e) = l.ctx.storage.flush() {
                metrics.error("file_commit_failed");
                tracing::warn!(error = %e, "commit to the object's file failed");
            }
        }
    }

    /// Drops the loaded object so that the next command starts it again from
    /// its file, once its pending batches are committed there. A lost object
    /// stays loaded instead: starting it from the file would miss batches
    /// that clients have seen, until it is caught up from the log.
    pub(super) fn retire(&mut self, metrics: &Metrics) {
        self.flush(metrics);
        if self.live().is_some() && !self.is_lost() {
            *self = ObjectState::Unloaded;
        }
    }
}
