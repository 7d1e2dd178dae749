//! A document's persistence in its object's SQLite file: an append-only
//! update log, snapshots, compaction and reading the document as of a time.
//!
//! Tables: `updates(id, ts, data, n)` — every applied Yjs v1 update, in
//! order; a row holds the `n` updates of one batch (`n` = 1: `data` is the
//! update; more: each as lib0 `varUint(len)` + bytes), so a burst costs one
//! row, and history is read at the granularity of batches —
//! and `snapshots(id, upto, ts, data)` — the whole document as of update
//! `upto` (whose time is `ts`). Loading takes the newest snapshot and the
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

pub const MIGRATIONS: &[&str] = &["CREATE TABLE updates(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, data BLOB NOT NULL);
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
                       AND u.ts > (SELECT ts FROM snapshots ORDER BY upto DESC LIMIT 1));"];
// No index on `updates(ts)`: it would add a page write to every update, and
// only compaction (rare, alarm-driven) filters by time; `ts` grows with `id`.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("stored update {0} does not decode: {1}")]
    Corrupt(i64, String),
    #[error("the document's history does not reach back to {0} ms (retention window)")]
    BeforeHistory(i64),
}

/// Sizes of what the log holds beyond the newest snapshot.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogStats {
    pub rows_since_snapshot: u64,
    pub bytes_since_snapshot: u64,
    pub snapshot_bytes: u64,
    pub last_update_ts: i64,
}

fn apply(doc: &Doc, id: i64, data: &[u8]) -> Result<(), StoreError> {
    apply_row(doc, id, data, 1)
}

/// Applies a row's `n` updates (see the module doc for the layout).
fn apply_row(doc: &Doc, id: i64, data: &[u8], n: i64) -> Result<(), StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(id, e.to_string());
    if n == 1 {
        let update = Update::decode_v1(data).map_err(|e| corrupt(&e))?;
        return doc
            .transact_mut()
            .apply_update(update)
            .map_err(|e| corrupt(&e));
    }
    apply_framed(doc, id, data, n)
}

/// Applies `n` lib0-framed updates in one transaction.
fn apply_framed(doc: &Doc, id: i64, data: &[u8], n: i64) -> Result<(), StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(id, e.to_string());
    let mut txn = doc.transact_mut();
    let mut cursor = Cursor::new(data);
    for _ in 0..n {
        let part = cursor.read_buf().map_err(|e| corrupt(&e))?;
        let update = Update::decode_v1(part).map_err(|e| corrupt(&e))?;
        txn.apply_update(update).map_err(|e| corrupt(&e))?;
    }
    if cursor.has_content() {
        return Err(corrupt(&"bytes after the last update"));
    }
    Ok(())
}

/// The updates of one batch, gathered for one row.
#[derive(Debug, Default)]
pub struct Pending {
    framed: Vec<u8>,
    n: i64,
    ts: i64,
}

