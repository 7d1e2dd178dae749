//! The server catalog: one server-level SQLite database (`<data>/catalog.sqlite`)
//! listing every object that exists — class, name, id, when it was created and
//! when it was last active.
//!
//! A dedicated thread owns the connection; the runtime sends it commands and
//! waits for few writes (an alarm's entry, a revocation, a new object's
//! row, an unwritten object's removal). The object files are the truth: the
//! catalog is an index of them, written as objects are created, as they go
//! idle and as unwritten ones are removed.
//!
//! Architecture Invariant: every object file has its row. A new object's
//! row is committed (fsynced, grouped with whatever else is queued) before
//! its file is created (`register_durably`), and an unwritten object's row
//! goes only after its file did (`runtime/unwritten.rs`); a crash between
//! the two leaves a row without a file, which the listing shows until the
//! object is created or deleted, never a file the listing misses.
//! Registered lazily, a kill -9 during a burst of creations lost 22 rows of
//! 102,613 for good.

mod list;

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::id::{ObjectId, ObjectKey};
pub(crate) use list::parse_cursor;

/// The catalog's tables (1 KiB pages for a new catalog: it is seven small
/// b-trees, a page each at least — 32 KiB at the default 4 KiB for a
/// nearly empty one — of rows of ~100 bytes).
const SCHEMA: &str = "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
     CREATE TABLE IF NOT EXISTS objects(
        id TEXT PRIMARY KEY, class TEXT NOT NULL, name TEXT NOT NULL,
        created_ms INTEGER NOT NULL, last_active_ms INTEGER NOT NULL);
     CREATE INDEX IF NOT EXISTS objects_by_class_name ON objects(class, name);
     CREATE TABLE IF NOT EXISTS alarms(
        id TEXT PRIMARY KEY, class TEXT NOT NULL, name TEXT NOT NULL, at_ms INTEGER NOT NULL);
     CREATE TABLE IF NOT EXISTS revoked(
        kind TEXT NOT NULL, value TEXT NOT NULL, until_s INTEGER NOT NULL,
        PRIMARY KEY(kind, value));";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One row of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct CatalogEntry {
    pub class: String,
    pub name: String,
    pub id: String,
    pub created_ms: i64,
    pub last_active_ms: i64,
}

