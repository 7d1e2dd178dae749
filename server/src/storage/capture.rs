//! Captures the row changes of one batch as bytes, and applies such bytes
//! again during recovery.
//!
//! **Capture.** [`CapturingConnection`] owns an object's connection and keeps
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
//! **Replay.** [`apply_changeset`] decodes the bytes (never panics; garbage is
//! an error) and replays each change in order with plain SQL, with triggers
//! and foreign keys off (their effects were captured as row changes of their
//! own): rowid tables by rowid, `WITHOUT ROWID` tables by their primary key
//! (read from `pragma_table_xinfo` at replay time). Each change sets a row to
//! its captured image or deletes it, so replaying the same bytes twice leaves
//! the same state. Changes to a table that no longer exists are skipped and
//! counted.
//!
//! This is the only module with `unsafe` code: the callbacks and the few
//! functions of SQLite's preupdate API, declared here because rusqlite's own
//! wrapper needs libclang at build time (the bundled SQLite is compiled with
//! `SQLITE_ENABLE_PREUPDATE_HOOK` through `.cargo/config.toml`).
//!
//! # Format
//!
//! ```text
//! changeset := 0xA1 change*                  (empty when nothing changed)
//! change    := op:u8 table:bytes ncol:varint body
//!   INSERT (1): new_rowid:int new_value{ncol}
//!   UPDATE (2): old_rowid:int new_rowid:int (new_value old_value){ncol}
//!   DELETE (3): old_rowid:int old_value{ncol}
//! value     := 0 | 1 int | 2 f64-le | 3 bytes | 4 bytes   (NULL INTEGER REAL TEXT BLOB)
//! old_value := value | 5                                   (5: same as the new value)
//! bytes     := len:varint byte{len}
//! int       := zigzag varint; varint := LEB128 (at most 10 bytes)
//! ```
//! Values are in table column order (`cid`); rowids are meaningless for
//! `WITHOUT ROWID` tables; virtual generated columns are recorded as NULL.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use rusqlite::config::DbConfig;
use rusqlite::ffi;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Statement};

type PreupdateCallback = unsafe extern "C" fn(
    ctx: *mut c_void,
    db: *mut ffi::sqlite3,
    op: c_int,
    z_db: *const c_char,
    z_table: *const c_char,
    old_rowid: i64,
    new_rowid: i64,
);

extern "C" {
    fn sqlite3_preupdate_hook(
        db: *mut ffi::sqlite3,
        callback: Option<PreupdateCallback>,
        ctx: *mut c_void,
    ) -> *mut c_void;
    fn sqlite3_preupdate_old(
        db: *mut ffi::sqlite3,
        column: c_int,
        value: *mut *mut ffi::sqlite3_value,
    ) -> c_int;
    fn sqlite3_preupdate_new(
        db: *mut ffi::sqlite3,
        column: c_int,
        value: *mut *mut ffi::sqlite3_value,
    ) -> c_int;
    fn sqlite3_preupdate_count(db: *mut ffi::sqlite3) -> c_int;
    fn sqlite3_preupdate_blobwrite(db: *mut ffi::sqlite3) -> c_int;
}

const FORMAT_V1: u8 = 0xA1;

const OP_INSERT: u8 = 1;
const OP_UPDATE: u8 = 2;
const OP_DELETE: u8 = 3;

const T_NULL: u8 = 0;
const T_INTEGER: u8 = 1;
const T_REAL: u8 = 2;
const T_TEXT: u8 = 3;
const T_BLOB: u8 = 4;
const T_SAME: u8 = 5;

/// SQLite's hard upper bound on the columns of a table.
const MAX_COLUMNS: usize = 32767;

/// Changes to this table are never captured: replay stamps the batch's
/// `seq` itself.
const META_TABLE: &[u8] = b"_roost_meta";

