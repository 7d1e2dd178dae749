//! Captures the row changes of one batch as an SQLite changeset, and applies
//! such a changeset again during recovery.
//!
//! This is the only module with `unsafe` code: a thin wrapper over SQLite's
//! session extension (compiled into the bundled SQLite through
//! `.cargo/config.toml`), because rusqlite's own wrapper needs libclang at
//! build time and borrows the connection, which an actor cannot hold across
//! `.await`. It does not decide *when* to capture or what to do with the bytes;
//! the actor and the commit log do.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use rusqlite::ffi;
use rusqlite::Connection;

#[repr(C)]
struct RawSession {
    _private: [u8; 0],
}

#[repr(C)]
struct RawChangesetIter {
    _private: [u8; 0],
}

const SQLITE_SESSION_OBJCONFIG_ROWID: c_int = 2;
const SQLITE_CHANGESET_DATA: c_int = 1;
const SQLITE_CHANGESET_CONFLICT: c_int = 3;
const SQLITE_CHANGESET_OMIT: c_int = 0;
const SQLITE_CHANGESET_REPLACE: c_int = 1;

extern "C" {
    fn sqlite3session_create(
        db: *mut ffi::sqlite3,
        z_db: *const c_char,
        pp_session: *mut *mut RawSession,
    ) -> c_int;
    fn sqlite3session_delete(session: *mut RawSession);
    fn sqlite3session_attach(session: *mut RawSession, z_tab: *const c_char) -> c_int;
    fn sqlite3session_object_config(session: *mut RawSession, op: c_int, arg: *mut c_void)
        -> c_int;
    fn sqlite3session_changeset(
        session: *mut RawSession,
        pn_changeset: *mut c_int,
        pp_changeset: *mut *mut c_void,
    ) -> c_int;
    fn sqlite3changeset_apply(
        db: *mut ffi::sqlite3,
        n_changeset: c_int,
        p_changeset: *mut c_void,
        x_filter: Option<unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int>,
        x_conflict: Option<
            unsafe extern "C" fn(*mut c_void, c_int, *mut RawChangesetIter) -> c_int,
        >,
        p_ctx: *mut c_void,
    ) -> c_int;
}

#[derive(Debug, thiserror::Error)]
#[error("sqlite session extension failed with code {0}")]
pub struct CaptureError(pub c_int);

/// Records every row change made on one connection between `start` and
/// `finish`. Must be finished or dropped before the connection closes; the
/// actor guarantees this by keeping a capture only for the span of one batch.
pub struct ChangeCapture {
    session: *mut RawSession,
}

// SAFETY: the session is only ever used by the task that owns the connection it
// was created on, one call at a time; SQLite is built threadsafe (serialized),
// so moving the handle between threads with the task is sound.
unsafe impl Send for ChangeCapture {}

