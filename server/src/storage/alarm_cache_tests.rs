//! Tests of the cached alarm row.

use super::*;

/// The alarm is read from memory after the first read, and an undone
/// event or batch that set or cleared it is not remembered.
#[test]
fn the_cached_alarm_follows_undone_events_and_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s =
        Storage::open(&dir.path().join("a.sqlite"), StorageLimits::default()).expect("open");
    s.begin_batch().expect("begin");
    s.begin_event().expect("event");
    s.set_alarm(100).expect("set");
    s.end_event(true).expect("keep");
    assert_eq!(s.alarm().expect("read"), Some(100));
    s.begin_event().expect("event");
    s.set_alarm(200).expect("set");
    assert_eq!(s.alarm().expect("read"), Some(200));
    s.end_event(false).expect("undo");
    assert_eq!(s.alarm().expect("read"), Some(100), "undone event");
    let changes = s.finish_batch().expect("finish");
    s.commit(changes.is_some()).expect("commit");
    s.begin_batch().expect("begin");
    s.begin_event().expect("event");
    s.delete_alarm().expect("delete");
    s.end_event(true).expect("keep");
    assert_eq!(s.alarm().expect("read"), None);
    s.rollback();
    assert_eq!(s.alarm().expect("read"), Some(100), "undone batch");
}
