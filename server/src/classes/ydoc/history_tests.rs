//! Coarsening and thinning against the plain store as oracle: two copies
//! of one document's tables get the same rows and snapshots; one is
//! coarsened and thinned, and every read must agree where the granularity
//! promises it (loading, `as_of` at every bucket end, compaction after).

use rusqlite::Connection;
use yrs::{Doc, GetString, ReadTxn, Text, Transact};

use super::super::store::tests::Rng;
use super::super::store::{self, Pending};
use super::*;

fn db() -> Connection {
    let conn = Connection::open_in_memory().expect("open");
    for m in store::MIGRATIONS {
        conn.execute_batch(m).expect("schema");
    }
    conn
}

fn text_of(doc: &Doc) -> String {
    let t = doc.get_or_insert_text("t");
    t.get_string(&doc.transact())
}

/// One random edit by `client` (insert or delete); returns its update and
/// hands it to `other` too, so the clients' edits interleave.
fn edit(rng: &mut Rng, client: &Doc, other: &Doc) -> Vec<u8> {
    let before = client.transact().state_vector();
    let t = client.get_or_insert_text("t");
    let len = text_of(client).chars().count() as u32;
    {
        let mut txn = client.transact_mut();
        if len > 3 && rng.below(4) == 0 {
            let at = rng.below(u64::from(len - 1)) as u32;
            t.remove_range(&mut txn, at, 1 + rng.below(2) as u32);
        } else {
            let at = rng.below(u64::from(len) + 1) as u32;
            let letter = char::from(b'a' + rng.below(26) as u8).to_string();
            t.insert(&mut txn, at, &letter);
        }
    }
    let update = client.transact().encode_state_as_update_v1(&before);
    let decoded = yrs::updates::decoder::Decode::decode_v1(&update).expect("decode");
    other
        .transact_mut()
        .apply_update(decoded)
        .expect("apply to the other client");
    update
}

/// Writes the same random history into `a` and `b`: rows of one to three
/// updates at times 0–700 ms apart, snapshots now and then. Returns the
/// time of the last row.
fn same_history(rng: &mut Rng, a: &Connection, b: &Connection, edits: usize) -> i64 {
    let (x, y) = (Doc::new(), Doc::new());
    let server = Doc::new();
    let mut ts = 10_000;
    let (mut pa, mut pb) = (Pending::default(), Pending::default());
    for i in 0..edits {
        let update = if rng.below(3) == 0 {
            edit(rng, &y, &x)
        } else {
            edit(rng, &x, &y)
        };
        server
            .transact_mut()
            .apply_update(yrs::updates::decoder::Decode::decode_v1(&update).expect("decode"))
            .expect("apply");
        ts += rng.below(700) as i64;
        pa.push(ts, &update);
        pb.push(ts, &update);
        if i + 1 < edits && rng.below(3) != 0 {
            continue;
        }
        store::append_pending(a, &mut pa).expect("append a");
        store::append_pending(b, &mut pb).expect("append b");
        if rng.below(12) == 0 {
            // Deflated (as the quiet alarm writes them) or not.
            let pack = rng.below(2) == 0;
            store::checkpoint(a, &server, pack).expect("snapshot a");
            store::checkpoint(b, &server, pack).expect("snapshot b");
        }
    }
    ts
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// The state a snapshot holds equals replaying every row up to its `upto`
/// (the store's invariant), on a log that reaches back to the start.
fn assert_snapshots_match_rows(conn: &Connection, seed: u64) {
    let snapshots: Vec<(i64, Vec<u8>, i64)> = conn
        .prepare("SELECT upto, data, v FROM snapshots")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for (upto, data, v) in snapshots {
        let from_rows = Doc::new();
        store::replay(conn, &from_rows, 0, upto, i64::MAX).expect("replay");
        let snap = Doc::new();
        store::apply_row(&snap, -upto, &data, 1, v).expect("apply snapshot");
        assert_eq!(
            text_of(&from_rows),
            text_of(&snap),
            "seed {seed}: snapshot {upto}"
        );
    }
}

#[test]
fn coarsening_agrees_with_the_plain_store_at_every_bucket_end() {
    const G: i64 = 1000;
    for seed in 1..=30u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let (plain, coarse) = (db(), db());
        let edits = 60 + rng.below(200) as usize;
        let last = same_history(&mut rng, &plain, &coarse, edits);
        let rows_before = count(&coarse, "SELECT count(*) FROM updates");
        let out = coarsen(&coarse, G, last + 10 * G, 0).expect("coarsen");
        assert!(out.done && out.open_until.is_none(), "seed {seed}: {out:?}");
        let rows_after = count(&coarse, "SELECT count(*) FROM updates");
        assert_eq!(
            rows_before - rows_after,
            out.rows_removed as i64,
            "seed {seed}"
        );
        assert!(rows_after < rows_before, "seed {seed}: nothing merged");
        let n = "SELECT sum(n) FROM updates";
        assert_eq!(count(&plain, n), count(&coarse, n), "seed {seed}");
        // A second pass finds nothing left to do (thinning may free more).
        let again = coarsen(&coarse, G, last + 10 * G, 0).expect("again");
        assert_eq!(again.rows_removed, 0, "seed {seed}");
        let snapshots = count(&coarse, "SELECT count(*) FROM snapshots");
        let newest = "SELECT coalesce(max(upto), 0) FROM snapshots";
        let newest_before = count(&coarse, newest);
        let thinned = thin(&coarse, 3, 1 << 20).expect("thin") as i64;
        assert_eq!(
            count(&coarse, "SELECT count(*) FROM snapshots"),
            snapshots - thinned
        );
        assert_eq!(
            count(&coarse, newest),
            newest_before,
            "seed {seed}: newest kept"
        );
        coarsen(&coarse, G, last + 10 * G, 0).expect("after thinning");
        pack_snapshots(&coarse).expect("pack");
        let unpacked = format!(
            "SELECT count(*) FROM snapshots WHERE v & {} = 0",
            store::DEFLATED
        );
        if count(&coarse, &unpacked) > 0 {
            // Only a snapshot deflate would not shrink stays as it was.
            assert_eq!(pack_snapshots(&coarse).expect("again"), 0, "seed {seed}");
        }
        assert_snapshots_match_rows(&coarse, seed);
        let (want, _) = store::load(&plain).expect("load plain");
        let (got, _) = store::load(&coarse).expect("load coarse");
        assert_eq!(text_of(&got), text_of(&want), "seed {seed}: load");
        assert_eq!(
            got.transact().state_vector(),
            want.transact().state_vector(),
            "seed {seed}"
        );
        for t in (10_000 / G..=last / G).map(|b| (b + 1) * G - 1) {
            let want = store::as_of(&plain, t).expect("as_of plain");
            let got = store::as_of(&coarse, t).expect("as_of coarse");
            assert_eq!(text_of(&got), text_of(&want), "seed {seed}: as of {t}");
        }
        // Compaction afterwards keeps the two in step.
        let cutoff = 10_000 + rng.below((last - 10_000) as u64) as i64;
        store::compact(&plain, cutoff).expect("compact plain");
        store::compact(&coarse, cutoff).expect("compact coarse");
        // Thinning a compacted log keeps its base.
        thin(&coarse, 3, 1 << 20).expect("thin after compaction");
        let (want, _) = store::load(&plain).expect("load plain");
        let (got, _) = store::load(&coarse).expect("load coarse");
        assert_eq!(text_of(&got), text_of(&want), "seed {seed}: compacted");
        let t = (cutoff / G + 1) * G - 1;
        assert_eq!(
            text_of(&store::as_of(&coarse, t).expect("coarse")),
            text_of(&store::as_of(&plain, t).expect("plain")),
            "seed {seed}: as of {t} after compaction"
        );
    }
}

