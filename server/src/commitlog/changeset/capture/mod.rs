//! Captures the row changes of one batch as bytes.
//!
//! [`CapturingConnection`] owns an object's connection and keeps
//! two SQLite callbacks installed on it for the connection's whole life:
//!
//! - the *preupdate hook* runs before every row change and appends it —
//!   operation, table, rowids, typed column values — to one buffer. No SQL is
//!   parsed and no schema is looked up; each value is copied once, into that
//!   buffer.
//! - a *statement trace* runs when each statement starts. It notices when
//!   SQLite undid changes that the hook had already recorded and that nobody
//!   removed from the buffer: a statement that failed half-way (whose error
//!   the handler swallowed), or a `ROLLBACK TO` of a savepoint the handler
//!   opened itself. The buffer would then replay changes that never
//!   happened, so the batch is reported as not replayable and the actor makes
//!   it durable by fsyncing the object's own file instead of through the log.
//!
//! `Storage`'s own savepoints (one per event, one per `put_many`) are undone
//! through [`CapturingConnection::rollback_to`], which truncates the buffer
//! back to where the savepoint began, so a failed event costs nothing.
//!
//! The hook is in `hook.rs`, the trace in `trace.rs`, the buffer they share
//! in `log.rs` (safe code); this file owns the connection and installs and
//! removes both callbacks.
//!
//! This module and its submodules are the only code with `unsafe` besides
//! `sys.rs`: the callbacks, SQLite's preupdate API (compiled in by rusqlite's
//! `preupdate_hook` feature, whose bindings need libclang at build time) and
//! the connection's lookaside setting (`small_lookaside`). Every `unsafe`
//! block carries its SAFETY comment.
#![allow(unsafe_code)]

mod hook;
mod log;
mod trace;

use std::ffi::{c_int, c_void};
use std::ops::Deref;
use std::ptr::{self, NonNull};

use rusqlite::ffi;
use rusqlite::Connection;

use super::format::FORMAT_V1;
use super::CaptureError;
use hook::on_preupdate;
use log::{Log, State};
use trace::on_trace;

/// A position in the recorded changes, taken when a savepoint opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Mark(usize);

/// What one batch changed.
#[derive(Debug)]
pub(crate) struct Captured {
    /// The encoded changes; empty if no captured table changed.
    pub bytes: Vec<u8>,
    /// False if the bytes may not reproduce the batch (SQLite undid changes
    /// that stayed recorded, or a change could not be recorded): such a batch
    /// must be made durable in the object's own file.
    pub replayable: bool,
}

/// Lookaside slots per connection and their size: 20 of 256 bytes instead of
/// SQLite's default 100 of 1,200. Every loaded object holds a connection, and
/// the default cost ~45 KiB of RSS per loaded object (measured: git log -p docs/BENCHMARKS.md).
const LOOKASIDE_SLOT_BYTES: c_int = 256;
const LOOKASIDE_SLOTS: c_int = 20;

