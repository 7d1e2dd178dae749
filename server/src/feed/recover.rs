//! Start-up after a kill -9 (no clean mark in the index): every fed
//! object's `_roost_feed` rows above its mark are indexed, oldest first,
//! before any object runs. The commit log's replay has run, so each file
//! holds every batch that was acknowledged; an event published but not yet
//! indexed when the process died is found here.
//!
//! Cost: one read-only open per object file of a fed class. Objects whose
//! file holds no `_roost_feed` table cost one lookup.
//!
//! A file that cannot be read (not a database: a damaged disk) is logged
//! and passed over: its own object fails when it runs, as after a clean
//! stop, and the others' events are still indexed. Failing the start here
//! would make one damaged object take the whole server down, and only
//! after a kill -9.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{index, object, FeedConfig};

/// Indexes what the objects hold above their marks; returns how many.
pub(crate) fn index_unindexed(
    conn: &mut Connection,
    data_dir: &Path,
    config: &FeedConfig,
) -> anyhow::Result<usize> {
    if config.classes.is_empty() {
        return Ok(0);
    }
    let mut found = 0;
    for (rel, id) in crate::id::object_files(data_dir)? {
        // `objects/<class>/<shard>/<id>.sqlite`
        let class = rel
            .components()
            .nth(1)
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .to_owned();
        if !config.feeds(&class) {
            continue;
        }
        let id = id.to_string();
        // The index's own failure is no reason to pass a file over: it
        // fails the start, as an append would.
        let index_failed = std::cell::RefCell::new(None);
        let mark = |key: &str| {
            index::mark_of(conn, key).inspect_err(|e| {
                *index_failed.borrow_mut() = Some(e.to_string());
            })
        };
        let rows = || -> rusqlite::Result<_> {
            // Read-write open (a WAL file may need its `-shm` made), read
            // only: no object runs yet, so nothing else has the file open.
            let file = Connection::open_with_flags(
                data_dir.join(&rel),
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            file.execute_batch("PRAGMA query_only=1;")?;
            object::rows_above(&file, &class, &id, mark)
        };
        let rows = rows();
        if let Some(e) = index_failed.take() {
            anyhow::bail!("feed: cannot read the index's marks: {e}");
        }
        let events = match rows {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(file = %rel.display(), error = %e, "feed: cannot read an object's feed rows; its unindexed events are not recovered");
                continue;
            }
        };
        if !events.is_empty() {
            found += events.len();
            index::append(conn, &events)?;
        }
    }
    Ok(found)
}
