//! Start-up replay of commit-log segments into object files.
//!
//! After a crash, an object's SQLite file holds a prefix of its committed
//! batches (SQLite's WAL guarantees atomic commits; the actor's connection never
//! fsyncs, so a power loss may drop the newest ones). Each file stores the `seq` of its
//! newest batch, so replay applies exactly the logged batches with a larger
//! `seq`, in order, then fsyncs the file. Only when every object is synced are
//! the segments deleted; a crash during recovery simply replays again.
//! An object whose last record is its deletion mark has nothing to replay,
//! and its file, if any, is left alone: it is a new object of the same name
//! (a name is used again at once, all the more since unwritten objects are
//! removed), perhaps one whose creation a kill -9 cut short before its
//! tables existed, which its next start completes.
//!
//! An object whose file cannot take its records (damaged while the server
//! was down) is set aside alone, so one damaged file does not keep every
//! other object offline: its records are written to
//! `<data>/quarantine/<id>.log` (segment format, fsynced before any
//! segment is deleted), the rest replays and the server starts, and the
//! object refuses to start while that file exists (`object_broken`, naming
//! both files). Every start replays quarantined records first: once the
//! object's file takes them (an operator put a good copy in place, e.g.
//! from a backup), the quarantine file is removed; once the object's file
//! is gone (an operator gave the object up), so is the quarantine file.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::changeset::apply_changeset;
use super::record::{decode_segment, Record, Tail, SEGMENT_MAGIC};
use super::{list_segments, segment_path};
use crate::id::{object_path, ObjectId};
use crate::storage::sync_object_files;

/// What recovery did, for the start-up log line and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RecoveryReport {
    pub segments: usize,
    pub records: usize,
    pub applied: usize,
    pub objects: usize,
    pub conflicts: u64,
    /// Segments with a bad record before the log's end (their readable
    /// records are still replayed).
    pub damaged: usize,
    /// Objects whose file could not take their records: set aside in
    /// `<data>/quarantine` (see the module docs).
    pub quarantined: usize,
}

/// Where an object's logged writes wait while its file cannot take them.
pub(crate) fn quarantine_path(data_dir: &Path, id: ObjectId) -> PathBuf {
    data_dir.join("quarantine").join(format!("{id}.log"))
}

/// Writes `records` (an object's) to its quarantine file, durably.
fn set_aside(data_dir: &Path, id: ObjectId, records: &[Record]) -> std::io::Result<PathBuf> {
    let path = quarantine_path(data_dir, id);
    // Its directory entry durable too (a new directory's).
    crate::storage::create_dir_all_durable(&data_dir.join("quarantine"))?;
    let mut bytes = SEGMENT_MAGIC.to_vec();
    for r in records {
        r.encode_into(&mut bytes);
    }
    crate::storage::write_file_durably(&path, &bytes)?;
    Ok(path)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoveryError {
    #[error("i/o during recovery: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "cannot replay logged writes into {} (object {object}): {error}",
        path.display()
    )]
    Sqlite {
        object: ObjectId,
        path: std::path::PathBuf,
        // Not `source`: the message says it, and a source is said again.
        error: rusqlite::Error,
    },
    #[error("cannot apply logged changes to {} (object {object})", path.display())]
    Apply {
        object: ObjectId,
        path: std::path::PathBuf,
    },
}