/// Keep at most this much buffer capacity between batches.
const RETAINED_CAPACITY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot install the change capture (sqlite code {0})")]
    Install(c_int),
    #[error("malformed changeset at byte {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
    #[error("cannot replay changes into table {table:?}: {why}")]
    Unsupported { table: String, why: &'static str },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

// ---------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------

/// A position in the recorded changes, taken when a savepoint opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark(usize);

/// What one batch changed.
#[derive(Debug)]
pub struct Captured {
    /// The encoded changes; empty if no captured table changed.
    pub bytes: Vec<u8>,
    /// False if the bytes may not reproduce the batch (SQLite undid changes
    /// that stayed recorded, or a change could not be recorded): such a batch
    /// must be made durable in the object's own file.
    pub replayable: bool,
}

/// What the callbacks share with [`CapturingConnection`]. Only ever reached
/// through shared references: the callbacks run inside calls on the
/// connection, so interior mutability (checked, never panicking) is enough.
#[derive(Default)]
struct State {
    log: RefCell<Log>,
    /// A callback could not record a change (or could not tell whether the
    /// buffer still matches the database). Cleared only by a new batch.
    failed: Cell<bool>,
}

#[derive(Default)]
struct Log {
    buf: Vec<u8>,
    /// Where the changes of the most recently started statement begin.
    stmt_start: usize,
    /// Where the running event's changes begin.
    event_start: usize,
    /// The buffer from here on may hold changes that SQLite undid.
    stale_from: Option<usize>,
    /// A change happened here that could not be recorded (incremental blob
    /// write: its new value is not available to the hook).
    missing_at: Option<usize>,
    /// `Storage` is running its own `ROLLBACK TO` (see `rollback_to`).
    own_rollback: bool,
}

impl Log {
    fn reset(&mut self) {
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

    fn mark_stale(&mut self, at: usize) {
        self.stale_from = Some(self.stale_from.map_or(at, |s| s.min(at)));
    }

    fn mark_missing(&mut self) {
        let at = self.buf.len();
        self.missing_at = Some(self.missing_at.map_or(at, |s| s.min(at)));
    }

    /// Forgets everything recorded from `at` on: a savepoint opened there
    /// was rolled back, undoing those changes (and any doubt about them).
    fn truncate(&mut self, at: usize) {
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
    fn statement_boundary(&mut self, last_changes: impl FnOnce() -> i64) {
        let len = self.buf.len();
        if len > self.stmt_start && last_changes() == 0 {
            let at = self.stmt_start;
            self.mark_stale(at);
        }
        self.stmt_start = len;
    }

    fn replayable(&self) -> bool {
        self.missing_at.is_none() && self.stale_from.is_none_or(|s| s >= self.buf.len())
    }
}

/// An object's connection with change capture installed for its whole life.
/// Dereferences to the connection. Nothing else may install a preupdate hook
/// or a trace callback on it.
pub struct CapturingConnection {
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
    pub fn install(conn: Connection) -> Result<CapturingConnection, CaptureError> {
        let state = NonNull::from(Box::leak(Box::<State>::default()));
        // From here on `drop` removes the callbacks and frees the state.
        let capturing = CapturingConnection { conn, state };
        let ctx = state.as_ptr().cast::<c_void>();
        // SAFETY: the connection is open (we own it); `ctx` points to a live
        // `State` until `drop` has removed this hook.
        unsafe { sqlite3_preupdate_hook(capturing.conn.handle(), Some(on_preupdate), ctx) };
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
    pub fn begin_capture(&self) {
        self.with_log(Log::reset);
        self.state().failed.set(false);
    }

    /// The current end of the recorded changes; take it when opening a
    /// savepoint, to [`rollback_to`](Self::rollback_to) it later.
    pub fn mark(&self) -> Mark {
        Mark(self.with_log(|log| log.buf.len()))
    }

    /// Like [`mark`](Self::mark), taken when an event's savepoint opens. A
    /// `ROLLBACK TO` that the handler runs itself is taken to undo changes
    /// back to here (handler savepoints nest inside the event's).
    pub fn start_event(&self) -> Mark {
        Mark(self.with_log(|log| {
            log.event_start = log.buf.len();
            log.event_start
        }))
    }

    /// Runs `rollback` — the caller's own `ROLLBACK TO` of a savepoint that
    /// opened at `mark` — and, if it succeeds, forgets the changes recorded
    /// since `mark`. If it fails, the changes since `mark` become suspect.
    pub fn rollback_to<T, E>(
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
    pub fn take_changes(&self) -> Captured {
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
            sqlite3_preupdate_hook(db, None, ptr::null_mut());
            ffi::sqlite3_trace_v2(db, 0, None, ptr::null_mut());
        }
        // SAFETY: `state` came from `Box::leak` in `install`; nothing can
        // reach it any more, and it is freed exactly once, here.
        drop(unsafe { Box::from_raw(self.state.as_ptr()) });
    }
}

/// True for tables whose changes are replayable into the object's file.
fn is_captured_table(table: &[u8]) -> bool {
    table != META_TABLE
        && !table
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"sqlite_"))
}

unsafe extern "C" fn on_preupdate(
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
    if code == OP_DELETE && unsafe { sqlite3_preupdate_blobwrite(db) } >= 0 {
        // sqlite3_blob_write() reports itself as a DELETE of the row and
        // offers no new value: this batch cannot be replayed.
        log.mark_missing();
        return true;
    }
    // SAFETY: inside the preupdate callback of `db`.
    let ncol = unsafe { sqlite3_preupdate_count(db) };
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
            Side::Old => sqlite3_preupdate_old(db, i, &mut value),
            Side::New => sqlite3_preupdate_new(db, i, &mut value),
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

unsafe extern "C" fn on_trace(
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
unsafe fn starts_with_rollback(text: *const c_char) -> bool {
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

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_int(buf: &mut Vec<u8>, v: i64) {
    put_varint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Val<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl<'a> Val<'a> {
    fn to_sql(self) -> ToSqlOutput<'a> {
        ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Integer(i) => ValueRef::Integer(i),
            Val::Real(f) => ValueRef::Real(f),
            Val::Text(t) => ValueRef::Text(t),
            Val::Blob(b) => ValueRef::Blob(b),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Insert,
    Update,
    Delete,
}

#[derive(Debug)]
struct Change<'a> {
    op: Op,
    table: &'a str,
    old_rowid: i64,
    new_rowid: i64,
    /// Empty for an INSERT.
    old: Vec<Val<'a>>,
    /// Empty for a DELETE.
    new: Vec<Val<'a>>,
}

impl Change<'_> {
    fn ncol(&self) -> usize {
        self.old.len().max(self.new.len())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn malformed<T>(&self, what: &'static str) -> Result<T, CaptureError> {
        Err(CaptureError::Malformed {
            offset: self.pos,
            what,
        })
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn u8(&mut self) -> Result<u8, CaptureError> {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => self.malformed("unexpected end"),
        }
    }

    fn varint(&mut self) -> Result<u64, CaptureError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return self.malformed("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.malformed("varint too long")
    }

    fn int(&mut self) -> Result<i64, CaptureError> {
        let u = self.varint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A count of items that each take at least one byte.
    fn count(&mut self) -> Result<usize, CaptureError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => self.malformed("length runs past the end"),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], CaptureError> {
        let n = self.count()?;
        let start = self.pos;
        match self.bytes.get(start..start + n) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => self.malformed("length runs past the end"),
        }
    }

    fn value(&mut self) -> Result<Val<'a>, CaptureError> {
        match self.u8()? {
            T_NULL => Ok(Val::Null),
            T_INTEGER => Ok(Val::Integer(self.int()?)),
            T_REAL => {
                let start = self.pos;
                let Some(raw) = self.bytes.get(start..start + 8) else {
                    return self.malformed("unexpected end");
                };
                let mut le = [0u8; 8];
                le.copy_from_slice(raw);
                self.pos += 8;
                Ok(Val::Real(f64::from_bits(u64::from_le_bytes(le))))
            }
            T_TEXT => Ok(Val::Text(self.bytes()?)),
            T_BLOB => Ok(Val::Blob(self.bytes()?)),
            _ => self.malformed("unknown value type"),
        }
    }

    fn change(&mut self) -> Result<Change<'a>, CaptureError> {
        let op = match self.u8()? {
            OP_INSERT => Op::Insert,
            OP_UPDATE => Op::Update,
            OP_DELETE => Op::Delete,
            _ => return self.malformed("unknown operation"),
        };
        let table = self.bytes()?;
        let Ok(table) = std::str::from_utf8(table) else {
            return self.malformed("table name is not UTF-8");
        };
        if table.is_empty() {
            return self.malformed("empty table name");
        }
        let ncol = self.count()?;
        if ncol == 0 || ncol > MAX_COLUMNS {
            return self.malformed("bad column count");
        }
        let mut change = Change {
            op,
            table,
            old_rowid: 0,
            new_rowid: 0,
            old: Vec::new(),
            new: Vec::new(),
        };
        match op {
            Op::Insert => {
                change.new_rowid = self.int()?;
                change.new = (0..ncol).map(|_| self.value()).collect::<Result<_, _>>()?;
            }
            Op::Delete => {
                change.old_rowid = self.int()?;
                change.old = (0..ncol).map(|_| self.value()).collect::<Result<_, _>>()?;
            }
            Op::Update => {
                change.old_rowid = self.int()?;
                change.new_rowid = self.int()?;
                change.old.reserve(ncol);
                change.new.reserve(ncol);
                for _ in 0..ncol {
                    let new = self.value()?;
                    let old = if self.bytes.get(self.pos) == Some(&T_SAME) {
                        self.pos += 1;
                        new
                    } else {
                        self.value()?
                    };
                    change.new.push(new);
                    change.old.push(old);
                }
            }
        }
        Ok(change)
    }
}

fn decode(bytes: &[u8]) -> Result<Vec<Change<'_>>, CaptureError> {
    let mut reader = Reader { bytes, pos: 0 };
    if reader.u8()? != FORMAT_V1 {
        return Err(CaptureError::Malformed {
            offset: 0,
            what: "not a roost changeset",
        });
    }
    let mut changes = Vec::new();
    while reader.remaining() > 0 {
        changes.push(reader.change()?);
    }
    Ok(changes)
}

// ---------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------

/// Applies changes recorded by [`CapturingConnection`] to `conn`, all or
/// nothing. Returns how many changes were skipped because their table no
/// longer exists (or no longer has the recorded number of columns).
///
/// Triggers and foreign key enforcement are off while replaying: the effects
/// of both were captured as changes of their own, and a replayed REPLACE
/// must not cascade. (Turned off through `sqlite3_db_config`, which, unlike
/// `PRAGMA foreign_keys`, also works inside the caller's transaction; the
/// replayed state satisfied every constraint when it was committed.)
pub fn apply_changeset(conn: &Connection, changeset: &[u8]) -> Result<u64, CaptureError> {
    if changeset.is_empty() {
        return Ok(0);
    }
    let changes = decode(changeset)?;
    let _mode = ReplayMode::enter(conn)?;
    conn.execute_batch("SAVEPOINT roost_apply;")?;
    match apply_all(conn, &changes) {
        Ok(skipped) => {
            conn.execute_batch("RELEASE roost_apply;")?;
            Ok(skipped)
        }
        Err(e) => {
            if let Err(undo) = conn.execute_batch("ROLLBACK TO roost_apply; RELEASE roost_apply;") {
                tracing::warn!(error = %undo, "cannot undo a failed replay");
            }
            Err(e)
        }
    }
}

/// Triggers and foreign keys off for the span of one replay.
struct ReplayMode<'c> {
    conn: &'c Connection,
    restore_triggers: bool,
    restore_foreign_keys: bool,
}

