//! The key-value API on top of an object's SQLite database: string keys in
//! UTF-8 byte order, JSON values, stored in the `_roost_kv` table.
//!
//! Writes check the caller's permission and the size limits before touching
//! the table, so a refused write changes nothing.

use std::collections::BTreeMap;

use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::{classify, Storage, StorageError};

/// An upsert, not `INSERT OR REPLACE`: a key that exists is updated in
/// place (one row change, one record in the capture) rather than deleted
/// and inserted again.
const PUT_SQL: &str =
    "INSERT INTO _roost_kv(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";

/// Options of [`Storage::list`]. `start` is inclusive, `end` exclusive;
/// `reverse` walks from the end but does not change what `start`/`end` mean.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct ListOptions {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Only keys at or after this one.
    pub start: Option<String>,
    /// Only keys before this one.
    pub end: Option<String>,
    /// Walk in descending key order.
    pub reverse: bool,
    /// Return at most this many entries.
    pub limit: Option<u32>,
}

/// The smallest byte string greater than every string starting with `prefix`.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xff {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

impl Storage {
    fn check_key(&self, key: &str) -> Result<(), StorageError> {
        let limit = self.limits.max_key_bytes;
        if key.len() > limit {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                limit,
            });
        }
        Ok(())
    }

    fn encode_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageError::Encode(e.to_string()))?;
        let limit = self.limits.max_value_bytes;
        if bytes.len() > limit {
            return Err(StorageError::ValueTooLarge {
                len: bytes.len(),
                limit,
            });
        }
        Ok(bytes)
    }

    /// The value under `key`, if any.
    pub fn get_value(&self, key: &str) -> Result<Option<Value>, StorageError> {
        self.get(key)
    }

    /// The value under `key` decoded as `T`, if any.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        self.check_key(key)?;
        let mut stmt = self
            .db()
            .prepare_cached("SELECT value FROM _roost_kv WHERE key = ?1")?;
        let mut rows = stmt.query([key.as_bytes()])?;
        match rows.next()? {
            None => Ok(None),
            Some(row) => {
                let bytes: Vec<u8> = row.get(0)?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))
            }
        }
    }

    /// The values of those `keys` that exist, in key order.
    pub fn get_many(&self, keys: &[&str]) -> Result<BTreeMap<String, Value>, StorageError> {
        let mut out = BTreeMap::new();
        for key in keys {
            if let Some(v) = self.get_value(key)? {
                out.insert((*key).to_owned(), v);
            }
        }
        Ok(out)
    }

    /// Stores `value` under `key`.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        self.check_writable()?;
        self.check_key(key)?;
        let bytes = self.encode_value(value)?;
        let mut stmt = self.db().prepare_cached(PUT_SQL)?;
        stmt.execute((key.as_bytes(), bytes))
            .map_err(|e| classify(e, &self.limits))?;
        Ok(())
    }

    /// Stores every entry, all or nothing: limits are checked for all entries
    /// before any is written.
    pub fn put_many(&self, entries: &[(&str, Value)]) -> Result<(), StorageError> {
        self.check_writable()?;
        let mut encoded = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            self.check_key(key)?;
            encoded.push((*key, self.encode_value(value)?));
        }
        self.db().execute_batch("SAVEPOINT roost_put_many;")?;
        let mark = self.db().mark();
        let result = (|| {
            let mut stmt = self.db().prepare_cached(PUT_SQL)?;
            for (key, bytes) in &encoded {
                stmt.execute((key.as_bytes(), bytes))?;
            }
            Ok::<(), rusqlite::Error>(())
        })();
        match result {
            Ok(()) => {
                self.db().execute_batch("RELEASE roost_put_many;")?;
                Ok(())
            }
            Err(e) => {
                self.db().rollback_to(mark, || {
                    self.db()
                        .execute_batch("ROLLBACK TO roost_put_many; RELEASE roost_put_many;")
                })?;
                Err(classify(e, &self.limits))
            }
        }
    }

    /// Removes `key`; true if it existed.
    pub fn delete(&self, key: &str) -> Result<bool, StorageError> {
        self.check_writable()?;
        self.check_key(key)?;
        let mut stmt = self
            .db()
            .prepare_cached("DELETE FROM _roost_kv WHERE key = ?1")?;
        Ok(stmt.execute([key.as_bytes()])? > 0)
    }

    /// Entries in key order (or reverse), bounded by the options.
    pub fn list(&self, opts: &ListOptions) -> Result<Vec<(String, Value)>, StorageError> {
        let mut sql = String::from("SELECT key, value FROM _roost_kv WHERE 1=1");
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(prefix) = &opts.prefix {
            sql.push_str(" AND key >= ?");
            args.push(SqlValue::Blob(prefix.as_bytes().to_vec()));
            if let Some(upper) = prefix_upper_bound(prefix.as_bytes()) {
                sql.push_str(" AND key < ?");
                args.push(SqlValue::Blob(upper));
            }
        }
        if let Some(start) = &opts.start {
            sql.push_str(" AND key >= ?");
            args.push(SqlValue::Blob(start.as_bytes().to_vec()));
        }
        if let Some(end) = &opts.end {
            sql.push_str(" AND key < ?");
            args.push(SqlValue::Blob(end.as_bytes().to_vec()));
        }
        sql.push_str(if opts.reverse {
            " ORDER BY key DESC"
        } else {
            " ORDER BY key ASC"
        });
        if let Some(limit) = opts.limit {
            sql.push_str(" LIMIT ?");
            args.push(SqlValue::Integer(i64::from(limit)));
        }
        let mut stmt = self.db().prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let key: Vec<u8> = row.get(0)?;
            let value: Vec<u8> = row.get(1)?;
            let key = String::from_utf8(key).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            let value =
                serde_json::from_slice(&value).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// Removes every KV entry and every table the class created, and resets
    /// the class's schema version, atomically with the rest of the event.
    pub fn delete_all(&self) -> Result<(), StorageError> {
        self.check_writable()?;
        self.db().execute_batch("DELETE FROM _roost_kv;")?;
        let tables: Vec<String> = {
            let mut stmt = self.db().prepare(
                "SELECT name FROM sqlite_schema WHERE type='table' \
                 AND name NOT LIKE '_roost_%' AND name NOT LIKE 'sqlite_%'",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for table in tables {
            let quoted = table.replace('"', "\"\"");
            self.db()
                .execute_batch(&format!("DROP TABLE IF EXISTS \"{quoted}\";"))?;
        }
        self.db().execute_batch("PRAGMA user_version=0;")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageLimits;
    use serde_json::json;

    fn open() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s =
            Storage::open(&dir.path().join("o.sqlite"), StorageLimits::default()).expect("open");
        (dir, s)
    }

    fn keys(entries: &[(String, Value)]) -> Vec<&str> {
        entries.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn get_put_delete() {
        let (_d, s) = open();
        assert_eq!(s.get_value("a").expect("get"), None);
        s.put("a", &json!({"x": 1})).expect("put");
        assert_eq!(s.get_value("a").expect("get"), Some(json!({"x": 1})));
        assert_eq!(
            s.get::<serde_json::Map<String, Value>>("a")
                .expect("typed")
                .map(|m| m.len()),
            Some(1)
        );
        assert!(s.delete("a").expect("delete"));
        assert!(!s.delete("a").expect("delete again"));
        s.put_many(&[("b", json!(2)), ("c", json!(3))])
            .expect("put_many");
        let many = s.get_many(&["c", "b", "zz"]).expect("get_many");
        assert_eq!(many.len(), 2);
        assert_eq!(many.get("b"), Some(&json!(2)));
    }

    #[test]
    fn list_order_ranges_reverse_limit_prefix() {
        let (_d, s) = open();
        for k in ["b", "a", "ab", "é", "c", "abc", "z"] {
            s.put(k, &json!(k)).expect("put");
        }
        let all = s.list(&ListOptions::default()).expect("list");
        assert_eq!(keys(&all), ["a", "ab", "abc", "b", "c", "z", "é"]);
        let range = s
            .list(&ListOptions {
                start: Some("ab".into()),
                end: Some("c".into()),
                ..Default::default()
            })
            .expect("range");
        assert_eq!(keys(&range), ["ab", "abc", "b"]);
        let rev = s
            .list(&ListOptions {
                reverse: true,
                limit: Some(2),
                ..Default::default()
            })
            .expect("reverse");
        assert_eq!(keys(&rev), ["é", "z"]);
        let pre = s
            .list(&ListOptions {
                prefix: Some("ab".into()),
                ..Default::default()
            })
            .expect("prefix");
        assert_eq!(keys(&pre), ["ab", "abc"]);
        let rev_range = s
            .list(&ListOptions {
                start: Some("b".into()),
                end: Some("z".into()),
                reverse: true,
                ..Default::default()
            })
            .expect("reverse range");
        assert_eq!(keys(&rev_range), ["c", "b"]);
    }

    #[test]
    fn delete_all_wipes_kv_and_tables() {
        let (_d, s) = open();
        s.put("a", &1).expect("put");
        s.migrate(&["CREATE TABLE t(x INTEGER PRIMARY KEY);"])
            .expect("migrate");
        s.delete_all().expect("delete_all");
        assert!(s.list(&ListOptions::default()).expect("list").is_empty());
        let tables: i64 = s
            .sql()
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name='t'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(tables, 0);
    }

    #[test]
    fn migrations_run_once() {
        let (_d, s) = open();
        let steps = [
            "CREATE TABLE t(x INTEGER PRIMARY KEY);",
            "INSERT INTO t(x) VALUES (1);",
        ];
        s.migrate(&steps).expect("first");
        s.migrate(&steps).expect("second");
        let n: i64 = s
            .sql()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
        let more = [steps[0], steps[1], "INSERT INTO t(x) VALUES (2);"];
        s.migrate(&more).expect("third");
        let n: i64 = s
            .sql()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2);
    }

    fn pragma(s: &Storage, name: &str) -> i64 {
        s.sql()
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .expect("pragma")
    }

    #[test]
    fn new_files_get_2k_pages_and_existing_files_keep_theirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = StorageLimits {
            cache_bytes: 64 * 1024,
            ..StorageLimits::default()
        };
        let fresh = Storage::open(&dir.path().join("new.sqlite"), limits.clone()).expect("open");
        assert_eq!(pragma(&fresh, "page_size"), 2048);
        assert_eq!(pragma(&fresh, "cache_size"), -64, "cache capped in KiB");
        let old = dir.path().join("old.sqlite");
        rusqlite::Connection::open(&old)
            .and_then(|c| c.execute_batch("PRAGMA page_size=4096; CREATE TABLE t(x);"))
            .expect("4 KiB file");
        let mut s = Storage::open(&old, limits).expect("open old");
        assert_eq!(pragma(&s, "page_size"), 4096);
        s.begin_batch().expect("begin");
        s.put("k", &1).expect("put");
        s.finish_batch().expect("finish");
        s.commit(true).expect("commit");
        assert_eq!(s.get::<i64>("k").expect("get"), Some(1));
    }

    #[test]
    fn limits_refuse_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = StorageLimits {
            max_key_bytes: 4,
            max_value_bytes: 10,
            max_db_bytes: 1 << 30,
            ..StorageLimits::default()
        };
        let s = Storage::open(&dir.path().join("o.sqlite"), limits).expect("open");
        assert!(matches!(
            s.put("toolong", &1),
            Err(StorageError::KeyTooLarge { .. })
        ));
        assert!(matches!(
            s.put("k", &"x".repeat(20)),
            Err(StorageError::ValueTooLarge { .. })
        ));
        assert!(s
            .put_many(&[("a", json!(1)), ("b", json!("x".repeat(20)))])
            .is_err());
        assert!(s.list(&ListOptions::default()).expect("list").is_empty());
    }

    #[test]
    fn database_size_limit_is_enforced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = StorageLimits {
            max_db_bytes: 256 * 1024,
            ..Default::default()
        };
        let s = Storage::open(&dir.path().join("o.sqlite"), limits).expect("open");
        let big = "x".repeat(100_000);
        let mut result = Ok(());
        for i in 0..10 {
            result = s.put(&format!("k{i}"), &big);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(StorageError::DatabaseFull { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn read_only_refuses_writes() {
        let (_d, mut s) = open();
        s.set_read_only(true).expect("ro");
        assert!(matches!(s.put("a", &1), Err(StorageError::ReadOnly)));
        assert!(s.sql().execute_batch("CREATE TABLE x(a)").is_err());
        s.set_read_only(false).expect("rw");
        s.put("a", &1).expect("put");
    }
}
