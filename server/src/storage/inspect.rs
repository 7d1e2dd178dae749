//! The admin console's SQL: one query on its own read-only connection to an
//! object's file, bounded in time and bytes. Blocking: run it off the async
//! workers (`spawn_blocking`), after the object's actor has committed its
//! open transaction to the file (`Runtime::inspect`).
//!
//! Never the actor's connection: a `COMMIT` or `RELEASE` there would end the
//! transaction the actor keeps open, and a pragma would stay set on it. The
//! console's own connection is opened read-only, with `query_only` on, and
//! may attach nothing; what it runs must also pass three checks, in layers
//! (`WITH … DELETE` passes the first, not the second): its first keyword,
//! after comments, is that of a query ([`precheck`]); the authorizer allows
//! only reads, functions and the pragmas of [`READ_PRAGMAS`] (with a value
//! only those that name a table or index); and SQLite calls the prepared
//! statement read-only. A progress handler stops it at its time budget or
//! when the server shuts down; values are counted as the JSON they become
//! and the query stops at the byte budget (no single value may be longer
//! than the budget either: `SQLITE_LIMIT_LENGTH`). At most [`MAX_RUNNING`]
//! queries run at once.
//!
//! It does not page: at most `MAX_ROWS` rows, then `truncated`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roost_protocol::{ErrorCode, ErrorDetail};
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

pub(crate) const MAX_ROWS: usize = 1000;

/// Statement kinds the console runs, by first keyword.
const QUERY_KEYWORDS: [&str; 5] = ["SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA"];

/// Pragmas the console may read. Those in [`PRAGMAS_WITH_ARGUMENT`] may name
/// a table or index; any other value would set the pragma.
const READ_PRAGMAS: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "encoding",
    "foreign_key_check",
    "foreign_key_list",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "journal_mode",
    "max_page_count",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "quick_check",
    "schema_version",
    "table_info",
    "table_list",
    "table_xinfo",
    "user_version",
];

const PRAGMAS_WITH_ARGUMENT: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// VM instructions between two looks at the clock.
const PROGRESS_EVERY: i32 = 10_000;

/// The console's budgets (a part of the runtime's configuration).
#[derive(Clone, Debug)]
pub struct ConsoleLimits {
    /// Longest a query may run (`--admin-sql-timeout`).
    pub timeout: Duration,
    /// Most bytes of a result, counted as JSON (`--admin-sql-max-bytes`).
    pub max_bytes: usize,
}

impl Default for ConsoleLimits {
    fn default() -> Self {
        ConsoleLimits {
            timeout: Duration::from_secs(5),
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Most console queries that run at once (each may keep a core busy for
/// its whole time budget); more get `overloaded`.
pub(crate) const MAX_RUNNING: usize = 2;

/// The running console queries: how many may run, and a flag that stops
/// them all (the server's shutdown sets it, so that it never waits for a
/// query's time budget). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Consoles {
    stop: Arc<AtomicBool>,
    running: Arc<tokio::sync::Semaphore>,
}

impl Default for Consoles {
    fn default() -> Self {
        Consoles {
            stop: Arc::default(),
            running: Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING)),
        }
    }
}

impl Consoles {
    /// Stops every running query and refuses new ones.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Room for one more query, held until the permit is dropped.
    pub(crate) fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ErrorDetail> {
        if self.stopped() {
            return Err(detail(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        self.running.clone().try_acquire_owned().map_err(|_| {
            detail(
                ErrorCode::Overloaded,
                format!("{MAX_RUNNING} console queries are running already; retry later"),
            )
        })
    }
}

fn detail(code: ErrorCode, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code,
        message: message.into(),
    }
}

fn refused(message: impl Into<String>) -> ErrorDetail {
    detail(ErrorCode::Forbidden, message)
}

/// The first keyword of `sql`, upper-cased, after whitespace and comments.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Refuses, before anything is opened, SQL that does not start as a query.
pub(crate) fn precheck(sql: &str) -> Result<(), ErrorDetail> {
    let keyword = first_keyword(sql);
    if QUERY_KEYWORDS.contains(&keyword.as_str()) {
        return Ok(());
    }
    let shown = if keyword.is_empty() {
        "this statement".to_owned()
    } else {
        keyword
    };
    Err(refused(format!(
        "{shown} is not allowed: the console runs one SELECT, WITH, VALUES, EXPLAIN or read-only PRAGMA"
    )))
}

/// The authorizer's verdict on one action: `None` allows it, or why not.
fn forbidden_action(ctx: &AuthContext<'_>) -> Option<String> {
    let why = match ctx.action {
        AuthAction::Select
        | AuthAction::Read { .. }
        | AuthAction::Recursive
        | AuthAction::Function { .. } => return None,
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            let may_take = PRAGMAS_WITH_ARGUMENT.contains(&name.as_str());
            match pragma_value {
                _ if !READ_PRAGMAS.contains(&name.as_str()) => {
                    format!("PRAGMA {name} is not on the console's list of read-only pragmas")
                }
                Some(_) if !may_take => format!("PRAGMA {name} with a value would set it"),
                _ => return None,
            }
        }
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            "ATTACH and DETACH are not allowed".into()
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            "transaction control is not allowed".into()
        }
        AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name } => format!("this statement would write {table_name}"),
        _ => "this statement would change the schema or the database".into(),
    };
    Some(format!("the console is read-only: {why}"))
}

