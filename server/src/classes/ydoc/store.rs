//! A document's persistence in its object's SQLite file: an append-only
//! update log, snapshots, compaction and reading the document as of a time.
//!
//! Tables: `updates(id, ts, data, n, v)` — every applied Yjs update, in
//! order; a plain row (`v` = 1) holds the `n` v1 updates of one batch
//! (`n` = 1: `data` is the update; more: each as lib0 `varUint(len)` +
//! bytes), so a burst costs one row; a merged row (`v` = 2, `history.rs`)
//! holds the merge of `n` updates in v2 encoding; history is read at the
//! granularity of rows —
//! and `snapshots(id, upto, ts, data, v)` — the whole document as of update
//! `upto` (whose time is `ts`), in Yjs update encoding `v` (1 or 2, the
//! smaller: `insert_snapshot`, deflated when the quiet alarm writes it
//! (`DEFLATED`); snapshots from before migration 4 are v1). Loading takes the newest snapshot and the
//! updates after it. Compaction adds a snapshot and deletes only updates
//! older than the retention window (keeping one base snapshot at or before
//! the window's start), so the document can be read as of any time inside the
//! window at the granularity of stored updates.
//!
//! Architecture Invariant: the state a snapshot holds equals the state of
//! replaying every update up to its `upto` (tests check this).

use rusqlite::{Connection, OptionalExtension};
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

pub(crate) const MIGRATIONS: &[&str] = &["CREATE TABLE updates(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, data BLOB NOT NULL);
     CREATE TABLE snapshots(id INTEGER PRIMARY KEY, upto INTEGER NOT NULL, ts INTEGER NOT NULL, data BLOB NOT NULL);
     CREATE INDEX snapshots_by_ts ON snapshots(ts);",
    "ALTER TABLE updates ADD COLUMN n INTEGER NOT NULL DEFAULT 1;",
    // Update ids used to be plain rowids, which SQLite reuses from 1 once
    // compaction has emptied the log: the new updates then sat at or below
    // the snapshot's `upto` and were skipped as already included. Ids now
    // continue above every snapshot (`append_pending`); the index makes that
    // lookup one seek. Rows a document stored after such a reuse (newer than
    // the newest snapshot, yet numbered at or below it) are moved above every
    // id, in order; applying an update twice changes nothing, so moving a row
    // the snapshot did hold is harmless.
    "CREATE INDEX snapshots_by_upto ON snapshots(upto);
     UPDATE updates
        SET id = id + (SELECT max(id) FROM updates) + (SELECT max(upto) FROM snapshots)
      WHERE ts > (SELECT ts FROM snapshots ORDER BY upto DESC LIMIT 1)
        AND EXISTS (SELECT 1 FROM updates u
                     WHERE u.id <= (SELECT max(upto) FROM snapshots)
                       AND u.ts > (SELECT ts FROM snapshots ORDER BY upto DESC LIMIT 1));",
    // Snapshots in v1 or v2, whichever is smaller; those already stored are v1.
    "ALTER TABLE snapshots ADD COLUMN v INTEGER NOT NULL DEFAULT 1;",
    // Rows merged by coarsening (`history.rs`) hold one v2 update.
    "ALTER TABLE updates ADD COLUMN v INTEGER NOT NULL DEFAULT 1;"];
// No index on `updates(ts)`: it would add a page write to every update, and
// only compaction (rare, alarm-driven) filters by time; `ts` grows with `id`.

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("stored update {0} does not decode: {1}")]
    Corrupt(i64, String),
    #[error("the document's history does not reach back to {0} ms (retention window)")]
    BeforeHistory(i64),
}

/// Sizes of what the log holds beyond the newest snapshot.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LogStats {
    pub rows_since_snapshot: u64,
    pub bytes_since_snapshot: u64,
    /// The newest snapshot's Yjs encoding (inflated: what replay costs).
    pub snapshot_bytes: u64,
    pub last_update_ts: i64,
}

/// Bit of a stored encoding code (`v`): the bytes are raw deflate of the
/// Yjs encoding in the low bits. Only the quiet alarm's writes (snapshots,
/// merged rows) deflate; a real trace's snapshot halves, merged rows lose
/// a fifth.
pub(crate) const DEFLATED: i64 = 0x100;

