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
//! This is the only module with `unsafe` code: the callbacks, SQLite's
//! preupdate API (compiled in by rusqlite's `preupdate_hook` feature, whose
//! bindings need libclang at build time) and the connection's lookaside
//! setting (`small_lookaside`).
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
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use rusqlite::ffi;
use rusqlite::Connection;

pub(super) const FORMAT_V1: u8 = 0xA1;

pub(super) const OP_INSERT: u8 = 1;
pub(super) const OP_UPDATE: u8 = 2;
pub(super) const OP_DELETE: u8 = 3;

pub(super) const T_NULL: u8 = 0;
pub(super) const T_INTEGER: u8 = 1;
pub(super) const T_REAL: u8 = 2;
pub(super) const T_TEXT: u8 = 3;
pub(super) const T_BLOB: u8 = 4;
pub(super) const T_SAME: u8 = 5;

/// SQLite's hard upper bound on the columns of a table.
pub(super) const MAX_COLUMNS: usize = 32767;

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
    /// Also gives the connection a small lookaside (see [`small_lookaside`]).
    pub fn install(conn: Connection) -> Result<CapturingConnection, CaptureError> {
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
    pub fn begin_capture(&self) {
        self.with_log(Log::reset);
        self.state().failed.set(false);
    }

    /// The current end of the recorded changes; take it when opening a
    /// savepoint, to [`rollback_to`](Self::rollback_to) it later.
    pub fn mark(&self) -> Mark {
        Mark(self.with_log(|log| log.buf.len()))
    }

    /// Whether a change was recorded since `mark`.
    pub fn changed_since(&self, mark: Mark) -> bool {
        self.with_log(|log| log.buf.len() != mark.0)
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

    /// Whether deferred foreign-key constraints are violated right now (the
    /// open transaction's `COMMIT` would fail).
    pub fn deferred_fk_violations(&self) -> bool {
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

pub use super::replay::apply_changeset;

#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
