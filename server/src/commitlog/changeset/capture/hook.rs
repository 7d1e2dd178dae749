//! The preupdate hook: runs before every row change on the object's
//! connection and appends it — operation, table, rowids, typed column
//! values — to the capture's buffer. No SQL is parsed and no schema is
//! looked up; each value is copied once, into that buffer. Part of
//! `capture`, whose `#![allow(unsafe_code)]` covers it.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use rusqlite::ffi;

use super::log::State;
use crate::commitlog::changeset::format::{
    put_bytes, put_int, put_varint, OP_DELETE, OP_INSERT, OP_UPDATE, T_BLOB, T_INTEGER, T_NULL,
    T_REAL, T_SAME, T_TEXT,
};

/// Changes to this table are never captured: replay stamps the batch's
/// `seq` itself.
const META_TABLE: &[u8] = b"_roost_meta";

/// True for tables whose changes are replayable into the object's file.
fn is_captured_table(table: &[u8]) -> bool {
    table != META_TABLE
        && !table
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"sqlite_"))
}

pub(super) unsafe extern "C" fn on_preupdate(
    ctx: *mut c_void,
    db: *mut ffi::sqlite3,
    op: c_int,
    z_db: *const c_char,
    z_table: *const c_char,
    old_rowid: i64,
    new_rowid: i64,
) {
    // SAFETY: `ctx` is the `State` installed with this hook, alive until the
    // hook is removed (`CapturingConnection::drop`).
    let state = unsafe { &*ctx.cast::<State>() };
    let recorded = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: we are inside the preupdate callback of `db`, with the
        // arguments SQLite passed to it.
        unsafe { record_change(state, db, op, z_db, z_table, old_rowid, new_rowid) }
    }));
    if !matches!(recorded, Ok(true)) {
        state.failed.set(true);
    }
}

/// Appends one change to the log. False if it could not be recorded.
///
/// # Safety
/// Must be called from inside a preupdate callback of `db`, with the names
/// SQLite passed to it.
unsafe fn record_change(
    state: &State,
    db: *mut ffi::sqlite3,
    op: c_int,
    z_db: *const c_char,
    z_table: *const c_char,
    old_rowid: i64,
    new_rowid: i64,
) -> bool {
    if z_db.is_null() || z_table.is_null() {
        return false;
    }
    // SAFETY: SQLite passes NUL-terminated names that outlive the callback.
    let (schema, table) = unsafe {
        (
            CStr::from_ptr(z_db).to_bytes(),
            CStr::from_ptr(z_table).to_bytes(),
        )
    };
    // Only the object's file: TEMP tables vanish with the connection.
    if schema != b"main" || !is_captured_table(table) {
        return true;
    }
    let code = match op {
        ffi::SQLITE_INSERT => OP_INSERT,
        ffi::SQLITE_UPDATE => OP_UPDATE,
        ffi::SQLITE_DELETE => OP_DELETE,
        _ => return false,
    };
    let Ok(mut log) = state.log.try_borrow_mut() else {
        return false;
    };
    // SAFETY: inside the preupdate callback of `db`.
    if code == OP_DELETE && unsafe { ffi::sqlite3_preupdate_blobwrite(db) } >= 0 {
        // sqlite3_blob_write() reports itself as a DELETE of the row and
        // offers no new value: this batch cannot be replayed.
        log.mark_missing();
        return true;
    }
    // SAFETY: inside the preupdate callback of `db`.
    let ncol = unsafe { ffi::sqlite3_preupdate_count(db) };
    let start = log.buf.len();
    // SAFETY: inside the preupdate callback of `db`.
    let ok = unsafe { encode_change(&mut log.buf, db, code, table, ncol, old_rowid, new_rowid) };
    if !ok {
        log.buf.truncate(start);
    }
    ok
}

