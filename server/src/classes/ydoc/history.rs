//! Keeping a document's history window small: inside the window, updates
//! are kept at the granularity of `--history-granularity` (1 s) rather than
//! one row per keystroke, and only the snapshots that shorten a replay
//! noticeably are kept.
//!
//! *Coarsening* merges each run of consecutive plain rows (`v` = 1) whose
//! times fall in one closed granularity bucket into one row: the Yjs merge
//! of their updates, stored in v2 encoding (`v` = 2, deflated if smaller;
//! `n` stays the number of updates it holds), under the run's last id and
//! newest time. yrs's merge grows with the square of the number of
//! updates merged (per update ~1.5 µs in calls of 256, ~5 in calls of 700,
//! ~12 in calls of 2,000), not with their size: a bucket is merged
//! [`MAX_PARTS`] updates at a time, then the results together (a real
//! trace's 20,000 keystrokes: 63 merged rows of ≤ 512 took 18.6 KB;
//! merged again into one, 9.4 KB, in 20 ms). A run never
//! crosses a snapshot's `upto`, so the store's invariant holds: a snapshot
//! is the state of every update row up to it, and a row is either wholly
//! after the newest snapshot or not at all. `state?at=` is therefore exact
//! at bucket ends; a time inside a bucket reads the document as of the end
//! of the bucket's last row that ended before it.
//!
//! *Thinning* deletes a snapshot that is neither the window's base (the
//! oldest, once compaction deleted the rows before it) nor the newest (what
//! loading starts from) when the rows since the previous kept snapshot are
//! fewer than `keep_rows` and lighter than `keep_bytes`: replaying them
//! costs little. Deleting a snapshot never changes what any read returns.
//!
//! The snapshots kept are deflated if that makes them smaller
//! (`pack_snapshots`: those written on the write path were not).
//!
//! All run in the document's compaction alarm, in its batch (all or
//! nothing), and only when the granularity is not zero (zero: every update
//! row and every snapshot is kept, as before; the tests compare the two).

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::Update;

use super::store::{self, StoreError};

/// Most updates merged in one call; a bucket's chunks are then merged
/// together (merging a few merged updates is cheap).
const MAX_PARTS: usize = 256;

/// Most updates one alarm merges (~40 ms of work); the rest waits for the
/// next alarm, which comes at once.
const MAX_PARTS_PER_RUN: i64 = 16_384;

/// Most rows one pass reads (its plan: ~32 bytes each).
const PLAN_ROWS: i64 = 65_536;

/// Where a coarsening pass stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Coarsened {
    /// Rows deleted (merged into others).
    pub rows_removed: usize,
    /// Every row up to this id is final: the next pass may start after it.
    pub through: i64,
    /// Whether everything in closed buckets was done (else: call again).
    pub done: bool,
    /// When the first bucket left open ends (a pass is due then).
    pub open_until: Option<i64>,
    /// Snapshots thinned or deflated after the pass (set by the caller).
    pub snapshots_changed: usize,
}

/// A row as planned: its id, time and the updates it holds.
#[derive(Debug, Clone, Copy)]
struct Planned {
    id: i64,
    ts: i64,
    n: i64,
}

/// How much one pass may do.
#[derive(Debug, Clone, Copy)]
struct Limits {
    plan_rows: i64,
    parts_per_run: i64,
}

/// Merges the plain rows after `from_id` bucket by bucket (see the module
/// text). Buckets that end after `now` are left for a later pass.
pub(crate) fn coarsen(
    conn: &Connection,
    granularity_ms: i64,
    now: i64,
    from_id: i64,
) -> Result<Coarsened, StoreError> {
    let limits = Limits {
        plan_rows: PLAN_ROWS,
        parts_per_run: MAX_PARTS_PER_RUN,
    };
    coarsen_with(conn, granularity_ms, now, from_id, limits)
}

