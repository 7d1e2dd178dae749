//! Tests of capture and replay together (`capture/`, `replay.rs`).

use super::trace::starts_with_rollback;
use super::*;
use crate::commitlog::changeset::apply_changeset;
use crate::commitlog::changeset::format::{
    FORMAT_V1, OP_DELETE, OP_INSERT, T_REAL, T_SAME, T_TEXT,
};
use crate::commitlog::changeset::replay::quote;
use rusqlite::config::DbConfig;
use rusqlite::types::Value;

type Contents = Vec<(String, Vec<Vec<Value>>)>;

fn capturing(schema: &str) -> CapturingConnection {
    let conn =
        CapturingConnection::install(Connection::open_in_memory().expect("open")).expect("install");
    conn.execute_batch(schema).expect("schema");
    conn.begin_capture();
    conn
}

#[test]
fn object_connections_use_a_small_lookaside() {
    let schema = "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c BLOB); \
                  CREATE INDEX t_b ON t(b);";
    let small = capturing(schema);
    let default = plain(schema);
    for conn in [&*small, &default] {
        for i in 0..200 {
            conn.execute("INSERT INTO t(b, c) VALUES (?1, zeroblob(?1))", [i])
                .expect("insert");
        }
    }
    // SQLite splits a lookaside buffer into full slots and 128-byte ones, so
    // ours (5 KiB) serves at most 40 allocations at once; the default
    // (120 KiB) served 64 here.
    let (small, default) = (lookaside_high_water(&small), lookaside_high_water(&default));
    assert!(
        small <= 2 * LOOKASIDE_SLOTS,
        "{small} lookaside slots in use"
    );
    assert!(
        default > 2 * LOOKASIDE_SLOTS,
        "{default} default slots in use"
    );
    assert!(small > 0, "lookaside is in use");
}

fn plain(schema: &str) -> Connection {
    let conn = Connection::open_in_memory().expect("open");
    conn.execute_batch(schema).expect("schema");
    conn
}

/// Every row of every table of `main` (with the rowid, for rowid tables).
fn contents(conn: &Connection) -> Contents {
    let tables: Vec<(String, bool)> = {
        let mut stmt = conn
            .prepare(
                "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' \
                 AND type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name",
            )
            .expect("tables");
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("tables");
        rows.collect::<Result<_, _>>().expect("tables")
    };
    tables
        .into_iter()
        .map(|(name, without_rowid)| {
            let ncol: usize = conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_xinfo(?1)",
                    [&name],
                    |r| r.get(0),
                )
                .expect("ncol");
            let order: Vec<String> = (1..=ncol + 1).map(|i| i.to_string()).collect();
            let sql = if without_rowid {
                format!(
                    "SELECT NULL, * FROM {} ORDER BY {}",
                    quote(&name),
                    order.join(",")
                )
            } else {
                format!("SELECT _rowid_, * FROM {} ORDER BY 1", quote(&name))
            };
            let mut stmt = conn.prepare(&sql).expect("select");
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
                .expect("rows");
            (name, rows.collect::<Result<_, _>>().expect("rows"))
        })
        .collect()
}

fn take_replayable(conn: &CapturingConnection) -> Vec<u8> {
    let captured = conn.take_changes();
    assert!(captured.replayable, "batch unexpectedly not replayable");
    captured.bytes
}

#[test]
fn capture_and_replay_reproduce_the_changes() {
    let schema = "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER); CREATE TABLE log(msg TEXT);";
    let a = capturing(schema);
    let b = plain(schema);
    a.execute_batch(
        "INSERT INTO kv VALUES('x', 1); INSERT INTO kv VALUES('y', 2);
         UPDATE kv SET v = 5 WHERE k = 'x'; DELETE FROM kv WHERE k = 'y';
         INSERT INTO log VALUES('hello');",
    )
    .expect("writes");
    let changes = take_replayable(&a);
    assert!(!changes.is_empty());
    assert_eq!(apply_changeset(&b, &changes).expect("apply"), 0);
    let v: i64 = b
        .query_row("SELECT v FROM kv WHERE k='x'", [], |r| r.get(0))
        .expect("row");
    assert_eq!(v, 5);
    let n: i64 = b
        .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1);
    let msg: String = b
        .query_row("SELECT msg FROM log", [], |r| r.get(0))
        .expect("log");
    assert_eq!(msg, "hello");
    assert_eq!(contents(&a), contents(&b));
    // Replaying again is harmless: every change sets or deletes a row.
    apply_changeset(&b, &changes).expect("apply twice");
    assert_eq!(contents(&a), contents(&b));
}