/// `data` deflated if that saves at least an eighth: the bytes and the
/// bit to add to their encoding code.
pub(crate) fn deflate_if_smaller(data: Vec<u8>) -> (Vec<u8>, i64) {
    use std::io::Write;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    match encoder.write_all(&data).and_then(|()| encoder.finish()) {
        Ok(packed) if packed.len() + data.len() / 8 < data.len() => (packed, DEFLATED),
        _ => (data, 0),
    }
}

/// Applies a snapshot stored in encoding `v` (1 or 2, maybe deflated).
/// Returns the size of its Yjs encoding (inflated).
fn apply_snapshot(doc: &Doc, upto: i64, data: &[u8], v: i64) -> Result<u64, StoreError> {
    let raw = unpacked(-upto, data, v)?;
    apply_row(doc, -upto, &raw, 1, v & !DEFLATED)?;
    Ok(raw.len() as u64)
}

/// The stored bytes, inflated if `v` says they are deflated.
fn unpacked(id: i64, data: &[u8], v: i64) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    if v & DEFLATED == 0 {
        return Ok(data.into());
    }
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| StoreError::Corrupt(id, e.to_string()))?;
    Ok(out.into())
}

/// Writes a snapshot of `doc` as of update `upto` (time `ts`) in the
/// smaller of the two encodings (v1 on a tie: yrs decodes it faster).
/// Measured: a real trace's 20,000 keystrokes are 31.7 KB in v1, 19.6 KB
/// in v2; 10,000 appended markers 190 KB in both, v2 decoding 0.4 ms
/// slower. Encoding both costs ~1.5 ms per 190 KB snapshot. Returns its
/// size (before any deflate).
/// With `pack`, deflated if that is smaller still.
fn insert_snapshot(
    conn: &Connection,
    doc: &Doc,
    upto: i64,
    ts: i64,
    pack: bool,
) -> Result<u64, StoreError> {
    let (v1, v2) = {
        let txn = doc.transact();
        let all = StateVector::default();
        (
            txn.encode_state_as_update_v1(&all),
            txn.encode_state_as_update_v2(&all),
        )
    };
    let (data, v) = if v2.len() < v1.len() {
        (v2, 2)
    } else {
        (v1, 1)
    };
    let size = data.len() as u64;
    let (data, v) = match pack {
        true => {
            let (data, bit) = deflate_if_smaller(data);
            (data, v | bit)
        }
        false => (data, v),
    };
    conn.prepare_cached("INSERT INTO snapshots(upto, ts, data, v) VALUES(?1, ?2, ?3, ?4)")?
        .execute((upto, ts, &data, v))?;
    Ok(size)
}

/// Applies a row's `n` updates (see the module doc for the layout).
pub(crate) fn apply_row(doc: &Doc, id: i64, data: &[u8], n: i64, v: i64) -> Result<(), StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(id, e.to_string());
    let data = &unpacked(id, data, v)?[..];
    let update = match (v & !DEFLATED, n) {
        (2, _) => Update::decode_v2(data),
        (_, 1) => Update::decode_v1(data),
        _ => return apply_framed(doc, id, data, n),
    };
    let update = update.map_err(|e| corrupt(&e))?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| corrupt(&e))
}

/// The `n` v1 updates of a plain row (see the module doc for the layout).
pub(crate) fn row_parts(id: i64, data: &[u8], n: i64) -> Result<Vec<&[u8]>, StoreError> {
    match n {
        1 => Ok(vec![data]),
        n => framed_parts(id, data, n),
    }
}

/// `n` updates, each as lib0 `varUint(len)` + bytes, nothing after the last.
fn framed_parts(id: i64, data: &[u8], n: i64) -> Result<Vec<&[u8]>, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(id, e.to_string());
    let mut cursor = Cursor::new(data);
    let mut parts = Vec::new();
    for _ in 0..n {
        // `read_buf`'s slice borrows the cursor: take it from `data`.
        let len: usize = cursor.read_var().map_err(|e| corrupt(&e))?;
        let part = data
            .get(cursor.next..cursor.next.saturating_add(len))
            .ok_or_else(|| corrupt(&"an update runs past the row"))?;
        cursor.next += len;
        parts.push(part);
    }
    if cursor.has_content() {
        return Err(corrupt(&"bytes after the last update"));
    }
    Ok(parts)
}