/// Rows whose bucket has not ended are left alone, and a pass starting at
/// `through` finishes the job once it has.
#[test]
fn open_buckets_wait_and_later_passes_finish_them() {
    const G: i64 = 1000;
    let mut rng = Rng(7);
    let (plain, coarse) = (db(), db());
    let last = same_history(&mut rng, &plain, &coarse, 300);
    let now = (last / G) * G + 1; // inside the last row's bucket
    let first = coarsen(&coarse, G, now, 0).expect("first pass");
    assert!(first.done);
    assert_eq!(first.open_until, Some((last / G + 1) * G));
    let open = format!(
        "SELECT count(*) FROM updates WHERE ts >= {}",
        (last / G) * G
    );
    assert_eq!(
        count(&plain, &open),
        count(&coarse, &open),
        "open bucket kept"
    );
    let second = coarsen(&coarse, G, last + G, first.through).expect("second pass");
    assert!(second.done && second.open_until.is_none());
    let cut = format!(
        "SELECT count(*) FROM snapshots WHERE ts >= {}",
        (last / G) * G
    );
    assert!(
        count(&coarse, &open) <= 1 + count(&coarse, &cut),
        "the last bucket merged"
    );
    assert_eq!(
        text_of(&store::load(&coarse).expect("load").0),
        text_of(&store::load(&plain).expect("load").0)
    );
    // Granularity zero: nothing changes.
    let rows = count(&plain, "SELECT count(*) FROM updates");
    assert_eq!(
        coarsen(&plain, 0, last + G, 0).expect("off").rows_removed,
        0
    );
    assert_eq!(count(&plain, "SELECT count(*) FROM updates"), rows);
}

/// Passes cut short (a small plan, few updates per pass) resume at
/// `through`, always make progress, and end with the same document and
/// history as one whole pass.
#[test]
fn short_passes_resume_and_end_like_one_whole_pass() {
    const G: i64 = 1000;
    for seed in 1..=10u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let (whole, short) = (db(), db());
        let last = same_history(&mut rng, &whole, &short, 200);
        let now = last + 10 * G;
        assert!(coarsen(&whole, G, now, 0).expect("whole").done);
        let limits = Limits {
            plan_rows: 1 + rng.below(9) as i64,
            parts_per_run: 1 + rng.below(12) as i64,
        };
        let mut out = Coarsened::default();
        let mut passes = 0;
        while !out.done {
            let from = out.through;
            out = coarsen_with(&short, G, now, from, limits).expect("short pass");
            assert!(out.done || out.through > from, "seed {seed}: no progress");
            passes += 1;
            assert!(passes < 1000, "seed {seed}: never done");
        }
        assert!(passes > 1, "seed {seed}: {limits:?} did it in one pass");
        let n = "SELECT sum(n) FROM updates";
        assert_eq!(count(&short, n), count(&whole, n), "seed {seed}");
        let rows = "SELECT count(*) FROM updates";
        assert!(
            count(&short, rows) <= count(&whole, rows) + passes,
            "seed {seed}"
        );
        assert_eq!(
            text_of(&store::load(&short).expect("load").0),
            text_of(&store::load(&whole).expect("load").0)
        );
        for t in (10_000 / G..=last / G).map(|b| (b + 1) * G - 1) {
            let want = store::as_of(&whole, t).expect("as_of whole");
            let got = store::as_of(&short, t).expect("as_of short");
            assert_eq!(text_of(&got), text_of(&want), "seed {seed}: as of {t}");
        }
    }
}