impl<'c> ReplayMode<'c> {
    fn enter(conn: &'c Connection) -> Result<ReplayMode<'c>, CaptureError> {
        let mut mode = ReplayMode {
            conn,
            restore_triggers: false,
            restore_foreign_keys: false,
        };
        if conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY)? {
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY, false)?;
            mode.restore_foreign_keys = true;
        }
        if conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)? {
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
            mode.restore_triggers = true;
        }
        Ok(mode)
    }
}

impl Drop for ReplayMode<'_> {
    fn drop(&mut self) {
        if self.restore_triggers {
            if let Err(e) = self
                .conn
                .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
            {
                tracing::warn!(error = %e, "cannot re-enable triggers after replay");
            }
        }
        if self.restore_foreign_keys {
            if let Err(e) = self
                .conn
                .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY, true)
            {
                tracing::warn!(error = %e, "cannot re-enable foreign keys after replay");
            }
        }
    }
}

fn apply_all(conn: &Connection, changes: &[Change<'_>]) -> Result<u64, CaptureError> {
    let mut tables: HashMap<&str, Option<Target<'_>>> = HashMap::new();
    let mut skipped = 0u64;
    for change in changes {
        let target = match tables.entry(change.table) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Target::prepare(conn, change.table)?),
        };
        let Some(target) = target.as_mut() else {
            skipped += 1;
            continue;
        };
        if target.ncol != change.ncol() {
            if !target.warned {
                target.warned = true;
                tracing::warn!(
                    table = change.table,
                    recorded = change.ncol(),
                    now = target.ncol,
                    "logged changes do not fit the table's columns; skipping them"
                );
            }
            skipped += 1;
            continue;
        }
        target.apply(change)?;
    }
    Ok(skipped)
}

/// One table's replay statements.
struct Target<'c> {
    ncol: usize,
    without_rowid: bool,
    /// Whether the first parameter of `upsert` is the rowid.
    rowid_param: bool,
    /// Columns bound by `upsert`, after the rowid if any (generated columns
    /// are recomputed, not inserted).
    insert_cols: Vec<usize>,
    /// `WITHOUT ROWID`: the primary key columns, in key order.
    key_cols: Vec<usize>,
    upsert: Statement<'c>,
    delete: Statement<'c>,
    warned: bool,
}

