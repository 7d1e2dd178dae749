//! The capture's buffer and its bookkeeping (safe code): the encoded changes
//! of the running batch, where the running statement's and event's changes
//! begin, and whether SQLite may have undone recorded changes behind the
//! buffer's back (then the batch is not replayable).

use std::cell::{Cell, RefCell};

/// Keep at most this much buffer capacity between batches.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// What the callbacks share with [`CapturingConnection`](super::CapturingConnection). Only ever reached
/// through shared references: the callbacks run inside calls on the
/// connection, so interior mutability (checked, never panicking) is enough.
#[derive(Default)]
pub(super) struct State {
    pub(super) log: RefCell<Log>,
    /// A callback could not record a change (or could not tell whether the
    /// buffer still matches the database). Cleared only by a new batch.
    pub(super) failed: Cell<bool>,
}

#[derive(Default)]
pub(super) struct Log {
    pub(super) buf: Vec<u8>,
    /// Where the changes of the most recently started statement begin.
    pub(super) stmt_start: usize,
    /// Where the running event's changes begin.
    pub(super) event_start: usize,
    /// The buffer from here on may hold changes that SQLite undid.
    pub(super) stale_from: Option<usize>,
    /// A change happened here that could not be recorded (incremental blob
    /// write: its new value is not available to the hook).
    pub(super) missing_at: Option<usize>,
    /// `Storage` is running its own `ROLLBACK TO` (see `rollback_to`).
    pub(super) own_rollback: bool,
}

impl Log {
    pub(super) fn reset(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > RETAINED_CAPACITY {
            self.buf.shrink_to(RETAINED_CAPACITY);
        }
        self.stmt_start = 0;
        self.event_start = 0;
        self.stale_from = None;
        self.missing_at = None;
        self.own_rollback = false;
    }

    pub(super) fn mark_stale(&mut self, at: usize) {
        self.stale_from = Some(self.stale_from.map_or(at, |s| s.min(at)));
    }

    pub(super) fn mark_missing(&mut self) {
        let at = self.buf.len();
        self.missing_at = Some(self.missing_at.map_or(at, |s| s.min(at)));
    }

    /// Forgets everything recorded from `at` on: a savepoint opened there
    /// was rolled back, undoing those changes (and any doubt about them).
    pub(super) fn truncate(&mut self, at: usize) {
        self.buf.truncate(at);
        if self.stale_from.is_some_and(|s| s >= at) {
            self.stale_from = None;
        }
        if self.missing_at.is_some_and(|s| s >= at) {
            self.missing_at = None;
        }
        self.stmt_start = self.stmt_start.min(at);
        self.event_start = self.event_start.min(at);
    }

    /// The previous statement has ended (another starts, or the batch ends).
    /// If it recorded changes but SQLite counts none for it, it was rolled
    /// back (a failed statement reports 0 changes) — or it changed rows only
    /// through triggers, which we cannot tell apart: either way its records
    /// are suspect. `last_changes` is `sqlite3_changes64`.
    pub(super) fn statement_boundary(&mut self, last_changes: impl FnOnce() -> i64) {
        let len = self.buf.len();
        if len > self.stmt_start && last_changes() == 0 {
            let at = self.stmt_start;
            self.mark_stale(at);
        }
        self.stmt_start = len;
    }

    pub(super) fn replayable(&self) -> bool {
        self.missing_at.is_none() && self.stale_from.is_none_or(|s| s >= self.buf.len())
    }
}
