//! Start-up replay of commit-log segments into object files.
//!
//! After a crash, an object's SQLite file holds a prefix of its committed
//! batches (SQLite's WAL guarantees atomic commits; with `synchronous=NORMAL`
//! a power loss may drop the newest ones). Each file stores the `seq` of its
//! newest batch, so replay applies exactly the logged batches with a larger
//! `seq`, in order, then fsyncs the file. Only when every object is synced are
//! the segments deleted; a crash during recovery simply replays again.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use rusqlite::Connection;

use super::record::{decode_segment, Record, Tail};
use super::{list_segments, segment_path, sync_object_files};
use crate::id::{object_path, ObjectId};
use crate::storage::capture::apply_changeset;

/// What recovery did, for the start-up log line and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: usize,
    pub applied: usize,
    pub objects: usize,
    pub conflicts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("i/o during recovery: {0}")]
    Io(#[from] std::io::Error),
    #[error("sqlite during recovery of {object}: {source}")]
    Sqlite {
        object: ObjectId,
        source: rusqlite::Error,
    },
    #[error("cannot apply logged changes to {0}")]
    Apply(ObjectId),
}

pub fn recover(data_dir: &Path) -> Result<RecoveryReport, RecoveryError> {
    let log_dir = data_dir.join("log");
    let segments = list_segments(&log_dir)?;
    let mut report = RecoveryReport {
        segments: segments.len(),
        ..Default::default()
    };
    let mut per_object: HashMap<(String, ObjectId), Vec<Record>> = HashMap::new();
    for (i, n) in segments.iter().enumerate() {
        let bytes = fs::read(segment_path(&log_dir, *n))?;
        let (records, tail) = decode_segment(&bytes);
        match tail {
            Tail::Clean => {}
            Tail::Torn(at) if i + 1 == segments.len() => {
                tracing::info!(
                    segment = n,
                    offset = at,
                    "commit log ends in a torn record (unacknowledged)"
                );
            }
            other => {
                tracing::error!(segment = n, tail = ?other, "commit log segment is damaged before its end");
            }
        }
        report.records += records.len();
        for r in records {
            per_object
                .entry((r.class.clone(), r.id))
                .or_default()
                .push(r);
        }
    }
    for ((class, id), records) in per_object {
        let path = object_path(data_dir, &class, id);
        if !path.exists() {
            tracing::warn!(object = %id, class = %class, "logged object has no file (deleted?); skipping");
            continue;
        }
        let (applied, conflicts) = replay_object(&path, id, &records)?;
        report.objects += 1;
        report.applied += applied;
        report.conflicts += conflicts;
        sync_object_files(&path)?;
    }
    for n in segments {
        fs::remove_file(segment_path(&log_dir, n))?;
    }
    Ok(report)
}

fn replay_object(
    path: &Path,
    id: ObjectId,
    records: &[Record],
) -> Result<(usize, u64), RecoveryError> {
    let sql = |source| RecoveryError::Sqlite { object: id, source };
    let conn = Connection::open(path).map_err(sql)?;
    conn.execute_batch("PRAGMA synchronous=FULL; BEGIN IMMEDIATE;")
        .map_err(sql)?;
    let current: i64 = conn
        .query_row("SELECT v FROM _roost_meta WHERE k='commit_seq'", [], |r| {
            r.get(0)
        })
        .map_err(sql)?;
    let current = u64::try_from(current).unwrap_or(0);
    let mut applied = 0;
    let mut conflicts = 0;
    let mut expected = current + 1;
    for r in records.iter().filter(|r| r.seq > current) {
        if r.seq != expected {
            tracing::warn!(object = %id, seq = r.seq, expected, "gap in logged batches");
        }
        conflicts += apply_changeset(&conn, &r.changeset).map_err(|_| RecoveryError::Apply(id))?;
        conn.execute(
            "UPDATE _roost_meta SET v = ?1 WHERE k = 'commit_seq'",
            [i64::try_from(r.seq).unwrap_or(i64::MAX)],
        )
        .map_err(sql)?;
        expected = r.seq + 1;
        applied += 1;
    }
    conn.execute_batch("COMMIT;").map_err(sql)?;
    if conflicts > 0 {
        tracing::warn!(object = %id, conflicts, "replay resolved conflicts in favour of the log");
    }
    Ok((applied, conflicts))
}