pub(crate) fn recover(data_dir: &Path) -> Result<RecoveryReport, RecoveryError> {
    let log_dir = data_dir.join("log");
    let segments = list_segments(&log_dir)?;
    let mut report = RecoveryReport {
        segments: segments.len(),
        ..Default::default()
    };
    // The writer's next segment exists before it is used (made ahead: its
    // magic, then zeros), so a torn record is the log's end when only such
    // unwritten segments follow it.
    let mut last_written = 0;
    for (i, n) in segments.iter().enumerate() {
        if segment_has_records(&segment_path(&log_dir, *n))? {
            last_written = i;
        }
    }
    let mut per_object: HashMap<(String, ObjectId), Vec<Record>> = HashMap::new();
    // Records set aside by an earlier start come first: the object has
    // logged nothing since (it refused to start).
    let mut aside: HashSet<ObjectId> = HashSet::new();
    if let Ok(entries) = fs::read_dir(data_dir.join("quarantine")) {
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "log") {
                continue;
            }
            for r in decode_segment(&fs::read(&path)?).0 {
                aside.insert(r.id);
                per_object
                    .entry((r.class.clone(), r.id))
                    .or_default()
                    .push(r);
            }
        }
    }
    for (i, n) in segments.iter().enumerate() {
        let bytes = fs::read(segment_path(&log_dir, *n))?;
        let (records, tail) = decode_segment(&bytes);
        match tail {
            Tail::Clean => {}
            Tail::Torn(at) if i >= last_written => {
                tracing::info!(
                    segment = n,
                    offset = at,
                    "commit log ends in a torn record (unacknowledged)"
                );
            }
            // A spare cut short between its creation and its magic (a crash
            // while the spare thread made it): never used, not damage.
            Tail::BadMagic if i >= last_written && SEGMENT_MAGIC.starts_with(&bytes) => {
                tracing::info!(segment = n, "commit log ends in a spare segment cut short");
            }
            other => {
                report.damaged += 1;
                tracing::error!(segment = n, tail = ?other, "commit log segment is damaged before its end");
            }
        }
        report.records += records.len();
        for r in records {
            let logged = per_object.entry((r.class.clone(), r.id)).or_default();
            if r.is_deletion() {
                // The object was deleted: what it logged before is gone.
                logged.clear();
            } else {
                logged.push(r);
            }
        }
    }
    // Quarantine files that are done with, removed once the segments are.
    let mut done_aside = Vec::new();
    for ((class, id), mut records) in per_object {
        let path = object_path(data_dir, &class, id);
        if aside.contains(&id) {
            done_aside.push(id);
            // A crash after setting records aside and before the segments
            // went leaves them in both: each batch is replayed once.
            let mut seen = HashSet::new();
            records.retain(|r| seen.insert(r.seq));
        }
        if records.is_empty() {
            // Deleted since it last logged (its deletion mark cleared its
            // records): nothing to replay. Its file, if any, is a new
            // object of the same name, perhaps one whose creation a kill -9
            // cut short (no tables yet): its next start finishes it.
            continue;
        }
        if !path.exists() {
            tracing::warn!(object = %id, class = %class, "logged object has no file (deleted?); skipping");
            continue;
        }
        let (applied, conflicts) = match replay_object(&path, id, &records) {
            Ok(done) => done,
            Err(e @ (RecoveryError::Sqlite { .. } | RecoveryError::Apply { .. })) => {
                let kept = set_aside(data_dir, id, &records)?;
                done_aside.retain(|d| *d != id);
                report.quarantined += 1;
                tracing::error!(
                    object = %id,
                    class = %class,
                    error = %e,
                    records = records.len(),
                    kept = %kept.display(),
                    "an object's file cannot take its logged writes: the object is set aside \
                     (it answers object_broken) and the server starts without it; put a good copy \
                     of its file in place (from a backup) and restart to replay the kept writes \
                     into it"
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        report.objects += 1;
        report.applied += applied;
        report.conflicts += conflicts;
        sync_object_files(&path)?;
    }
    for n in segments {
        fs::remove_file(segment_path(&log_dir, n))?;
    }
    for id in done_aside {
        fs::remove_file(quarantine_path(data_dir, id))?;
        tracing::info!(object = %id, "quarantined writes replayed (or the object's file is gone): quarantine file removed");
    }
    Ok(report)
}

/// Catches one object's file up from the log while the server runs: for an
/// object whose file refused batches the log acknowledged (a full disk, the
/// size cap rolling back its open transaction). Reads the segments as they
/// are (one the checkpointer removed meanwhile held none of this object's
/// unflushed batches — they keep it), replays the object's records above the
/// file's stamp and fsyncs the file. The caller's connection to the file
/// must be closed, and none of its batches in flight. Returns the count
/// applied.
pub(crate) fn replay_one(
    data_dir: &Path,
    class: &str,
    id: ObjectId,
) -> Result<usize, RecoveryError> {
    let log_dir = data_dir.join("log");
    let mut records = Vec::new();
    for n in list_segments(&log_dir)? {
        let bytes = match fs::read(segment_path(&log_dir, n)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        // A torn tail is the writer's current end: nothing of ours, which
        // is all durable, lies beyond it.
        for r in decode_segment(&bytes).0 {
            if r.id != id || r.class != class {
                continue;
            }
            if r.is_deletion() {
                records.clear();
            } else {
                records.push(r);
            }
        }
    }
    let path = object_path(data_dir, class, id);
    let (applied, _) = replay_object(&path, id, &records)?;
    sync_object_files(&path)?;
    Ok(applied)
}

/// Whether anything but zeros follows the segment's magic.
fn segment_has_records(path: &Path) -> std::io::Result<bool> {
    let bytes = fs::read(path)?;
    Ok(bytes
        .get(SEGMENT_MAGIC.len()..)
        .is_some_and(|rest| rest.iter().any(|&b| b != 0)))
}

/// Replays `records` above the file's `seq` stamp into the object's file
/// (cluster mode rebuilds a file from the replicated log with it).
pub(crate) fn replay_records(
    path: &Path,
    id: ObjectId,
    records: &[Record],
) -> Result<usize, RecoveryError> {
    replay_object(path, id, records).map(|(applied, _)| applied)
}

fn replay_object(
    path: &Path,
    id: ObjectId,
    records: &[Record],
) -> Result<(usize, u64), RecoveryError> {
    let sql = |error| RecoveryError::Sqlite {
        object: id,
        path: path.to_owned(),
        error,
    };
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
        conflicts += apply_changeset(&conn, &r.changeset).map_err(|_| RecoveryError::Apply {
            object: id,
            path: path.to_owned(),
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commitlog::{CommitLog, LogConfig};
    use crate::metrics::Metrics;
    use std::sync::Arc;

    fn record(seq: u64) -> Record {
        Record {
            class: "counter".into(),
            id: ObjectId::derive("counter", "spare"),
            seq,
            changeset: Vec::new(),
        }
    }

    /// The writer's next segment is made ahead of time. A crash leaves it
    /// behind, empty, after the segment in use: a torn record at the end of
    /// that segment is still the log's end, not damage.
    /// Records set aside and still in the log (a crash between the two)
    /// replay once each, into a file that takes them; the quarantine file
    /// and the segment then go.
    #[test]
    fn set_aside_records_still_in_the_log_replay_once() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = dir.path();
        let id = record(1).id;
        let file = object_path(data, "counter", id);
        fs::create_dir_all(file.parent().expect("parent"))?;
        Connection::open(&file)?.execute_batch(
            "CREATE TABLE _roost_meta(k TEXT PRIMARY KEY, v); \
             INSERT INTO _roost_meta VALUES ('commit_seq', 0);",
        )?;
        let records: Vec<Record> = (1..=3).map(record).collect();
        set_aside(data, id, &records)?;
        fs::create_dir_all(data.join("log"))?;
        let mut segment = SEGMENT_MAGIC.to_vec();
        for r in &records {
            r.encode_into(&mut segment);
        }
        fs::write(segment_path(&data.join("log"), 1), segment)?;
        let report = recover(data)?;
        assert_eq!((report.applied, report.quarantined), (3, 0));
        assert!(!quarantine_path(data, id).exists());
        assert!(list_segments(&data.join("log"))?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_torn_tail_before_the_spare_segment_is_the_end_of_the_log() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = CommitLog::start(
            dir.path(),
            LogConfig::default(),
            Arc::new(Metrics::default()),
        )?;
        for seq in 1..=3 {
            log.append(record(seq)).await?;
        }
        let log_dir = dir.path().join("log");
        // The spare is made while the writer runs; wait for it (bounded).
        for _ in 0..200 {
            if list_segments(&log_dir)?.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let segments = list_segments(&log_dir)?;
        assert_eq!(segments, vec![1, 2], "the next segment exists ahead of use");
        let spare = fs::read(segment_path(&log_dir, 2))?;
        assert!(spare.starts_with(SEGMENT_MAGIC));
        assert!(spare[SEGMENT_MAGIC.len()..].iter().all(|&b| b == 0));
        // A crash in the middle of a fourth append: its bytes are half there,
        // in the zeroed room after the third.
        let used = segment_path(&log_dir, 1);
        let mut bytes = fs::read(&used)?;
        let mut written = SEGMENT_MAGIC.to_vec();
        for seq in 1..=3 {
            record(seq).encode_into(&mut written);
        }
        assert_eq!(&bytes[..written.len()], &written[..]);
        let mut fourth = Vec::new();
        record(4).encode_into(&mut fourth);
        bytes[written.len()..written.len() + fourth.len() / 2]
            .copy_from_slice(&fourth[..fourth.len() / 2]);
        // Copy the files as the crash left them, away from the live log.
        let crashed = tempfile::tempdir()?;
        let crashed_log = crashed.path().join("log");
        fs::create_dir_all(&crashed_log)?;
        fs::write(segment_path(&crashed_log, 1), &bytes)?;
        fs::write(segment_path(&crashed_log, 2), &spare)?;
        let report = recover(crashed.path())?;
        assert_eq!(report.segments, 2);
        assert_eq!(report.records, 3);
        assert_eq!(report.damaged, 0);
        assert!(list_segments(&crashed_log)?.is_empty());
        // A torn record followed by a segment that holds records is damage.
        let more = crashed.path().join("log");
        fs::write(segment_path(&more, 1), &bytes)?;
        let mut later = SEGMENT_MAGIC.to_vec();
        record(5).encode_into(&mut later);
        fs::write(segment_path(&more, 2), &later)?;
        let report = recover(crashed.path())?;
        assert_eq!((report.records, report.damaged), (4, 1));
        // A spare cut short by a crash right after its creation (empty, or
        // only part of its magic) after the written segments is no damage.
        for cut in [0, SEGMENT_MAGIC.len() / 2] {
            fs::write(segment_path(&more, 1), &bytes)?;
            fs::write(segment_path(&more, 2), &spare)?;
            fs::write(segment_path(&more, 3), &SEGMENT_MAGIC[..cut])?;
            let report = recover(crashed.path())?;
            assert_eq!((report.records, report.damaged), (3, 0), "cut at {cut}");
        }
        // Not so before a written segment.
        fs::write(segment_path(&more, 1), b"")?;
        fs::write(segment_path(&more, 2), &later)?;
        let report = recover(crashed.path())?;
        assert_eq!((report.records, report.damaged), (1, 1));
        // A clean close removes the spare it never used.
        log.close().await;
        drop(log);
        for _ in 0..200 {
            if !segment_path(&log_dir, 3).exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!segment_path(&log_dir, 3).exists());
        Ok(())
    }
}
