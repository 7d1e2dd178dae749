//! The admin console's read-only SQL: one statement, checked read-only by
//! SQLite itself (`sqlite3_stmt_readonly`), run with `query_only` on, at most
//! `MAX_ROWS` rows, values rendered as JSON (blobs as hex).

use roost_protocol::{ErrorCode, ErrorDetail};
use rusqlite::types::ValueRef;
use serde_json::{json, Value};

use super::Storage;

pub const MAX_ROWS: usize = 1000;

fn refused(message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code: ErrorCode::Forbidden,
        message: message.into(),
    }
}

fn bad(message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code: ErrorCode::BadRequest,
        message: message.into(),
    }
}

/// Runs `sql` read-only; returns `{"columns": [...], "rows": [[...]], "truncated": bool}`.
pub fn query(storage: &Storage, sql: &str) -> Result<Value, ErrorDetail> {
    let first_word = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    // ATTACH/DETACH count as "read-only" to SQLite; VACUUM INTO writes a file.
    if matches!(first_word.as_str(), "ATTACH" | "DETACH" | "VACUUM") {
        return Err(refused(format!(
            "{first_word} is not allowed in the read-only console"
        )));
    }
    let conn = storage.sql();
    let mut stmt = conn.prepare(sql).map_err(|e| match e {
        rusqlite::Error::MultipleStatement => bad("one statement at a time"),
        other => bad(format!("SQL error: {other}")),
    })?;
    if !stmt.readonly() {
        return Err(refused(
            "the console is read-only: this statement would write",
        ));
    }
    let columns: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let n = columns.len();
    let mut rows_out = Vec::new();
    let mut truncated = false;
    let mut rows = stmt.query([]).map_err(|e| bad(format!("SQL error: {e}")))?;
    while let Some(row) = rows.next().map_err(|e| bad(format!("SQL error: {e}")))? {
        if rows_out.len() == MAX_ROWS {
            truncated = true;
            break;
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let v = match row.get_ref(i).map_err(|e| bad(e.to_string()))? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => json!(i),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                ValueRef::Blob(b) => {
                    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                    json!({ "blob": hex })
                }
            };
            out.push(v);
        }
        rows_out.push(Value::Array(out));
    }
    Ok(json!({ "columns": columns, "rows": rows_out, "truncated": truncated }))
}