struct ColumnInfo {
    name: String,
    pk: i64,
    generated: bool,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl<'c> Target<'c> {
    /// `None` if the table does not exist (any more).
    fn prepare(conn: &'c Connection, table: &str) -> Result<Option<Target<'c>>, CaptureError> {
        let found: Option<(String, bool)> = conn
            .query_row(
                "SELECT name, wr FROM pragma_table_list \
                 WHERE schema = 'main' AND name = ?1 COLLATE NOCASE \
                 AND type IN ('table', 'shadow')",
                [table],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((name, without_rowid)) = found else {
            tracing::warn!(
                table,
                "logged changes name a table that no longer exists; skipping them"
            );
            return Ok(None);
        };
        let columns = {
            let mut stmt = conn.prepare(
                "SELECT name, pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid",
            )?;
            let rows = stmt.query_map([&name], |r| {
                Ok(ColumnInfo {
                    name: r.get(0)?,
                    pk: r.get(1)?,
                    generated: r.get::<_, i64>(2)? != 0,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let unsupported = |why| CaptureError::Unsupported {
            table: name.clone(),
            why,
        };
        let mut pk: Vec<usize> = (0..columns.len()).filter(|&i| columns[i].pk > 0).collect();
        pk.sort_by_key(|&i| columns[i].pk);
        let insert_cols: Vec<usize> = (0..columns.len())
            .filter(|&i| !columns[i].generated)
            .collect();
        let target = quote(&name);
        // The expression naming a row, and the rowid column to insert (if it
        // is not one of the table's own columns).
        let (key_exprs, key_cols, rowid_name): (Vec<String>, Vec<usize>, Option<&str>) =
            if without_rowid {
                if pk.is_empty() {
                    return Err(unsupported("WITHOUT ROWID table without a primary key"));
                }
                (
                    pk.iter().map(|&i| quote(&columns[i].name)).collect(),
                    pk,
                    None,
                )
            } else {
                // A single-column primary key without an index of its own is
                // an alias of the rowid (INTEGER PRIMARY KEY).
                let pk_index: i64 = conn.query_row(
                    "SELECT count(*) FROM pragma_index_list(?1, 'main') WHERE origin = 'pk'",
                    [&name],
                    |r| r.get(0),
                )?;
                if pk.len() == 1 && pk_index == 0 {
                    (vec![quote(&columns[pk[0]].name)], Vec::new(), None)
                } else {
                    let Some(alias) = ["rowid", "_rowid_", "oid"]
                        .into_iter()
                        .find(|alias| !columns.iter().any(|c| c.name.eq_ignore_ascii_case(alias)))
                    else {
                        return Err(unsupported("columns shadow every name of the rowid"));
                    };
                    (vec![alias.to_owned()], Vec::new(), Some(alias))
                }
            };
        let mut names: Vec<String> = rowid_name.map(str::to_owned).into_iter().collect();
        names.extend(insert_cols.iter().map(|&i| quote(&columns[i].name)));
        let params: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let upsert = conn.prepare(&format!(
            "INSERT OR REPLACE INTO main.{target}({}) VALUES({})",
            names.join(", "),
            params.join(", ")
        ))?;
        let condition: Vec<String> = key_exprs
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = ?{}", i + 1))
            .collect();
        let delete = conn.prepare(&format!(
            "DELETE FROM main.{target} WHERE {}",
            condition.join(" AND ")
        ))?;
        Ok(Some(Target {
            ncol: columns.len(),
            without_rowid,
            rowid_param: rowid_name.is_some(),
            insert_cols,
            key_cols,
            upsert,
            delete,
            warned: false,
        }))
    }

    fn apply(&mut self, change: &Change<'_>) -> Result<(), CaptureError> {
        match change.op {
            Op::Delete => self.delete_row(change.old_rowid, &change.old),
            Op::Insert => self.upsert_row(change.new_rowid, &change.new),
            Op::Update => {
                let moved = if self.without_rowid {
                    self.key_cols
                        .iter()
                        .any(|&i| change.old[i] != change.new[i])
                } else {
                    change.old_rowid != change.new_rowid
                };
                if moved {
                    self.delete_row(change.old_rowid, &change.old)?;
                }
                self.upsert_row(change.new_rowid, &change.new)
            }
        }
    }

    fn delete_row(&mut self, rowid: i64, values: &[Val<'_>]) -> Result<(), CaptureError> {
        if self.without_rowid {
            for (p, &i) in self.key_cols.iter().enumerate() {
                self.delete.raw_bind_parameter(p + 1, values[i].to_sql())?;
            }
        } else {
            self.delete.raw_bind_parameter(1, rowid)?;
        }
        self.delete.raw_execute()?;
        Ok(())
    }

    fn upsert_row(&mut self, rowid: i64, values: &[Val<'_>]) -> Result<(), CaptureError> {
        let mut p = 1;
        if self.rowid_param {
            self.upsert.raw_bind_parameter(p, rowid)?;
            p += 1;
        }
        for &i in &self.insert_cols {
            self.upsert.raw_bind_parameter(p, values[i].to_sql())?;
            p += 1;
        }
        self.upsert.raw_execute()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value;

    type Contents = Vec<(String, Vec<Vec<Value>>)>;

    fn capturing(schema: &str) -> CapturingConnection {
        let conn = CapturingConnection::install(Connection::open_in_memory().expect("open"))
            .expect("install");
        conn.execute_batch(schema).expect("schema");
        conn.begin_capture();
        conn
    }

    fn plain(schema: &str) -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(schema).expect("schema");
        conn
    }

    /// Every row of every table of `main` (with the rowid, for rowid tables).
    fn contents(conn: &Connection) -> Contents {
        let tables: Vec<(String, bool)> = {
            let mut stmt = conn
                .prepare(
                    "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' \
                     AND type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name",
                )
                .expect("tables");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("tables");
            rows.collect::<Result<_, _>>().expect("tables")
        };
        tables
            .into_iter()
            .map(|(name, without_rowid)| {
                let ncol: usize = conn
                    .query_row(
                        "SELECT count(*) FROM pragma_table_xinfo(?1)",
                        [&name],
                        |r| r.get(0),
                    )
                    .expect("ncol");
                let order: Vec<String> = (1..=ncol + 1).map(|i| i.to_string()).collect();
                let sql = if without_rowid {
                    format!(
                        "SELECT NULL, * FROM {} ORDER BY {}",
                        quote(&name),
                        order.join(",")
                    )
                } else {
                    format!("SELECT _rowid_, * FROM {} ORDER BY 1", quote(&name))
                };
                let mut stmt = conn.prepare(&sql).expect("select");
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
                    .expect("rows");
                (name, rows.collect::<Result<_, _>>().expect("rows"))
            })
            .collect()
    }

    fn take_replayable(conn: &CapturingConnection) -> Vec<u8> {
        let captured = conn.take_changes();
        assert!(captured.replayable, "batch unexpectedly not replayable");
        captured.bytes
    }

    #[test]
    fn capture_and_replay_reproduce_the_changes() {
        let schema = "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER); CREATE TABLE log(msg TEXT);";
        let a = capturing(schema);
        let b = plain(schema);
        a.execute_batch(
            "INSERT INTO kv VALUES('x', 1); INSERT INTO kv VALUES('y', 2);
             UPDATE kv SET v = 5 WHERE k = 'x'; DELETE FROM kv WHERE k = 'y';
             INSERT INTO log VALUES('hello');",
        )
        .expect("writes");
        let changes = take_replayable(&a);
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
        assert_eq!(contents(&a), contents(&b));
        // Replaying again is harmless: every change sets or deletes a row.
        apply_changeset(&b, &changes).expect("apply twice");
        assert_eq!(contents(&a), contents(&b));
    }

    #[test]
    fn nothing_changed_gives_an_empty_changeset() {
        let a = capturing("CREATE TABLE kv(k TEXT PRIMARY KEY, v)");
        let captured = a.take_changes();
        assert!(captured.bytes.is_empty());
        assert!(captured.replayable);
        // Reads, TEMP tables and the meta table are not captured.
        a.execute_batch(
            "SELECT * FROM kv; CREATE TEMP TABLE scratch(x); INSERT INTO scratch VALUES(1);
             CREATE TABLE _roost_meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);",
        )
        .expect("setup");
        a.begin_capture();
        a.execute_batch(
            "INSERT INTO scratch VALUES(2); UPDATE scratch SET x = 3;
             INSERT INTO _roost_meta VALUES('commit_seq', 7);",
        )
        .expect("writes");
        let captured = a.take_changes();
        assert!(captured.bytes.is_empty());
        assert!(captured.replayable);
        assert_eq!(apply_changeset(&a, &[]).expect("empty"), 0);
    }

    #[test]
    fn rolled_back_savepoints_leave_nothing_behind() {
        let schema = "CREATE TABLE t(k TEXT PRIMARY KEY, v) WITHOUT ROWID;";
        let a = capturing(schema);
        let b = plain(schema);
        a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
        let event = a.start_event();
        a.execute_batch("INSERT INTO t VALUES('dropped', 1);")
            .expect("write");
        a.rollback_to(event, || a.execute_batch("ROLLBACK TO ev; RELEASE ev;"))
            .expect("rollback");
        a.execute_batch("SAVEPOINT ev;").expect("savepoint");
        a.start_event();
        a.execute_batch("INSERT INTO t VALUES('kept', 2);")
            .expect("write");
        // A nested savepoint of our own (like put_many's), rolled back.
        a.execute_batch("SAVEPOINT inner;").expect("inner");
        let inner = a.mark();
        a.execute_batch("INSERT INTO t VALUES('inner', 3); UPDATE t SET v = 9;")
            .expect("write");
        a.rollback_to(inner, || {
            a.execute_batch("ROLLBACK TO inner; RELEASE inner;")
        })
        .expect("rollback inner");
        a.execute_batch("UPDATE t SET v = 4 WHERE k = 'kept'; RELEASE ev; COMMIT;")
            .expect("commit");
        let bytes = take_replayable(&a);
        apply_changeset(&b, &bytes).expect("apply");
        assert_eq!(contents(&a), contents(&b));
        let rows: i64 = b
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1);
    }

    #[test]
    fn storage_events_rolled_back_are_not_in_the_changeset() {
        use crate::storage::{Storage, StorageLimits};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s =
            Storage::open(&dir.path().join("a.sqlite"), StorageLimits::default()).expect("open");
        let copy = dir.path().join("b.sqlite");
        drop(Storage::open(&copy, StorageLimits::default()).expect("open copy"));

        s.begin_batch().expect("begin");
        s.begin_event().expect("event");
        s.put("lost", &1).expect("put");
        s.put_many(&[("lost2", serde_json::json!(2))])
            .expect("put_many");
        s.end_event(false).expect("undo");
        s.begin_event().expect("event");
        s.put("kept", &2).expect("put");
        s.end_event(true).expect("keep");
        let changes = s.finish_batch().expect("finish").expect("changed");
        assert!(changes.replayable && !changes.schema_changed && !changes.needs_file_sync());
        s.commit(true).expect("commit");

        // A batch that only reads captures nothing.
        s.begin_batch().expect("begin");
        s.begin_event().expect("event");
        assert_eq!(s.get::<i64>("kept").expect("get"), Some(2));
        s.end_event(true).expect("keep");
        assert!(s.finish_batch().expect("finish").is_none());
        s.commit(false).expect("commit");

        let b = Connection::open(&copy).expect("open copy");
        apply_changeset(&b, &changes.changeset).expect("apply");
        let keys: Vec<Vec<u8>> = b
            .prepare("SELECT key FROM _roost_kv ORDER BY key")
            .expect("select")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(keys, vec![b"kept".to_vec()]);
        // The stamp is not in the changeset: recovery sets it.
        let seq: i64 = b
            .query_row("SELECT v FROM _roost_meta WHERE k='commit_seq'", [], |r| {
                r.get(0)
            })
            .expect("seq");
        assert_eq!(seq, 0);
    }

    #[test]
    fn rollbacks_the_capture_cannot_attribute_make_the_batch_unreplayable() {
        let schema = "CREATE TABLE t(x INTEGER UNIQUE, y);";
        // A savepoint of the handler's own, rolled back.
        let a = capturing(schema);
        a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
        a.start_event();
        a.execute_batch(
            "INSERT INTO t VALUES(1, 'a'); SAVEPOINT mine; INSERT INTO t VALUES(2, 'b');
             /* comment */ rollback TO mine; RELEASE mine;",
        )
        .expect("writes");
        assert!(!a.take_changes().replayable);
        a.execute_batch("COMMIT").expect("commit");

        // ... but not if nothing was recorded since the event began.
        a.begin_capture();
        a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
        a.start_event();
        a.execute_batch("SAVEPOINT mine; ROLLBACK TO mine; RELEASE mine; RELEASE ev; COMMIT;")
            .expect("writes");
        let captured = a.take_changes();
        assert!(captured.replayable && captured.bytes.is_empty());

        // A statement that failed half-way, its error swallowed.
        a.begin_capture();
        a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
        a.start_event();
        let failed = a.execute_batch("INSERT INTO t VALUES (10, 'p'), (11, 'q'), (1, 'dup');");
        assert!(failed.is_err());
        a.execute_batch("INSERT INTO t VALUES(12, 'r');")
            .expect("write");
        assert!(!a.take_changes().replayable);
        a.execute_batch("COMMIT").expect("commit");

        // The same failure inside an event that is undone as a whole is fine.
        let b = plain(schema);
        let a = capturing(schema);
        a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
        let event = a.start_event();
        a.execute_batch("INSERT INTO t VALUES (1, 'a');")
            .expect("write");
        assert!(a
            .execute_batch("INSERT INTO t VALUES (10, 'p'), (11, 'q'), (1, 'dup');")
            .is_err());
        a.rollback_to(event, || a.execute_batch("ROLLBACK TO ev; RELEASE ev;"))
            .expect("undo");
        a.execute_batch("SAVEPOINT ev;").expect("savepoint");
        a.start_event();
        // A statement that fails before writing anything leaves no trace.
        a.execute_batch("INSERT INTO t VALUES (5, 'e');")
            .expect("write");
        assert!(a.execute_batch("INSERT INTO t VALUES (5, 'dup');").is_err());
        a.execute_batch("RELEASE ev; COMMIT;").expect("commit");
        let bytes = take_replayable(&a);
        apply_changeset(&b, &bytes).expect("apply");
        assert_eq!(contents(&a), contents(&b));
    }

    const SHAPES: &str = r#"
        CREATE TABLE plain(a, b, c);
        CREATE TABLE ipk(id INTEGER PRIMARY KEY, t TEXT, r REAL, b BLOB);
        CREATE TABLE wr(k1 TEXT, v, k2 INTEGER, PRIMARY KEY(k2, k1)) WITHOUT ROWID;
        CREATE TABLE "we""ird tab"("col ""q""", "select", x INTEGER PRIMARY KEY DESC);
        CREATE TABLE gen(a INTEGER, b AS (a * 2) VIRTUAL, c AS (a + 1) STORED, d);
        CREATE TABLE shadowed(rowid TEXT, oid, v);
        CREATE TABLE nocase(k TEXT PRIMARY KEY COLLATE NOCASE, v) WITHOUT ROWID;
    "#;

    #[test]
    fn every_table_shape_and_value_type_round_trips() {
        let a = capturing(SHAPES);
        let b = plain(SHAPES);
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let tricky = "it's \"quoted\" -- ; DROP TABLE x; /* é 🦀 \u{0} */";
        let values: Vec<Value> = vec![
            Value::Null,
            Value::Integer(0),
            Value::Integer(-1),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Real(3.5),
            Value::Real(-0.0),
            Value::Real(f64::MAX),
            Value::Real(f64::MIN_POSITIVE),
            Value::Text(String::new()),
            Value::Text(tricky.to_owned()),
            Value::Blob(Vec::new()),
            Value::Blob(vec![0, 1, 2, 255]),
            Value::Blob(big.clone()),
        ];
        a.execute_batch("BEGIN").expect("begin");
        for (i, v) in values.iter().enumerate() {
            a.execute("INSERT INTO plain VALUES(?1, ?2, ?1)", (v, i as i64))
                .expect("plain");
            a.execute("INSERT INTO ipk(t, r, b) VALUES(?1, ?1, ?1)", [v])
                .expect("ipk");
            a.execute(
                "INSERT INTO wr(k1, v, k2) VALUES(?1, ?2, ?3)",
                (format!("k{i}"), v, i as i64 % 3),
            )
            .expect("wr");
            a.execute(
                r#"INSERT INTO "we""ird tab"("col ""q""", "select", x) VALUES(?1, ?2, ?3)"#,
                (v, tricky, i as i64 * 10),
            )
            .expect("weird");
            a.execute("INSERT INTO gen(a, d) VALUES(?1, ?2)", (i as i64, v))
                .expect("gen");
            a.execute(
                "INSERT INTO shadowed(rowid, oid, v) VALUES(?1, ?2, ?2)",
                (format!("r{i}"), v),
            )
            .expect("shadowed");
        }
        a.execute_batch(
            r#"
            UPDATE plain SET rowid = rowid + 100 WHERE rowid % 2 = 0;
            UPDATE plain SET b = 'changed' WHERE rowid % 3 = 0;
            DELETE FROM plain WHERE rowid = 3;
            UPDATE ipk SET id = id + 1000 WHERE id < 4;
            UPDATE ipk SET r = 2 WHERE id = 5;
            DELETE FROM ipk WHERE id = 6;
            INSERT OR REPLACE INTO ipk(id, t) VALUES(1001, 'replaced');
            UPDATE wr SET k1 = k1 || '!' WHERE k2 = 1;
            UPDATE wr SET v = 'v2' WHERE k2 = 2;
            DELETE FROM wr WHERE k1 = 'k0';
            UPDATE "we""ird tab" SET x = x + 1, "select" = NULL WHERE x < 50;
            UPDATE gen SET a = a + 100 WHERE a % 2 = 1;
            DELETE FROM gen WHERE a = 4;
            UPDATE shadowed SET oid = 'o' WHERE rowid = 'r1';
            UPDATE shadowed SET _rowid_ = 77 WHERE rowid = 'r2';
            INSERT INTO nocase VALUES('Key', 1);
            INSERT OR REPLACE INTO nocase VALUES('KEY', 2);
            UPDATE nocase SET k = 'kEy2';
            "#,
        )
        .expect("updates");
        a.execute_batch("COMMIT").expect("commit");
        let bytes = take_replayable(&a);
        assert_eq!(apply_changeset(&b, &bytes).expect("apply"), 0);
        let expected = contents(&a);
        assert_eq!(expected, contents(&b));
        apply_changeset(&b, &bytes).expect("apply twice");
        assert_eq!(expected, contents(&b));
        // The big blob survived intact.
        let found: i64 = b
            .query_row("SELECT count(*) FROM plain WHERE a = ?1", [&big], |r| {
                r.get(0)
            })
            .expect("blob");
        assert!(found >= 1);
    }

    #[test]
    fn replay_skips_tables_that_no_longer_exist() {
        let schema = "CREATE TABLE t(a INTEGER PRIMARY KEY, b); CREATE TABLE gone(x, y);
                      CREATE TABLE reshaped(x, y);";
        let a = capturing(schema);
        a.execute_batch(
            "INSERT INTO t VALUES(1, 'one'); INSERT INTO gone VALUES(1, 2);
             INSERT INTO gone VALUES(3, 4); UPDATE gone SET y = 5;
             INSERT INTO reshaped VALUES(1, 2); INSERT INTO t VALUES(2, 'two');",
        )
        .expect("writes");
        let bytes = take_replayable(&a);
        let b = plain("CREATE TABLE t(a INTEGER PRIMARY KEY, b); CREATE TABLE reshaped(x, y, z);");
        assert_eq!(apply_changeset(&b, &bytes).expect("apply"), 5);
        let n: i64 = b
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2);
    }

    #[test]
    fn replay_disables_triggers_and_foreign_keys() {
        let schema = "
            CREATE TABLE parent(id INTEGER PRIMARY KEY, name);
            CREATE TABLE child(id INTEGER PRIMARY KEY, p REFERENCES parent(id) ON DELETE CASCADE);
            CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, what);
            CREATE TRIGGER parent_audit AFTER INSERT ON parent
                BEGIN INSERT INTO audit(what) VALUES('parent ' || new.id); END;
            PRAGMA foreign_keys = ON;";
        let a = capturing(schema);
        a.execute_batch(
            "INSERT INTO parent(id) VALUES(1); INSERT INTO parent(id) VALUES(2);
             INSERT INTO child VALUES(10, 1); INSERT INTO child VALUES(20, 2);
             INSERT INTO child VALUES(30, 2); DELETE FROM parent WHERE id = 1;",
        )
        .expect("writes");
        let first = take_replayable(&a);
        // Replayed as a REPLACE of the parent row: must not cascade.
        a.execute_batch("UPDATE parent SET name = 'renamed' WHERE id = 2;")
            .expect("update");
        let second = take_replayable(&a);
        let b = plain(schema);
        // Inside the caller's transaction, as recovery does.
        b.execute_batch("BEGIN").expect("begin");
        apply_changeset(&b, &first).expect("apply");
        apply_changeset(&b, &second).expect("apply");
        b.execute_batch("COMMIT").expect("commit");
        assert_eq!(contents(&a), contents(&b));
        let children: i64 = b
            .query_row("SELECT count(*) FROM child", [], |r| r.get(0))
            .expect("children");
        assert_eq!(children, 2);
        // Both are back on afterwards.
        assert!(b
            .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)
            .expect("triggers"));
        let fk: bool = b
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .expect("fk");
        assert!(fk);
    }

    /// splitmix64: small, seedable, good enough to drive the property test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }

        fn int(&mut self) -> i64 {
            self.below(24) as i64 - 4
        }

        fn value(&mut self) -> Value {
            match self.below(7) {
                0 => Value::Null,
                1 | 2 => Value::Integer(self.int()),
                3 => Value::Real(self.int() as f64 / 4.0),
                4 => Value::Text(["", "a", "b'c", "\"d\"", "é"][self.below(5) as usize].into()),
                5 => Value::Blob((0..self.below(40)).map(|i| i as u8).collect()),
                _ => Value::Text("x".repeat(self.below(3000) as usize)),
            }
        }

        fn key(&mut self) -> String {
            ["a", "b", "c", "d", "e", "f"][self.below(6) as usize].to_owned()
        }
    }

    /// Prints the seed if the test fails while it is alive.
    struct SeedGuard(u64);

    impl Drop for SeedGuard {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "property test failed with seed {} (rerun: ROOST_CAPTURE_SEED={})",
                    self.0, self.0
                );
            }
        }
    }

    const PROPERTY_SCHEMA: &str = "
        CREATE TABLE t1(id INTEGER PRIMARY KEY, u INTEGER UNIQUE, v);
        CREATE TABLE t2(a, b);
        CREATE TABLE t3(k1 TEXT, k2 INTEGER, v, PRIMARY KEY(k1, k2)) WITHOUT ROWID;
        CREATE TABLE t4(k TEXT PRIMARY KEY, v);
        CREATE TABLE log(id INTEGER PRIMARY KEY AUTOINCREMENT, msg);
        CREATE TRIGGER t1_log AFTER INSERT ON t1 BEGIN INSERT INTO log(msg) VALUES(new.id); END;
    ";

    /// One random write; errors (constraint failures) are part of the game.
    /// True if it failed.
    fn random_write(conn: &Connection, rng: &mut Rng) -> bool {
        // Multi-row statements mostly resolve conflicts rather than fail
        // half-way (which makes the batch unreplayable).
        let or = ["", " OR REPLACE", " OR IGNORE", " OR REPLACE"][rng.below(4) as usize];
        let r = match rng.below(16) {
            0 => conn.execute(
                "INSERT INTO t1(id, u, v) VALUES(?1, ?2, ?3)",
                (
                    if rng.chance(30) {
                        None
                    } else {
                        Some(rng.int())
                    },
                    rng.int(),
                    rng.value(),
                ),
            ),
            1 => conn.execute(
                "INSERT OR REPLACE INTO t1(id, u, v) VALUES(?1, ?2, ?3)",
                (rng.int(), rng.int(), rng.value()),
            ),
            2 => conn.execute(
                "UPDATE t1 SET u = ?1, v = ?2 WHERE id = ?3",
                (rng.int(), rng.value(), rng.int()),
            ),
            3 => conn.execute(
                &format!("UPDATE{or} t1 SET id = id + ?1 WHERE id > ?2"),
                (rng.int(), rng.int()),
            ),
            4 => conn.execute("DELETE FROM t1 WHERE u < ?1", [rng.int()]),
            5 => conn.execute(
                &format!("INSERT{or} INTO t1(u, v) VALUES(?1, 1), (?2, 2), (?3, 3)"),
                (rng.int(), rng.int(), rng.int()),
            ),
            6 => conn.execute("INSERT INTO t2 VALUES(?1, ?2)", (rng.int(), rng.value())),
            7 => conn.execute(
                "UPDATE t2 SET b = ?1, rowid = rowid + ?2 WHERE a = ?3",
                (rng.value(), rng.below(3) as i64 * 50, rng.int()),
            ),
            8 => conn.execute("DELETE FROM t2 WHERE a > ?1", [rng.int()]),
            9 => conn.execute(
                "INSERT OR REPLACE INTO t3 VALUES(?1, ?2, ?3)",
                (rng.key(), rng.int(), rng.value()),
            ),
            10 => conn.execute(
                &format!("UPDATE{or} t3 SET k1 = ?1, v = ?2 WHERE k2 = ?3"),
                (rng.key(), rng.value(), rng.int()),
            ),
            11 => conn.execute(
                "DELETE FROM t3 WHERE k1 = ?1 OR k2 = ?2",
                (rng.key(), rng.int()),
            ),
            12 => conn.execute(
                "INSERT INTO t4 VALUES(?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                (rng.key(), rng.value()),
            ),
            13 => conn.execute("UPDATE t4 SET k = ?1 WHERE k = ?2", (rng.key(), rng.key())),
            14 => conn.execute("DELETE FROM t4 WHERE k = ?1", [rng.key()]),
            _ => conn.execute(
                "UPDATE t3 SET v = ?1 WHERE k1 = ?2",
                (rng.value(), rng.key()),
            ),
        };
        r.is_err()
    }

    /// Copies every row of `from` into the (empty) tables of `to`.
    fn copy_contents(from: &Connection, to: &Connection) {
        to.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
            .expect("triggers off");
        let start = contents(from);
        for (table, rows) in &start {
            let (without_rowid, names): (bool, Vec<String>) = {
                let wr = from
                    .query_row(
                        "SELECT wr FROM pragma_table_list WHERE name = ?1",
                        [table],
                        |r| r.get(0),
                    )
                    .expect("wr");
                let mut stmt = from
                    .prepare("SELECT name FROM pragma_table_xinfo(?1) ORDER BY cid")
                    .expect("columns");
                let names = stmt
                    .query_map([table], |r| r.get::<_, String>(0))
                    .expect("columns")
                    .map(|n| quote(&n.expect("name")))
                    .collect();
                (wr, names)
            };
            let (first, columns) = if without_rowid {
                (2, names.join(","))
            } else {
                (1, format!("_rowid_,{}", names.join(",")))
            };
            let params: Vec<String> = (first..=names.len() + 1).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {}({columns}) VALUES({})",
                quote(table),
                params.join(",")
            );
            for row in rows {
                to.execute(&sql, rusqlite::params_from_iter(row.iter()))
                    .expect("copy");
            }
        }
        to.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
            .expect("triggers on");
        assert_eq!(start, contents(to), "copies differ before the test");
    }

