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

/// splitmix64: small, seedable, good enough to drive the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn int(&mut self) -> i64 {
        self.below(24) as i64 - 4
    }

    fn value(&mut self) -> Value {
        match self.below(7) {
            0 => Value::Null,
            1 | 2 => Value::Integer(self.int()),
            3 => Value::Real(self.int() as f64 / 4.0),
            4 => Value::Text(["", "a", "b'c", "\"d\"", "é"][self.below(5) as usize].into()),
            5 => Value::Blob((0..self.below(40)).map(|i| i as u8).collect()),
            _ => Value::Text("x".repeat(self.below(3000) as usize)),
        }
    }

    fn key(&mut self) -> String {
        ["a", "b", "c", "d", "e", "f"][self.below(6) as usize].to_owned()
    }
}

/// Prints the seed if the test fails while it is alive.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "property test failed with seed {} (rerun: ROOST_CAPTURE_SEED={})",
                self.0, self.0
            );
        }
    }
}

const PROPERTY_SCHEMA: &str = "
    CREATE TABLE t1(id INTEGER PRIMARY KEY, u INTEGER UNIQUE, v);
    CREATE TABLE t2(a, b);
    CREATE TABLE t3(k1 TEXT, k2 INTEGER, v, PRIMARY KEY(k1, k2)) WITHOUT ROWID;
    CREATE TABLE t4(k TEXT PRIMARY KEY, v);
    CREATE TABLE log(id INTEGER PRIMARY KEY AUTOINCREMENT, msg);
    CREATE TRIGGER t1_log AFTER INSERT ON t1 BEGIN INSERT INTO log(msg) VALUES(new.id); END;
";

/// One random write; errors (constraint failures) are part of the game.
/// True if it failed.
fn random_write(conn: &Connection, rng: &mut Rng) -> bool {
    // Multi-row statements mostly resolve conflicts rather than fail
    // half-way (which makes the batch unreplayable).
    let or = ["", " OR REPLACE", " OR IGNORE", " OR REPLACE"][rng.below(4) as usize];
    let r = match rng.below(16) {
        0 => conn.execute(
            "INSERT INTO t1(id, u, v) VALUES(?1, ?2, ?3)",
            (
                if rng.chance(30) {
                    None
                } else {
                    Some(rng.int())
                },
                rng.int(),
                rng.value(),
            ),
        ),
        1 => conn.execute(
            "INSERT OR REPLACE INTO t1(id, u, v) VALUES(?1, ?2, ?3)",
            (rng.int(), rng.int(), rng.value()),
        ),
        2 => conn.execute(
            "UPDATE t1 SET u = ?1, v = ?2 WHERE id = ?3",
            (rng.int(), rng.value(), rng.int()),
        ),
        3 => conn.execute(
            &format!("UPDATE{or} t1 SET id = id + ?1 WHERE id > ?2"),
            (rng.int(), rng.int()),
        ),
        4 => conn.execute("DELETE FROM t1 WHERE u < ?1", [rng.int()]),
        5 => conn.execute(
            &format!("INSERT{or} INTO t1(u, v) VALUES(?1, 1), (?2, 2), (?3, 3)"),
            (rng.int(), rng.int(), rng.int()),
        ),
        6 => conn.execute("INSERT INTO t2 VALUES(?1, ?2)", (rng.int(), rng.value())),
        7 => conn.execute(
            "UPDATE t2 SET b = ?1, rowid = rowid + ?2 WHERE a = ?3",
            (rng.value(), rng.below(3) as i64 * 50, rng.int()),
        ),
        8 => conn.execute("DELETE FROM t2 WHERE a > ?1", [rng.int()]),
        9 => conn.execute(
            "INSERT OR REPLACE INTO t3 VALUES(?1, ?2, ?3)",
            (rng.key(), rng.int(), rng.value()),
        ),
        10 => conn.execute(
            &format!("UPDATE{or} t3 SET k1 = ?1, v = ?2 WHERE k2 = ?3"),
            (rng.key(), rng.value(), rng.int()),
        ),
        11 => conn.execute(
            "DELETE FROM t3 WHERE k1 = ?1 OR k2 = ?2",
            (rng.key(), rng.int()),
        ),
        12 => conn.execute(
            "INSERT INTO t4 VALUES(?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            (rng.key(), rng.value()),
        ),
        13 => conn.execute("UPDATE t4 SET k = ?1 WHERE k = ?2", (rng.key(), rng.key())),
        14 => conn.execute("DELETE FROM t4 WHERE k = ?1", [rng.key()]),
        _ => conn.execute(
            "UPDATE t3 SET v = ?1 WHERE k1 = ?2",
            (rng.value(), rng.key()),
        ),
    };
    r.is_err()
}