/// Applies `n` lib0-framed updates in one transaction.
fn apply_framed(doc: &Doc, id: i64, data: &[u8], n: i64) -> Result<(), StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(id, e.to_string());
    let mut txn = doc.transact_mut();
    for part in framed_parts(id, data, n)? {
        let update = Update::decode_v1(part).map_err(|e| corrupt(&e))?;
        txn.apply_update(update).map_err(|e| corrupt(&e))?;
    }
    Ok(())
}

/// The updates of one batch, gathered for one row.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    framed: Vec<u8>,
    n: i64,
    ts: i64,
}

impl Pending {
    pub(crate) fn push(&mut self, ts: i64, update: &[u8]) {
        self.framed.write_buf(update);
        self.n += 1;
        self.ts = ts;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The time the row will be stored with (the newest update's).
    pub(crate) fn ts(&self) -> i64 {
        self.ts
    }

    /// The gathered updates, each as it came (for the change feed).
    pub(crate) fn updates(&self) -> Vec<&[u8]> {
        // `push` framed each one: this cannot fail.
        framed_parts(0, &self.framed, self.n).unwrap_or_default()
    }
}

/// Applies the gathered updates (not yet stored) to `doc`, in one transaction.
pub(crate) fn apply_pending(doc: &Doc, pending: &Pending) -> Result<(), StoreError> {
    apply_framed(doc, 0, &pending.framed, pending.n)
}

/// Writes the gathered updates as one row (none: nothing) and empties
/// `pending` once they are written.
pub(crate) fn append_pending(conn: &Connection, pending: &mut Pending) -> Result<(), StoreError> {
    if pending.n == 0 {
        return Ok(());
    }
    let data = if pending.n == 1 {
        // One update is stored bare: skip its varUint length prefix.
        let prefix = pending
            .framed
            .iter()
            .position(|b| b & 0x80 == 0)
            .map_or(0, |i| i + 1);
        &pending.framed[prefix..]
    } else {
        &pending.framed[..]
    };
    // Architecture Invariant: an update's id is above every id any snapshot
    // or earlier update ever had, even after compaction deleted them all
    // (a rowid would start again at 1, below the snapshot's `upto`).
    conn.prepare_cached(
        "INSERT INTO updates(id, ts, data, n) VALUES(
            max(coalesce((SELECT max(id) FROM updates), 0),
                coalesce((SELECT max(upto) FROM snapshots), 0)) + 1, ?1, ?2, ?3)",
    )?
    .execute((pending.ts, data, pending.n))?;
    pending.framed.clear();
    pending.n = 0;
    Ok(())
}

/// Loads the current document and the log statistics.
pub(crate) fn load(conn: &Connection) -> Result<(Doc, LogStats), StoreError> {
    let doc = Doc::new();
    let mut stats = LogStats::default();
    let snapshot: Option<(i64, Vec<u8>, i64)> = conn
        .query_row(
            "SELECT upto, data, v FROM snapshots ORDER BY upto DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let upto = match snapshot {
        Some((upto, data, v)) => {
            stats.snapshot_bytes = apply_snapshot(&doc, upto, &data, v)?;
            upto
        }
        None => 0,
    };
    let mut stmt =
        conn.prepare("SELECT id, ts, data, n, v FROM updates WHERE id > ?1 ORDER BY id")?;
    let mut rows = stmt.query([upto])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let data: Vec<u8> = row.get(2)?;
        let n: i64 = row.get(3)?;
        apply_row(&doc, id, &data, n, row.get(4)?)?;
        stats.rows_since_snapshot += n as u64;
        stats.bytes_since_snapshot += data.len() as u64;
        stats.last_update_ts = row.get(1)?;
    }
    if stats.last_update_ts == 0 {
        stats.last_update_ts = conn
            .query_row("SELECT max(ts) FROM updates", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0);
    }
    Ok((doc, stats))
}

/// Writes a snapshot of `doc` as of the newest update (if any update is not
/// yet covered by a snapshot), deflated if `pack` and smaller. Returns the
/// snapshot's size.
pub(crate) fn checkpoint(
    conn: &Connection,
    doc: &Doc,
    pack: bool,
) -> Result<Option<u64>, StoreError> {
    let newest: Option<(i64, i64)> = conn
        .query_row(
            "SELECT id, ts FROM updates ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((upto, ts)) = newest else {
        return Ok(None);
    };
    let covered: Option<i64> = conn
        .query_row("SELECT max(upto) FROM snapshots", [], |r| r.get(0))
        .optional()?
        .flatten();
    if covered.is_some_and(|c| c >= upto) {
        return Ok(None);
    }
    Ok(Some(insert_snapshot(conn, doc, upto, ts, pack)?))
}