/// Sets the lookaside of a connection that has not run a statement yet (a
/// runtime setting, so crates embedding Roost need no SQLite build flags).
fn small_lookaside(conn: &Connection) -> Result<(), CaptureError> {
    // SAFETY: the connection is open and has no lookaside memory in use;
    // SQLITE_DBCONFIG_LOOKASIDE takes (void *buffer, int size, int count), and
    // a null buffer lets SQLite allocate it.
    let rc = unsafe {
        ffi::sqlite3_db_config(
            conn.handle(),
            ffi::SQLITE_DBCONFIG_LOOKASIDE,
            ptr::null_mut::<c_void>(),
            LOOKASIDE_SLOT_BYTES,
            LOOKASIDE_SLOTS,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(CaptureError::Install(rc))
    }
}

/// The most lookaside slots `conn` has had in use at once.
#[cfg(test)]
fn lookaside_high_water(conn: &Connection) -> c_int {
    let (mut current, mut high) = (0, 0);
    // SAFETY: the connection is open; both out-pointers are valid.
    let rc = unsafe {
        ffi::sqlite3_db_status(
            conn.handle(),
            ffi::SQLITE_DBSTATUS_LOOKASIDE_USED,
            &mut current,
            &mut high,
            0,
        )
    };
    assert_eq!(rc, ffi::SQLITE_OK);
    high
}

/// An object's connection with change capture installed for its whole life.
/// Dereferences to the connection. Nothing else may install a preupdate hook
/// or a trace callback on it.
pub(crate) struct CapturingConnection {
    conn: Connection,
    /// Freed in `drop`, after the callbacks that use it are removed.
    state: NonNull<State>,
}

// SAFETY: `State` is reached only through this value and from SQLite
// callbacks, which run inside calls on `conn` made through this value. Neither
// this type nor `Connection` is `Sync`, so all of that happens on the one
// thread that currently owns the value; moving it with its owner is sound
// (`Connection` is `Send`, and `State` holds only owned, `Send` data).
unsafe impl Send for CapturingConnection {}

impl Deref for CapturingConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl CapturingConnection {
    /// Installs the capture on `conn`. Changes are recorded from now on;
    /// [`begin_capture`](Self::begin_capture) starts a batch afresh.
    /// Also gives the connection a small lookaside (see [`small_lookaside`]).
    pub(crate) fn install(conn: Connection) -> Result<CapturingConnection, CaptureError> {
        small_lookaside(&conn)?;
        let state = NonNull::from(Box::leak(Box::<State>::default()));
        // From here on `drop` removes the callbacks and frees the state.
        let capturing = CapturingConnection { conn, state };
        let ctx = state.as_ptr().cast::<c_void>();
        // SAFETY: the connection is open (we own it); `ctx` points to a live
        // `State` until `drop` has removed this hook.
        unsafe { ffi::sqlite3_preupdate_hook(capturing.conn.handle(), Some(on_preupdate), ctx) };
        // SAFETY: as above, for the trace callback.
        let rc = unsafe {
            ffi::sqlite3_trace_v2(
                capturing.conn.handle(),
                ffi::SQLITE_TRACE_STMT,
                Some(on_trace),
                ctx,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(CaptureError::Install(rc));
        }
        Ok(capturing)
    }

    fn state(&self) -> &State {
        // SAFETY: `state` came from `Box::leak` in `install` and is freed
        // only in `drop`; it is only ever accessed through shared references.
        unsafe { self.state.as_ref() }
    }

    /// Runs `f` on the log. If a callback were running (it never is when
    /// this is called), records the failure instead.
    fn with_log<R: Default>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        let state = self.state();
        match state.log.try_borrow_mut() {
            Ok(mut log) => f(&mut log),
            Err(_) => {
                state.failed.set(true);
                R::default()
            }
        }
    }

    /// Forgets everything recorded: a batch starts, or was rolled back.
    pub(crate) fn begin_capture(&self) {
        self.with_log(Log::reset);
        self.state().failed.set(false);
    }

    /// The current end of the recorded changes; take it when opening a
    /// savepoint, to [`rollback_to`](Self::rollback_to) it later.
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.with_log(|log| log.buf.len()))
    }

    /// Whether a change was recorded since `mark`.
    pub(crate) fn changed_since(&self, mark: Mark) -> bool {
        self.with_log(|log| log.buf.len() != mark.0)
    }

    /// Like [`mark`](Self::mark), taken when an event's savepoint opens. A
    /// `ROLLBACK TO` that the handler runs itself is taken to undo changes
    /// back to here (handler savepoints nest inside the event's).
    pub(crate) fn start_event(&self) -> Mark {
        Mark(self.with_log(|log| {
            log.event_start = log.buf.len();
            log.event_start
        }))
    }

    /// Runs `rollback` — the caller's own `ROLLBACK TO` of a savepoint that
    /// opened at `mark` — and, if it succeeds, forgets the changes recorded
    /// since `mark`. If it fails, the changes since `mark` become suspect.
    pub(crate) fn rollback_to<T, E>(
        &self,
        mark: Mark,
        rollback: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.with_log(|log| log.own_rollback = true);
        let result = rollback();
        self.with_log(|log| {
            log.own_rollback = false;
            match &result {
                Ok(_) => log.truncate(mark.0),
                Err(_) => log.mark_stale(mark.0),
            }
        });
        result
    }

    /// The changes recorded since [`begin_capture`](Self::begin_capture),
    /// encoded; the buffer starts afresh.
    pub(crate) fn take_changes(&self) -> Captured {
        let db = self.raw_handle();
        let taken = self.with_log(|log| {
            // SAFETY: `db` is this value's open connection; reading the
            // change count of its last statement has no other effect.
            log.statement_boundary(|| unsafe { ffi::sqlite3_changes64(db) });
            let replayable = log.replayable();
            let bytes = if log.buf.is_empty() {
                Vec::new()
            } else {
                let mut bytes = Vec::with_capacity(log.buf.len() + 1);
                bytes.push(FORMAT_V1);
                bytes.extend_from_slice(&log.buf);
                bytes
            };
            log.reset();
            Some((bytes, replayable))
        });
        let failed = self.state().failed.replace(false);
        match taken {
            Some((bytes, replayable)) if !failed => Captured { bytes, replayable },
            other => {
                tracing::error!(
                    "change capture failed; the batch is made durable in the object's file"
                );
                Captured {
                    bytes: other.map(|(b, _)| b).unwrap_or_default(),
                    replayable: false,
                }
            }
        }
    }

    /// Whether deferred foreign-key constraints are violated right now (the
    /// open transaction's `COMMIT` would fail).
    pub(crate) fn deferred_fk_violations(&self) -> bool {
        let (mut current, mut highwater) = (0, 0);
        // SAFETY: `db` is this value's open connection; the status call
        // only writes the two counters.
        let rc = unsafe {
            ffi::sqlite3_db_status(
                self.raw_handle(),
                ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
                &mut current,
                &mut highwater,
                0,
            )
        };
        rc == ffi::SQLITE_OK && current > 0
    }

    fn raw_handle(&self) -> *mut ffi::sqlite3 {
        // SAFETY: returns the raw handle of the connection we own; callers
        // use it only while `self` (and so the connection) is alive.
        unsafe { self.conn.handle() }
    }
}

impl Drop for CapturingConnection {
    fn drop(&mut self) {
        let db = self.raw_handle();
        // SAFETY: the connection is still open (fields are dropped after this
        // body); once both callbacks are removed SQLite no longer holds
        // `state`.
        unsafe {
            ffi::sqlite3_preupdate_hook(db, None, ptr::null_mut());
            ffi::sqlite3_trace_v2(db, 0, None, ptr::null_mut());
        }
        // SAFETY: `state` came from `Box::leak` in `install`; nothing can
        // reach it any more, and it is freed exactly once, here.
        drop(unsafe { Box::from_raw(self.state.as_ptr()) });
    }
}

#[cfg(test)]
mod tests;
