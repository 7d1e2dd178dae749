//! Replays captured row changes: [`apply_changeset`] decodes the bytes
//! (`format`) and replays each change in order with plain SQL, with triggers
//! and foreign keys off (their effects were captured as row changes of their
//! own): rowid tables by rowid, `WITHOUT ROWID` tables by their primary key
//! (read from `pragma_table_xinfo` at replay time). Each change sets a row to
//! its captured image or deletes it, so replaying the same bytes twice leaves
//! the same state. Changes to a table that no longer exists are skipped and
//! counted. Used by the commit log's recovery.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Statement};

use super::format::{decode, Change, Op, Val};
use super::CaptureError;

/// Applies changes recorded by `CapturingConnection` to `conn`, all or
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

/// The table's columns, in `cid` order.
fn table_columns(conn: &Connection, name: &str) -> Result<Vec<ColumnInfo>, CaptureError> {
    let mut stmt =
        conn.prepare("SELECT name, pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid")?;
    let rows = stmt.query_map([name], |r| {
        Ok(ColumnInfo {
            name: r.get(0)?,
            pk: r.get(1)?,
            generated: r.get::<_, i64>(2)? != 0,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// How a table's rows are named when replaying.
struct RowKey {
    /// The expressions naming a row, in the order `delete` binds them.
    exprs: Vec<String>,
    /// `WITHOUT ROWID`: the primary key columns, in key order.
    key_cols: Vec<usize>,
    /// The rowid column to insert, if it is not one of the table's own
    /// columns.
    rowid_name: Option<&'static str>,
}

impl RowKey {
    fn of(
        conn: &Connection,
        name: &str,
        columns: &[ColumnInfo],
        without_rowid: bool,
    ) -> Result<RowKey, CaptureError> {
        let unsupported = |why| CaptureError::Unsupported {
            table: name.to_owned(),
            why,
        };
        let mut pk: Vec<usize> = (0..columns.len()).filter(|&i| columns[i].pk > 0).collect();
        pk.sort_by_key(|&i| columns[i].pk);
        if without_rowid {
            if pk.is_empty() {
                return Err(unsupported("WITHOUT ROWID table without a primary key"));
            }
            return Ok(RowKey {
                exprs: pk.iter().map(|&i| quote(&columns[i].name)).collect(),
                key_cols: pk,
                rowid_name: None,
            });
        }
        // A single-column primary key without an index of its own is an
        // alias of the rowid (INTEGER PRIMARY KEY).
        let pk_index: i64 = conn.query_row(
            "SELECT count(*) FROM pragma_index_list(?1, 'main') WHERE origin = 'pk'",
            [name],
            |r| r.get(0),
        )?;
        if pk.len() == 1 && pk_index == 0 {
            return Ok(RowKey {
                exprs: vec![quote(&columns[pk[0]].name)],
                key_cols: Vec::new(),
                rowid_name: None,
            });
        }
        let Some(alias) = ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|alias| !columns.iter().any(|c| c.name.eq_ignore_ascii_case(alias)))
        else {
            return Err(unsupported("columns shadow every name of the rowid"));
        };
        Ok(RowKey {
            exprs: vec![alias.to_owned()],
            key_cols: Vec::new(),
            rowid_name: Some(alias),
        })
    }
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
        let columns = table_columns(conn, &name)?;
        let insert_cols: Vec<usize> = (0..columns.len())
            .filter(|&i| !columns[i].generated)
            .collect();
        let target = quote(&name);
        let RowKey {
            exprs: key_exprs,
            key_cols,
            rowid_name,
        } = RowKey::of(conn, &name, &columns, without_rowid)?;
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