    fn property_case(seed: u64) -> (usize, usize) {
        let _guard = SeedGuard(seed);
        let mut rng = Rng(seed);
        let a = capturing(PROPERTY_SCHEMA);
        let b = plain(PROPERTY_SCHEMA);
        // Identical starting contents, written before capture starts.
        for _ in 0..rng.below(20) {
            let _ = random_write(&a, &mut rng);
        }
        copy_contents(&a, &b);
        let (mut replayed, mut unreplayable) = (0, 0);
        for _batch in 0..1 + rng.below(3) {
            a.begin_capture();
            a.execute_batch("BEGIN").expect("begin");
            let mut open: Vec<(usize, Mark)> = Vec::new();
            let mut next_sp = 0;
            // Whether anything happened that may make the batch unreplayable.
            let mut excuse = false;
            for _ in 0..rng.below(60) {
                match rng.below(20) {
                    0..=2 => {
                        next_sp += 1;
                        a.execute_batch(&format!("SAVEPOINT sp{next_sp}"))
                            .expect("savepoint");
                        let mark = if open.is_empty() {
                            a.start_event()
                        } else {
                            a.mark()
                        };
                        open.push((next_sp, mark));
                    }
                    3 => {
                        if let Some((sp, _)) = open.pop() {
                            a.execute_batch(&format!("RELEASE sp{sp}"))
                                .expect("release");
                        }
                    }
                    4 => {
                        if let Some((sp, mark)) = open.pop() {
                            a.rollback_to(mark, || {
                                a.execute_batch(&format!("ROLLBACK TO sp{sp}; RELEASE sp{sp}"))
                            })
                            .expect("rollback");
                        }
                    }
                    5 if rng.chance(20) => {
                        // The handler rolls back on its own.
                        if let Some((sp, _)) = open.pop() {
                            a.execute_batch(&format!("ROLLBACK TO sp{sp}; RELEASE sp{sp}"))
                                .expect("raw rollback");
                            excuse = true;
                        }
                    }
                    _ => excuse |= random_write(&a, &mut rng),
                }
            }
            while let Some((sp, _)) = open.pop() {
                a.execute_batch(&format!("RELEASE sp{sp}"))
                    .expect("release");
            }
            let captured = a.take_changes();
            a.execute_batch("COMMIT").expect("commit");
            if !captured.replayable {
                assert!(
                    excuse,
                    "a batch without failures or rollbacks is not replayable"
                );
                // Made durable by fsyncing the file instead; the copy can no
                // longer follow.
                unreplayable += 1;
                break;
            }
            apply_changeset(&b, &captured.bytes).expect("apply");
            let expected = contents(&a);
            assert_eq!(expected, contents(&b), "replay differs");
            if rng.chance(30) {
                apply_changeset(&b, &captured.bytes).expect("apply again");
                assert_eq!(expected, contents(&b), "second replay differs");
            }
            replayed += 1;
        }
        (replayed, unreplayable)
    }

