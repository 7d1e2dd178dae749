//! The runtime's requests: each sends one command to an object's mailbox and
//! waits for its answer, which the actor gives only once every batch before
//! it is durable (the output gate). The admin console's `inspect` reads the
//! object's file on a connection of its own, after a `Flush`.
//!
//! An answer channel dropped unanswered means the object stopped first
//! (`shutting_down`); nothing it did not acknowledge is promised.

use roost_protocol::{ErrorCode, ErrorDetail};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::directory::Slot;
use super::{error, Call, Command, Reply, Runtime};
use crate::id::{ObjectId, ObjectKey};

fn stopped_before_answering() -> ErrorDetail {
    error(
        ErrorCode::ShuttingDown,
        "the object stopped before answering",
    )
}

impl Runtime {
    /// Calls `method` on the object and waits for the durable reply.
    pub async fn call(
        &self,
        key: &ObjectKey,
        method: &str,
        args: Value,
        read_only: bool,
    ) -> Result<Value, ErrorDetail> {
        let access = crate::auth::Access {
            read_only,
            expires_ms: None,
            identity: None,
            signed_by: 0,
        };
        self.call_as(key, method, args, &access).await
    }

    /// `call` on behalf of a token's holder: the object sees `access`'s
    /// identity as the caller (`Ctx::identity`).
    pub async fn call_as(
        &self,
        key: &ObjectKey,
        method: &str,
        args: Value,
        access: &crate::auth::Access,
    ) -> Result<Value, ErrorDetail> {
        let read_only = access.read_only;
        let (reply, wait) = oneshot::channel();
        self.send(
            key,
            Command::Call(Box::new(Call {
                method: method.to_owned(),
                args,
                read_only,
                from: None,
                identity: access.identity.clone(),
                reply: Reply::Http(reply),
            })),
        )
        .await?;
        wait.await
            .unwrap_or_else(|_| Err(stopped_before_answering()))
    }

    /// Sends an HTTP request to the object's `fetch` and waits for the durable reply.
    pub async fn fetch(
        &self,
        key: &ObjectKey,
        request: crate::object::FetchRequest,
    ) -> Result<crate::object::FetchResponse, ErrorDetail> {
        let (reply, wait) = oneshot::channel();
        self.send(
            key,
            Command::Fetch {
                request: Box::new(request),
                reply,
            },
        )
        .await?;
        wait.await
            .unwrap_or_else(|_| Err(stopped_before_answering()))
    }

    /// Deletes an object: its files, sockets, catalog entry and alarm.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ErrorDetail> {
        for _ in 0..20 {
            let (reply, wait) = oneshot::channel();
            self.send_wait(key, Command::Delete { reply }).await?;
            match wait.await {
                Ok(Err(e)) if e.code == ErrorCode::Overloaded => continue,
                Ok(r) => return r,
                Err(_) => return Err(stopped_before_answering()),
            }
        }
        Err(error(
            ErrorCode::Overloaded,
            "the object stayed busy; retry the deletion",
        ))
    }

    /// Runs a read-only SQL query on the object's file (admin console): once
    /// the object's actor, if it has one, has committed every acknowledged
    /// batch to the file, on a connection of its own in a blocking thread
    /// (see `storage::inspect`). Never starts the object.
    pub async fn inspect(&self, key: &ObjectKey, sql: &str) -> Result<Value, ErrorDetail> {
        crate::storage::inspect::precheck(sql)?;
        let running = self.0.consoles.admit()?;
        let limits = self.config().admin_sql.clone();
        tokio::time::timeout(limits.timeout, self.flush_file(key.id))
            .await
            .map_err(|_| {
                error(
                    ErrorCode::TimedOut,
                    "the object did not commit to its file within the console's time budget",
                )
            })??;
        let path = crate::id::object_path(&self.config().data_dir, &key.class, key.id);
        let sql = sql.to_owned();
        let consoles = self.0.consoles.clone();
        // Its connection may leave a WAL and WAL index beside an idle
        // object's file (as a backup's does): tidied once it is idle.
        self.tidy_later(path.clone());
        tokio::task::spawn_blocking(move || {
            let _running = running;
            crate::storage::inspect::query(&path, &sql, &limits, &consoles)
        })
        .await
        .unwrap_or_else(|_| Err(error(ErrorCode::Internal, "the console query panicked")))
    }

    /// Has a live actor commit its open transaction to the object's file and
    /// waits for it; a stopping one commits before it ends, and without an
    /// actor the file is up to date.
    pub(crate) async fn flush_file(&self, id: ObjectId) -> Result<(), ErrorDetail> {
        loop {
            let (live, stopping) = match self.0.directory.get(&id).as_deref() {
                Some(Slot::Live { tx, .. }) => (Some(tx.clone()), None),
                Some(Slot::Stopping { done, .. }) => (None, Some(done.clone())),
                None => (None, None),
            };
            if let Some(mut done) = stopping {
                let _ = done.changed().await;
                return Ok(());
            }
            let Some(tx) = live else { return Ok(()) };
            let (reply, wait) = oneshot::channel();
            match tx.try_send(Command::Flush {
                reply: Reply::Http(reply),
            }) {
                Ok(()) => {
                    return match wait.await {
                        Ok(flushed) => flushed.map(drop),
                        Err(_) => Err(stopped_before_answering()),
                    }
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(error(
                        ErrorCode::Overloaded,
                        "the object's mailbox is full; retry later",
                    ))
                }
                // About to be replaced by a tombstone.
                Err(mpsc::error::TrySendError::Closed(_)) => tokio::task::yield_now().await,
            }
        }
    }

    /// Stops every running admin console query (they answer `shutting_down`).
    pub fn stop_console_queries(&self) {
        self.0.consoles.stop();
    }
}