/// # Safety
/// Must be called from inside a preupdate callback of `db`.
unsafe fn encode_change(
    buf: &mut Vec<u8>,
    db: *mut ffi::sqlite3,
    code: u8,
    table: &[u8],
    ncol: c_int,
    old_rowid: i64,
    new_rowid: i64,
) -> bool {
    if ncol < 0 {
        return false;
    }
    buf.push(code);
    put_bytes(buf, table);
    put_varint(buf, u64::from(ncol.unsigned_abs()));
    match code {
        OP_INSERT => {
            put_int(buf, new_rowid);
            // SAFETY (each call): inside the preupdate callback of `db`.
            (0..ncol).all(|i| unsafe { put_column(buf, db, Side::New, i) })
        }
        OP_DELETE => {
            put_int(buf, old_rowid);
            // SAFETY (each call): inside the preupdate callback of `db`.
            (0..ncol).all(|i| unsafe { put_column(buf, db, Side::Old, i) })
        }
        _ => {
            put_int(buf, old_rowid);
            put_int(buf, new_rowid);
            (0..ncol).all(|i| {
                let new_at = buf.len();
                // SAFETY: inside the preupdate callback of `db`.
                if !unsafe { put_column(buf, db, Side::New, i) } {
                    return false;
                }
                let old_at = buf.len();
                // SAFETY: inside the preupdate callback of `db`.
                if !unsafe { put_column(buf, db, Side::Old, i) } {
                    return false;
                }
                if buf[new_at..old_at] == buf[old_at..] {
                    buf.truncate(old_at);
                    buf.push(T_SAME);
                }
                true
            })
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Old,
    New,
}

/// Appends the old or new value of column `i`. False if SQLite cannot
/// produce it.
///
/// # Safety
/// Must be called from inside a preupdate callback of `db`, `Side::Old` only
/// for an UPDATE or DELETE and `Side::New` only for an INSERT or UPDATE.
unsafe fn put_column(buf: &mut Vec<u8>, db: *mut ffi::sqlite3, side: Side, i: c_int) -> bool {
    let mut value: *mut ffi::sqlite3_value = ptr::null_mut();
    // SAFETY: guaranteed by the caller; `value` is a valid out-pointer.
    let rc = unsafe {
        match side {
            Side::Old => ffi::sqlite3_preupdate_old(db, i, &mut value),
            Side::New => ffi::sqlite3_preupdate_new(db, i, &mut value),
        }
    };
    if rc == ffi::SQLITE_RANGE {
        // A virtual generated column: not stored, recomputed on replay.
        buf.push(T_NULL);
        return true;
    }
    if rc != ffi::SQLITE_OK || value.is_null() {
        return false;
    }
    // SAFETY: `value` is the live value SQLite just returned; it stays valid
    // until the callback returns, and its bytes are copied before then.
    unsafe {
        match ffi::sqlite3_value_type(value) {
            ffi::SQLITE_NULL => buf.push(T_NULL),
            ffi::SQLITE_INTEGER => {
                buf.push(T_INTEGER);
                put_int(buf, ffi::sqlite3_value_int64(value));
            }
            ffi::SQLITE_FLOAT => {
                buf.push(T_REAL);
                buf.extend_from_slice(&ffi::sqlite3_value_double(value).to_bits().to_le_bytes());
            }
            ffi::SQLITE_TEXT => {
                // Text first, then its length (SQLite's documented order).
                let p = ffi::sqlite3_value_text(value);
                let n = ffi::sqlite3_value_bytes(value);
                let Some(bytes) = value_bytes(p.cast(), n) else {
                    return false;
                };
                buf.push(T_TEXT);
                put_bytes(buf, bytes);
            }
            ffi::SQLITE_BLOB => {
                let p = ffi::sqlite3_value_blob(value);
                let n = ffi::sqlite3_value_bytes(value);
                let Some(bytes) = value_bytes(p.cast(), n) else {
                    return false;
                };
                buf.push(T_BLOB);
                put_bytes(buf, bytes);
            }
            _ => return false,
        }
    }
    true
}

/// # Safety
/// `p` must be null or point to `n` readable bytes that outlive `'a`.
unsafe fn value_bytes<'a>(p: *const u8, n: c_int) -> Option<&'a [u8]> {
    let n = usize::try_from(n).ok()?;
    if n == 0 {
        // SQLite returns a null pointer for an empty blob.
        return Some(&[]);
    }
    if p.is_null() {
        return None; // out of memory while converting
    }
    // SAFETY: guaranteed by the caller.
    Some(unsafe { std::slice::from_raw_parts(p, n) })
}
