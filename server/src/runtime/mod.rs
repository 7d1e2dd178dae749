//! The object runtime: finds or starts the one live instance of an object and
//! delivers commands to its mailbox.
//!
//! Architecture Invariant: at most one actor per object id runs at a time. The
//! directory maps an id to either a live actor's mailbox or a tombstone of an
//! actor that is stopping; a new actor for that id starts only after the
//! stopping one has finished its last batch and closed its database.
//!
//! This module holds the `Runtime` handle, its configuration and the
//! accessors other modules use; it does not run events. Its parts:
//! - [`directory`]: id → live mailbox or tombstone; `send`, actor start-up.
//! - [`requests`]: `call`, `fetch`, `delete`, `inspect` — one command each.
//! - [`shutdown`]: drain every actor, then close every socket.
//! - [`command`]: the `Command` enum, the mailbox's closed set of events.
//! - [`actor`] and [`state`]: one object's task and its named states;
//!   [`pipeline`], [`batch`], [`events`], [`alarm_event`], [`catch_up`],
//!   [`delete`], [`lifecycle`], [`unwritten`]: the pieces it runs.
//! - [`output`]: what events produce, released behind the output gate.
//! - [`alarms`]: the alarm index and scheduler; [`registry`]: classes.

pub(crate) mod actor;
mod alarm_event;
pub(crate) mod alarms;
mod batch;
mod catch_up;
mod command;
mod delete;
mod directory;
mod events;
mod lifecycle;
pub(crate) mod output;
mod pipeline;
pub(crate) mod registry;
mod requests;
mod shutdown;
mod state;
mod unwritten;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use roost_protocol::{ErrorCode, ErrorDetail};
use tokio::sync::mpsc;

use crate::catalog::Catalog;
use crate::commitlog::CommitLog;
use crate::config::Config;
use crate::id::ObjectId;
use crate::metrics::Metrics;
use crate::sockets::SocketHub;
use crate::storage::inspect::Consoles;
pub(crate) use alarms::Clock;
pub use alarms::{AlarmConfig, AlarmInfo};
pub(crate) use command::{Call, Command};
pub(crate) use output::Reply;
pub use output::{Admission, ConnectRequest};
pub(crate) use registry::Registry;

pub(crate) struct RuntimeInner {
    /// The server's one configuration (`ServerBuilder::start` prepared it).
    pub(crate) config: Arc<Config>,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) log: CommitLog,
    pub(crate) catalog: Catalog,
    pub(crate) sockets: Arc<SocketHub>,
    pub(crate) alarms: alarms::Alarms,
    pub(crate) clock: Clock,
    /// Object id → live mailbox or tombstone (see [`directory`]).
    directory: DashMap<ObjectId, directory::Slot>,
    /// Folds evicted objects' WALs into their databases (`storage::tidy`).
    tidier: crate::storage::tidy::Tidier,
    next_generation: AtomicU64,
    shutting_down: AtomicBool,
    /// The admin console's running queries.
    consoles: Consoles,
    /// Cluster mode's handle (set once at start-up, before serving).
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
    /// The change feed, if `--feed` names a class (set once at start-up).
    pub(crate) feed: std::sync::OnceLock<crate::feed::Feed>,
    /// Every actor holds a clone; `shutdown` waits until all are dropped.
    alive_tx: std::sync::Mutex<Option<mpsc::Sender<()>>>,
    alive_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// Handle to the runtime; cheap to clone.
#[derive(Clone)]
pub struct Runtime(pub(crate) Arc<RuntimeInner>);

/// A handle that does not keep the runtime alive (the alarm scheduler's).
pub(crate) struct WeakRuntime(Weak<RuntimeInner>);

impl WeakRuntime {
    pub(crate) fn upgrade(&self) -> Option<Runtime> {
        self.0.upgrade().map(Runtime)
    }
}

/// Whether the object whose file is at a path has an actor now (the
/// tidier's check; a runtime that is gone has none).
fn is_live_by_path(runtime: WeakRuntime) -> crate::storage::tidy::IsLive {
    Arc::new(move |path: &std::path::Path| {
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(ObjectId::from_hex);
        match (id, runtime.upgrade()) {
            (Some(id), Some(runtime)) => runtime.is_live(&id),
            _ => true,
        }
    })
}

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code,
        message: message.into(),
    }
}

