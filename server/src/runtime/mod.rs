//! The object runtime: finds or starts the one live instance of an object and
//! delivers commands to its mailbox.
//!
//! Architecture Invariant: at most one actor per object id runs at a time. The
//! directory maps an id to either a live actor's mailbox or a tombstone of an
//! actor that is stopping; a new actor for that id starts only after the
//! stopping one has finished its last batch and closed its database.
//!
//! This module does not run events; [`actor`] does.

pub(crate) mod actor;
pub mod alarms;
mod events;
pub(crate) mod output;
pub mod registry;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use roost_protocol::{ErrorCode, ErrorDetail};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::catalog::Catalog;
use crate::commitlog::CommitLog;
use crate::id::{ObjectId, ObjectKey};
use crate::metrics::Metrics;
use crate::sockets::{SocketHub, SocketId, SocketLimits, SocketMessage};
use crate::storage::inspect::{ConsoleLimits, Consoles};
use crate::storage::{FaultHook, StorageLimits};
pub use alarms::{AlarmConfig, AlarmInfo, Clock};
pub(crate) use output::Reply;
pub use output::{Admission, ConnectRequest};
pub use registry::Registry;

/// Runtime tuning (a part of the server's `Config`).
#[derive(Clone)]
pub struct RuntimeConfig {
    pub data_dir: std::path::PathBuf,
    pub idle_timeout: Duration,
    pub mailbox_depth: usize,
    pub max_batch: usize,
    pub file_commit_interval: Duration,
    pub storage: StorageLimits,
    pub sockets: SocketLimits,
    pub alarms: AlarmConfig,
    pub ydoc: crate::classes::ydoc::YdocConfig,
    pub auth: crate::auth::Auth,
    pub fault: Option<FaultHook>,
    pub durability: crate::config::Durability,
    pub admin_sql: ConsoleLimits,
    /// `--cors-origin`: checked on WebSocket upgrades (`http::cors`).
    pub cors_origins: Vec<String>,
    /// `--max-objects`.
    pub max_objects: u64,
}

/// A command for an object's actor: the closed set of events it handles.
pub(crate) enum Command {
    Call {
        method: String,
        args: Value,
        read_only: bool,
        /// The socket the call came from, if any.
        from: Option<SocketId>,
        /// Answered after the batch is durable.
        reply: Reply,
    },
    Connect {
        socket: SocketId,
        request: ConnectRequest,
        reply: oneshot::Sender<Admission>,
    },
    Message {
        socket: SocketId,
        msg: SocketMessage,
    },
    Closed {
        socket: SocketId,
        code: u16,
        reason: String,
    },
    /// The alarm index says the object's alarm is due.
    Alarm { retry: u32 },
    /// Commit the open transaction to the object's file (the admin console
    /// reads the file next); answered once every earlier batch is durable.
    Flush { reply: Reply },
    /// Delete the object: its files, sockets, catalog entry and alarm.
    Delete {
        reply: oneshot::Sender<Result<(), ErrorDetail>>,
    },
    /// An HTTP request for the object's `fetch`.
    Fetch {
        request: crate::object::FetchRequest,
        reply: oneshot::Sender<Result<crate::object::FetchResponse, ErrorDetail>>,
    },
}