impl ChangeCapture {
    /// Starts recording changes to every table of `main`, including rowid
    /// tables without an explicit primary key.
    pub fn start(conn: &Connection) -> Result<ChangeCapture, CaptureError> {
        let mut session: *mut RawSession = ptr::null_mut();
        // SAFETY: `conn.handle()` is a live connection; the name is a valid C string.
        let rc = unsafe { sqlite3session_create(conn.handle(), c"main".as_ptr(), &mut session) };
        if rc != ffi::SQLITE_OK {
            return Err(CaptureError(rc));
        }
        let capture = ChangeCapture { session };
        let mut enable: c_int = 1;
        // SAFETY: the session is live; the argument is an int* as documented.
        let rc = unsafe {
            sqlite3session_object_config(
                capture.session,
                SQLITE_SESSION_OBJCONFIG_ROWID,
                (&mut enable as *mut c_int).cast(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(CaptureError(rc));
        }
        // SAFETY: a null table name attaches every table.
        let rc = unsafe { sqlite3session_attach(capture.session, ptr::null()) };
        if rc != ffi::SQLITE_OK {
            return Err(CaptureError(rc));
        }
        Ok(capture)
    }

    /// The changeset of everything recorded so far (empty if nothing changed).
    pub fn changeset(&self) -> Result<Vec<u8>, CaptureError> {
        let mut len: c_int = 0;
        let mut buf: *mut c_void = ptr::null_mut();
        // SAFETY: the session is live; on success SQLite hands us a buffer we free.
        let rc = unsafe { sqlite3session_changeset(self.session, &mut len, &mut buf) };
        if rc != ffi::SQLITE_OK {
            return Err(CaptureError(rc));
        }
        if buf.is_null() || len <= 0 {
            return Ok(Vec::new());
        }
        let len = usize::try_from(len).map_err(|_| CaptureError(ffi::SQLITE_ERROR))?;
        // SAFETY: SQLite returned `len` readable bytes at `buf`.
        let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }.to_vec();
        // SAFETY: the buffer came from sqlite3_malloc.
        unsafe { ffi::sqlite3_free(buf) };
        Ok(bytes)
    }
}

impl Drop for ChangeCapture {
    fn drop(&mut self) {
        // SAFETY: created by sqlite3session_create and deleted exactly once.
        unsafe { sqlite3session_delete(self.session) };
    }
}

unsafe extern "C" fn on_conflict(
    ctx: *mut c_void,
    kind: c_int,
    _iter: *mut RawChangesetIter,
) -> c_int {
    // SAFETY: ctx is the `&mut u64` passed to sqlite3changeset_apply below.
    let conflicts = unsafe { &mut *ctx.cast::<u64>() };
    *conflicts += 1;
    match kind {
        SQLITE_CHANGESET_DATA | SQLITE_CHANGESET_CONFLICT => SQLITE_CHANGESET_REPLACE,
        _ => SQLITE_CHANGESET_OMIT,
    }
}

/// Applies a changeset recorded by [`ChangeCapture`] to `conn`. Conflicts are
/// resolved in favour of the changeset (the newer state) and counted.
pub fn apply_changeset(conn: &Connection, changeset: &[u8]) -> Result<u64, CaptureError> {
    let len = c_int::try_from(changeset.len()).map_err(|_| CaptureError(ffi::SQLITE_TOOBIG))?;
    let mut conflicts: u64 = 0;
    // SAFETY: SQLite only reads the changeset buffer; the conflict context
    // outlives the call.
    let rc = unsafe {
        sqlite3changeset_apply(
            conn.handle(),
            len,
            changeset.as_ptr() as *mut c_void,
            None,
            Some(on_conflict),
            (&mut conflicts as *mut u64).cast(),
        )
    };
    if rc != ffi::SQLITE_OK {
        // SAFETY: the connection is live; the message is a valid C string.
        let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(conn.handle())) };
        tracing::error!(code = rc, message = %msg.to_string_lossy(), "changeset apply failed");
        return Err(CaptureError(rc));
    }
    Ok(conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_and_replay_reproduce_the_changes() {
        let a = Connection::open_in_memory().expect("open");
        let b = Connection::open_in_memory().expect("open");
        let schema = "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER); CREATE TABLE log(msg TEXT);";
        a.execute_batch(schema).expect("schema");
        b.execute_batch(schema).expect("schema");
        let capture = ChangeCapture::start(&a).expect("start");
        a.execute_batch(
            "INSERT INTO kv VALUES('x', 1); INSERT INTO kv VALUES('y', 2);
             UPDATE kv SET v = 5 WHERE k = 'x'; DELETE FROM kv WHERE k = 'y';
             INSERT INTO log VALUES('hello');",
        )
        .expect("writes");
        let changes = capture.changeset().expect("changeset");
        drop(capture);
        assert!(!changes.is_empty());
        assert_eq!(apply_changeset(&b, &changes).expect("apply"), 0);
        let v: i64 = b
            .query_row("SELECT v FROM kv WHERE k='x'", [], |r| r.get(0))
            .expect("row");
        assert_eq!(v, 5);
        let n: i64 = b
            .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
        let msg: String = b
            .query_row("SELECT msg FROM log", [], |r| r.get(0))
            .expect("log");
        assert_eq!(msg, "hello");
        // Replaying again is harmless: conflicts resolve to the same state.
        apply_changeset(&b, &changes).expect("apply twice");
        let v: i64 = b
            .query_row("SELECT v FROM kv WHERE k='x'", [], |r| r.get(0))
            .expect("row");
        assert_eq!(v, 5);
    }

    #[test]
    fn nothing_changed_gives_an_empty_changeset() {
        let a = Connection::open_in_memory().expect("open");
        a.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v)")
            .expect("schema");
        let capture = ChangeCapture::start(&a).expect("start");
        assert!(capture.changeset().expect("changeset").is_empty());
    }
}
