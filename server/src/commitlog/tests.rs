//! Tests of the writer, the spare segments and the checkpointer together.

use std::fs;
use std::sync::atomic::AtomicBool;

use super::record::SEGMENT_MAGIC;
use super::segments::{room_after, ROOM_CHUNK};
use super::*;
use crate::id::ObjectId;
use crate::storage::{Storage, StorageLimits};

async fn wait_for(what: impl Fn() -> bool) -> bool {
    for _ in 0..300 {
        if what() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A new segment gets room for twice what the last sealed one held:
/// after a segment of one small record, 256 KiB of zeros, not 4 MiB.
#[tokio::test]
async fn a_new_segment_gets_room_for_what_the_last_one_held() -> anyhow::Result<()> {
    assert_eq!(room_after(0), ROOM_CHUNK);
    assert_eq!(room_after(200 * 1024), 512 * 1024);
    assert_eq!(room_after(64 * 1024 * 1024), PREALLOCATED_BYTES);
    let dir = tempfile::tempdir()?;
    let config = LogConfig {
        checkpoint_interval: Duration::from_millis(400),
        ..LogConfig::default()
    };
    let log = CommitLog::start(dir.path(), config, Arc::new(Metrics::default()))?;
    let log_dir = dir.path().join("log");
    let size = |n: u64| fs::metadata(segment_path(&log_dir, n)).map(|m| m.len());
    let room = |bytes: usize| (SEGMENT_MAGIC.len() + bytes) as u64;
    // Segment 1 and the spare made at start (2) have the most room.
    assert_eq!(size(1)?, room(PREALLOCATED_BYTES));
    let id = ObjectId::derive("counter", "small");
    log.append(Record {
        class: "counter".into(),
        id,
        seq: 1,
        changeset: vec![7; 64],
    })
    .await?;
    // Sealing 1 takes 2 and asks for the room of 3.
    assert!(wait_for(|| size(3).is_ok()).await, "no segment 3");
    // Let the spare thread finish writing it (4 MiB took 13-16 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(size(3)?, room(ROOM_CHUNK));
    // Once 3 is the segment written to (its spare, 4, exists), records
    // beyond its room are appended and all read back.
    let mut seq = 2;
    while size(4).is_err() {
        log.append(Record {
            class: "counter".into(),
            id,
            seq,
            changeset: vec![7; 64],
        })
        .await?;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = seq;
    let mut waits = Vec::new();
    for _ in 0..400 {
        waits.push(log.submit(Record {
            class: "counter".into(),
            id,
            seq,
            changeset: vec![9; 1024],
        })?);
        seq += 1;
    }
    for wait in waits {
        wait.await??;
    }
    let bytes = fs::read(segment_path(&log_dir, 3))?;
    assert!(bytes.len() > room(ROOM_CHUNK) as usize, "not past its room");
    let (records, _) = record::decode_segment(&bytes);
    let big: Vec<u64> = records
        .iter()
        .filter(|r| r.changeset.len() == 1024)
        .map(|r| r.seq)
        .collect();
    assert_eq!(big, (first..seq).collect::<Vec<_>>());
    log.close().await;
    Ok(())
}

/// A sealed segment whose batch is not yet committed to its object's
/// file is neither synced nor deleted until the object commits it.
#[tokio::test]
async fn the_checkpointer_waits_for_batches_still_in_an_open_transaction() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = LogConfig {
        checkpoint_interval: Duration::from_millis(50),
        ..LogConfig::default()
    };
    let log = CommitLog::start(dir.path(), config, Arc::new(Metrics::default()))?;
    let id = ObjectId::derive("counter", "lazy");
    let path = crate::id::object_path(dir.path(), "counter", id);
    let mut s = Storage::open(&path, StorageLimits::default())?;
    s.track_unflushed(log.unflushed(), id);
    s.begin_batch()?;
    s.put("k", &1)?;
    let changes = s.finish_batch()?.expect("the batch wrote");
    s.end_batch(true)?;
    log.append(Record {
        class: "counter".into(),
        id,
        seq: s.commit_seq(),
        changeset: changes.changeset,
    })
    .await?;
    let log_dir = dir.path().join("log");
    let first = segment_path(&log_dir, 1);
    // The segment is sealed after the interval (the writer seals on its
    // next wake-up), then left alone while the batch is pending.
    assert!(wait_for(|| list_segments(&log_dir).is_ok_and(|s| s.len() >= 3)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        first.exists(),
        "a segment with an unflushed batch was deleted"
    );
    s.flush()?;
    assert!(
        wait_for(|| !first.exists()).await,
        "the segment outlived the flush"
    );
    log.close().await;
    Ok(())
}

/// `then` runs on the writer, in submission order, before the record's
/// receiver resolves; a record that reaches a closed log runs its `then`
/// with an error.
#[tokio::test]
async fn then_runs_in_order_before_the_waiter_is_answered() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = CommitLog::start(
        dir.path(),
        LogConfig::default(),
        Arc::new(Metrics::default()),
    )?;
    let id = ObjectId::derive("counter", "then");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waits = Vec::new();
    for seq in 1..=50u64 {
        let seen = seen.clone();
        let record = Record {
            class: "counter".into(),
            id,
            seq,
            changeset: vec![seq as u8; 16],
        };
        let then: Then = Box::new(move |r| seen.lock().expect("lock").push((seq, r.is_ok())));
        waits.push((seq, log.submit_then(record, then)?));
    }
    for (seq, wait) in waits {
        wait.await??;
        let seen = seen.lock().expect("lock");
        assert!(
            seen.len() >= seq as usize,
            "record {seq} answered before its `then` ran"
        );
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen, (1..=50).map(|s| (s, true)).collect::<Vec<_>>());
    log.close().await;
    // After `close`, a record is refused, or taken and dropped by the
    // stopping writer: either way its `then` runs with an error.
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let refused = log.submit_then(
        Record {
            class: "counter".into(),
            id,
            seq: 51,
            changeset: vec![1],
        },
        Box::new(move |r| flag.store(r.is_err(), Ordering::SeqCst)),
    );
    if let Ok(wait) = refused {
        assert!(wait.await.map_or(true, |r| r.is_err()));
    }
    assert!(
        ran.load(Ordering::SeqCst),
        "a refused record's `then` did not run"
    );
    Ok(())
}

fn append(seq: u64) -> writer::WriterMsg {
    let (done, _) = tokio::sync::oneshot::channel();
    writer::WriterMsg::Append(writer::Append {
        bytes: vec![seq as u8; 10],
        object: ("counter".into(), ObjectId::derive("counter", "g")),
        seq,
        deletion: false,
        then: writer::ThenGuard(None),
        done,
    })
}

fn first(msg: writer::WriterMsg) -> writer::Append {
    match msg {
        writer::WriterMsg::Append(a) => a,
        writer::WriterMsg::Close(_) => unreachable!("an append"),
    }
}

/// A busy writer waits out the group delay and takes what arrived
/// meanwhile; an idle one writes what is queued at once; a `close` met
/// ends the group with the records before it.
#[test]
fn a_busy_writer_gathers_what_arrives_within_the_group_delay() {
    let gather = |wait: Option<Duration>, later: Vec<writer::WriterMsg>| {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(append(2)).expect("open");
        let sender = std::thread::spawn(move || {
            for msg in later {
                std::thread::sleep(Duration::from_millis(40));
                let _ = tx.send(msg);
            }
        });
        let (mut group, mut buf) = (Vec::new(), Vec::new());
        let closed = writer::gather(&rx, first(append(1)), wait, 1 << 20, &mut group, &mut buf);
        sender.join().expect("sender");
        let seqs: Vec<u64> = group.iter().map(|a| a.seq).collect();
        (seqs, buf.len(), closed.is_some())
    };
    // Idle: only what was queued.
    assert_eq!(gather(None, vec![append(3)]), (vec![1, 2], 20, false));
    // Busy, a 1 s delay: records 40 and 80 ms later join.
    let (seqs, _, closed) = gather(Some(Duration::from_secs(1)), vec![append(3), append(4)]);
    assert_eq!((seqs, closed), (vec![1, 2, 3, 4], false));
    // Busy: a close met ends the group; what follows it is not taken.
    let close = writer::WriterMsg::Close(tokio::sync::oneshot::channel().0);
    let (seqs, _, closed) = gather(
        Some(Duration::from_secs(1)),
        vec![append(3), close, append(4)],
    );
    assert_eq!((seqs, closed), (vec![1, 2, 3], true));
}
