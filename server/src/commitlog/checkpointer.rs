//! The checkpointer thread: makes what sealed segments hold durable in the
//! object files, then deletes the segments.
//!
//! It fsyncs each touched object's database, WAL and directory one after
//! another — not one `syncfs`, whose flood of writes queued in front of the
//! log's `fdatasync` — and only then deletes the sealed segments; segments
//! sealed meanwhile are taken together, so each object file is synced once
//! for all of them.
//!
//! Architecture Invariant: the checkpointer syncs an object's files for a
//! segment only once none of the object's batches in the segment is listed
//! in [`Unflushed`], so the commits are in the page cache of the file and
//! its fsyncs make them durable there; a segment with a batch still listed
//! after `LogConfig::unflushed_patience` is kept for recovery instead of
//! deleted; every later round tries the kept ones again (without waiting),
//! and a lost object's stay until the next start-up replays them.
//!
//! Architecture Invariant: once an object file's fsync has failed, no
//! segment is deleted again until a restart. After a failed fsync the kernel
//! may have dropped the dirty pages it could not write, and a later fsync
//! of the same file can succeed without them (PostgreSQL's "fsyncgate"):
//! only the log still holds those batches, and the next start-up replays
//! them into the files.
//!
//! Architecture Invariant: a segment holding an object's deletion mark is
//! deleted only while no kept segment holds a record of that object: the
//! mark is what keeps recovery from replaying a kept segment's batches of
//! the deleted object into a new object of the same name.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::segments::segment_path;
use super::Unflushed;
use crate::id::ObjectId;
use crate::storage::sync_object_files;

/// A sealed segment and the objects whose files must be synced before it
/// can go, each with the last `seq` of its batches in the segment, and the
/// objects whose deletion marks it holds.
pub(super) struct Sealed {
    pub(super) segment: u64,
    pub(super) objects: HashMap<(String, ObjectId), u64>,
    pub(super) deleted: HashSet<ObjectId>,
    /// Sealed by a closing log: every actor has stopped (or was abandoned
    /// at the drain timeout), so an object still listed will not commit;
    /// its segments are kept at once rather than after the patience.
    pub(super) closing: bool,
}

