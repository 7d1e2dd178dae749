//! `roost` with one more class, `workload`: a seeded, deterministic stream of
//! user SQL for the durability oracle (`tests/tests/oracle.rs`). Step `n` of
//! seed `s` always runs the same statements on the same state, so two
//! servers that ran steps `1..=n` — one with the commit log (and kill -9,
//! and replay), one with `--durability file` — must hold equal tables.
//!
//! What the steps cover: rowid tables with rowid reuse after deletes,
//! `WITHOUT ROWID` tables (one with a composite key), `AUTOINCREMENT`,
//! virtual and stored generated columns, triggers, foreign keys with
//! `ON DELETE CASCADE`, blobs up to 300 KB, a failed multi-row statement,
//! a handler's own `ROLLBACK TO`, and schema changes by migration.
//!
//! Methods: `step {seed, n}` (refused unless `n` follows the last step),
//! `last` → n, `dump` → every user table and the schema.

use roost::{Ctx, DurableObject, FetchRequest, FetchResponse, ObjectError, Server};
use rusqlite::types::ValueRef;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE progress(k INTEGER PRIMARY KEY CHECK (k = 1), n INTEGER NOT NULL);
     INSERT INTO progress VALUES (1, 0);
     CREATE TABLE items(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        data BLOB,
        size INTEGER GENERATED ALWAYS AS (length(data)) VIRTUAL,
        tag TEXT GENERATED ALWAYS AS (upper(name)) STORED);
     CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB, n INTEGER) WITHOUT ROWID;
     CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL);
     CREATE TABLE children(
        id INTEGER PRIMARY KEY,
        parent INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        note TEXT);
     CREATE TABLE audit(item INTEGER, op TEXT);
     CREATE TRIGGER items_ins AFTER INSERT ON items BEGIN INSERT INTO audit VALUES (new.id, 'ins'); END;
     CREATE TRIGGER items_del AFTER DELETE ON items BEGIN INSERT INTO audit VALUES (old.id, 'del'); END;",
    "ALTER TABLE items ADD COLUMN extra INTEGER DEFAULT 7;
     CREATE INDEX items_by_name ON items(name);",
    "CREATE TABLE tags(item INTEGER, tag TEXT, PRIMARY KEY (item, tag)) WITHOUT ROWID;
     UPDATE items SET extra = id % 5;",
    "ALTER TABLE kv RENAME TO kv_old;
     CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB, n INTEGER, w TEXT DEFAULT 'w') WITHOUT ROWID;
     INSERT INTO kv(k, v, n) SELECT k, v, n FROM kv_old;
     DROP TABLE kv_old;",
];

/// Steps between migrations.
const STEPS_PER_MIGRATION: u64 = 40;

