//! Replays captured row changes (the format is described in `capture.rs`):
//! [`apply_changeset`] decodes the bytes — never panicking; garbage is an
//! error — and applies each change in order with plain SQL, triggers and
//! foreign keys off. Used by the commit log's recovery.
// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use rusqlite::config::DbConfig;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Statement};

use super::capture::{
    CaptureError, FORMAT_V1, MAX_COLUMNS, OP_DELETE, OP_INSERT, OP_UPDATE, T_BLOB, T_INTEGER,
    T_NULL, T_REAL, T_SAME, T_TEXT,
};
#[derive(Debug, Clone, Copy, PartialEq)]
enum Val<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl<'a> Val<'a> {
    fn to_sql(self) -> ToSqlOutput<'a> {
        ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Integer(i) => ValueRef::Integer(i),
            Val::Real(f) => ValueRef::Real(f),
            Val::Text(t) => ValueRef::Text(t),
            Val::Blob(b) => ValueRef::Blob(b),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Insert,
    Update,
    Delete,
}

#[derive(Debug)]
struct Change<'a> {
    op: Op,
    table: &'a str,
    old_rowid: i64,
    new_rowid: i64,
    /// Empty for an INSERT.
    old: Vec<Val<'a>>,
    /// Empty for a DELETE.
    new: Vec<Val<'a>>,
}

impl Change<'_> {
    fn ncol(&self) -> usize {
        self.old.len().max(self.new.len())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn malformed<T>(&self, what: &'static str) -> Result<T, CaptureError> {
        Err(CaptureError::Malformed {
            offset: self.pos,
            what,
        })
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn u8(&mut self) -> Result<u8, CaptureError> {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => self.malformed("unexpected end"),
        }
    }

    fn varint(&mut self) -> Result<u64, CaptureError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return self.malformed("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.malformed("varint too long")
    }

    fn int(&mut self) -> Result<i64, CaptureError> {
        let u = self.varint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A count of items that each take at least one byte.
    fn count(&mut self) -> Result<usize, CaptureError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => self.malformed("length runs past the end"),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], CaptureError> {
        let n = self.count()?;
        let start = self.pos;
        match self.bytes.get(start..start + n) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => self.malformed("length runs past the end"),
        }
    }

    fn value(&mut self) -> Result<Val<'a>, CaptureError> {
        match self.u8()? {
            T_NULL => Ok(Val::Null),
            T_INTEGER => Ok(Val::Integer(self.int()?)),
            T_REAL => {
                let start = self.pos;
                let Some(raw) = self.bytes.get(start..start + 8) else {
                    return self.malformed("unexpected end");
                };
                let mut le = [0u8; 8];
                le.copy_from_slice(raw);
                self.pos += 8;
                Ok(Val::Real(f64::from_bits(u64::from_le_bytes(le))))
            }
            T_TEXT => Ok(Val::Text(self.bytes()?)),
            T_BLOB => Ok(Val::Blob(self.bytes()?)),
            _ => self.malformed("unknown value type"),
        }
    }

    fn change(&mut self) -> Result<Change<'a>, CaptureError> {
        let op = match self.u8()? {
            OP_INSERT => Op::Insert,
            OP_UPDATE => Op::Update,
            OP_DELETE => Op::Delete,
            _ => return self.malformed("unknown operation"),
        };
        let table = self.bytes()?;
        let Ok(table) = std::str::from_utf8(table) else {
            return self.malformed("table name is not UTF-8");
        };
        if table.is_empty() {
            return self.malformed("empty table name");
        }
        let ncol = self.count()?;
        if ncol == 0 || ncol > MAX_COLUMNS {
            return self.malformed("bad column count");
        }
        let mut change = Change {
            op,
            table,
            old_rowid: 0,
            new_rowid: 0,
            old: Vec::new(),
            new: Vec::new(),
        };
        match op {
            Op::Insert => {
                change.new_rowid = self.int()?;
                change.new = (0..ncol).map(|_| self.value()).collect::<Result<_, _>>()?;
            }
            Op::Delete => {
                change.old_rowid = self.int()?;
                change.old = (0..ncol).map(|_| self.value()).collect::<Result<_, _>>()?;
            }
            Op::Update => {
                change.old_rowid = self.int()?;
                change.new_rowid = self.int()?;
                change.old.reserve(ncol);
                change.new.reserve(ncol);
                for _ in 0..ncol {
                    let new = self.value()?;
                    let old = if self.bytes.get(self.pos) == Some(&T_SAME) {
                        self.pos += 1;
                        new
                    } else {
                        self.value()?
                    };
                    change.new.push(new);
                    change.old.push(old);
                }
            }
        }
        Ok(change)
    }
}