impl Pending {
    pub fn push(&mut self, ts: i64, update: &[u8]) {
        self.framed.write_buf(update);
        self.n += 1;
        self.ts = ts;
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The time the row will be stored with (the newest update's).
    pub fn ts(&self) -> i64 {
        self.ts
    }
}

/// Applies the gathered updates (not yet stored) to `doc`, in one transaction.
pub fn apply_pending(doc: &Doc, pending: &Pending) -> Result<(), StoreError> {
    apply_framed(doc, 0, &pending.framed, pending.n)
}

/// Writes the gathered updates as one row (none: nothing) and empties
/// `pending` once they are written.
pub fn append_pending(conn: &Connection, pending: &mut Pending) -> Result<(), StoreError> {
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
pub fn load(conn: &Connection) -> Result<(Doc, LogStats), StoreError> {
    let doc = Doc::new();
    let mut stats = LogStats::default();
    let snapshot: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT upto, data FROM snapshots ORDER BY upto DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let upto = match snapshot {
        Some((upto, data)) => {
            stats.snapshot_bytes = data.len() as u64;
            apply(&doc, -upto, &data)?;
            upto
        }
        None => 0,
    };
    let mut stmt = conn.prepare("SELECT id, ts, data, n FROM updates WHERE id > ?1 ORDER BY id")?;
    let mut rows = stmt.query([upto])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let data: Vec<u8> = row.get(2)?;
        let n: i64 = row.get(3)?;
        apply_row(&doc, id, &data, n)?;
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
/// yet covered by a snapshot). Returns the snapshot's size.
pub fn checkpoint(conn: &Connection, doc: &Doc) -> Result<Option<u64>, StoreError> {
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
    let data = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let size = data.len() as u64;
    conn.prepare_cached("INSERT INTO snapshots(upto, ts, data) VALUES(?1, ?2, ?3)")?
        .execute((upto, ts, data))?;
    Ok(Some(size))
}

/// The time of the oldest stored update (`ts` grows with `id`).
pub fn oldest_ts(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT ts FROM updates ORDER BY id LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// Drops what the retention window no longer needs: updates older than
/// `cutoff_ts` and snapshots older than the newest snapshot at or before the
/// cutoff (the base that replaces them). Returns (updates, snapshots) deleted.
pub fn compact(conn: &Connection, cutoff_ts: i64) -> Result<(usize, usize), StoreError> {
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
            let mut stmt =
                conn.prepare("SELECT id, data, n FROM updates WHERE id <= ?1 ORDER BY id")?;
            let mut rows = stmt.query([last_old])?;
            while let Some(row) = rows.next()? {
                apply_row(&doc, row.get(0)?, &row.get::<_, Vec<u8>>(1)?, row.get(2)?)?;
            }
            let ts: i64 =
                conn.query_row("SELECT ts FROM updates WHERE id = ?1", [last_old], |r| {
                    r.get(0)
                })?;
            let data = doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            conn.execute(
                "INSERT INTO snapshots(upto, ts, data) VALUES(?1, ?2, ?3)",
                (last_old, ts, data),
            )?;
            last_old
        }
    };
    let updates = conn.execute("DELETE FROM updates WHERE id <= ?1", [base])?;
    let snapshots = conn.execute("DELETE FROM snapshots WHERE upto < ?1", [base])?;
    Ok((updates, snapshots))
}

/// The document as it was at `ts` (ms): the newest snapshot at or before it
/// plus the updates after that snapshot up to `ts`.
pub fn as_of(conn: &Connection, ts: i64) -> Result<Doc, StoreError> {
    let doc = Doc::new();
    let snapshot: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT upto, data FROM snapshots WHERE ts <= ?1 ORDER BY upto DESC LIMIT 1",
            [ts],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let upto = match snapshot {
        Some((upto, data)) => {
            apply(&doc, -upto, &data)?;
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
    let mut stmt =
        conn.prepare("SELECT id, data, n FROM updates WHERE id > ?1 AND ts <= ?2 ORDER BY id")?;
    let mut rows = stmt.query((upto, ts))?;
    while let Some(row) = rows.next()? {
        apply_row(&doc, row.get(0)?, &row.get::<_, Vec<u8>>(1)?, row.get(2)?)?;
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn append(conn: &Connection, ts: i64, data: &[u8]) -> Result<(), StoreError> {
        let mut one = Pending::default();
        one.push(ts, data);
        append_pending(conn, &mut one)
    }

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        for m in MIGRATIONS {
            conn.execute_batch(m).expect("schema");
        }
        conn
    }

    fn text_of(doc: &Doc) -> String {
        let t = doc.get_or_insert_text("t");
        t.get_string(&doc.transact())
    }

    /// Edits a client doc and returns the update it produced.
    fn edit(client: &Doc, at: u32, s: &str) -> Vec<u8> {
        let before = client.transact().state_vector();
        let t = client.get_or_insert_text("t");
        let mut txn = client.transact_mut();
        t.insert(&mut txn, at, s);
        drop(txn);
        client.transact().encode_state_as_update_v1(&before)
    }

    /// A tiny deterministic RNG (xorshift) for seeded property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn compaction_and_checkpoints_preserve_state_and_history() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1);
            let conn = db();
            let client = Doc::new();
            let mut texts_at: Vec<(i64, String)> = Vec::new();
            let n = 20 + (rng.next() % 40) as i64;
            let mut pending = Pending::default();
            for i in 0..n {
                let len = text_of(&client).chars().count() as u64;
                let at = (rng.next() % (len + 1)) as u32;
                let u = edit(&client, at, &format!("{}", i % 10));
                let ts = 1000 + i * 10;
                // Rows of one to four updates, as batches write them.
                pending.push(ts, &u);
                if i + 1 < n && !rng.next().is_multiple_of(4) {
                    continue;
                }
                append_pending(&conn, &mut pending).expect("append");
                assert!(pending.is_empty());
                texts_at.push((ts, text_of(&client)));
                if rng.next().is_multiple_of(7) {
                    let (doc, _) = load(&conn).expect("load");
                    checkpoint(&conn, &doc).expect("checkpoint");
                }
            }
            let (before, _) = load(&conn).expect("load");
            let cutoff = 1000 + (rng.next() % (n as u64 * 10)) as i64;
            compact(&conn, cutoff).expect("compact");
            let (after, _) = load(&conn).expect("load after");
            assert_eq!(
                text_of(&before),
                text_of(&after),
                "seed {seed}: compaction changed the document"
            );
            assert_eq!(
                text_of(&after),
                texts_at.last().expect("some").1,
                "seed {seed}"
            );
            // Every time inside the window reads as it was.
            for (ts, want) in &texts_at {
                if *ts < cutoff {
                    continue;
                }
                let doc =
                    as_of(&conn, *ts).unwrap_or_else(|e| panic!("seed {seed}: as_of {ts}: {e}"));
                assert_eq!(&text_of(&doc), want, "seed {seed}: as of {ts}");
                let doc = as_of(&conn, *ts + 5).expect("between edits");
                assert_eq!(
                    &text_of(&doc),
                    want,
                    "seed {seed}: as of {} (between edits)",
                    ts + 5
                );
            }
        }
    }

    #[test]
    fn history_before_any_edit_is_empty_and_before_the_window_is_refused() {
        let conn = db();
        let client = Doc::new();
        append(&conn, 100, &edit(&client, 0, "a")).expect("append");
        append(&conn, 200, &edit(&client, 1, "b")).expect("append");
        assert_eq!(text_of(&as_of(&conn, 50).expect("before")), "");
        assert_eq!(text_of(&as_of(&conn, 150).expect("between")), "a");
        append(&conn, 300, &edit(&client, 2, "c")).expect("append");
        compact(&conn, 250).expect("compact");
        assert!(matches!(
            as_of(&conn, 50),
            Err(StoreError::BeforeHistory(_))
        ));
        assert_eq!(text_of(&as_of(&conn, 250).expect("base")), "ab");
        assert_eq!(text_of(&load(&conn).expect("load").0), "abc");
    }

    /// Compaction may empty the update log; the updates after it are still
    /// part of the document, through later compactions and reloads, and
    /// history before the emptied window is refused, not read as empty.
    #[test]
    fn updates_after_the_log_was_emptied_are_kept() {
        let conn = db();
        let client = Doc::new();
        append(&conn, 100, &edit(&client, 0, "one")).expect("append");
        let (doc, _) = load(&conn).expect("load");
        checkpoint(&conn, &doc).expect("checkpoint");
        assert_eq!(compact(&conn, 1000).expect("compact").0, 1, "log emptied");
        for (round, ts) in [2000i64, 3000, 4000].into_iter().enumerate() {
            let len = text_of(&client).len() as u32;
            append(&conn, ts, &edit(&client, len, &format!("-{round}"))).expect("append");
            let (doc, _) = load(&conn).expect("load");
            assert_eq!(text_of(&doc), text_of(&client), "round {round}");
            checkpoint(&conn, &doc).expect("checkpoint");
            compact(&conn, ts + 500).expect("compact");
            assert_eq!(text_of(&load(&conn).expect("load").0), text_of(&client));
        }
        assert_eq!(text_of(&client), "one-0-1-2");
        assert!(matches!(
            as_of(&conn, 50),
            Err(StoreError::BeforeHistory(_))
        ));
    }

    /// A document hit by the old rowid reuse (rows numbered at or below the
    /// snapshot, written after it) gets those rows back on upgrade.
    #[test]
    fn the_upgrade_recovers_updates_stored_under_reused_ids() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("schema 1");
        conn.execute_batch(MIGRATIONS[1]).expect("schema 2");
        let client = Doc::new();
        let old = |ts: i64, data: Vec<u8>| {
            conn.execute("INSERT INTO updates(ts, data) VALUES(?1, ?2)", (ts, data))
                .expect("old insert")
        };
        old(100, edit(&client, 0, "a"));
        old(110, edit(&client, 1, "b"));
        let snap = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        conn.execute(
            "INSERT INTO snapshots(upto, ts, data) VALUES(2, 110, ?1)",
            [snap],
        )
        .expect("snapshot");
        conn.execute("DELETE FROM updates", [])
            .expect("compaction emptied the log");
        old(500, edit(&client, 2, "c")); // id 1 again
        old(510, edit(&client, 3, "d")); // id 2
        old(520, edit(&client, 4, "e")); // id 3, above the snapshot
        assert_ne!(
            text_of(&load(&conn).expect("load").0),
            "abcde",
            "the loss as it was"
        );
        for m in &MIGRATIONS[2..] {
            conn.execute_batch(m).expect("upgrade");
        }
        assert_eq!(text_of(&load(&conn).expect("load").0), "abcde");
        append(&conn, 600, &edit(&client, 5, "f")).expect("append");
        assert_eq!(text_of(&load(&conn).expect("load").0), "abcdef");
        // A healthy document is read the same after the upgrade.
        let healthy = db();
        let c2 = Doc::new();
        append(&healthy, 1, &edit(&c2, 0, "x")).expect("append");
        let (d, _) = load(&healthy).expect("load");
        checkpoint(&healthy, &d).expect("checkpoint");
        append(&healthy, 2, &edit(&c2, 1, "y")).expect("append");
        assert_eq!(text_of(&load(&healthy).expect("load").0), "xy");
    }

    /// A document written before rows held batches (migration 1 only) loads
    /// the same after migration 2, and takes batch rows after its old rows.
    #[test]
    fn a_document_from_before_batch_rows_upgrades_in_place() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("schema 1");
        let client = Doc::new();
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            let u = edit(&client, i as u32, s);
            conn.execute(
                "INSERT INTO updates(ts, data) VALUES(?1, ?2)",
                (100 + i as i64, u),
            )
            .expect("old row");
        }
        for m in &MIGRATIONS[1..] {
            conn.execute_batch(m).expect("upgrade");
        }
        assert_eq!(text_of(&load(&conn).expect("load").0), "abc");
        let mut pending = Pending::default();
        pending.push(200, &edit(&client, 3, "d"));
        pending.push(201, &edit(&client, 4, "e"));
        append_pending(&conn, &mut pending).expect("append");
        let (doc, stats) = load(&conn).expect("load");
        assert_eq!(text_of(&doc), "abcde");
        assert_eq!(
            stats.rows_since_snapshot, 5,
            "updates are counted, not rows"
        );
        assert_eq!(text_of(&as_of(&conn, 150).expect("as of")), "abc");
    }
}