/// Copies every row of `from` into the (empty) tables of `to`.
fn copy_contents(from: &Connection, to: &Connection) {
    to.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .expect("triggers off");
    let start = contents(from);
    for (table, rows) in &start {
        let (without_rowid, names): (bool, Vec<String>) = {
            let wr = from
                .query_row(
                    "SELECT wr FROM pragma_table_list WHERE name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .expect("wr");
            let mut stmt = from
                .prepare("SELECT name FROM pragma_table_xinfo(?1) ORDER BY cid")
                .expect("columns");
            let names = stmt
                .query_map([table], |r| r.get::<_, String>(0))
                .expect("columns")
                .map(|n| quote(&n.expect("name")))
                .collect();
            (wr, names)
        };
        let (first, columns) = if without_rowid {
            (2, names.join(","))
        } else {
            (1, format!("_rowid_,{}", names.join(",")))
        };
        let params: Vec<String> = (first..=names.len() + 1).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {}({columns}) VALUES({})",
            quote(table),
            params.join(",")
        );
        for row in rows {
            to.execute(&sql, rusqlite::params_from_iter(row.iter()))
                .expect("copy");
        }
    }
    to.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
        .expect("triggers on");
    assert_eq!(start, contents(to), "copies differ before the test");
}

fn property_case(seed: u64) -> (usize, usize) {
    let _guard = SeedGuard(seed);
    let mut rng = Rng(seed);
    let a = capturing(PROPERTY_SCHEMA);
    let b = plain(PROPERTY_SCHEMA);
    // Identical starting contents, written before capture starts.
    for _ in 0..rng.below(20) {
        let _ = random_write(&a, &mut rng);
    }
    copy_contents(&a, &b);
    let (mut replayed, mut unreplayable) = (0, 0);
    for _batch in 0..1 + rng.below(3) {
        a.begin_capture();
        a.execute_batch("BEGIN").expect("begin");
        let mut open: Vec<(usize, Mark)> = Vec::new();
        let mut next_sp = 0;
        // Whether anything happened that may make the batch unreplayable.
        let mut excuse = false;
        for _ in 0..rng.below(60) {
            match rng.below(20) {
                0..=2 => {
                    next_sp += 1;
                    a.execute_batch(&format!("SAVEPOINT sp{next_sp}"))
                        .expect("savepoint");
                    let mark = if open.is_empty() {
                        a.start_event()
                    } else {
                        a.mark()
                    };
                    open.push((next_sp, mark));
                }
                3 => {
                    if let Some((sp, _)) = open.pop() {
                        a.execute_batch(&format!("RELEASE sp{sp}"))
                            .expect("release");
                    }
                }
                4 => {
                    if let Some((sp, mark)) = open.pop() {
                        a.rollback_to(mark, || {
                            a.execute_batch(&format!("ROLLBACK TO sp{sp}; RELEASE sp{sp}"))
                        })
                        .expect("rollback");
                    }
                }
                5 if rng.chance(20) => {
                    // The handler rolls back on its own.
                    if let Some((sp, _)) = open.pop() {
                        a.execute_batch(&format!("ROLLBACK TO sp{sp}; RELEASE sp{sp}"))
                            .expect("raw rollback");
                        excuse = true;
                    }
                }
                _ => excuse |= random_write(&a, &mut rng),
            }
        }
        while let Some((sp, _)) = open.pop() {
            a.execute_batch(&format!("RELEASE sp{sp}"))
                .expect("release");
        }
        let captured = a.take_changes();
        a.execute_batch("COMMIT").expect("commit");
        if !captured.replayable {
            assert!(
                excuse,
                "a batch without failures or rollbacks is not replayable"
            );
            // Made durable by fsyncing the file instead; the copy can no
            // longer follow.
            unreplayable += 1;
            break;
        }
        apply_changeset(&b, &captured.bytes).expect("apply");
        let expected = contents(&a);
        assert_eq!(expected, contents(&b), "replay differs");
        if rng.chance(30) {
            apply_changeset(&b, &captured.bytes).expect("apply again");
            assert_eq!(expected, contents(&b), "second replay differs");
        }
        replayed += 1;
    }
    (replayed, unreplayable)
}

