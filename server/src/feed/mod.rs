//! The change feed: a durable, ordered feed of committed changes per object
//! class (Yjs updates, room messages, whatever a class emits with
//! `Ctx::emit`), readable from a cursor (`GET /v1/feed`) and delivered to a
//! webhook (`webhook.rs`).
//!
//! How an event travels, and why it is exact:
//! 1. `Ctx::emit` writes a row into the object's own `_roost_feed` table
//!    (`object.rs`) inside the event's savepoint, in the batch's
//!    transaction: the row commits if and only if the batch does (a failed
//!    event or batch rolls it back with everything else).
//! 2. The same event is an output of the batch (`Output::Feed`): the output
//!    gate releases it only once the batch is durable, in batch order per
//!    object, to `Feed::publish`, which never blocks (the commit log's
//!    writer releases outputs).
//! 3. The index thread (`index.rs`) appends it to the server-wide index
//!    `<data>/feed.sqlite`, numbering it (`seq`, the cursor), unless the
//!    object's high-water mark (`marks`) says it is already there.
//! 4. A kill -9 can lose what was published but not yet indexed. The index
//!    records a clean shutdown; after any other end, start-up (`recover.rs`)
//!    reads every fed object's `_roost_feed` rows above its mark — after
//!    the commit log's replay, before any object runs — and indexes them.
//!
//! So every committed event is indexed at least once and, per object, in
//! commit order; none that was not committed ever is. Objects keep their
//! newest `--feed-object-rows` rows (the recovery window) and every row
//! above their mark in the index; the index keeps `--feed-retention`.
//!
//! The rules, each with its test (`tests/tests/feed.rs`, `webhook.rs`):
//! an append the index cannot make is retried, never dropped
//! (`events_the_index_could_not_write_are_not_lost`); an object prunes its
//! rows only up to its mark
//! (`the_object_window_keeps_events_the_index_has_not_taken`) and is
//! deleted only once the index took them
//! (`deleting_an_object_waits_for_the_index_to_take_its_events`) — an
//! object that emitted, its constructor included, is written and never
//! removed unwritten (`runtime/unwritten.rs`) — its
//! marks going with it once the deletion is durable
//! (`a_deleted_objects_marks_leave_the_index`); a cursor past which
//! retention dropped events gets 410 `cursor_expired`
//! (`a_cursor_before_the_retained_events_is_told_so`); the webhook's cursor
//! moves only after a 2xx
//! (`webhooks_deliver_every_event_in_order_through_failures_and_kill9`).
//!
//! What it does not do: order events across objects by commit time (the
//! index order is the order batches became durable, close to it), or
//! survive losing the data directory.

pub(crate) mod index;
pub(crate) mod object;
mod recover;
pub(crate) mod webhook;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// The change feed's settings (`--feed*`, `--webhook*`).
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Classes whose objects write events (`*`: all); empty: no feed.
    pub classes: Vec<String>,
    /// How long the index keeps events.
    pub retention: Duration,
    /// Newest events each object keeps in its own file (the recovery
    /// window after a kill -9).
    pub object_rows: u64,
    /// Where to deliver events, if anywhere.
    pub webhook: Option<webhook::WebhookConfig>,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            classes: Vec::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
            object_rows: 1000,
            webhook: None,
        }
    }
}

impl FeedConfig {
    /// Whether objects of `class` write events.
    pub(crate) fn feeds(&self, class: &str) -> bool {
        self.classes.iter().any(|c| c == "*" || c == class)
    }
}

/// One committed event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FeedEvent {
    /// The index's number: the cursor (0 until indexed).
    pub seq: i64,
    pub class: String,
    /// The object's name.
    pub object: String,
    /// The object's id (hex).
    pub id: String,
    /// Which life of the object (a random number its file drew with its
    /// first event): a deleted and recreated object counts `object_seq`
    /// from 1 again under a new `incarnation`.
    pub incarnation: i64,
    /// The event's number within its object: 1, 2, 3... in commit order.
    pub object_seq: i64,
    /// When it was emitted (ms since the epoch).
    pub ts: i64,
    pub kind: String,
    pub data: Value,
}

/// The feed of a running server: the index thread's inbox and a connection
/// for reads and cursors. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Feed(Arc<FeedInner>);