fn coarsen_with(
    conn: &Connection,
    granularity_ms: i64,
    now: i64,
    from_id: i64,
    limits: Limits,
) -> Result<Coarsened, StoreError> {
    let mut out = Coarsened {
        through: from_id,
        ..Coarsened::default()
    };
    if granularity_ms <= 0 {
        out.done = true;
        return Ok(out);
    }
    let uptos: BTreeSet<i64> = conn
        .prepare("SELECT upto FROM snapshots")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    // The plan is read first: no row changes while a statement reads them.
    let plan: Vec<(Planned, i64)> = conn
        .prepare("SELECT id, ts, n, v FROM updates WHERE id > ?1 ORDER BY id LIMIT ?2")?
        .query_map((from_id, limits.plan_rows), |r| {
            let p = Planned {
                id: r.get(0)?,
                ts: r.get(1)?,
                n: r.get(2)?,
            };
            Ok((p, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let complete = plan.len() < limits.plan_rows as usize;
    let bucket = |ts: i64| ts.div_euclid(granularity_ms);
    let mut run: Vec<Planned> = Vec::new();
    let mut merged_parts = 0;
    for (p, v) in plan {
        if (bucket(p.ts) + 1) * granularity_ms > now {
            // Still open: this row and all after it wait.
            merge_run(conn, &mut run, &mut out)?;
            out.done = true;
            out.open_until = Some((bucket(p.ts) + 1) * granularity_ms);
            return Ok(out);
        }
        let joins = v == 1 && run.first().is_some_and(|f| bucket(f.ts) == bucket(p.ts));
        if !joins {
            merged_parts += merge_run(conn, &mut run, &mut out)?;
            if merged_parts >= limits.parts_per_run {
                return Ok(out);
            }
        }
        if v == 1 {
            run.push(p);
        } else {
            out.through = p.id;
        }
        if uptos.contains(&p.id) {
            // A snapshot ends here: no row may hold updates on both sides.
            merged_parts += merge_run(conn, &mut run, &mut out)?;
        }
    }
    // A run cut by the plan may go on past it: the next pass redoes it,
    // unless it is all this pass got (a bucket longer than the plan is
    // then stored as more than one row).
    if complete || out.through == from_id {
        merge_run(conn, &mut run, &mut out)?;
    }
    out.done = complete;
    Ok(out)
}

/// Replaces a run of two or more rows by one merged row under the last id;
/// empties `run` and moves `through` past it. Returns the updates merged.
fn merge_run(
    conn: &Connection,
    run: &mut Vec<Planned>,
    out: &mut Coarsened,
) -> Result<i64, StoreError> {
    let (Some(first), Some(last)) = (run.first().copied(), run.last().copied()) else {
        return Ok(0);
    };
    out.through = last.id;
    if run.len() < 2 {
        run.clear();
        return Ok(0);
    }
    let n: i64 = run.iter().map(|r| r.n).sum();
    let ts = run.iter().map(|r| r.ts).max().unwrap_or(last.ts);
    run.clear();
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT id, data, n FROM updates WHERE id >= ?1 AND id <= ?2 ORDER BY id",
    )?;
    let mut rows = stmt.query((first.id, last.id))?;
    while let Some(row) = rows.next()? {
        let data: Vec<u8> = row.get(1)?;
        let split = store::row_parts(row.get(0)?, &data, row.get(2)?)?;
        parts.extend(split.into_iter().map(<[u8]>::to_vec));
    }
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(last.id, e.to_string());
    let mut merged = parts
        .chunks(MAX_PARTS)
        .map(|chunk| {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            yrs::merge_updates_v1(&refs)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(&e))?;
    if merged.len() > 1 {
        let refs: Vec<&[u8]> = merged.iter().map(Vec::as_slice).collect();
        merged = vec![yrs::merge_updates_v1(&refs).map_err(|e| corrupt(&e))?];
    }
    let merged = merged.pop().unwrap_or_default();
    let v2 = Update::decode_v1(&merged)
        .map_err(|e| corrupt(&e))?
        .encode_v2();
    conn.prepare_cached("DELETE FROM updates WHERE id >= ?1 AND id < ?2")?
        .execute((first.id, last.id))
        .map(|deleted| out.rows_removed += deleted)?;
    let (data, packed) = store::deflate_if_smaller(v2);
    conn.prepare_cached("UPDATE updates SET ts = ?2, data = ?3, n = ?4, v = ?5 WHERE id = ?1")?
        .execute((last.id, ts, &data, n, 2 | packed))?;
    Ok(n)
}

/// Deletes the snapshots thinning allows (see the module text). Returns
/// how many.
pub(crate) fn thin(
    conn: &Connection,
    keep_rows: u64,
    keep_bytes: u64,
) -> Result<usize, StoreError> {
    let uptos: Vec<i64> = conn
        .prepare("SELECT upto FROM snapshots ORDER BY upto")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let [first, .., _newest] = uptos.as_slice() else {
        return Ok(0);
    };
    // The oldest is the window's base only if the log before it is gone;
    // a log that reaches back to the start needs no base.
    let whole: bool = conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM updates WHERE id <= ?1)")?
        .query_row([first], |r| r.get(0))?;
    let (mut kept, rest) = if whole {
        (0, &uptos[..uptos.len() - 1])
    } else {
        (*first, &uptos[1..uptos.len() - 1])
    };
    let mut deleted = 0;
    for &upto in rest {
        let (rows, bytes): (u64, u64) = conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM updates
                  WHERE id > ?1 AND id <= ?2",
            )?
            .query_row((kept, upto), |r| Ok((r.get(0)?, r.get(1)?)))?;
        if rows >= keep_rows || bytes >= keep_bytes {
            kept = upto;
        } else {
            deleted += conn
                .prepare_cached("DELETE FROM snapshots WHERE upto = ?1")?
                .execute([upto])?;
        }
    }
    Ok(deleted)
}

/// Deflates the snapshots written without it (on the write path, where
/// the time counts) if that makes them smaller. Returns how many.
pub(crate) fn pack_snapshots(conn: &Connection) -> Result<usize, StoreError> {
    let plain: Vec<(i64, Vec<u8>, i64)> = conn
        .prepare("SELECT upto, data, v FROM snapshots WHERE v & ?1 = 0")?
        .query_map([store::DEFLATED], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut packed = 0;
    for (upto, data, v) in plain {
        let (data, bit) = store::deflate_if_smaller(data);
        if bit != 0 {
            packed += conn
                .prepare_cached("UPDATE snapshots SET data = ?2, v = ?3 WHERE upto = ?1")?
                .execute((upto, &data, v | bit))?;
        }
    }
    Ok(packed)
}

/// The updates and bytes stored after the newest snapshot.
pub(crate) fn since_newest_snapshot(conn: &Connection) -> Result<(u64, u64), StoreError> {
    let upto: i64 = conn
        .query_row("SELECT max(upto) FROM snapshots", [], |r| r.get(0))
        .optional()?
        .flatten()
        .unwrap_or(0);
    Ok(conn.query_row(
        "SELECT coalesce(sum(n), 0), coalesce(sum(length(data)), 0) FROM updates WHERE id > ?1",
        [upto],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