/// Waits (up to `patience`) until none of the object's batches up to `seq`
/// is only in the log.
fn wait_flushed(unflushed: &Unflushed, id: ObjectId, seq: u64, patience: Duration) -> bool {
    let started = Instant::now();
    while unflushed.holds(id, seq) {
        if started.elapsed() >= patience {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Sealed segments the checkpointer handles together, with the objects
/// whose files must be synced first and the objects whose deletion marks
/// they hold.
struct Round {
    segments: Vec<u64>,
    objects: HashMap<(String, ObjectId), u64>,
    deleted: HashSet<ObjectId>,
}

pub(super) fn checkpointer(
    data_dir: &Path,
    log_dir: &Path,
    rx: mpsc::Receiver<Sealed>,
    unflushed: &Unflushed,
    patience: Duration,
) {
    // Rounds kept for recovery, oldest first. Each new round tries them
    // again first (without waiting): an object that was only slow has
    // committed by then, and its segments can go.
    let mut kept: Vec<Round> = Vec::new();
    let mut sync_failed = false;
    while let Ok(first) = rx.recv() {
        // Segments sealed while the last round ran are taken together: each
        // object file is synced once for all of them.
        let mut closing = first.closing;
        let mut round = Round {
            segments: vec![first.segment],
            objects: first.objects,
            deleted: first.deleted,
        };
        while let Ok(more) = rx.try_recv() {
            round.segments.push(more.segment);
            round.objects.extend(more.objects);
            round.deleted.extend(more.deleted);
            closing |= more.closing;
        }
        for earlier in std::mem::take(&mut kept) {
            let segments = earlier.segments.clone();
            let (dirs, failed) = ((data_dir, log_dir), &mut sync_failed);
            match checkpoint_round(earlier, None, &kept, dirs, unflushed, failed) {
                Some(still) => kept.push(still),
                None => tracing::info!(?segments, "checkpointed segments kept by an earlier round"),
            }
        }
        let wait = if closing { Duration::ZERO } else { patience };
        let (dirs, failed) = ((data_dir, log_dir), &mut sync_failed);
        if let Some(r) = checkpoint_round(round, Some(wait), &kept, dirs, unflushed, failed) {
            kept.push(r);
        }
    }
}

/// Syncs a round's objects and deletes its segments; returns the round if
/// its segments must be kept for recovery instead. `patience`: how long to
/// wait for an object still committing (`None`: a kept round tried again,
/// which does not wait, and syncs nothing unless every object has
/// committed). `earlier`: the rounds still kept before this one. `dirs`:
/// the data and log directories. `sync_failed`: set once an fsync failed;
/// from then on every round is kept (see the module's invariants).
fn checkpoint_round(
    round: Round,
    patience: Option<Duration>,
    earlier: &[Round],
    (data_dir, log_dir): (&Path, &Path),
    unflushed: &Unflushed,
    sync_failed: &mut bool,
) -> Option<Round> {
    if *sync_failed {
        return Some(round);
    }
    let started = Instant::now();
    let Round {
        segments, objects, ..
    } = &round;
    // A deletion mark must stay while a kept segment holds records of its
    // object: recovery would replay them into a new object of the name.
    let blocked = round.deleted.iter().find(|id| {
        earlier
            .iter()
            .any(|r| r.objects.keys().any(|(_, o)| o == *id))
    });
    if let Some(id) = blocked {
        if patience.is_some() {
            tracing::warn!(%id, ?segments, "keeping the segments with the deletion mark of an object whose earlier batches a kept segment holds");
        }
        return Some(round);
    }
    if patience.is_none()
        && objects
            .iter()
            .any(|((_, id), seq)| unflushed.holds(*id, *seq))
    {
        return Some(round);
    }
    // Each touched object's files, one after another (database, WAL,
    // directory). A single `syncfs` is cheaper in all, but it queues every
    // dirty page of the filesystem at once in front of the commit log's
    // next `fdatasync`: at 100 documents x 5 clients it took p99 from
    // 84-94 ms to 333-596 ms (measured: git log -p docs/BENCHMARKS.md).
    let mut waiting = None;
    let synced = objects.iter().try_for_each(|((class, id), seq)| {
        // One object still pending keeps the segments anyway: wait for no
        // other (a round must not take 5 s per stuck object).
        if waiting.is_some() {
            return Ok(());
        }
        if !wait_flushed(unflushed, *id, *seq, patience.unwrap_or_default()) {
            waiting = Some(*id);
            return Ok(());
        }
        sync_object_files(&crate::id::object_path(data_dir, class, *id))
    });
    if let Err(e) = synced {
        *sync_failed = true;
        tracing::error!(
            error = %e,
            ?segments,
            "checkpoint fsync failed: the file may have lost writes the kernel could not make, so \
             no commit log segment is deleted until a restart replays them (restart Roost once the \
             disk is sound; the log grows until then)"
        );
        return Some(round);
    }
    if let Some(id) = waiting {
        tracing::warn!(%id, ?segments, "an object has not committed its logged batches to its file yet; keeping the segments for recovery");
        return Some(round);
    }
    for segment in segments {
        if let Err(e) = fs::remove_file(segment_path(log_dir, *segment)) {
            tracing::warn!(error = %e, segment, "cannot remove checkpointed segment");
        }
    }
    tracing::debug!(
        ?segments,
        objects = objects.len(),
        ms = started.elapsed().as_millis() as u64,
        "checkpoint done"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An fsync that failed once is not trusted when it succeeds later:
    /// the segment stays for recovery.
    #[test]
    fn after_a_failed_fsync_no_segment_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, log) = (dir.path().join("data"), dir.path().join("log"));
        fs::create_dir_all(&log).expect("log dir");
        let id = ObjectId::derive("counter", "c");
        let file = crate::id::object_path(&data, "counter", id);
        fs::create_dir_all(file.parent().expect("parent")).expect("object dir");
        fs::write(&file, b"db").expect("db file");
        // Its WAL a symlink to itself: opening it fails (ELOOP), as an
        // fsync error would, until the link is gone.
        let mut wal = file.clone().into_os_string();
        wal.push("-wal");
        std::os::unix::fs::symlink(&wal, &wal).expect("symlink");
        let round = |segment: u64| {
            fs::write(segment_path(&log, segment), b"records").expect("segment");
            Round {
                segments: vec![segment],
                objects: HashMap::from([(("counter".to_owned(), id), 1)]),
                deleted: HashSet::new(),
            }
        };
        let unflushed = Unflushed::default();
        let dirs = (data.as_path(), log.as_path());
        // A new round (it waits for nothing) or a kept one tried again.
        let run = |r: Round, kept: bool, failed: &mut bool| {
            let patience = (!kept).then_some(Duration::ZERO);
            checkpoint_round(r, patience, &[], dirs, &unflushed, failed)
        };
        let mut failed = false;
        let kept = run(round(1), false, &mut failed);
        assert!(failed && kept.is_some());
        fs::remove_file(&wal).expect("unlink");
        // The same file now syncs, but neither the kept round nor a new one
        // is deleted.
        assert!(run(kept.expect("kept"), true, &mut failed).is_some());
        assert!(run(round(2), false, &mut failed).is_some());
        assert!(segment_path(&log, 1).exists() && segment_path(&log, 2).exists());
        // Without a failure, a round's segment goes.
        assert!(run(round(3), false, &mut false).is_none());
        assert!(!segment_path(&log, 3).exists());
    }
}