#[test]
fn random_batches_replay_to_identical_contents() {
    if let Some(seed) = std::env::var("ROOST_CAPTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        property_case(seed);
        return;
    }
    let cases: u64 = std::env::var("ROOST_CAPTURE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (mut replayed, mut unreplayable) = (0, 0);
    for case in 0..cases {
        let (r, u) = property_case(0x5EED_0000 + case);
        replayed += r;
        unreplayable += u;
    }
    eprintln!("{replayed} batches replayed, {unreplayable} not replayable");
    assert!(replayed > 3 * unreplayable, "too few replayable batches");
}

fn sample_changeset() -> Vec<u8> {
    let a = capturing(SHAPES);
    a.execute_batch(
        "INSERT INTO plain VALUES(1, 2.5, 'three'); INSERT INTO ipk VALUES(7, 'x', 1.0, x'00ff');
         INSERT INTO wr VALUES('k', 'v', 1); UPDATE wr SET k1 = 'k2';
         UPDATE plain SET rowid = 9; DELETE FROM ipk;
         INSERT INTO gen(a, d) VALUES(1, NULL);",
    )
    .expect("writes");
    take_replayable(&a)
}

#[test]
fn garbage_never_panics() {
    let good = sample_changeset();
    let b = plain(SHAPES);
    // Every truncation either decodes (at a change boundary) or fails
    // without touching the database.
    for len in 0..good.len() {
        let before = contents(&b);
        if apply_changeset(&b, &good[..len]).is_err() {
            assert_eq!(
                before,
                contents(&b),
                "failed apply left changes (len {len})"
            );
        }
    }
    let mut rng = Rng(0xBAD_5EED);
    for _ in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
        }
        let _ = apply_changeset(&b, &bytes);
    }
    for _ in 0..3000 {
        let len = rng.below(64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.chance(70) && !bytes.is_empty() {
            bytes[0] = FORMAT_V1;
        }
        let _ = apply_changeset(&b, &bytes);
    }
    // Huge claimed lengths and counts are refused, not allocated.
    for bytes in [
        vec![FORMAT_V1, OP_INSERT, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![FORMAT_V1, OP_INSERT, 1, b't', 0xff, 0xff, 0x03, 0],
        vec![
            FORMAT_V1, OP_INSERT, 1, b't', 1, 0, T_TEXT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0x01,
        ],
        vec![FORMAT_V1, OP_DELETE, 1, b't', 1, 0, T_SAME],
        vec![FORMAT_V1, OP_INSERT, 1, b't', 1, 0, T_REAL, 1, 2],
        vec![FORMAT_V1, 9],
        vec![b'T', 1, 2, 3],
    ] {
        assert!(apply_changeset(&b, &bytes).is_err(), "{bytes:?}");
    }
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