    #[test]
    fn random_batches_replay_to_identical_contents() {
        if let Some(seed) = std::env::var("ROOST_CAPTURE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            property_case(seed);
            return;
        }
        let cases: u64 = std::env::var("ROOST_CAPTURE_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        let (mut replayed, mut unreplayable) = (0, 0);
        for case in 0..cases {
            let (r, u) = property_case(0x5EED_0000 + case);
            replayed += r;
            unreplayable += u;
        }
        eprintln!("{replayed} batches replayed, {unreplayable} not replayable");
        assert!(replayed > 3 * unreplayable, "too few replayable batches");
    }

    fn sample_changeset() -> Vec<u8> {
        let a = capturing(SHAPES);
        a.execute_batch(
            "INSERT INTO plain VALUES(1, 2.5, 'three'); INSERT INTO ipk VALUES(7, 'x', 1.0, x'00ff');
             INSERT INTO wr VALUES('k', 'v', 1); UPDATE wr SET k1 = 'k2';
             UPDATE plain SET rowid = 9; DELETE FROM ipk;
             INSERT INTO gen(a, d) VALUES(1, NULL);",
        )
        .expect("writes");
        take_replayable(&a)
    }

    #[test]
    fn garbage_never_panics() {
        let good = sample_changeset();
        let b = plain(SHAPES);
        // Every truncation either decodes (at a change boundary) or fails
        // without touching the database.
        for len in 0..good.len() {
            let before = contents(&b);
            if apply_changeset(&b, &good[..len]).is_err() {
                assert_eq!(
                    before,
                    contents(&b),
                    "failed apply left changes (len {len})"
                );
            }
        }
        let mut rng = Rng(0xBAD_5EED);
        for _ in 0..3000 {
            let mut bytes = good.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            let _ = apply_changeset(&b, &bytes);
        }
        for _ in 0..3000 {
            let len = rng.below(64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.chance(70) && !bytes.is_empty() {
                bytes[0] = FORMAT_V1;
            }
            let _ = apply_changeset(&b, &bytes);
        }
        // Huge claimed lengths and counts are refused, not allocated.
        for bytes in [
            vec![FORMAT_V1, OP_INSERT, 0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![FORMAT_V1, OP_INSERT, 1, b't', 0xff, 0xff, 0x03, 0],
            vec![
                FORMAT_V1, OP_INSERT, 1, b't', 1, 0, T_TEXT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0xff, 0x01,
            ],
            vec![FORMAT_V1, OP_DELETE, 1, b't', 1, 0, T_SAME],
            vec![FORMAT_V1, OP_INSERT, 1, b't', 1, 0, T_REAL, 1, 2],
            vec![FORMAT_V1, 9],
            vec![b'T', 1, 2, 3],
        ] {
            assert!(apply_changeset(&b, &bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn rollback_keyword_detection() {
        let cases: &[(&str, bool)] = &[
            ("ROLLBACK", true),
            ("rollback to sp", true),
            ("  \n\t RollBack;", true),
            ("-- note\nROLLBACK TO x", true),
            ("/* a */ /* b */ROLLBACK", true),
            ("ROLLBACKS", false),
            ("ROLLBACK_x", false),
            ("RELEASE x", false),
            ("SELECT 'ROLLBACK'", false),
            ("-- ROLLBACK", false),
            ("/* ROLLBACK", false),
            ("ROLL", false),
            ("", false),
            ("-", false),
            ("/", false),
        ];
        for (sql, expected) in cases {
            let text = std::ffi::CString::new(*sql).expect("cstring");
            // SAFETY: a NUL-terminated string.
            let found = unsafe { starts_with_rollback(text.as_ptr()) };
            assert_eq!(found, *expected, "{sql:?}");
        }
    }
}