#[test]
fn nothing_changed_gives_an_empty_changeset() {
    let a = capturing("CREATE TABLE kv(k TEXT PRIMARY KEY, v)");
    let captured = a.take_changes();
    assert!(captured.bytes.is_empty());
    assert!(captured.replayable);
    // Reads, TEMP tables and the meta table are not captured.
    a.execute_batch(
        "SELECT * FROM kv; CREATE TEMP TABLE scratch(x); INSERT INTO scratch VALUES(1);
         CREATE TABLE _roost_meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);",
    )
    .expect("setup");
    a.begin_capture();
    a.execute_batch(
        "INSERT INTO scratch VALUES(2); UPDATE scratch SET x = 3;
         INSERT INTO _roost_meta VALUES('commit_seq', 7);",
    )
    .expect("writes");
    let captured = a.take_changes();
    assert!(captured.bytes.is_empty());
    assert!(captured.replayable);
    assert_eq!(apply_changeset(&a, &[]).expect("empty"), 0);
}

#[test]
fn rolled_back_savepoints_leave_nothing_behind() {
    let schema = "CREATE TABLE t(k TEXT PRIMARY KEY, v) WITHOUT ROWID;";
    let a = capturing(schema);
    let b = plain(schema);
    a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
    let event = a.start_event();
    a.execute_batch("INSERT INTO t VALUES('dropped', 1);")
        .expect("write");
    a.rollback_to(event, || a.execute_batch("ROLLBACK TO ev; RELEASE ev;"))
        .expect("rollback");
    a.execute_batch("SAVEPOINT ev;").expect("savepoint");
    a.start_event();
    a.execute_batch("INSERT INTO t VALUES('kept', 2);")
        .expect("write");
    // A nested savepoint of our own (like put_many's), rolled back.
    a.execute_batch("SAVEPOINT inner;").expect("inner");
    let inner = a.mark();
    a.execute_batch("INSERT INTO t VALUES('inner', 3); UPDATE t SET v = 9;")
        .expect("write");
    a.rollback_to(inner, || {
        a.execute_batch("ROLLBACK TO inner; RELEASE inner;")
    })
    .expect("rollback inner");
    a.execute_batch("UPDATE t SET v = 4 WHERE k = 'kept'; RELEASE ev; COMMIT;")
        .expect("commit");
    let bytes = take_replayable(&a);
    apply_changeset(&b, &bytes).expect("apply");
    assert_eq!(contents(&a), contents(&b));
    let rows: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 1);
}

#[test]
fn storage_events_rolled_back_are_not_in_the_changeset() {
    use crate::storage::{Storage, StorageLimits};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s =
        Storage::open(&dir.path().join("a.sqlite"), StorageLimits::default()).expect("open");
    let copy = dir.path().join("b.sqlite");
    drop(Storage::open(&copy, StorageLimits::default()).expect("open copy"));

    s.begin_batch().expect("begin");
    s.begin_event().expect("event");
    s.put("lost", &1).expect("put");
    s.put_many(&[("lost2", serde_json::json!(2))])
        .expect("put_many");
    s.end_event(false).expect("undo");
    s.begin_event().expect("event");
    s.put("kept", &2).expect("put");
    s.end_event(true).expect("keep");
    let changes = s.finish_batch().expect("finish").expect("changed");
    assert!(changes.replayable && !changes.schema_changed && !changes.needs_file_sync());
    s.commit(true).expect("commit");

    // A batch that only reads captures nothing.
    s.begin_batch().expect("begin");
    s.begin_event().expect("event");
    assert_eq!(s.get::<i64>("kept").expect("get"), Some(2));
    s.end_event(true).expect("keep");
    assert!(s.finish_batch().expect("finish").is_none());
    s.commit(false).expect("commit");

    let b = Connection::open(&copy).expect("open copy");
    apply_changeset(&b, &changes.changeset).expect("apply");
    let keys: Vec<Vec<u8>> = b
        .prepare("SELECT key FROM _roost_kv ORDER BY key")
        .expect("select")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(keys, vec![b"kept".to_vec()]);
    // The stamp is not in the changeset: recovery sets it.
    let seq: i64 = b
        .query_row("SELECT v FROM _roost_meta WHERE k='commit_seq'", [], |r| {
            r.get(0)
        })
        .expect("seq");
    assert_eq!(seq, 0);
}