enum CatalogCommand {
    /// Stop: what came before is done; the WAL is folded in and removed
    /// with the connection (`Catalog::close`).
    Close(oneshot::Sender<()>),
    /// Lists a new object; `done`, if set, is answered once the row is
    /// durable (a thread that may block waits on it).
    Register {
        key: ObjectKey,
        at: i64,
        done: Option<mpsc::Sender<Result<(), CatalogError>>>,
    },
    /// Upsert (or, with `None`, delete) an alarm index entry; `done` is
    /// answered once the entry is durable.
    SetAlarm {
        key: ObjectKey,
        at_ms: Option<i64>,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    Alarms {
        reply: oneshot::Sender<Vec<(ObjectKey, i64)>>,
    },
    /// Durably records a revoked token id (`jti`) or subject (`sub`, with
    /// the moment until which its tokens are refused, seconds).
    Revoke {
        kind: &'static str,
        value: String,
        until: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Revocations {
        reply: oneshot::Sender<Vec<(String, String, u64)>>,
    },
    Touch {
        id: ObjectId,
        at: i64,
    },
    /// Remove an object's row and alarm entry; `done` is answered once
    /// that is durable.
    Forget {
        id: ObjectId,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    Get {
        id: ObjectId,
        reply: oneshot::Sender<Option<CatalogEntry>>,
    },
    List {
        page: list::Page,
        reply: oneshot::Sender<Vec<CatalogEntry>>,
    },
}

/// Handle to the catalog thread; cheap to clone.
#[derive(Clone)]
pub(crate) struct Catalog {
    tx: mpsc::Sender<CatalogCommand>,
}

impl Catalog {
    pub(crate) fn open(data_dir: &Path) -> Result<Catalog, rusqlite::Error> {
        let conn = Connection::open(data_dir.join("catalog.sqlite"))?;
        conn.execute_batch(SCHEMA)?;
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("roost-catalog".into())
            .spawn(move || serve(conn, rx))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Catalog { tx })
    }

    /// Runs what was sent before, then closes the database (its WAL folded
    /// in and removed). Later commands find the catalog stopped.
    pub(crate) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(CatalogCommand::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }

    pub(crate) fn register(&self, key: &ObjectKey, at: i64) {
        let _ = self.tx.send(CatalogCommand::Register {
            key: key.clone(),
            at,
            done: None,
        });
    }

    /// Lists a new object durably, blocking the calling thread until its
    /// row is committed (fsynced): called before the object's file is
    /// created, so a file never exists that the catalog does not list.
    pub(crate) fn register_durably(&self, key: &ObjectKey, at: i64) -> Result<(), CatalogError> {
        let stopped = || CatalogError::Failed("catalog stopped".to_owned());
        let (done, wait) = mpsc::channel();
        self.tx
            .send(CatalogCommand::Register {
                key: key.clone(),
                at,
                done: Some(done),
            })
            .map_err(|_| stopped())?;
        wait.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Durably records that `key` has an alarm no later than `at_ms`.
    pub(crate) async fn set_alarm(&self, key: &ObjectKey, at_ms: i64) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(CatalogCommand::SetAlarm {
                key: key.clone(),
                at_ms: Some(at_ms),
                done: Some(done),
            })
            .map_err(|_| "catalog stopped".to_owned())?;
        wait.await
            .unwrap_or_else(|_| Err("catalog stopped".to_owned()))
    }

    /// Updates (or with `None` removes) an alarm index entry without waiting.
    pub(crate) fn set_alarm_lazily(&self, key: &ObjectKey, at_ms: Option<i64>) {
        let _ = self.tx.send(CatalogCommand::SetAlarm {
            key: key.clone(),
            at_ms,
            done: None,
        });
    }

    /// Durably records a revocation: `kind` is `jti` or `sub`.
    pub(crate) async fn revoke(
        &self,
        kind: &'static str,
        value: String,
        until: u64,
    ) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(CatalogCommand::Revoke {
                kind,
                value,
                until,
                done,
            })
            .map_err(|_| "catalog stopped".to_owned())?;
        wait.await
            .unwrap_or_else(|_| Err("catalog stopped".to_owned()))
    }

    /// Every recorded revocation: (kind, value, until).
    pub(crate) async fn revocations(&self) -> Vec<(String, String, u64)> {
        let (reply, wait) = oneshot::channel();
        if self.tx.send(CatalogCommand::Revocations { reply }).is_err() {
            return Vec::new();
        }
        wait.await.unwrap_or_default()
    }

    /// Every alarm index entry.
    pub(crate) async fn alarms(&self) -> Vec<(ObjectKey, i64)> {
        let (reply, wait) = oneshot::channel();
        if self.tx.send(CatalogCommand::Alarms { reply }).is_err() {
            return Vec::new();
        }
        wait.await.unwrap_or_default()
    }

    /// Removes an object (and its alarm entry) from the catalog.
    pub(crate) fn forget(&self, id: ObjectId) {
        let _ = self.tx.send(CatalogCommand::Forget { id, done: None });
    }

    /// [`forget`](Self::forget), answered once the removal is durable.
    pub(crate) async fn forget_durably(&self, id: ObjectId) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(CatalogCommand::Forget {
                id,
                done: Some(done),
            })
            .map_err(|_| "catalog stopped".to_owned())?;
        wait.await
            .unwrap_or_else(|_| Err("catalog stopped".to_owned()))
    }

    pub(crate) fn touch(&self, id: ObjectId, at: i64) {
        let _ = self.tx.send(CatalogCommand::Touch { id, at });
    }

    pub(crate) async fn get(&self, id: ObjectId) -> Option<CatalogEntry> {
        let (reply, wait) = oneshot::channel();
        self.tx.send(CatalogCommand::Get { id, reply }).ok()?;
        wait.await.ok().flatten()
    }