/// splitmix64: one seeded stream per (seed, step).
struct Rng(u64);
impl Rng {
    fn new(seed: u64, n: u64) -> Rng {
        Rng(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

struct Workload;

fn count(conn: &rusqlite::Connection, table: &str) -> Result<u64, ObjectError> {
    Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}

/// The id of the `k`-th row of `table` (by id), if it has any rows.
fn nth_id(conn: &rusqlite::Connection, table: &str, k: u64) -> Result<Option<i64>, ObjectError> {
    let rows = count(conn, table)?;
    if rows == 0 {
        return Ok(None);
    }
    Ok(Some(conn.query_row(
        &format!("SELECT id FROM {table} ORDER BY id LIMIT 1 OFFSET ?1"),
        [k % rows],
        |r| r.get(0),
    )?))
}

/// Runs step `n` of `seed`: the migrations due by `n`, then one to six
/// actions drawn from the step's own random stream, then `progress.n = n`.
/// Refused unless `n` follows the last step, so replaying a step never
/// doubles it.
///
/// Determinism: every random value is drawn in the same order for the same
/// `(seed, n)` — the action count, then each action's roll and its own
/// draws. Reordering draws changes what every seed means.
fn step(ctx: &mut Ctx, seed: u64, n: u64) -> Result<(), ObjectError> {
    let level = (1 + n / STEPS_PER_MIGRATION).min(MIGRATIONS.len() as u64) as usize;
    ctx.storage().migrate(&MIGRATIONS[..level])?;
    let conn = ctx.storage().sql();
    let last: u64 = conn.query_row("SELECT n FROM progress", [], |r| r.get(0))?;
    if n != last + 1 {
        return Err(ObjectError::bad_args(format!(
            "step {n} does not follow step {last}"
        )));
    }
    let mut rng = Rng::new(seed, n);
    for _ in 0..1 + rng.below(6) {
        let roll = rng.below(100);
        action(conn, &mut rng, n, level, roll)?;
    }
    conn.execute("UPDATE progress SET n = ?1", [n])?;
    Ok(())
}

/// One action of step `n`, chosen by `roll` (0..100) with these weights:
/// 30 item inserts, 10 deletes of the newest item, 15 item updates, 15 kv
/// upserts, 8 kv deletes, 10 events, 9 children, 1 failing multi-row
/// insert, 2 rolled-back savepoints.
fn action(
    conn: &rusqlite::Connection,
    rng: &mut Rng,
    n: u64,
    level: usize,
    roll: u64,
) -> Result<(), ObjectError> {
    match roll {
        0..=29 => insert_item(conn, rng, n),
        30..=39 => {
            // The newest row goes: the next insert takes its rowid again.
            conn.execute(
                "DELETE FROM items WHERE id = (SELECT max(id) FROM items)",
                [],
            )?;
            Ok(())
        }
        40..=54 => update_item(conn, rng),
        55..=69 => upsert_kv(conn, rng),
        70..=77 => {
            conn.execute(
                "DELETE FROM kv WHERE k = ?1",
                [format!("k{}", rng.below(40))],
            )?;
            Ok(())
        }
        78..=87 => add_event(conn, rng, n),
        88..=96 => add_child(conn, rng, n),
        97 => failing_insert(conn),
        _ => rolled_back_savepoint(conn, rng, level),
    }
}

/// An item with a blob: usually under 200 bytes, one time in 20 between
/// 20 KB and 300 KB.
fn insert_item(conn: &rusqlite::Connection, rng: &mut Rng, n: u64) -> Result<(), ObjectError> {
    let len = if rng.below(20) == 0 {
        20_000 + rng.below(280_000) as usize
    } else {
        rng.below(200) as usize
    };
    let data = rng.bytes(len);
    conn.execute(
        "INSERT INTO items(name, data) VALUES (?1, ?2)",
        (format!("item-{n}-{}", rng.below(1000)), data),
    )?;
    Ok(())
}

/// A new small blob and a longer name for some existing item (if any).
fn update_item(conn: &rusqlite::Connection, rng: &mut Rng) -> Result<(), ObjectError> {
    if let Some(id) = nth_id(conn, "items", rng.next())? {
        let len = rng.below(64) as usize;
        let data = rng.bytes(len);
        conn.execute(
            "UPDATE items SET data = ?1, name = name || '+' WHERE id = ?2",
            (data, id),
        )?;
    }
    Ok(())
}

/// Inserts or bumps one of 40 keys of the `WITHOUT ROWID` table.
fn upsert_kv(conn: &rusqlite::Connection, rng: &mut Rng) -> Result<(), ObjectError> {
    let k = format!("k{}", rng.below(40));
    let len = rng.below(100) as usize;
    let v = rng.bytes(len);
    conn.execute(
        "INSERT INTO kv(k, v, n) VALUES (?1, ?2, 1)
         ON CONFLICT(k) DO UPDATE SET n = n + 1, v = excluded.v",
        (k, v),
    )?;
    Ok(())
}

/// An event; one time in 8 every event is deleted after it.
fn add_event(conn: &rusqlite::Connection, rng: &mut Rng, n: u64) -> Result<(), ObjectError> {
    conn.execute("INSERT INTO events(what) VALUES (?1)", [format!("e{n}")])?;
    if rng.below(8) == 0 {
        // AUTOINCREMENT: ids go on above every id ever used.
        conn.execute("DELETE FROM events", [])?;
    }
    Ok(())
}

/// A child row of some existing item (cascade-deleted with it).
fn add_child(conn: &rusqlite::Connection, rng: &mut Rng, n: u64) -> Result<(), ObjectError> {
    if let Some(parent) = nth_id(conn, "items", rng.next())? {
        conn.execute(
            "INSERT INTO children(parent, note) VALUES (?1, ?2)",
            (parent, format!("c{n}")),
        )?;
    }
    Ok(())
}

/// A multi-row statement that fails half-way (duplicate key): SQLite
/// undoes its rows; the handler carries on. (Rare: a batch that cannot be
/// replayed is fsynced in its own file, which ends the stretch of batches
/// the log replays.)
fn failing_insert(conn: &rusqlite::Connection) -> Result<(), ObjectError> {
    let failed = conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5)
         INSERT INTO kv(k, v, n) SELECT 'fail-' || (x % 3), NULL, x FROM c",
        [],
    );
    if failed.is_ok() {
        return Err(ObjectError::app("the duplicate insert did not fail"));
    }
    Ok(())
}

/// The handler's own savepoint, rolled back; from migration 3 on, also a
/// tag for some item (a composite-key `WITHOUT ROWID` table).
fn rolled_back_savepoint(
    conn: &rusqlite::Connection,
    rng: &mut Rng,
    level: usize,
) -> Result<(), ObjectError> {
    conn.execute_batch(
        "SAVEPOINT mine;
         INSERT INTO events(what) VALUES ('undone');
         DELETE FROM audit;
         ROLLBACK TO mine;
         RELEASE mine;",
    )?;
    if level >= 3 {
        if let Some(item) = nth_id(conn, "items", rng.next())? {
            conn.execute(
                "INSERT OR IGNORE INTO tags(item, tag) VALUES (?1, ?2)",
                (item, format!("t{}", rng.below(5))),
            )?;
        }
    }
    Ok(())
}

fn cell(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => {
            let digest = Sha256::digest(b);
            let hex: String = digest[..8].iter().map(|x| format!("{x:02x}")).collect();
            json!(format!("blob:{}:{hex}", b.len()))
        }
    }
}