/// The time of the oldest stored update (`ts` grows with `id`).
pub(crate) fn oldest_ts(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT ts FROM updates ORDER BY id LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// Drops what the retention window no longer needs: updates older than
/// `cutoff_ts` and snapshots older than the newest snapshot at or before the
/// cutoff (the base that replaces them). Returns (updates, snapshots) deleted.
pub(crate) fn compact(conn: &Connection, cutoff_ts: i64) -> Result<(usize, usize), StoreError> {
    // Nothing is old yet (the usual case): one lookup by primary key, not
    // the scan below.
    if oldest_ts(conn)?.is_none_or(|ts| ts >= cutoff_ts) {
        return Ok((0, 0));
    }
    // The newest update before the cutoff: everything up to it may go once a
    // snapshot covers it.
    let last_old: Option<i64> = conn
        .query_row(
            "SELECT max(id) FROM updates WHERE ts < ?1",
            [cutoff_ts],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(last_old) = last_old else {
        return Ok((0, 0));
    };
    // The base: the newest snapshot that covers no more than the old updates.
    let base: Option<i64> = conn
        .query_row(
            "SELECT max(upto) FROM snapshots WHERE upto <= ?1",
            [last_old],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let base = match base {
        Some(b) => b,
        None => {
            // Build a base snapshot exactly at `last_old`.
            let doc = Doc::new();
            replay(conn, &doc, 0, last_old, i64::MAX)?;
            let ts: i64 =
                conn.query_row("SELECT ts FROM updates WHERE id = ?1", [last_old], |r| {
                    r.get(0)
                })?;
            insert_snapshot(conn, &doc, last_old, ts, true)?;
            last_old
        }
    };
    let updates = conn.execute("DELETE FROM updates WHERE id <= ?1", [base])?;
    let snapshots = conn.execute("DELETE FROM snapshots WHERE upto < ?1", [base])?;
    Ok((updates, snapshots))
}

/// The document as it was at `ts` (ms): the newest snapshot at or before it
/// plus the updates after that snapshot up to `ts`.
pub(crate) fn as_of(conn: &Connection, ts: i64) -> Result<Doc, StoreError> {
    let doc = Doc::new();
    let snapshot: Option<(i64, Vec<u8>, i64)> = conn
        .query_row(
            "SELECT upto, data, v FROM snapshots WHERE ts <= ?1 ORDER BY upto DESC LIMIT 1",
            [ts],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let upto = match snapshot {
        Some((upto, data, v)) => {
            apply_snapshot(&doc, upto, &data, v)?;
            upto
        }
        None => {
            // No snapshot that old: the log must reach back to the start.
            // Compaction deletes updates only up to a snapshot it keeps, so
            // the log is whole exactly when there is no snapshot, or an
            // update no later than the oldest one (ids are never reused).
            let oldest_upto: Option<i64> = conn
                .query_row("SELECT min(upto) FROM snapshots", [], |r| r.get(0))
                .optional()?
                .flatten();
            let first_update: Option<i64> = conn
                .query_row("SELECT min(id) FROM updates", [], |r| r.get(0))
                .optional()?
                .flatten();
            let log_is_complete = match (oldest_upto, first_update) {
                (None, _) => true,
                (Some(upto), Some(first)) => first <= upto,
                (Some(_), None) => false,
            };
            if !log_is_complete {
                return Err(StoreError::BeforeHistory(ts));
            }
            0
        }
    };
    replay(conn, &doc, upto, i64::MAX, ts)?;
    Ok(doc)
}

/// Applies the rows with `after < id <= upto` and `ts <= until` to `doc`.
pub(crate) fn replay(
    conn: &Connection,
    doc: &Doc,
    after: i64,
    upto: i64,
    until: i64,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, data, n, v FROM updates WHERE id > ?1 AND id <= ?2 AND ts <= ?3 ORDER BY id",
    )?;
    let mut rows = stmt.query((after, upto, until))?;
    while let Some(row) = rows.next()? {
        let data: Vec<u8> = row.get(1)?;
        apply_row(doc, row.get(0)?, &data, row.get(2)?, row.get(3)?)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(super) mod tests;
