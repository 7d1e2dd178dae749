//! The server-wide feed index, `<data>/feed.sqlite`:
//! - `events(seq, class, object, id, object_seq, ts, kind, data)` — every
//!   indexed event; `seq` (never reused: AUTOINCREMENT) is the cursor;
//! - `marks(id, object_seq)` — per life of an object (`id:incarnation`),
//!   the newest event indexed: an event at or below it is a duplicate and
//!   is dropped;
//! - `cursors(name, seq)` — consumers' durable positions (the webhook's);
//! - `dropped(class, seq)` — per class, the newest event retention
//!   dropped: a cursor below it missed events (`dropped_after`);
//! - `state(k, v)` — `clean` is 1 only between a clean shutdown and the
//!   next start.
//!
//! One thread writes (`run`): it takes what was published, in order, and
//! appends each batch in one transaction (WAL, `synchronous=NORMAL`: a
//! kill -9 loses nothing written; a power loss may lose the newest
//! transactions, which `recover.rs` indexes again from the objects).
//!
//! `seq` is never reused, not even after a power loss, which can roll the
//! index back past `seq`s a reader already saw: the index hands out only
//! `seq`s at or below a durable ceiling (`state.reserved`). The append that
//! would pass it raises it by [`RESERVE`] and commits with
//! `synchronous=FULL` (an `fdatasync` every thousand events, which makes
//! every earlier transaction durable too); a start after an unclean stop
//! numbers above the ceiling (`resume_numbering`), so a cursor from before
//! the crash never skips what is indexed after it. A kill -9 therefore
//! makes `seq` jump by up to [`RESERVE`].

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};

use super::FeedEvent;

