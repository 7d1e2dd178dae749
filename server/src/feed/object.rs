//! An object's own feed rows: `_roost_feed(seq, ts, object, kind, data)`
//! in its SQLite file, written by `Ctx::emit` inside the batch's
//! transaction. `seq` counts from 1 and never goes back: the newest rows are
//! kept (`--feed-object-rows`), so the highest `seq` always survives
//! pruning, and so is every row the index has not taken yet (above the
//! object's mark): those are the only copy of events a kill -9 caught in
//! flight. The table is created by the first event a fed object emits (a
//! schema change: that batch is made durable by fsyncing the object's
//! files).

use rusqlite::Connection;
use serde_json::Value;

use super::FeedEvent;
use crate::id::ObjectKey;

/// The table, created on first use.
pub(crate) const TABLE: &str = "CREATE TABLE IF NOT EXISTS _roost_feed(
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, object TEXT NOT NULL,
    kind TEXT NOT NULL, data TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS _roost_feed_incarnation(n INTEGER NOT NULL);
    INSERT INTO _roost_feed_incarnation(n) SELECT abs(random() >> 12)
        WHERE NOT EXISTS (SELECT 1 FROM _roost_feed_incarnation);";

fn incarnation(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT n FROM _roost_feed_incarnation")?
        .query_row([], |r| r.get(0))
}

/// Longest event kind, in bytes.
pub(crate) const MAX_KIND_BYTES: usize = 128;

/// Writes one event of `key` and returns it (not yet indexed: `seq` 0).
/// `indexed` gives the index's mark of a mark key (`FeedEvent::mark_key`),
/// or `None` when it cannot tell now (then nothing is pruned this time).
pub(crate) fn record(
    conn: &Connection,
    key: &ObjectKey,
    kind: &str,
    data: Value,
    ts: i64,
    keep_rows: u64,
    indexed: impl Fn(&str) -> Option<i64>,
) -> rusqlite::Result<FeedEvent> {
    conn.execute_batch(TABLE)?;
    let text = data.to_string();
    let seq: i64 = conn
        .prepare_cached(
            "INSERT INTO _roost_feed(seq, ts, object, kind, data)
             VALUES(coalesce((SELECT max(seq) FROM _roost_feed), 0) + 1, ?1, ?2, ?3, ?4)
             RETURNING seq",
        )?
        .query_row((ts, &key.name, kind, &text), |r| r.get(0))?;
    let incarnation = incarnation(conn)?;
    // Keep the newest rows; `seq` - keep never reaches the newest one. Nor
    // past the index's mark: with the index behind (its file locked, a
    // burst), a kill -9 would otherwise lose committed events for good.
    let keep = i64::try_from(keep_rows.max(1)).unwrap_or(i64::MAX);
    if seq > keep && seq % 64 == 0 {
        if let Some(mark) = indexed(&format!("{}:{incarnation}", key.id)) {
            conn.prepare_cached("DELETE FROM _roost_feed WHERE seq <= ?1")?
                .execute([(seq - keep).min(mark)])?;
        }
    }
    Ok(FeedEvent {
        seq: 0,
        class: key.class.clone(),
        object: key.name.clone(),
        id: key.id.to_string(),
        incarnation,
        object_seq: seq,
        ts,
        kind: kind.to_owned(),
        data,
    })
}

/// The rows of one object's file above its mark in the index, oldest
/// first (recovery); `mark` maps a mark key to its `object_seq`.
pub(crate) fn rows_above(
    conn: &Connection,
    class: &str,
    id: &str,
    mark: impl Fn(&str) -> rusqlite::Result<i64>,
) -> rusqlite::Result<Vec<FeedEvent>> {
    let exists: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_roost_feed_incarnation'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let incarnation = incarnation(conn)?;
    let after = mark(&format!("{id}:{incarnation}"))?;
    let mut stmt = conn.prepare(
        "SELECT seq, ts, object, kind, data FROM _roost_feed WHERE seq > ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([after], |r| {
        let data: String = r.get(4)?;
        Ok(FeedEvent {
            seq: 0,
            class: class.to_owned(),
            object: r.get(2)?,
            id: id.to_owned(),
            incarnation,
            object_seq: r.get(0)?,
            ts: r.get(1)?,
            kind: r.get(3)?,
            data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
        })
    })?;
    rows.collect()
}