/// Opens the console's connection: read-only, nothing attached, values no
/// longer than the byte budget, the progress handler on.
fn open(
    path: &Path,
    limits: &ConsoleLimits,
    deadline: Instant,
    stop: &Consoles,
) -> rusqlite::Result<Connection> {
    // No SQLITE_OPEN_CREATE, no URI: the object's own file or nothing.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Closing must never checkpoint or remove the actor's WAL.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    let longest = i32::try_from(limits.max_bytes).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, longest)?;
    conn.busy_timeout(limits.timeout.min(Duration::from_secs(1)))?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    let stop = stop.clone();
    conn.progress_handler(
        PROGRESS_EVERY,
        Some(move || stop.stopped() || Instant::now() >= deadline),
    );
    Ok(conn)
}

/// Runs `sql` on the object's file at `path`; returns
/// `{"columns": [...], "rows": [[...]], "truncated": bool}`. Blocking.
pub(crate) fn query(
    path: &Path,
    sql: &str,
    limits: &ConsoleLimits,
    stop: &Consoles,
) -> Result<Value, ErrorDetail> {
    precheck(sql)?;
    let deadline = Instant::now() + limits.timeout;
    let denied = Arc::new(Mutex::new(None));
    let failed = |e: rusqlite::Error| fail(e, limits, stop, &denied);
    let conn = open(path, limits, deadline, stop).map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen => {
            detail(ErrorCode::NotFound, "the object has no database file")
        }
        other => failed(other),
    })?;
    // One statement, told apart before the authorizer judges a second one
    // (preparing compiles; it runs nothing).
    let one = |e| match e {
        rusqlite::Error::MultipleStatement => {
            detail(ErrorCode::BadRequest, "one statement at a time")
        }
        other => failed(other),
    };
    drop(conn.prepare(sql).map_err(one)?);
    let judge = denied.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        match forbidden_action(&ctx) {
            None => Authorization::Allow,
            Some(why) => {
                if let Ok(mut d) = judge.lock() {
                    d.get_or_insert(why);
                }
                Authorization::Deny
            }
        }
    }));
    let mut stmt = conn.prepare(sql).map_err(one)?;
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
    let mut bytes = 64 + columns.iter().map(|c| json_text_len(c) + 1).sum::<usize>();
    let over = |bytes: usize| bytes > limits.max_bytes;
    let mut rows_out = Vec::new();
    let mut truncated = false;
    let mut rows = stmt.query([]).map_err(failed)?;
    while let Some(row) = rows.next().map_err(failed)? {
        if rows_out.len() == MAX_ROWS {
            truncated = true;
            break;
        }
        bytes += 2;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let value = row.get_ref(i).map_err(failed)?;
            bytes += json_len(value);
            if over(bytes) {
                return Err(too_large(limits));
            }
            out.push(to_json(value));
        }
        rows_out.push(Value::Array(out));
        if over(bytes) {
            return Err(too_large(limits));
        }
    }
    Ok(json!({ "columns": columns, "rows": rows_out, "truncated": truncated }))
}