/// What the index thread is sent.
pub(crate) enum Message {
    Event(Box<FeedEvent>),
    /// Answer whether every event sent before this one is indexed (once it
    /// was appended or failed to be).
    Barrier(tokio::sync::oneshot::Sender<bool>),
    /// A deleted object's marks (every life of it, by id hex) can go: its
    /// file is gone, so none of its events can come again, and a new
    /// object of its name draws a new incarnation. Kept, they would grow
    /// the index by a row for every object the server ever had.
    Forget(String),
    /// Index what came before, mark the index clean and stop.
    Close,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT,
        class TEXT NOT NULL, object TEXT NOT NULL, id TEXT NOT NULL,
        incarnation INTEGER NOT NULL, object_seq INTEGER NOT NULL, ts INTEGER NOT NULL, kind TEXT NOT NULL,
        data TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS events_by_class ON events(class, seq);
    CREATE TABLE IF NOT EXISTS marks(id TEXT PRIMARY KEY, object_seq INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS cursors(name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS dropped(class TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS state(k TEXT PRIMARY KEY, v INTEGER NOT NULL);";

pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

pub(crate) fn was_closed_cleanly(conn: &Connection) -> rusqlite::Result<bool> {
    let clean: Option<i64> = conn
        .query_row("SELECT v FROM state WHERE k = 'clean'", [], |r| r.get(0))
        .optional()?;
    Ok(clean == Some(1))
}

/// Marks the index in use: a start after this that finds no clean mark
/// recovers.
pub(crate) fn mark_open(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("INSERT OR REPLACE INTO state(k, v) VALUES('clean', 0)", [])?;
    Ok(())
}

/// How many `seq`s past the last durable ceiling the index may hand out.
pub(crate) const RESERVE: i64 = 1000;

/// The last `seq` handed out (0 if none ever was; kept after pruning).
fn sequence(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'events'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The durable ceiling: no `seq` above it was ever handed out.
fn reserved(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT v FROM state WHERE k = 'reserved'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// After an unclean stop: numbering goes on above the durable ceiling, past
/// every `seq` a reader can have seen before the crash (the index itself
/// may have lost them to a power loss).
pub(crate) fn resume_numbering(conn: &Connection) -> rusqlite::Result<()> {
    let above = reserved(conn)?;
    number_above(conn, above)?;
    conn.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'events'",
        [above],
    )?;
    Ok(())
}

/// Makes `seq` go on above `after` in an index that has numbered nothing
/// yet.
pub(crate) fn number_above(conn: &Connection, after: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sqlite_sequence(name, seq) SELECT 'events', ?1
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events')",
        [after],
    )?;
    Ok(())
}

pub(crate) fn newest(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
}

pub(crate) fn mark_of(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT object_seq FROM marks WHERE id = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Appends `events` (in order) in one transaction, dropping any at or
/// below its object's mark; returns the newest `seq`.
pub(crate) fn append(conn: &mut Connection, events: &[FeedEvent]) -> rusqlite::Result<i64> {
    // IMMEDIATE: the write lock is taken at BEGIN, where the busy timeout
    // waits for it. A deferred transaction that read first would instead
    // fail at once ("database is locked") when the reader connection wrote
    // a cursor since its read began: SQLite cannot upgrade a stale snapshot.
    // Passing the ceiling: raise it, durably, in the same transaction.
    let raise = sequence(conn)? + events.len() as i64 > reserved(conn)?;
    if raise {
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    let appended = append_in_transaction(conn, events, raise);
    if raise {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    appended?;
    newest(conn)
}

fn append_in_transaction(
    conn: &mut Connection,
    events: &[FeedEvent],
    raise: bool,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for e in events {
        let key = e.mark_key();
        if e.object_seq <= mark_of(&tx, &key)? {
            continue;
        }
        tx.prepare_cached(
            "INSERT INTO events(class, object, id, incarnation, object_seq, ts, kind, data)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute((
            &e.class,
            &e.object,
            &e.id,
            e.incarnation,
            e.object_seq,
            e.ts,
            &e.kind,
            e.data.to_string(),
        ))?;
        tx.prepare_cached("INSERT OR REPLACE INTO marks(id, object_seq) VALUES(?1, ?2)")?
            .execute((&key, e.object_seq))?;
    }
    if raise {
        tx.execute(
            "INSERT OR REPLACE INTO state(k, v) VALUES('reserved', ?1)",
            [sequence(&tx)? + RESERVE],
        )?;
    }
    tx.commit()
}

/// Drops the marks of deleted objects (`ids`, hex): every `id:incarnation`.
fn forget(conn: &Connection, ids: &[String]) -> rusqlite::Result<()> {
    for id in ids {
        // `;` follows `:`: the range is exactly the keys `id:…`.
        conn.prepare_cached("DELETE FROM marks WHERE id > ?1 AND id < ?2")?
            .execute((format!("{id}:"), format!("{id};")))?;
    }
    Ok(())
}

/// The index thread: appends what is published, in arrival order, a batch
/// at a time; prunes events past `retention` now and then; on `Close`
/// marks the index clean.
pub(crate) fn run(
    mut conn: Connection,
    inbox: Receiver<Message>,
    newest: tokio::sync::watch::Sender<i64>,
    retention: Duration,
    metrics: &crate::metrics::Metrics,
) {
    // Every ten minutes, or on a short retention's own scale (a 2 s
    // retention must not keep events for ten minutes).
    let prune_every = retention.clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    // Events whose append failed (the index file locked, the disk full),
    // retried ahead of what came after them. Dropping them would lose them
    // for good: the next append of the same object moves its mark past
    // them, so not even recovery would index them again.
    let mut failed: Vec<FeedEvent> = Vec::new();
    loop {
        let wait = if failed.is_empty() {
            prune_every.min(Duration::from_secs(60))
        } else {
            Duration::from_secs(1)
        };
        let first = match inbox.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = std::mem::take(&mut failed);
        let mut barriers = Vec::new();
        let mut forgotten = Vec::new();
        let mut closing = false;
        for m in first
            .into_iter()
            .chain(std::iter::from_fn(|| inbox.try_recv().ok()))
        {
            match m {
                Message::Event(e) => batch.push(*e),
                Message::Barrier(reply) => barriers.push(reply),
                Message::Forget(id) => forgotten.push(id),
                Message::Close => closing = true,
            }
            // A `Forget` ends the batch: events sent after it (a new life
            // of the same object) are appended only after its marks went.
            if batch.len() >= 1000 || closing || !forgotten.is_empty() {
                break;
            }
        }
        if !batch.is_empty() {
            match append(&mut conn, &batch) {
                Ok(seq) => {
                    metrics.feed_indexed.fetch_add(batch.len() as u64, Relaxed);
                    metrics.feed_newest_seq.store(seq, Relaxed);
                    newest.send_replace(seq);
                }
                Err(e) => {
                    metrics.feed_index_failures.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, events = batch.len(), "feed: cannot index events; retrying");
                    failed = batch;
                }
            }
        }
        for reply in barriers {
            let _ = reply.send(failed.is_empty());
        }
        if let Err(e) = forget(&conn, &forgotten) {
            // A leftover mark is a row too many, never a lost event.
            tracing::warn!(error = %e, "feed: cannot drop a deleted object's marks");
        }
        if last_prune.elapsed() >= prune_every {
            last_prune = Instant::now();
            prune(&mut conn, retention);
        }
        // Not marked clean: the objects hold the events, and the next start
        // indexes them (`recover.rs`).
        if closing && !failed.is_empty() {
            tracing::warn!("feed: events were not indexed; the next start indexes them");
            return;
        }
        if closing {
            if let Err(e) = conn.execute("UPDATE state SET v = 1 WHERE k = 'clean'", []) {
                tracing::warn!(error = %e, "feed: cannot mark the index clean");
            }
            return;
        }
    }
}

/// Drops events past `retention`, noting per class the newest dropped
/// (in the same transaction: a reader never sees a gap it is not told of).
fn prune(conn: &mut Connection, retention: Duration) {
    // Saturating: a retention past i64 milliseconds (`9999999999d`) would
    // wrap around to a cutoff in the future and drop every event.
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = crate::catalog::now_ms().saturating_sub(retention_ms);
    let pruned = (|| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO dropped(class, seq)
             SELECT class, max(seq) FROM events WHERE ts < ?1 GROUP BY class
             ON CONFLICT(class) DO UPDATE SET seq = max(seq, excluded.seq)",
            [cutoff],
        )?;
        tx.execute("DELETE FROM events WHERE ts < ?1", [cutoff])?;
        tx.commit()
    })();
    if let Err(e) = pruned {
        tracing::warn!(error = %e, "feed: cannot prune old events");
    }
}

/// The newest `seq` (of `classes`; all if empty or `*`) that retention
/// dropped, if it is above `after`: a reader at `after` missed events.
pub(crate) fn dropped_after(
    conn: &Connection,
    after: i64,
    classes: &[String],
) -> rusqlite::Result<Option<i64>> {
    let all = classes.is_empty() || classes.iter().any(|c| c == "*");
    let classes_json = serde_json::to_string(classes).unwrap_or_else(|_| "[]".into());
    let newest: Option<i64> = conn
        .prepare_cached(
            "SELECT max(seq) FROM dropped
             WHERE ?1 OR class IN (SELECT value FROM json_each(?2))",
        )?
        .query_row((all, classes_json), |r| r.get(0))?;
    Ok(newest.filter(|&seq| seq > after))
}

/// Events above `after` (of `class` if given), oldest first, at most `limit`.
pub(crate) fn read(
    conn: &Connection,
    after: i64,
    classes: &[String],
    limit: u32,
) -> rusqlite::Result<Vec<FeedEvent>> {
    let all = classes.is_empty() || classes.iter().any(|c| c == "*");
    let mut stmt = conn.prepare_cached(
        "SELECT seq, class, object, id, incarnation, object_seq, ts, kind, data FROM events
         WHERE seq > ?1 AND (?2 OR class IN (SELECT value FROM json_each(?3)))
         ORDER BY seq LIMIT ?4",
    )?;
    let classes_json = serde_json::to_string(classes).unwrap_or_else(|_| "[]".into());
    let rows = stmt.query_map((after, all, classes_json, limit), |r| {
        let data: String = r.get(8)?;
        Ok(FeedEvent {
            seq: r.get(0)?,
            class: r.get(1)?,
            object: r.get(2)?,
            id: r.get(3)?,
            incarnation: r.get(4)?,
            object_seq: r.get(5)?,
            ts: r.get(6)?,
            kind: r.get(7)?,
            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
        })
    })?;
    rows.collect()
}

pub(crate) fn cursor(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row("SELECT seq FROM cursors WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// Stores a consumer's position. It moves only after a delivery was
/// acknowledged, so a lost write repeats deliveries, never skips one.
pub(crate) fn set_cursor(conn: &Connection, name: &str, seq: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO cursors(name, seq) VALUES(?1, ?2)",
        (name, seq),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(object_seq: i64) -> FeedEvent {
        FeedEvent {
            seq: 0,
            class: "room".into(),
            object: "r".into(),
            id: "00".into(),
            incarnation: 1,
            object_seq,
            ts: 0,
            kind: "k".into(),
            data: serde_json::Value::Null,
        }
    }

    /// A power loss can roll the index back past `seq`s a reader saw (it
    /// syncs only when it raises its ceiling); after the crash, numbering
    /// must still go above them. The crash image is the files as they were
    /// right after the last synced append.
    #[test]
    fn seq_is_never_reused_after_a_power_loss() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("feed.sqlite");
        let file = |at: &Path, suffix: &str| {
            let mut p = at.join("feed.sqlite").into_os_string();
            p.push(suffix);
            std::path::PathBuf::from(p)
        };
        let image = dir.path().join("image");
        std::fs::create_dir(&image)?;
        let mut writer = open(&path)?;
        mark_open(&writer)?;
        // The first append raises the ceiling, synced.
        append(&mut writer, &[event(1)])?;
        for suffix in ["", "-wal"] {
            std::fs::copy(file(dir.path(), suffix), file(&image, suffix))?;
        }
        for i in 2..=50 {
            append(&mut writer, &[event(i)])?;
        }
        let seen = newest(&writer)?;
        assert_eq!(seen, 50);
        drop(writer);
        // The power loss: back to the synced image.
        for suffix in ["", "-wal"] {
            std::fs::copy(file(&image, suffix), file(dir.path(), suffix))?;
        }
        let _ = std::fs::remove_file(file(dir.path(), "-shm"));
        let mut conn = open(&path)?;
        assert!(!was_closed_cleanly(&conn)?);
        assert_eq!(newest(&conn)?, 1, "the image is as of the synced append");
        resume_numbering(&conn)?;
        // Recovery indexes event 2 again from its object's rows.
        let seq = append(&mut conn, &[event(2)])?;
        assert!(
            seq > seen,
            "seq {seq} reused a number a reader saw (up to {seen})"
        );
        assert!(seq <= 1 + RESERVE + 1);
        Ok(())
    }

    /// The index thread appends while the reader connection moves a cursor
    /// (as the webhook does after each delivery): no append may fail.
    #[test]
    fn appends_never_fail_while_a_cursor_is_written() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("feed.sqlite");
        let mut writer = open(&path)?;
        let reader = open(&path)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cursors = {
            let stop = stop.clone();
            std::thread::spawn(move || -> rusqlite::Result<u64> {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let newest = newest(&reader)?;
                    set_cursor(&reader, "webhook", newest)?;
                    n += 1;
                }
                Ok(n)
            })
        };
        for i in 1..=3000 {
            append(&mut writer, &[event(i)])?;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let moved = cursors
            .join()
            .map_err(|_| anyhow::anyhow!("cursor thread panicked"))??;
        assert!(moved > 0, "the cursor was written meanwhile");
        assert_eq!(newest(&writer)?, 3000);
        Ok(())
    }
}
