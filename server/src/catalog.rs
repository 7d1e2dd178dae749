//! The server catalog: one server-level SQLite database (`<data>/catalog.sqlite`)
//! listing every object that exists — class, name, id, when it was created and
//! when it was last active.
//!
//! A dedicated thread owns the connection; the runtime sends it commands and
//! never waits for writes. The object files are the truth: the catalog is an
//! index of them, written as objects are created and as they go idle.

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::id::{ObjectId, ObjectKey};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One row of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CatalogEntry {
    pub class: String,
    pub name: String,
    pub id: String,
    pub created_ms: i64,
    pub last_active_ms: i64,
}

enum CatalogCommand {
    Register {
        key: ObjectKey,
        at: i64,
    },
    Touch {
        id: ObjectId,
        at: i64,
    },
    Get {
        id: ObjectId,
        reply: oneshot::Sender<Option<CatalogEntry>>,
    },
    List {
        class: Option<String>,
        prefix: Option<String>,
        after: Option<String>,
        limit: u32,
        reply: oneshot::Sender<Vec<CatalogEntry>>,
    },
}

/// Handle to the catalog thread; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    tx: mpsc::Sender<CatalogCommand>,
}

impl Catalog {
    pub fn open(data_dir: &Path) -> Result<Catalog, rusqlite::Error> {
        let conn = Connection::open(data_dir.join("catalog.sqlite"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS objects(
                id TEXT PRIMARY KEY, class TEXT NOT NULL, name TEXT NOT NULL,
                created_ms INTEGER NOT NULL, last_active_ms INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS objects_by_class_name ON objects(class, name);",
        )?;
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("roost-catalog".into())
            .spawn(move || serve(conn, rx))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Catalog { tx })
    }

    pub fn register(&self, key: &ObjectKey, at: i64) {
        let _ = self.tx.send(CatalogCommand::Register {
            key: key.clone(),
            at,
        });
    }

    pub fn touch(&self, id: ObjectId, at: i64) {
        let _ = self.tx.send(CatalogCommand::Touch { id, at });
    }

    pub async fn get(&self, id: ObjectId) -> Option<CatalogEntry> {
        let (reply, wait) = oneshot::channel();
        self.tx.send(CatalogCommand::Get { id, reply }).ok()?;
        wait.await.ok().flatten()
    }

    /// Objects ordered by (class, name), after the `(class, name)` cursor `after`
    /// (encoded as `class/name`).
    pub async fn list(
        &self,
        class: Option<String>,
        prefix: Option<String>,
        after: Option<String>,
        limit: u32,
    ) -> Vec<CatalogEntry> {
        let (reply, wait) = oneshot::channel();
        if self
            .tx
            .send(CatalogCommand::List {
                class,
                prefix,
                after,
                limit,
                reply,
            })
            .is_err()
        {
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
        let writes = cmds.iter().any(|c| {
            matches!(
                c,
                CatalogCommand::Register { .. } | CatalogCommand::Touch { .. }
            )
        });
        if writes {
            if let Err(e) = conn.execute_batch("BEGIN") {
                tracing::error!(error = %e, "catalog transaction failed");
            }
        }
        for cmd in cmds {
            if let Err(e) = handle(&conn, cmd) {
                tracing::error!(error = %e, "catalog update failed");
            }
        }
        if writes {
            if let Err(e) = conn.execute_batch("COMMIT") {
                tracing::error!(error = %e, "catalog commit failed");
            }
        }
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CatalogEntry> {
    Ok(CatalogEntry {
        id: r.get(0)?,
        class: r.get(1)?,
        name: r.get(2)?,
        created_ms: r.get(3)?,
        last_active_ms: r.get(4)?,
    })
}

fn handle(conn: &Connection, cmd: CatalogCommand) -> rusqlite::Result<()> {
    match cmd {
        CatalogCommand::Register { key, at } => {
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
        CatalogCommand::List {
            class,
            prefix,
            after,
            limit,
            reply,
        } => {
            let (after_class, after_name) = match after.as_deref().and_then(|a| a.split_once('/')) {
                Some((c, n)) => (Some(c.to_owned()), Some(n.to_owned())),
                None => (None, None),
            };
            let mut stmt = conn.prepare_cached(
                "SELECT id, class, name, created_ms, last_active_ms FROM objects
                 WHERE (?1 IS NULL OR class = ?1)
                   AND (?2 IS NULL OR substr(name, 1, length(?2)) = ?2)
                   AND (?3 IS NULL OR (class, name) > (?3, ?4))
                 ORDER BY class, name LIMIT ?5",
            )?;
            let rows = stmt.query_map((class, prefix, after_class, after_name, limit), row)?;
            let _ = reply.send(rows.collect::<Result<_, _>>()?);
        }
    }
    Ok(())
}