impl Command {
    /// Answers the command with an error without running it.
    pub(crate) fn fail(self, runtime: &Runtime, key: &ObjectKey, error: ErrorDetail) {
        let object = key.id;
        match self {
            Command::Call { reply, .. } => {
                output::deliver_reply(runtime, object, reply, Err(error))
            }
            Command::Connect { reply, .. } => {
                let code = if error.code == ErrorCode::Overloaded {
                    1013
                } else {
                    1011
                };
                let _ = reply.send(Admission::Reject {
                    code,
                    reason: error.message,
                });
            }
            Command::Message { socket, .. } => output::close_unsaved(runtime, object, socket),
            Command::Closed { socket, .. } => runtime.0.sockets.remove(&object, socket),
            Command::Fetch { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Flush { reply } => output::deliver_reply(runtime, object, reply, Err(error)),
            Command::Delete { reply } => {
                let _ = reply.send(Err(error));
            }
            Command::Alarm { retry, .. } => {
                // Not run: try again after the backoff, as for a failed attempt.
                let alarms = &runtime.0.alarms;
                let at =
                    runtime.0.clock.now_ms() + alarms.config.backoff(retry + 1).as_millis() as i64;
                alarms.schedule(key, at, retry + 1);
            }
        }
    }
}

enum Slot {
    Live {
        generation: u64,
        tx: mpsc::Sender<Command>,
    },
    /// The actor of `generation` is finishing; wait until `done` closes.
    Stopping {
        generation: u64,
        done: watch::Receiver<()>,
    },
}

pub(crate) struct RuntimeInner {
    pub(crate) config: RuntimeConfig,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) log: CommitLog,
    pub(crate) catalog: Catalog,
    pub(crate) sockets: Arc<SocketHub>,
    pub(crate) alarms: alarms::Alarms,
    pub(crate) clock: Clock,
    directory: DashMap<ObjectId, Slot>,
    /// Object files in the data directory (counted at start-up, then kept).
    objects: AtomicU64,
    next_generation: AtomicU64,
    shutting_down: AtomicBool,
    /// The admin console's running queries.
    consoles: Consoles,
    /// Every actor holds a clone; `shutdown` waits until all are dropped.
    alive_tx: std::sync::Mutex<Option<mpsc::Sender<()>>>,
    alive_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// Handle to the runtime; cheap to clone.
#[derive(Clone)]
pub struct Runtime(pub(crate) Arc<RuntimeInner>);

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code,
        message: message.into(),
    }
}

impl Runtime {
    pub(crate) fn new(
        config: RuntimeConfig,
        registry: Registry,
        metrics: Arc<Metrics>,
        log: CommitLog,
        catalog: Catalog,
    ) -> Runtime {
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let alarm_config = config.alarms.clone();
        let objects = crate::id::object_files(&config.data_dir).map_or(0, |f| f.len() as u64);
        Runtime(Arc::new(RuntimeInner {
            alarms: alarms::Alarms::new(alarm_config),
            config,
            registry,
            metrics,
            log,
            catalog,
            sockets: Arc::new(SocketHub::default()),
            clock: Clock::new(),
            objects: AtomicU64::new(objects),
            directory: DashMap::new(),
            next_generation: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            consoles: Consoles::default(),
            alive_tx: std::sync::Mutex::new(Some(alive_tx)),
            alive_rx: tokio::sync::Mutex::new(alive_rx),
        }))
    }

    /// Counts a new object file about to be created, or refuses it past
    /// `--max-objects`.
    pub(crate) fn admit_new_object(&self) -> Result<(), ErrorDetail> {
        let max = self.0.config.max_objects;
        if self.0.objects.fetch_add(1, Ordering::AcqRel) >= max {
            self.0.objects.fetch_sub(1, Ordering::AcqRel);
            return Err(error(
                ErrorCode::InsufficientStorage,
                format!("the server holds its maximum of {max} objects (--max-objects)"),
            ));
        }
        Ok(())
    }