impl Runtime {
    pub(crate) fn new(
        config: Arc<Config>,
        registry: Registry,
        metrics: Arc<Metrics>,
        log: CommitLog,
        catalog: Catalog,
    ) -> Runtime {
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let alarm_config = config.alarms.clone();
        let walk = crate::id::walk_objects(&config.data_dir).unwrap_or_default();
        metrics
            .objects
            .store(walk.files.len() as i64, Ordering::Relaxed);
        let tidy_after = config.tidy_after;
        let tidied = metrics.clone();
        let runtime = Runtime(Arc::new_cyclic(|weak: &Weak<RuntimeInner>| RuntimeInner {
            tidier: crate::storage::tidy::Tidier::start(
                tidy_after,
                is_live_by_path(WeakRuntime(weak.clone())),
                Arc::new(move || {
                    tidied.tidied_files.fetch_add(1, Ordering::Relaxed);
                }),
            ),
            alarms: alarms::Alarms::new(alarm_config),
            config,
            registry,
            metrics,
            log,
            catalog,
            sockets: Arc::new(SocketHub::default()),
            clock: Clock::new(),
            directory: DashMap::new(),
            next_generation: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            consoles: Consoles::default(),
            cluster: std::sync::OnceLock::new(),
            feed: std::sync::OnceLock::new(),
            alive_tx: std::sync::Mutex::new(Some(alive_tx)),
            alive_rx: tokio::sync::Mutex::new(alive_rx),
        }));
        // Journals and WALs an unclean stop (or a clean one past its
        // tidying deadline) left: no eviction would deal with them until
        // their objects next run, which for many may be never.
        crate::storage::leftovers::deal_with(&walk.journals, walk.wals, &runtime.0.tidier);
        runtime
    }

    /// Enters cluster mode (once, before serving).
    pub(crate) fn set_cluster(&self, cluster: crate::cluster::Cluster) {
        let _ = self.0.cluster.set(cluster);
    }

    /// Cluster mode's handle, if the server runs in a cluster.
    pub(crate) fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.0.cluster.get()
    }

    /// Whether this node may run the object now: always on a single node;
    /// in a cluster, only while it owns the object.
    pub(crate) fn may_run(&self, id: &ObjectId) -> bool {
        self.cluster().is_none_or(|c| c.owns(id))
    }

    /// Makes a record durable: the local commit log, or in cluster mode the
    /// object's chain in the replicated log. `then` runs with the outcome.
    pub(crate) fn submit(
        &self,
        record: crate::commitlog::record::Record,
        then: Option<crate::commitlog::Then>,
    ) -> Result<
        tokio::sync::oneshot::Receiver<Result<(), crate::commitlog::LogError>>,
        crate::commitlog::LogError,
    > {
        match (self.cluster(), then) {
            (Some(c), then) => c.submit(record, then),
            (None, Some(then)) => self.0.log.submit_then(record, then),
            (None, None) => self.0.log.submit(record),
        }
    }

    /// An object's actor closed its database: tidy the file later.
    pub(crate) fn evicted(&self, class: &str, id: ObjectId) {
        self.0
            .tidier
            .evicted(crate::id::object_path(&self.0.config.data_dir, class, id));
    }

    /// A connection other than the actor's (a backup's copy) may have left
    /// a WAL and WAL index beside the object file at `path`: tidy it later.
    pub(crate) fn tidy_later(&self, path: std::path::PathBuf) {
        self.0.tidier.evicted(path);
    }

    pub(crate) fn downgrade(&self) -> WeakRuntime {
        WeakRuntime(Arc::downgrade(&self.0))
    }

    /// The server's configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.0.config
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// The registered classes.
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.0.catalog
    }

    /// The server-wide commit log.
    pub(crate) fn log(&self) -> &CommitLog {
        &self.0.log
    }

    /// Every object's socket table.
    /// Closes (4401) every socket whose token was signed by a secret older
    /// than `generation` (`Auth::generation`): after a rotation's grace
    /// period, a token forged with a leaked old secret keeps nothing open.
    /// Returns how many.
    pub(crate) fn close_sockets_signed_before(&self, generation: u64) -> usize {
        self.sockets().close_where(
            |_, signed_by| signed_by != 0 && signed_by < generation,
            roost_protocol::close::UNAUTHENTICATED,
            "token signed with a retired secret",
        )
    }

    pub(crate) fn sockets(&self) -> &Arc<SocketHub> {
        &self.0.sockets
    }

    /// The alarm index and scheduler.
    pub(crate) fn alarms(&self) -> &alarms::Alarms {
        &self.0.alarms
    }

    /// Ms since the epoch, advancing with tokio's clock.
    pub(crate) fn clock(&self) -> Clock {
        self.0.clock
    }

    /// Counts a new object file about to be created, or refuses it past
    /// `--max-objects`.
    pub(crate) fn admit_new_object(&self) -> Result<(), ErrorDetail> {
        let max = self.0.config.max_objects;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let held = &self.metrics().objects;
        if held.fetch_add(1, Ordering::AcqRel) >= max {
            held.fetch_sub(1, Ordering::AcqRel);
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
            .metrics()
            .objects
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 0).then(|| n - 1)
            });
    }

    /// Number of objects with an actor (live or stopping).
    pub fn live_objects(&self) -> usize {
        self.0.directory.len()
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

    /// Whether a graceful shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire)
    }

    /// Open sockets across all objects.
    pub fn open_sockets(&self) -> u64 {
        self.0.sockets.open.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("data_dir", &self.0.config.data_dir)
            .field("live_objects", &self.live_objects())
            .finish_non_exhaustive()
    }
}