#[test]
fn rollbacks_the_capture_cannot_attribute_make_the_batch_unreplayable() {
    let schema = "CREATE TABLE t(x INTEGER UNIQUE, y);";
    // A savepoint of the handler's own, rolled back.
    let a = capturing(schema);
    a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
    a.start_event();
    a.execute_batch(
        "INSERT INTO t VALUES(1, 'a'); SAVEPOINT mine; INSERT INTO t VALUES(2, 'b');
         /* comment */ rollback TO mine; RELEASE mine;",
    )
    .expect("writes");
    assert!(!a.take_changes().replayable);
    a.execute_batch("COMMIT").expect("commit");

    // ... but not if nothing was recorded since the event began.
    a.begin_capture();
    a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
    a.start_event();
    a.execute_batch("SAVEPOINT mine; ROLLBACK TO mine; RELEASE mine; RELEASE ev; COMMIT;")
        .expect("writes");
    let captured = a.take_changes();
    assert!(captured.replayable && captured.bytes.is_empty());

    // A statement that failed half-way, its error swallowed.
    a.begin_capture();
    a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
    a.start_event();
    let failed = a.execute_batch("INSERT INTO t VALUES (10, 'p'), (11, 'q'), (1, 'dup');");
    assert!(failed.is_err());
    a.execute_batch("INSERT INTO t VALUES(12, 'r');")
        .expect("write");
    assert!(!a.take_changes().replayable);
    a.execute_batch("COMMIT").expect("commit");

    // The same failure inside an event that is undone as a whole is fine.
    let b = plain(schema);
    let a = capturing(schema);
    a.execute_batch("BEGIN; SAVEPOINT ev;").expect("begin");
    let event = a.start_event();
    a.execute_batch("INSERT INTO t VALUES (1, 'a');")
        .expect("write");
    assert!(a
        .execute_batch("INSERT INTO t VALUES (10, 'p'), (11, 'q'), (1, 'dup');")
        .is_err());
    a.rollback_to(event, || a.execute_batch("ROLLBACK TO ev; RELEASE ev;"))
        .expect("undo");
    a.execute_batch("SAVEPOINT ev;").expect("savepoint");
    a.start_event();
    // A statement that fails before writing anything leaves no trace.
    a.execute_batch("INSERT INTO t VALUES (5, 'e');")
        .expect("write");
    assert!(a.execute_batch("INSERT INTO t VALUES (5, 'dup');").is_err());
    a.execute_batch("RELEASE ev; COMMIT;").expect("commit");
    let bytes = take_replayable(&a);
    apply_changeset(&b, &bytes).expect("apply");
    assert_eq!(contents(&a), contents(&b));
}

const SHAPES: &str = r#"
    CREATE TABLE plain(a, b, c);
    CREATE TABLE ipk(id INTEGER PRIMARY KEY, t TEXT, r REAL, b BLOB);
    CREATE TABLE wr(k1 TEXT, v, k2 INTEGER, PRIMARY KEY(k2, k1)) WITHOUT ROWID;
    CREATE TABLE "we""ird tab"("col ""q""", "select", x INTEGER PRIMARY KEY DESC);
    CREATE TABLE gen(a INTEGER, b AS (a * 2) VIRTUAL, c AS (a + 1) STORED, d);
    CREATE TABLE shadowed(rowid TEXT, oid, v);
    CREATE TABLE nocase(k TEXT PRIMARY KEY COLLATE NOCASE, v) WITHOUT ROWID;