    /// Objects ordered by (class, name), after the `(class, name)` cursor
    /// `after`, of `class` and with names starting with `prefix` if set.
    pub(crate) async fn list(
        &self,
        class: Option<String>,
        prefix: Option<String>,
        after: Option<(String, String)>,
        limit: u32,
    ) -> Vec<CatalogEntry> {
        let (reply, wait) = oneshot::channel();
        let page = list::Page {
            class,
            prefix,
            after,
            limit,
        };
        if self.tx.send(CatalogCommand::List { page, reply }).is_err() {
            return Vec::new();
        }
        wait.await.unwrap_or_default()
    }
}

fn serve(conn: Connection, rx: mpsc::Receiver<CatalogCommand>) {
    while let Ok(first) = rx.recv() {
        let mut cmds = vec![first];
        while let Ok(c) = rx.try_recv() {
            cmds.push(c);
        }
        let (mut close, cmds): (Vec<_>, Vec<_>) = cmds
            .into_iter()
            .partition(|c| matches!(c, CatalogCommand::Close(_)));
        run_commands(&conn, cmds);
        if let Some(CatalogCommand::Close(done)) = close.pop() {
            // The last connection to close folds the WAL into the database
            // and removes it and its index (a stopped server keeps neither).
            if let Err((_, e)) = conn.close() {
                tracing::warn!(error = %e, "closing the catalog failed");
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Runs a group of commands, the writes in one transaction.
fn run_commands(conn: &Connection, cmds: Vec<CatalogCommand>) {
    let writes = cmds.iter().any(|c| {
        matches!(
            c,
            CatalogCommand::Register { .. }
                | CatalogCommand::Touch { .. }
                | CatalogCommand::Forget { .. }
                | CatalogCommand::SetAlarm { .. }
                | CatalogCommand::Revoke { .. }
        )
    });
    let mut acks = Vec::new();
    let mut failed: Option<CatalogError> = None;
    if writes {
        if let Err(e) = conn.execute_batch("BEGIN") {
            tracing::error!(error = %e, "catalog transaction failed");
            failed = Some(e.into());
        }
    }
    for cmd in cmds {
        if let Err(e) = handle(conn, cmd, &mut acks) {
            tracing::error!(error = %e, "catalog update failed");
            failed = Some(e.into());
        }
    }
    if writes {
        // synchronous=FULL: the commit is fsynced before the acks go out.
        if let Err(e) = conn.execute_batch("COMMIT") {
            tracing::error!(error = %e, "catalog commit failed");
            failed = Some(e.into());
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    for ack in acks {
        ack.send(failed.as_ref());
    }
}

pub(super) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CatalogEntry> {
    Ok(CatalogEntry {
        id: r.get(0)?,
        class: r.get(1)?,
        name: r.get(2)?,
        created_ms: r.get(3)?,
        last_active_ms: r.get(4)?,
    })
}

/// Who waits for a write to be durable: a task, or a blocked thread.
enum Ack {
    Task(oneshot::Sender<Result<(), String>>),
    Thread(mpsc::Sender<Result<(), CatalogError>>),
}

impl Ack {
    fn send(self, failed: Option<&CatalogError>) {
        let _ = match self {
            Ack::Task(tx) => tx
                .send(failed.map_or(Ok(()), |e| Err(e.to_string())))
                .is_ok(),
            Ack::Thread(tx) => tx.send(failed.map_or(Ok(()), |e| Err(e.clone()))).is_ok(),
        };
    }
}

/// A write the catalog could not make durable.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CatalogError {
    /// SQLite's "database or disk is full".
    #[error("the catalog's disk is full")]
    Full,
    #[error("{0}")]
    Failed(String),
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                CatalogError::Full
            }
            _ => CatalogError::Failed(e.to_string()),
        }
    }
}

/// Runs one command; a write's acknowledgement goes to `acks`, sent once
/// the transaction commits. A command that fails drops its reply or ack (the
/// caller sees the catalog stopped).
fn handle(conn: &Connection, cmd: CatalogCommand, acks: &mut Vec<Ack>) -> rusqlite::Result<()> {
    match cmd {
        // Taken out before (`serve`).
        CatalogCommand::Close(_) => {}
        CatalogCommand::SetAlarm { key, at_ms, done } => {
            set_alarm(conn, &key, at_ms)?;
            acks.extend(done.map(Ack::Task));
        }
        CatalogCommand::Revoke {
            kind,
            value,
            until,
            done,
        } => {
            conn.prepare_cached(
                "INSERT INTO revoked(kind, value, until_s) VALUES(?1, ?2, ?3)
                 ON CONFLICT(kind, value) DO UPDATE SET until_s = max(until_s, excluded.until_s)",
            )?
            .execute((kind, &value, i64::try_from(until).unwrap_or(i64::MAX)))?;
            acks.push(Ack::Task(done));
        }
        CatalogCommand::Revocations { reply } => {
            let _ = reply.send(revocations(conn)?);
        }
        CatalogCommand::Forget { id, done } => {
            conn.prepare_cached("DELETE FROM objects WHERE id = ?1")?
                .execute([id.to_string()])?;
            conn.prepare_cached("DELETE FROM alarms WHERE id = ?1")?
                .execute([id.to_string()])?;
            acks.extend(done.map(Ack::Task));
        }
        CatalogCommand::Alarms { reply } => {
            let _ = reply.send(alarms(conn)?);
        }
        CatalogCommand::Register { key, at, done } => {
            // Answered after the commit, also if this insert fails.
            acks.extend(done.map(Ack::Thread));
            conn.prepare_cached(
                "INSERT INTO objects(id, class, name, created_ms, last_active_ms) VALUES(?1,?2,?3,?4,?4)
                 ON CONFLICT(id) DO UPDATE SET last_active_ms = excluded.last_active_ms",
            )?
            .execute((key.id.to_string(), &key.class, &key.name, at))?;
        }
        CatalogCommand::Touch { id, at } => {
            conn.prepare_cached("UPDATE objects SET last_active_ms = ?2 WHERE id = ?1")?
                .execute((id.to_string(), at))?;
        }
        CatalogCommand::Get { id, reply } => {
            let entry = conn
                .prepare_cached(
                    "SELECT id, class, name, created_ms, last_active_ms FROM objects WHERE id = ?1",
                )?
                .query_row([id.to_string()], row)
                .optional()?;
            let _ = reply.send(entry);
        }
        CatalogCommand::List { page, reply } => {
            let _ = reply.send(list::list(conn, &page)?);
        }
    }
    Ok(())
}

/// Upserts, or with `None` deletes, the object's alarm index entry.
fn set_alarm(conn: &Connection, key: &ObjectKey, at_ms: Option<i64>) -> rusqlite::Result<()> {
    match at_ms {
        Some(at) => {
            conn.prepare_cached(
                "INSERT INTO alarms(id, class, name, at_ms) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms",
            )?
            .execute((key.id.to_string(), &key.class, &key.name, at))?;
        }
        None => {
            conn.prepare_cached("DELETE FROM alarms WHERE id = ?1")?
                .execute([key.id.to_string()])?;
        }
    }
    Ok(())
}

/// Rows of three columns (text, text, integer) that `sql` selects.
fn text_text_int(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<(String, String, i64)>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// Every recorded revocation: (kind, value, until).
fn revocations(conn: &Connection) -> rusqlite::Result<Vec<(String, String, u64)>> {
    let rows = text_text_int(conn, "SELECT kind, value, until_s FROM revoked")?;
    Ok(rows
        .into_iter()
        .map(|(kind, value, until)| (kind, value, u64::try_from(until).unwrap_or(0)))
        .collect())
}

/// Every alarm index entry (invalid ones are logged and skipped).
fn alarms(conn: &Connection) -> rusqlite::Result<Vec<(ObjectKey, i64)>> {
    let mut out = Vec::new();
    for (class, name, at) in text_text_int(conn, "SELECT class, name, at_ms FROM alarms")? {
        match ObjectKey::new(&class, &name) {
            Ok(key) => out.push((key, at)),
            Err(e) => tracing::warn!(error = %e, "invalid alarm index entry"),
        }
    }
    Ok(out)
}