/// Every user table (rows sorted; rowid tables with their rowids), the
/// AUTOINCREMENT counters, and the schema. Roost's own `_roost_*` tables
/// are left out: their batch stamps differ between durability modes.
fn dump(ctx: &Ctx) -> Result<Value, ObjectError> {
    let conn = ctx.storage().sql();
    let mut schema = Vec::new();
    let mut tables = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master
             WHERE name NOT LIKE '_roost%' ORDER BY type, name",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (kind, name): (String, String) = (r.get(0)?, r.get(1)?);
            schema.push(json!([
                kind,
                name,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?
            ]));
            if kind == "table" {
                tables.push(name);
            }
        }
    }
    let mut out = serde_json::Map::new();
    for table in tables {
        let with_rowid = conn
            .prepare(&format!("SELECT rowid FROM \"{table}\" LIMIT 0"))
            .is_ok();
        let sql = if with_rowid {
            format!("SELECT rowid, * FROM \"{table}\"")
        } else {
            format!("SELECT * FROM \"{table}\"")
        };
        let mut stmt = conn.prepare(&sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([])?;
        let mut all = Vec::new();
        while let Some(r) = rows.next()? {
            let row: Vec<Value> = (0..columns)
                .map(|i| r.get_ref(i).map(cell))
                .collect::<Result<_, _>>()?;
            all.push(Value::Array(row));
        }
        all.sort_by_key(|v| v.to_string());
        out.insert(table, Value::Array(all));
    }
    out.insert("schema".into(), Value::Array(schema));
    Ok(Value::Object(out))
}

impl DurableObject for Workload {
    fn new(ctx: &mut Ctx) -> Result<Self, ObjectError> {
        ctx.storage().migrate(&MIGRATIONS[..1])?;
        Ok(Workload)
    }

    async fn call(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        args: Value,
    ) -> Result<Value, ObjectError> {
        match method {
            "step" => {
                let (Some(seed), Some(n)) = (args["seed"].as_u64(), args["n"].as_u64()) else {
                    return Err(ObjectError::bad_args("step needs {seed, n}"));
                };
                step(ctx, seed, n)?;
                Ok(json!(n))
            }
            "last" => Ok(json!(ctx.storage().sql().query_row(
                "SELECT n FROM progress",
                [],
                |r| r.get::<_, i64>(0)
            )?)),
            "dump" => dump(ctx),
            // `Ctx::emit` from a user's class; with `fail`, the event fails
            // after emitting, so the feed must never show it.
            "emit" => {
                let kind = args["kind"].as_str().unwrap_or("workload.event");
                ctx.emit(kind, args["data"].clone())?;
                if args["fail"].as_bool() == Some(true) {
                    return Err(ObjectError::app("failed after emitting, as asked"));
                }
                Ok(json!(true))
            }
            other => Err(ObjectError::UnknownMethod(other.into())),
        }
    }

    /// Plain HTTP (`/v1/objects/workload/{name}/fetch/...`): echoes what
    /// reached it, so a test sees the route hand a user's class the request.
    async fn fetch(
        &mut self,
        ctx: &mut Ctx,
        request: FetchRequest,
    ) -> Result<FetchResponse, ObjectError> {
        let last: i64 = ctx
            .storage()
            .sql()
            .query_row("SELECT n FROM progress", [], |r| r.get(0))?;
        Ok(FetchResponse::json(&json!({
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "body": String::from_utf8_lossy(&request.body),
            "read_only": request.read_only,
            "last_step": last,
        })))
    }
}

fn main() -> anyhow::Result<()> {
    roost::cli::main(
        Server::builder()
            .with_builtins()
            .class::<Workload>("workload"),
    )
}
