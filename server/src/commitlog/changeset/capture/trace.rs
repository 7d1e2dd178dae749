//! The statement trace: runs when each statement starts on the object's
//! connection and notices when SQLite undid changes the hook had already
//! recorded and nobody removed from the buffer — a statement that failed
//! half-way (whose error the handler swallowed), or a `ROLLBACK TO` of a
//! savepoint the handler opened itself. Part of `capture`, whose
//! `#![allow(unsafe_code)]` covers it.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use rusqlite::ffi;

use super::log::State;

pub(super) unsafe extern "C" fn on_trace(
    event: c_uint,
    ctx: *mut c_void,
    stmt: *mut c_void,
    text: *mut c_void,
) -> c_int {
    if event != ffi::SQLITE_TRACE_STMT {
        return 0;
    }
    // SAFETY: `ctx` is the `State` installed with this callback, alive until
    // the callback is removed (`CapturingConnection::drop`).
    let state = unsafe { &*ctx.cast::<State>() };
    let done = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: for SQLITE_TRACE_STMT, SQLite passes the statement that
        // starts and a NUL-terminated text.
        unsafe { statement_started(state, stmt.cast(), text.cast_const().cast()) }
    }));
    if !matches!(done, Ok(true)) {
        state.failed.set(true);
    }
    0
}

/// # Safety
/// `stmt` and `text` must be what SQLite passed to an SQLITE_TRACE_STMT
/// callback.
unsafe fn statement_started(
    state: &State,
    stmt: *mut ffi::sqlite3_stmt,
    text: *const c_char,
) -> bool {
    if stmt.is_null() || text.is_null() {
        return true;
    }
    // A statement that starts reports its own text; a trigger program, or a
    // statement run from inside another one, reports a comment (another
    // pointer). Those belong to the statement that runs them.
    // SAFETY: `stmt` is a live statement.
    if unsafe { ffi::sqlite3_sql(stmt) } != text {
        return true;
    }
    let Ok(mut log) = state.log.try_borrow_mut() else {
        return false;
    };
    // SAFETY: `stmt` is a live statement.
    let db = unsafe { ffi::sqlite3_db_handle(stmt) };
    // SAFETY: `db` is the statement's open connection; reading the change
    // count of its last statement has no other effect.
    log.statement_boundary(|| unsafe { ffi::sqlite3_changes64(db) });
    // SAFETY: `text` is NUL-terminated.
    if !log.own_rollback && unsafe { starts_with_rollback(text) } {
        // The handler rolls back a savepoint of its own: changes recorded
        // since it opened (somewhere inside this event) may be undone.
        let at = log.event_start;
        log.mark_stale(at);
    }
    true
}

/// Whether the SQL text's first keyword is ROLLBACK (after blanks and
/// comments). Reads no further than needed.
///
/// # Safety
/// `text` must point to a NUL-terminated string.
pub(super) unsafe fn starts_with_rollback(text: *const c_char) -> bool {
    // SAFETY: every read below is at most one byte past a byte already read
    // and found not to be NUL, so it never passes the terminator.
    let at = |i: usize| -> u8 { unsafe { *text.add(i) as u8 } };
    let mut i = 0;
    loop {
        match at(i) {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => i += 1,
            b'-' if at(i + 1) == b'-' => {
                i += 2;
                while !matches!(at(i), 0 | b'\n') {
                    i += 1;
                }
            }
            b'/' if at(i + 1) == b'*' => {
                i += 2;
                loop {
                    match at(i) {
                        0 => return false,
                        b'*' if at(i + 1) == b'/' => {
                            i += 2;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            _ => break,
        }
    }
    for (k, want) in b"rollback".iter().enumerate() {
        if at(i + k).to_ascii_lowercase() != *want {
            return false;
        }
    }
    let next = at(i + 8);
    !(next.is_ascii_alphanumeric() || next == b'_' || next == b'$' || next >= 0x80)
}