/// The bytes `value` takes in the answer (with its separator).
fn json_len(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Null => 5,
        ValueRef::Integer(_) => 21,
        ValueRef::Real(_) => 25,
        ValueRef::Text(t) => json_text_len(&String::from_utf8_lossy(t)) + 1,
        ValueRef::Blob(b) => 2 * b.len() + 13,
    }
}

/// The length of `s` as a JSON string, quotes and escapes included.
fn json_text_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn to_json(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => {
            let mut hex = String::with_capacity(2 * b.len());
            for x in b {
                hex.push(char::from(HEX[usize::from(x >> 4)]));
                hex.push(char::from(HEX[usize::from(x & 15)]));
            }
            json!({ "blob": hex })
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn too_large(limits: &ConsoleLimits) -> ErrorDetail {
    detail(
        ErrorCode::TooLarge,
        format!(
            "the result is larger than the console's budget of {} bytes (--admin-sql-max-bytes); \
             select fewer rows or smaller values (length(x), substr(x, 1, 100))",
            limits.max_bytes
        ),
    )
}

/// A SQLite error as the console's answer.
fn fail(
    e: rusqlite::Error,
    limits: &ConsoleLimits,
    stop: &Consoles,
    denied: &Mutex<Option<String>>,
) -> ErrorDetail {
    use rusqlite::ErrorCode as Sqlite;
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    match code {
        Some(Sqlite::OperationInterrupted) if stop.stopped() => detail(
            ErrorCode::ShuttingDown,
            "the server is shutting down; the query was stopped",
        ),
        Some(Sqlite::OperationInterrupted) => detail(
            ErrorCode::TimedOut,
            format!(
                "the query ran past the console's time budget of {} ms (--admin-sql-timeout) and was stopped",
                limits.timeout.as_millis()
            ),
        ),
        Some(Sqlite::TooBig) => too_large(limits),
        Some(Sqlite::AuthorizationForStatementDenied) => {
            let what = denied
                .lock()
                .ok()
                .and_then(|mut d| d.take())
                .unwrap_or_else(|| "the console is read-only".into());
            refused(what)
        }
        Some(Sqlite::ReadOnly) => refused("the console is read-only: this statement would write"),
        Some(Sqlite::DatabaseBusy | Sqlite::DatabaseLocked) => detail(
            ErrorCode::Overloaded,
            format!("the object's file is busy; retry: {e}"),
        ),
        _ => detail(ErrorCode::BadRequest, format!("SQL error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_keyword_is_found_behind_comments() {
        assert_eq!(first_keyword("  select 1"), "SELECT");
        assert_eq!(first_keyword("/**/ATTACH 'x' AS y"), "ATTACH");
        assert_eq!(first_keyword("/* a */ -- b\n  /* c */with x"), "WITH");
        assert_eq!(first_keyword("-- only a comment"), "");
        assert_eq!(first_keyword("/* unterminated SELECT"), "");
        assert!(precheck("/**/COMMIT").is_err());
        assert!(precheck("RELEASE roost_batch").is_err());
        assert!(precheck("END").is_err());
        assert!(precheck("PRAGMA page_count").is_ok());
    }

    #[test]
    fn json_lengths_match_serde() {
        for s in ["", "abc", "a\"b\\c\n\t\u{1}é"] {
            let encoded = serde_json::to_string(s).expect("serializes");
            assert_eq!(json_text_len(s), encoded.len(), "{s:?}");
        }
        let blob = to_json(ValueRef::Blob(&[0, 0xab, 0xff]));
        assert_eq!(blob, json!({ "blob": "00abff" }));
    }
}