    /// An object file is gone (deleted, or its creation failed).
    pub(crate) fn object_removed(&self) {
        let _ = self
            .0
            .objects
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// Number of objects with an actor (live or stopping).
    pub fn live_objects(&self) -> usize {
        self.0.directory.len()
    }

    /// Calls `method` on the object and waits for the durable reply.
    pub async fn call(
        &self,
        key: &ObjectKey,
        method: &str,
        args: Value,
        read_only: bool,
    ) -> Result<Value, ErrorDetail> {
        let (reply, wait) = oneshot::channel();
        self.send(
            key,
            Command::Call {
                method: method.to_owned(),
                args,
                read_only,
                from: None,
                reply: Reply::Http(reply),
            },
        )
        .await?;
        wait.await.unwrap_or_else(|_| {
            Err(error(
                ErrorCode::ShuttingDown,
                "the object stopped before answering",
            ))
        })
    }

    /// Delivers a command to the object's mailbox, starting its actor if needed.
    /// Fails at once with `overloaded` when the mailbox is full.
    pub(crate) async fn send(&self, key: &ObjectKey, mut cmd: Command) -> Result<(), ErrorDetail> {
        // `mailbox` refuses unknown classes.
        loop {
            let tx = self.mailbox(key).await?;
            match tx.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.0.metrics.error("overloaded");
                    return Err(error(
                        ErrorCode::Overloaded,
                        format!(
                            "object mailbox is full ({} queued events); retry later",
                            self.0.config.mailbox_depth
                        ),
                    ));
                }
                // The actor closed its mailbox on its way out; it has left a
                // tombstone, so the next lookup waits for it to finish.
                Err(mpsc::error::TrySendError::Closed(back)) => cmd = back,
            }
        }
    }

    /// Like `send`, but waits (up to 5 s) for room in a full mailbox: a socket
    /// that sends faster than its object keeps up is slowed down, not dropped.
    pub(crate) async fn send_wait(
        &self,
        key: &ObjectKey,
        mut cmd: Command,
    ) -> Result<(), ErrorDetail> {
        // `mailbox` refuses unknown classes.
        loop {
            let tx = self.mailbox(key).await?;
            match tokio::time::timeout(Duration::from_secs(5), tx.send(cmd)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(mpsc::error::SendError(back))) => cmd = back,
                Err(_) => {
                    self.0.metrics.error("overloaded");
                    return Err(error(
                        ErrorCode::Overloaded,
                        "object mailbox stayed full for 5 s; retry later",
                    ));
                }
            }
        }
    }

    /// The mailbox of the object's live actor, starting one if there is none.
    async fn mailbox(&self, key: &ObjectKey) -> Result<mpsc::Sender<Command>, ErrorDetail> {
        loop {
            let waiting = match self.0.directory.get(&key.id).as_deref() {
                Some(Slot::Live { tx, .. }) if !tx.is_closed() => return Ok(tx.clone()),
                Some(Slot::Stopping { done, .. }) => Some(done.clone()),
                Some(Slot::Live { .. }) => {
                    // Closed but not yet replaced: the actor is about to leave a tombstone.
                    tokio::task::yield_now().await;
                    continue;
                }
                None => None,
            };
            if let Some(mut done) = waiting {
                let _ = done.changed().await;
                continue;
            }
            if self.0.shutting_down.load(Ordering::Acquire) {
                return Err(error(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down",
                ));
            }
            let Some(factory) = self.0.registry.get(&key.class) else {
                return Err(error(
                    ErrorCode::UnknownClass,
                    format!("no class named `{}`", key.class),
                ));
            };
            let alive = self
                .0
                .alive_tx
                .lock()
                .map_err(|_| error(ErrorCode::Internal, "runtime lock poisoned"))?
                .clone();
            let Some(alive) = alive else {
                return Err(error(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down",
                ));
            };
            match self.0.directory.entry(key.id) {
                Entry::Occupied(_) => continue,
                Entry::Vacant(slot) => {
                    let generation = self.0.next_generation.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = mpsc::channel(self.0.config.mailbox_depth);
                    slot.insert(Slot::Live {
                        generation,
                        tx: tx.clone(),
                    });
                    factory.spawn(actor::ActorArgs {
                        key: key.clone(),
                        generation,
                        rx,
                        runtime: self.clone(),
                        _alive: alive,
                    });
                    return Ok(tx);
                }
            }
        }
    }

    /// Called by a stopping actor before it closes its mailbox: later senders
    /// wait on `done` instead of starting a second instance.
    pub(crate) fn mark_stopping(&self, id: ObjectId, generation: u64, done: watch::Receiver<()>) {
        if let Some(mut slot) = self.0.directory.get_mut(&id) {
            if matches!(&*slot, Slot::Live { generation: g, .. } if *g == generation) {
                *slot = Slot::Stopping { generation, done };
            }
        }
    }

    /// Called by an actor after its last batch, once its database is closed.
    pub(crate) fn remove_stopped(&self, id: ObjectId, generation: u64) {
        self.0.directory.remove_if(&id, |_, slot| match slot {
            Slot::Live { generation: g, .. } | Slot::Stopping { generation: g, .. } => {
                *g == generation
            }
        });
    }

    /// Sends an HTTP request to the object's `fetch` and waits for the durable reply.
    pub async fn fetch(
        &self,
        key: &ObjectKey,
        request: crate::object::FetchRequest,
    ) -> Result<crate::object::FetchResponse, ErrorDetail> {
        let (reply, wait) = oneshot::channel();
        self.send(key, Command::Fetch { request, reply }).await?;
        wait.await.unwrap_or_else(|_| {
            Err(error(
                ErrorCode::ShuttingDown,
                "the object stopped before answering",
            ))
        })
    }

    /// Runs a read-only SQL query on the object's file (admin console): once
    /// the object's actor, if it has one, has committed every acknowledged
    /// batch to the file, on a connection of its own in a blocking thread
    /// (see `storage::inspect`). Never starts the object.
    pub async fn inspect(&self, key: &ObjectKey, sql: &str) -> Result<Value, ErrorDetail> {
        crate::storage::inspect::precheck(sql)?;
        let running = self.0.consoles.admit()?;
        let limits = self.0.config.admin_sql.clone();
        tokio::time::timeout(limits.timeout, self.flush_file(key.id))
            .await
            .map_err(|_| {
                error(
                    ErrorCode::TimedOut,
                    "the object did not commit to its file within the console's time budget",
                )
            })??;
        let path = crate::id::object_path(&self.0.config.data_dir, &key.class, key.id);
        let sql = sql.to_owned();
        let consoles = self.0.consoles.clone();
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
                        Err(_) => Err(error(
                            ErrorCode::ShuttingDown,
                            "the object stopped before answering",
                        )),
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

    /// Deletes an object: its files, sockets, catalog entry and alarm.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ErrorDetail> {
        for _ in 0..20 {
            let (reply, wait) = oneshot::channel();
            self.send_wait(key, Command::Delete { reply }).await?;
            match wait.await {
                Ok(Err(e)) if e.code == ErrorCode::Overloaded => continue,
                Ok(r) => return r,
                Err(_) => {
                    return Err(error(
                        ErrorCode::ShuttingDown,
                        "the object stopped before answering",
                    ))
                }
            }
        }
        Err(error(
            ErrorCode::Overloaded,
            "the object stayed busy; retry the deletion",
        ))
    }

    /// Whether the object has an actor (state in memory).
    pub fn is_live(&self, id: &ObjectId) -> bool {
        self.0.directory.contains_key(id)
    }

    /// Open sockets of one object.
    pub fn sockets_of(&self, id: &ObjectId) -> usize {
        self.0
            .sockets
            .get(id)
            .map_or(0, |t| t.with_table(|t| t.len()))
    }

    /// The alarm index's time for the object, if any.
    pub fn indexed_alarm(&self, id: &ObjectId) -> Option<i64> {
        self.0.alarms.indexed_time(id)
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.0.catalog
    }

    /// Whether a graceful shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire)
    }

    /// Open sockets across all objects.
    pub fn open_sockets(&self) -> u64 {
        self.0.sockets.open.load(Ordering::Relaxed)
    }

    /// Stops every actor after it finishes what is queued, and waits for all;
    /// then closes every socket with 1012 and waits (up to 5 s) for them.
    pub async fn shutdown(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.0.shutting_down.store(true, Ordering::Release);
        self.stop_console_queries();
        // Dropping the directory's senders lets each actor drain its mailbox and exit.
        self.0
            .directory
            .retain(|_, slot| matches!(slot, Slot::Stopping { .. }));
        if let Ok(mut alive) = self.0.alive_tx.lock() {
            alive.take();
        }
        let mut rx = self.0.alive_rx.lock().await;
        let drained =
            tokio::time::timeout_at(deadline, async { while rx.recv().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                objects = self.0.directory.len(),
                "objects still running at the drain timeout; exiting without them (nothing they did not acknowledge is promised)"
            );
        }
        self.0.sockets.close_all(1012, "server restarting");
        while !self.0.sockets.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !self.0.sockets.is_empty() {
            tracing::warn!("sockets still open at the drain timeout");
        }
    }
}
