//! Tests of the lazily opened event savepoint.

use super::*;

fn no_event_savepoint(s: &Storage) -> bool {
    // `RELEASE` of a savepoint that is not open fails.
    s.conn().execute_batch("RELEASE roost_event").is_err()
}

/// An event opens its savepoint with its first use of SQL: one that
/// touches none costs no statement, one that does is still undone
/// alone, and a write that bypasses the lazy opening fails the event
/// instead of escaping its undo.
#[test]
fn an_event_opens_its_savepoint_with_its_first_use_of_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s =
        Storage::open(&dir.path().join("a.sqlite"), StorageLimits::default()).expect("open");
    s.sql().execute_batch("CREATE TABLE t(x)").expect("create");
    let count = |s: &Storage| -> i64 {
        s.conn()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count")
    };
    s.begin_batch().expect("begin");

    s.begin_event().expect("event");
    assert!(no_event_savepoint(&s), "nothing used SQL yet");
    s.end_event(false)
        .expect("an event without SQL ends either way");

    s.begin_event().expect("event");
    s.sql()
        .execute("INSERT INTO t VALUES(1)", [])
        .expect("insert");
    s.end_event(true).expect("keep");

    s.begin_event().expect("event");
    s.put("k", &1).expect("put");
    s.sql()
        .execute("INSERT INTO t VALUES(2)", [])
        .expect("insert");
    s.end_event(false).expect("undo");
    assert_eq!(count(&s), 1, "the failed event is undone alone");
    assert_eq!(s.get::<i64>("k").expect("get"), None);

    s.begin_event().expect("event");
    s.conn()
        .execute("INSERT INTO t VALUES(3)", [])
        .expect("a write that bypasses db()");
    assert!(no_event_savepoint(&s));
    let refused = s.end_event(true).map_err(|e| e.to_string());
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("without its savepoint")),
        "a change made without the event's savepoint fails the event: {refused:?}"
    );
    s.rollback();
    assert_eq!(count(&s), 0, "the whole batch is undone");
}

/// A batch of one event lets the event use the batch's savepoint: the
/// event opens none of its own, a failed one is still undone (and the
/// batch goes on), and a second event in that batch opens its own again.
#[test]
fn a_lone_event_uses_the_batch_savepoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s =
        Storage::open(&dir.path().join("a.sqlite"), StorageLimits::default()).expect("open");
    s.put("k", &1).expect("put");
    s.begin_batch_of(1).expect("begin");
    s.begin_event().expect("event");
    s.put("k", &2).expect("put");
    assert!(no_event_savepoint(&s), "the batch's savepoint serves");
    s.end_event(false).expect("undo");
    assert_eq!(
        s.get::<i64>("k").expect("get"),
        Some(1),
        "the event is undone"
    );

    // A second event (an alarm's clean-up) is undone alone.
    s.begin_event().expect("event");
    s.put("k", &3).expect("put");
    s.end_event(true).expect("keep");
    s.begin_event().expect("event");
    s.put("k", &4).expect("put");
    s.end_event(false).expect("undo");
    assert_eq!(s.get::<i64>("k").expect("get"), Some(3));
    let changes = s.finish_batch().expect("finish");
    assert!(changes.is_some(), "the kept write is the batch's");
    s.commit(true).expect("commit");
    assert_eq!(s.get::<i64>("k").expect("get"), Some(3));
}