"#;

#[test]
fn every_table_shape_and_value_type_round_trips() {
    let a = capturing(SHAPES);
    let b = plain(SHAPES);
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let tricky = "it's \"quoted\" -- ; DROP TABLE x; /* é 🦀 \u{0} */";
    let values: Vec<Value> = vec![
        Value::Null,
        Value::Integer(0),
        Value::Integer(-1),
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Real(3.5),
        Value::Real(-0.0),
        Value::Real(f64::MAX),
        Value::Real(f64::MIN_POSITIVE),
        Value::Text(String::new()),
        Value::Text(tricky.to_owned()),
        Value::Blob(Vec::new()),
        Value::Blob(vec![0, 1, 2, 255]),
        Value::Blob(big.clone()),
    ];
    a.execute_batch("BEGIN").expect("begin");
    for (i, v) in values.iter().enumerate() {
        a.execute("INSERT INTO plain VALUES(?1, ?2, ?1)", (v, i as i64))
            .expect("plain");
        a.execute("INSERT INTO ipk(t, r, b) VALUES(?1, ?1, ?1)", [v])
            .expect("ipk");
        a.execute(
            "INSERT INTO wr(k1, v, k2) VALUES(?1, ?2, ?3)",
            (format!("k{i}"), v, i as i64 % 3),
        )
        .expect("wr");
        a.execute(
            r#"INSERT INTO "we""ird tab"("col ""q""", "select", x) VALUES(?1, ?2, ?3)"#,
            (v, tricky, i as i64 * 10),
        )
        .expect("weird");
        a.execute("INSERT INTO gen(a, d) VALUES(?1, ?2)", (i as i64, v))
            .expect("gen");
        a.execute(
            "INSERT INTO shadowed(rowid, oid, v) VALUES(?1, ?2, ?2)",
            (format!("r{i}"), v),
        )
        .expect("shadowed");
    }
    a.execute_batch(
        r#"
        UPDATE plain SET rowid = rowid + 100 WHERE rowid % 2 = 0;
        UPDATE plain SET b = 'changed' WHERE rowid % 3 = 0;
        DELETE FROM plain WHERE rowid = 3;
        UPDATE ipk SET id = id + 1000 WHERE id < 4;
        UPDATE ipk SET r = 2 WHERE id = 5;
        DELETE FROM ipk WHERE id = 6;
        INSERT OR REPLACE INTO ipk(id, t) VALUES(1001, 'replaced');
        UPDATE wr SET k1 = k1 || '!' WHERE k2 = 1;
        UPDATE wr SET v = 'v2' WHERE k2 = 2;
        DELETE FROM wr WHERE k1 = 'k0';
        UPDATE "we""ird tab" SET x = x + 1, "select" = NULL WHERE x < 50;
        UPDATE gen SET a = a + 100 WHERE a % 2 = 1;
        DELETE FROM gen WHERE a = 4;
        UPDATE shadowed SET oid = 'o' WHERE rowid = 'r1';
        UPDATE shadowed SET _rowid_ = 77 WHERE rowid = 'r2';
        INSERT INTO nocase VALUES('Key', 1);
        INSERT OR REPLACE INTO nocase VALUES('KEY', 2);
        UPDATE nocase SET k = 'kEy2';
        "#,
    )
    .expect("updates");
    a.execute_batch("COMMIT").expect("commit");
    let bytes = take_replayable(&a);
    assert_eq!(apply_changeset(&b, &bytes).expect("apply"), 0);
    let expected = contents(&a);
    assert_eq!(expected, contents(&b));
    apply_changeset(&b, &bytes).expect("apply twice");
    assert_eq!(expected, contents(&b));
    // The big blob survived intact.
    let found: i64 = b
        .query_row("SELECT count(*) FROM plain WHERE a = ?1", [&big], |r| {
            r.get(0)
        })
        .expect("blob");
    assert!(found >= 1);
}

