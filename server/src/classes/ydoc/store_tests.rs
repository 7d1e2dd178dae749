//! Tests of the document's tables: compaction, history, upgrades.

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
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
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
                checkpoint(&conn, &doc, true).expect("checkpoint");
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
            let doc = as_of(&conn, *ts).unwrap_or_else(|e| panic!("seed {seed}: as_of {ts}: {e}"));
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
    checkpoint(&conn, &doc, true).expect("checkpoint");
    assert_eq!(compact(&conn, 1000).expect("compact").0, 1, "log emptied");
    for (round, ts) in [2000i64, 3000, 4000].into_iter().enumerate() {
        let len = text_of(&client).len() as u32;
        append(&conn, ts, &edit(&client, len, &format!("-{round}"))).expect("append");
        let (doc, _) = load(&conn).expect("load");
        assert_eq!(text_of(&doc), text_of(&client), "round {round}");
        checkpoint(&conn, &doc, true).expect("checkpoint");
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
                                     // `load` reads the snapshot encoding column: migration 4, ahead of
                                     // its turn, for the loss as it was.
    for m in &MIGRATIONS[3..] {
        conn.execute_batch(m).expect("snapshot and row encodings");
    }
    assert_ne!(
        text_of(&load(&conn).expect("load").0),
        "abcde",
        "the loss as it was"
    );
    conn.execute_batch(MIGRATIONS[2]).expect("upgrade");
    assert_eq!(text_of(&load(&conn).expect("load").0), "abcde");
    append(&conn, 600, &edit(&client, 5, "f")).expect("append");
    assert_eq!(text_of(&load(&conn).expect("load").0), "abcdef");
    // A healthy document is read the same after the upgrade.
    let healthy = db();
    let c2 = Doc::new();
    append(&healthy, 1, &edit(&c2, 0, "x")).expect("append");
    let (d, _) = load(&healthy).expect("load");
    checkpoint(&healthy, &d, true).expect("checkpoint");
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

/// Snapshots written before migration 4 are v1-encoded; they stay readable
/// (loading, history) beside the v2 snapshots written after it.
#[test]
fn v1_snapshots_from_before_stay_readable_beside_v2_ones() {
    let conn = Connection::open_in_memory().expect("open");
    for m in &MIGRATIONS[..3] {
        conn.execute_batch(m).expect("schema before v2 snapshots");
    }
    let client = Doc::new();
    append(&conn, 100, &edit(&client, 0, "a")).expect("append");
    let v1 = client
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    conn.execute(
        "INSERT INTO snapshots(upto, ts, data) VALUES(1, 100, ?1)",
        [v1],
    )
    .expect("v1 snapshot");
    for m in &MIGRATIONS[3..] {
        conn.execute_batch(m).expect("upgrade");
    }
    append(&conn, 200, &edit(&client, 1, "b")).expect("append");
    let (doc, _) = load(&conn).expect("load from the v1 snapshot");
    assert_eq!(text_of(&doc), "ab");
    // A document whose v2 encoding is the smaller: many clients, one
    // letter each (v2 compresses the repeated structure).
    for i in 0..50 {
        let other = Doc::with_client_id(1000 + i);
        let t = other.get_or_insert_text("t");
        t.insert(&mut other.transact_mut(), 0, "z");
        let u = other
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        doc.transact_mut()
            .apply_update(Update::decode_v1(&u).expect("decode"))
            .expect("apply");
        append(&conn, 200, &u).expect("append");
    }
    let want = text_of(&doc);
    checkpoint(&conn, &doc, false).expect("checkpoint");
    let encodings: Vec<i64> = conn
        .prepare("SELECT v FROM snapshots ORDER BY upto")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(encodings, [1, 2]);
    let (doc, _) = load(&conn).expect("load from the v2 snapshot");
    assert_eq!(text_of(&doc), want);
    assert_eq!(text_of(&as_of(&conn, 150).expect("as of")), "a");
    assert_eq!(text_of(&as_of(&conn, 250).expect("as of")), want);
    // The quiet alarm's snapshot: v2, deflated (it is smaller).
    append(&conn, 300, &edit(&client, 0, "c")).expect("append");
    let (doc, _) = load(&conn).expect("load");
    checkpoint(&conn, &doc, true).expect("packed checkpoint");
    let v: i64 = conn
        .query_row(
            "SELECT v FROM snapshots ORDER BY upto DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("newest");
    assert_eq!(v, 2 | DEFLATED);
    assert_eq!(text_of(&load(&conn).expect("load packed").0), text_of(&doc));
    assert_eq!(text_of(&as_of(&conn, 250).expect("as of")), want);
}
