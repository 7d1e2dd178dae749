//! The property test: random batches of writes (constraint failures
//! included) captured, then replayed into a copy, give identical contents.

use super::*;

/// splitmix64: small, seedable, good enough to drive the property test.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
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