fn decode(bytes: &[u8]) -> Result<Vec<Change<'_>>, CaptureError> {
    let mut reader = Reader { bytes, pos: 0 };
    if reader.u8()? != FORMAT_V1 {
        return Err(CaptureError::Malformed {
            offset: 0,
            what: "not a roost changeset",
        });
    }
    let mut changes = Vec::new();
    while reader.remaining() > 0 {
        changes.push(reader.change()?);
    }
    Ok(changes)
}

// ---------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------

/// Applies changes recorded by [`CapturingConnection`] to `conn`, all or
/// nothing. Returns how many changes were skipped because their table no
/// longer exists (or no longer has the recorded number of columns).
///
/// Triggers and foreign key enforcement are off while replaying: the effects
/// of both were captured as changes of their own, and a replayed REPLACE
/// must not cascade. (Turned off through `sqlite3_db_config`, which, unlike
/// `PRAGMA foreign_keys`, also works inside the caller's transaction; the
/// replayed state satisfied every constraint when it was committed.)
pub fn apply_changeset(conn: &Connection, changeset: &[u8]) -> Result<u64, CaptureError> {
    if changeset.is_empty() {
        return Ok(0);
    }
    let changes = decode(changeset)?;
    let _mode = ReplayMode::enter(conn)?;
    conn.execute_batch("SAVEPOINT roost_apply;")?;
    match apply_all(conn, &changes) {
        Ok(skipped) => {
            conn.execute_batch("RELEASE roost_apply;")?;
            Ok(skipped)
        }
        Err(e) => {
            if let Err(undo) = conn.execute_batch("ROLLBACK TO roost_apply; RELEASE roost_apply;") {
                tracing::warn!(error = %undo, "cannot undo a failed replay");
            }
            Err(e)
        }
    }
}

/// Triggers and foreign keys off for the span of one replay.
struct ReplayMode<'c> {
    conn: &'c Connection,
    restore_triggers: bool,
    restore_foreign_keys: bool,
}

impl<'c> ReplayMode<'c> {
    fn enter(conn: &'c Connection) -> Result<ReplayMode<'c>, CaptureError> {
        let mut mode = ReplayMode {
            conn,
            restore_triggers: false,
            restore_foreign_keys: false,
        };
        if conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY)? {
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY, false)?;
            mode.restore_foreign_keys = true;
        }
        if conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)? {
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
            mode.restore_triggers = true;
        }
        Ok(mode)
    }
}

impl Drop for ReplayMode<'_> {
    fn drop(&mut self) {
        if self.restore_triggers {
            if let Err(e) = self
                .conn
                .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
            {
                tracing::warn!(error = %e, "cannot re-enable triggers after replay");
            }
        }
        if self.restore_foreign_keys {
            if let Err(e) = self
                .conn
                .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY, true)
            {
                tracing::warn!(error = %e, "cannot re-enable foreign keys after replay");
            }
        }
    }
}

fn apply_all(conn: &Connection, changes: &[Change<'_>]) -> Result<u64, CaptureError> {
    let mut tables: HashMap<&str, Option<Target<'_>>> = HashMap::new();
    let mut skipped = 0u64;
    for change in changes {
        let target = match tables.entry(change.table) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Target::prepare(conn, change.table)?),
        };
        let Some(target) = target.as_mut() else {
            skipped += 1;
            continue;
        };
        if target.ncol != change.ncol() {
            if !target.warned {
                target.warned = true;
                tracing::warn!(
                    table = change.table,
                    recorded = change.ncol(),
                    now = target.ncol,
                    "logged changes do not fit the table's columns; skipping them"
                );
            }
            skipped += 1;
            continue;
        }
        target.apply(change)?;
    }
    Ok(skipped)
}

/// One table's replay statements.
struct Target<'c> {
    ncol: usize,
    without_rowid: bool,
    /// Whether the first parameter of `upsert` is the rowid.
    rowid_param: bool,
    /// Columns bound by `upsert`, after the rowid if any (generated columns
    /// are recomputed, not inserted).
    insert_cols: Vec<usize>,
    /// `WITHOUT ROWID`: the primary key columns, in key order.
    key_cols: Vec<usize>,
    upsert: Statement<'c>,
    delete: Statement<'c>,
    warned: bool,
}

struct ColumnInfo {
    name: String,
    pk: i64,
    generated: bool,
}

pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl<'c> Target<'c> {
    /// `None` if the table does not exist (any more).
    fn prepare(conn: &'c Connection, table: &str) -> Result<Option<Target<'c>>, CaptureError> {
        let found: Option<(String, bool)> = conn
            .query_row(
                "SELECT name, wr FROM pragma_table_list \
                 WHERE schema = 'main' AND name = ?1 COLLATE NOCASE \
                 AND type IN ('table', 'shadow')",
                [table],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((name, without_rowid)) = found else {
            tracing::warn!(
                table,
                "logged changes name a table that no longer exists; skipping them"
            );
            return Ok(None);
        };
        let columns = {
            let mut stmt = conn.prepare(
                "SELECT name, pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid",
            )?;
            let rows = stmt.query_map([&name], |r| {
                Ok(ColumnInfo {
                    name: r.get(0)?,
                    pk: r.get(1)?,
                    generated: r.get::<_, i64>(2)? != 0,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let unsupported = |why| CaptureError::Unsupported {
            table: name.clone(),
            why,
        };
        let mut pk: Vec<usize> = (0..columns.len()).filter(|&i| columns[i].pk > 0).collect();
        pk.sort_by_key(|&i| columns[i].pk);
        let insert_cols: Vec<usize> = (0..columns.len())
            .filter(|&i| !columns[i].generated)
            .collect();
        let target = quote(&name);
        // The expression naming a row, and the rowid column to insert (if it
        // is not one of the table's own columns).
        let (key_exprs, key_cols, rowid_name): (Vec<String>, Vec<usize>, Option<&str>) =
            if without_rowid {
                if pk.is_empty() {
                    return Err(unsupported("WITHOUT ROWID table without a primary key"));
                }
                (
                    pk.iter().map(|&i| quote(&columns[i].name)).collect(),
                    pk,
                    None,
                )
            } else {
                // A single-column primary key without an index of its own is
                // an alias of the rowid (INTEGER PRIMARY KEY).
                let pk_index: i64 = conn.query_row(
                    "SELECT count(*) FROM pragma_index_list(?1, 'main') WHERE origin = 'pk'",
                    [&name],
                    |r| r.get(0),
                )?;
                if pk.len() == 1 && pk_index == 0 {
                    (vec![quote(&columns[pk[0]].name)], Vec::new(), None)
                } else {
                    let Some(alias) = ["rowid", "_rowid_", "oid"]
                        .into_iter()
                        .find(|alias| !columns.iter().any(|c| c.name.eq_ignore_ascii_case(alias)))
                    else {
                        return Err(unsupported("columns shadow every name of the rowid"));
                    };
                    (vec![alias.to_owned()], Vec::new(), Some(alias))
                }
            };
        let mut names: Vec<String> = rowid_name.map(str::to_owned).into_iter().collect();
        names.extend(insert_cols.iter().map(|&i| quote(&columns[i].name)));
        let params: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let upsert = conn.prepare(&format!(
            "INSERT OR REPLACE INTO main.{target}({}) VALUES({})",
            names.join(", "),
            params.join(", ")
        ))?;
        let condition: Vec<String> = key_exprs
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = ?{}", i + 1))
            .collect();
        let delete = conn.prepare(&format!(
            "DELETE FROM main.{target} WHERE {}",
            condition.join(" AND ")
        ))?;
        Ok(Some(Target {
            ncol: columns.len(),
            without_rowid,
            rowid_param: rowid_name.is_some(),
            insert_cols,
            key_cols,
            upsert,
            delete,
            warned: false,
        }))
    }

    fn apply(&mut self, change: &Change<'_>) -> Result<(), CaptureError> {
        match change.op {
            Op::Delete => self.delete_row(change.old_rowid, &change.old),
            Op::Insert => self.upsert_row(change.new_rowid, &change.new),
            Op::Update => {
                let moved = if self.without_rowid {
                    self.key_cols
                        .iter()
                        .any(|&i| change.old[i] != change.new[i])
                } else {
                    change.old_rowid != change.new_rowid
                };
                if moved {
                    self.delete_row(change.old_rowid, &change.old)?;
                }
                self.upsert_row(change.new_rowid, &change.new)
            }
        }
    }

    fn delete_row(&mut self, rowid: i64, values: &[Val<'_>]) -> Result<(), CaptureError> {
        if self.without_rowid {
            for (p, &i) in self.key_cols.iter().enumerate() {
                self.delete.raw_bind_parameter(p + 1, values[i].to_sql())?;
            }
        } else {
            self.delete.raw_bind_parameter(1, rowid)?;
        }
        self.delete.raw_execute()?;
        Ok(())
    }

    fn upsert_row(&mut self, rowid: i64, values: &[Val<'_>]) -> Result<(), CaptureError> {
        let mut p = 1;
        if self.rowid_param {
            self.upsert.raw_bind_parameter(p, rowid)?;
            p += 1;
        }
        for &i in &self.insert_cols {
            self.upsert.raw_bind_parameter(p, values[i].to_sql())?;
            p += 1;
        }
        self.upsert.raw_execute()?;
        Ok(())
    }
}