struct FeedInner {
    config: FeedConfig,
    /// `roost_feed_*` and `roost_webhook_*`.
    metrics: Arc<crate::metrics::Metrics>,
    /// To the index thread; `None` once closed.
    inbox: Mutex<Option<std::sync::mpsc::Sender<index::Message>>>,
    /// The newest indexed `seq`, for readers that wait.
    newest: tokio::sync::watch::Receiver<i64>,
    /// Reads and cursor writes (the index thread has its own connection).
    reader: Mutex<rusqlite::Connection>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

impl FeedEvent {
    /// The key of the index's high-water mark: one per life of an object.
    pub(crate) fn mark_key(&self) -> String {
        format!("{}:{}", self.id, self.incarnation)
    }
}

impl Feed {
    /// Opens the index (`<data>/feed.sqlite`), indexes what a crash left
    /// unindexed (`recover.rs`) and starts the index thread. Call after the
    /// commit log's replay and before any object runs.
    pub(crate) fn open(
        data_dir: &std::path::Path,
        config: FeedConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Feed> {
        let path = data_dir.join("feed.sqlite");
        let fresh = !path.exists();
        let mut conn = index::open(&path)?;
        if fresh && !crate::id::object_files(data_dir)?.is_empty() {
            // Objects exist, so the index may be one that was lost, and
            // consumers may hold cursors into it: number from the clock in
            // microseconds, above any `seq` it can have handed out (fewer
            // than 1000 a millisecond), so that `seq` is never reused and an
            // old cursor never skips what comes after (it reads the rebuilt
            // events again instead).
            index::number_above(&conn, crate::catalog::now_ms().saturating_mul(1000))?;
        }
        if !index::was_closed_cleanly(&conn)? {
            index::resume_numbering(&conn)?;
            let found = recover::index_unindexed(&mut conn, data_dir, &config)?;
            if found > 0 {
                tracing::info!(events = found, "feed: indexed events a crash left behind");
            }
        }
        index::mark_open(&conn)?;
        let newest = index::newest(&conn)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (watch_tx, watch_rx) = tokio::sync::watch::channel(newest);
        let retention = config.retention;
        metrics.feed_newest_seq.store(newest, Relaxed);
        let counted = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("roost-feed".into())
            .spawn(move || index::run(conn, rx, watch_tx, retention, &counted))?;
        Ok(Feed(Arc::new(FeedInner {
            config,
            metrics,
            inbox: Mutex::new(Some(tx)),
            newest: watch_rx,
            reader: Mutex::new(index::open(&path)?),
            thread: Mutex::new(Some(thread)),
        })))
    }

    pub(crate) fn config(&self) -> &FeedConfig {
        &self.0.config
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.0.metrics
    }

    /// Hands a durable batch's event to the index thread; never blocks.
    pub(crate) fn publish(&self, event: FeedEvent) {
        if let Ok(inbox) = self.0.inbox.lock() {
            if let Some(tx) = inbox.as_ref() {
                let _ = tx.send(index::Message::Event(Box::new(event)));
            }
        }
    }

    /// A deleted object's marks can go (`index::Message::Forget`); call
    /// once its deletion is durable.
    pub(crate) fn forget(&self, id: crate::id::ObjectId) {
        if let Ok(inbox) = self.0.inbox.lock() {
            if let Some(tx) = inbox.as_ref() {
                let _ = tx.send(index::Message::Forget(id.to_string()));
            }
        }
    }

    /// Waits until every event published so far is indexed; false if the
    /// index cannot take them (it retries) within `timeout`, or is closed.
    pub(crate) async fn indexed_all(&self, timeout: Duration) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = match self.0.inbox.lock() {
            Ok(inbox) => inbox
                .as_ref()
                .is_some_and(|tx| tx.send(index::Message::Barrier(reply)).is_ok()),
            Err(_) => false,
        };
        sent && matches!(tokio::time::timeout(timeout, answer).await, Ok(Ok(true)))
    }

    /// The newest `object_seq` the index holds for one life of an object
    /// (`FeedEvent::mark_key`), if the read connection is free right now:
    /// an object's batch never waits for a feed reader (`None`: unknown).
    pub(crate) fn indexed(&self, mark_key: &str) -> Option<i64> {
        let conn = self.0.reader.try_lock().ok()?;
        index::mark_of(&conn, mark_key).ok()
    }

    /// Runs `f` on the read connection (in a blocking task).
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        let feed = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = feed
                .0
                .reader
                .lock()
                .map_err(|_| anyhow::anyhow!("feed reader poisoned"))?;
            Ok(f(&conn)?)
        })
        .await?
    }

    /// Waits until an event above `after` is indexed, or `timeout`.
    pub(crate) async fn wait_above(&self, after: i64, timeout: Duration) {
        let mut rx = self.0.newest.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|n| *n > after)).await;
    }

    /// Indexes what was published, marks the index closed cleanly and stops
    /// its thread. Called once every object has stopped.
    pub(crate) async fn close(&self) {
        if let Ok(mut inbox) = self.0.inbox.lock() {
            if let Some(tx) = inbox.take() {
                let _ = tx.send(index::Message::Close);
            }
        }
        let thread = self.0.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Opens the feed if `--feed` names a class (in a blocking task: recovery
/// may read many files). Call after the commit log's replay, before any
/// object runs.
pub(crate) async fn open_if_enabled(
    config: &crate::Config,
    metrics: &Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Option<Feed>> {
    if config.feed.classes.is_empty() {
        return Ok(None);
    }
    let dir = config.data_dir.clone();
    let feed_config = config.feed.clone();
    let metrics = metrics.clone();
    let feed =
        tokio::task::spawn_blocking(move || Feed::open(&dir, feed_config, metrics)).await??;
    Ok(Some(feed))
}

/// Gives the runtime its feed and starts the webhook, if any.
pub(crate) fn attach(runtime: &crate::Runtime, feed: Option<Feed>) -> anyhow::Result<()> {
    let Some(feed) = feed else {
        return Ok(());
    };
    if let Some(webhook) = feed.config().webhook.clone() {
        webhook::start(feed.clone(), webhook)?;
    }
    let _ = runtime.0.feed.set(feed);
    Ok(())
}

/// Indexes what is left and marks the index clean (after the commit log
/// closed: every output was released).
pub(crate) async fn close(runtime: &crate::Runtime) {
    if let Some(feed) = runtime.0.feed.get() {
        feed.close().await;
    }
}