#[test]
fn replay_skips_tables_that_no_longer_exist() {
    let schema = "CREATE TABLE t(a INTEGER PRIMARY KEY, b); CREATE TABLE gone(x, y);
                  CREATE TABLE reshaped(x, y);";
    let a = capturing(schema);
    a.execute_batch(
        "INSERT INTO t VALUES(1, 'one'); INSERT INTO gone VALUES(1, 2);
         INSERT INTO gone VALUES(3, 4); UPDATE gone SET y = 5;
         INSERT INTO reshaped VALUES(1, 2); INSERT INTO t VALUES(2, 'two');",
    )
    .expect("writes");
    let bytes = take_replayable(&a);
    let b = plain("CREATE TABLE t(a INTEGER PRIMARY KEY, b); CREATE TABLE reshaped(x, y, z);");
    assert_eq!(apply_changeset(&b, &bytes).expect("apply"), 5);
    let n: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 2);
}

#[test]
fn replay_disables_triggers_and_foreign_keys() {
    let schema = "
        CREATE TABLE parent(id INTEGER PRIMARY KEY, name);
        CREATE TABLE child(id INTEGER PRIMARY KEY, p REFERENCES parent(id) ON DELETE CASCADE);
        CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, what);
        CREATE TRIGGER parent_audit AFTER INSERT ON parent
            BEGIN INSERT INTO audit(what) VALUES('parent ' || new.id); END;
        PRAGMA foreign_keys = ON;";
    let a = capturing(schema);
    a.execute_batch(
        "INSERT INTO parent(id) VALUES(1); INSERT INTO parent(id) VALUES(2);
         INSERT INTO child VALUES(10, 1); INSERT INTO child VALUES(20, 2);
         INSERT INTO child VALUES(30, 2); DELETE FROM parent WHERE id = 1;",
    )
    .expect("writes");
    let first = take_replayable(&a);
    // Replayed as a REPLACE of the parent row: must not cascade.
    a.execute_batch("UPDATE parent SET name = 'renamed' WHERE id = 2;")
        .expect("update");
    let second = take_replayable(&a);
    let b = plain(schema);
    // Inside the caller's transaction, as recovery does.
    b.execute_batch("BEGIN").expect("begin");
    apply_changeset(&b, &first).expect("apply");
    apply_changeset(&b, &second).expect("apply");
    b.execute_batch("COMMIT").expect("commit");
    assert_eq!(contents(&a), contents(&b));
    let children: i64 = b
        .query_row("SELECT count(*) FROM child", [], |r| r.get(0))
        .expect("children");
    assert_eq!(children, 2);
    // Both are back on afterwards.
    assert!(b
        .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)
        .expect("triggers"));
    let fk: bool = b
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .expect("fk");
    assert!(fk);
}

#[test]
fn rollback_keyword_detection() {
    let cases: &[(&str, bool)] = &[
        ("ROLLBACK", true),
        ("rollback to sp", true),
        ("  \n\t RollBack;", true),
        ("-- note\nROLLBACK TO x", true),
        ("/* a */ /* b */ROLLBACK", true),
        ("ROLLBACKS", false),
        ("ROLLBACK_x", false),
        ("RELEASE x", false),
        ("SELECT 'ROLLBACK'", false),
        ("-- ROLLBACK", false),
        ("/* ROLLBACK", false),
        ("ROLL", false),
        ("", false),
        ("-", false),
        ("/", false),
    ];
    for (sql, expected) in cases {
        let text = std::ffi::CString::new(*sql).expect("cstring");
        // SAFETY: a NUL-terminated string.
        let found = unsafe { starts_with_rollback(text.as_ptr()) };
        assert_eq!(found, *expected, "{sql:?}");
    }
}

// The random-batch property test, and decoding hostile bytes.
mod decode;
mod property;
