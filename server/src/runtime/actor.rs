//! One object's actor: the task that alone owns the object's state, its
//! `Ctx` and its SQLite connection, and runs its events one at a time.
//!
//! The life of a batch (DESIGN §4):
//! 1. Wait for a command; take up to `max_batch` more that are already queued.
//! 2. `BEGIN`, start capturing row changes, and run each event in its own
//!    savepoint: an event that fails has its writes rolled back alone.
//! 3. If anything was written: stamp the next `seq`, `COMMIT`, then make the
//!    batch durable — through the shared commit log (one fsync for many
//!    objects), or, if the batch changed the schema, by fsyncing the object's
//!    own files.
//! 4. Only then release the outputs: every reply of the batch. For a batch
//!    that went through the log, the log's writer thread releases them
//!    itself right after the fsync (`submit_then`), unless an earlier
//!    batch's outputs are still held here; those leave from this task.
//!
//! Architecture Invariant (output gate): no output of a batch leaves before
//! the batch is durable. If the commit or the durability step fails, every
//! output of the batch becomes an error and the object restarts from storage.
//!
//! Pipelining: while batch N waits for its fsync, the actor may run batch
//! N+1 (up to `MAX_IN_FLIGHT` batches) once `PIPELINE_AFTER` commands are
//! queued; with fewer it waits for N's fsync and takes them all in one batch.
//! Outputs wait in a FIFO and are released strictly in batch order, each
//! only once its own batch — and so every earlier one — is durable. Batches that wrote nothing still queue
//! behind earlier ones: what they read may not be durable yet.
//!
//! Architecture Invariant: an object's log records are submitted in `seq`
//! order and the log makes them durable in submission order, so an object's
//! durable history is always a prefix of its committed batches. If any
//! batch's durability fails, it and every later in-flight batch fail and the
//! object restarts from storage.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use roost_protocol::{ErrorCode, ErrorDetail};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::events::run_batch;
use super::output::{self, Output};
use super::{error, Command, Runtime};
use crate::commitlog::LogError;
use crate::ctx::Ctx;
use crate::id::{object_path, ObjectId, ObjectKey};
use crate::object::DurableObject;
use crate::storage::wal::WalKeeper;
use crate::storage::{Storage, StorageError};

pub(crate) struct ActorArgs {
    pub key: ObjectKey,
    pub generation: u64,
    pub rx: mpsc::Receiver<Command>,
    pub runtime: Runtime,
    /// Held for the actor's whole life; the runtime's shutdown waits for it.
    pub _alive: mpsc::Sender<()>,
}

pub(super) struct Live<T> {
    pub(super) object: T,
    pub(super) ctx: Ctx,
}

/// Most batches an object may have committed but not yet durable.
const MAX_IN_FLIGHT: usize = 4;
/// Queued commands that start another batch while one is in flight.
const PIPELINE_AFTER: usize = 16;
/// An object closing with a larger WAL file folds it into the database and
/// truncates it (the disk space of idle objects).
const WAL_KEEP_BYTES: u64 = 1024 * 1024;

/// A committed batch whose outputs wait for durability.
pub(super) struct InFlight {
    /// Resolves when the log has fsynced the batch; `None` if there was
    /// nothing to make durable (or it already is).
    pub(super) ack: Option<oneshot::Receiver<Result<(), LogError>>>,
    pub(super) outputs: Vec<Output>,
    pub(super) committed_at: Instant,
    pub(super) events: usize,
    pub(super) wrote: bool,
    /// The log's writer releases (or fails) the outputs itself once the
    /// batch is durable; `outputs` is empty.
    pub(super) by_log: bool,
}

/// What happened to a batch.
pub(super) enum BatchEnd {
    /// Committed; outputs wait in the FIFO.
    Committed(InFlight),
    /// Commit failed or a handler panicked: outputs already became errors
    /// and the object must restart from storage.
    Broken,
}

/// Commits the object's open transaction to its file. If the file refuses
/// batches that the log already holds, the storage is lost (see
/// `Storage::flush`): it refuses every later batch.
fn flush<T>(live: &mut Option<Live<T>>, metrics: &crate::metrics::Metrics) {
    if let Some(l) = live.as_mut() {
        if let Err(e) = l.ctx.storage.flush() {
            metrics.error("file_commit_failed");
            tracing::warn!(error = %e, "commit to the object's file failed");
        }
    }
}

/// Answers a `Flush` (the admin console reads the file next): commits the
/// open transaction to the file. The answer waits in the FIFO behind every
/// earlier batch, so the console never reads what is not durable yet.
fn flushed<T>(
    live: &mut Option<Live<T>>,
    metrics: &crate::metrics::Metrics,
    reply: output::Reply,
) -> InFlight {
    if !is_lost(live) {
        flush(live, metrics);
    }
    let result = match live.as_ref().and_then(|l| l.ctx.storage.lost()) {
        Some(why) => Err(error(
            ErrorCode::ObjectBroken,
            format!("the object's file refused its batches ({why}); a restart replays them"),
        )),
        None => Ok(serde_json::Value::Null),
    };
    answer(reply, result)
}

/// A reply that waits in the FIFO behind every earlier batch, with no
/// batch of its own.
fn answer(reply: output::Reply, result: Result<serde_json::Value, ErrorDetail>) -> InFlight {
    InFlight {
        ack: None,
        outputs: vec![Output::Reply(reply, result)],
        committed_at: Instant::now(),
        events: 0,
        wrote: false,
        by_log: false,
    }
}

/// Drops the loaded object so that the next command starts it again from its
/// file, once its pending batches are committed there. A lost object stays
/// loaded instead: starting it from the file would miss batches that
/// clients have seen, until a restart replays them from the log.
fn retire<T>(live: &mut Option<Live<T>>, metrics: &crate::metrics::Metrics) {
    flush(live, metrics);
    if !is_lost(live) {
        *live = None;
    }
}

/// Waits for every in-flight batch's log acknowledgement and releases (or
/// fails) its outputs, in order.
async fn settle_inflight(inflight: &mut VecDeque<InFlight>, runtime: &Runtime, object: ObjectId) {
    while let Some(mut f) = inflight.pop_front() {
        let result = match f.ack.take() {
            Some(ack) => ack.await.unwrap_or(Err(LogError::Closed)),
            None => Ok(()),
        };
        match result {
            Ok(()) => release(f, runtime, object),
            Err(e) => {
                let err = error(
                    ErrorCode::ObjectBroken,
                    format!("batch could not be made durable: {e}"),
                );
                output::fail(runtime, object, f.outputs, &err);
            }
        }
    }
}

/// What an object whose file misses acknowledged batches knows of it.
#[derive(Default)]
struct Missing {
    /// Why the file refused them, while it does.
    why: Option<String>,
    /// The last attempt to catch the file up (one a second at most).
    tried: Option<Instant>,
}

/// Catches up a file that refused batches the log acknowledged (a full
/// disk; the size cap rolling back the open transaction) while the server
/// runs: once every in-flight batch is settled, the object is closed (SQLite
/// drops the refused transaction), its missing records are replayed from
/// the log into the file, and the next command starts it from the file.
/// Until that succeeds it is not started from the file — which misses
/// batches clients have seen — and every command gets 507.
async fn reclaim<T: DurableObject>(
    live: &mut Option<Live<T>>,
    missing: &mut Missing,
    inflight: &mut VecDeque<InFlight>,
    wal: &mut WalKeeper,
    runtime: &Runtime,
    key: &ObjectKey,
) -> Result<(), ErrorDetail> {
    if let Some(why) = live.as_ref().and_then(|l| l.ctx.storage.lost()) {
        missing.why = Some(why.to_owned());
    }
    let Some(why) = missing.why.clone() else {
        return Ok(());
    };
    let refused = |detail: &str| {
        error(
            ErrorCode::InsufficientStorage,
            format!(
                "the object's file cannot take its acknowledged writes yet ({why}{detail}); \
                 they are safe in the commit log, and the object serves again once the disk has room"
            ),
        )
    };
    if missing
        .tried
        .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
    {
        return Err(refused(""));
    }
    missing.tried = Some(Instant::now());
    settle_inflight(inflight, runtime, key.id).await;
    wal.join().await;
    if let Some(l) = live.take() {
        crate::sys::blocking(|| drop(l));
    }
    let data_dir = runtime.0.config.data_dir.clone();
    let class = key.class.clone();
    let id = key.id;
    match crate::sys::blocking(|| crate::commitlog::recovery::replay_one(&data_dir, &class, id)) {
        Ok(applied) => {
            runtime.0.log.unflushed().remove(key.id);
            tracing::info!(
                applied,
                "caught the object's file up from the commit log; serving again"
            );
            *missing = Missing::default();
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch the object's file up from the commit log yet");
            Err(refused(&format!("; {e}")))
        }
    }
}

/// Whether the loaded object's file refused batches the log holds.
fn is_lost<T>(live: &Option<Live<T>>) -> bool {
    live.as_ref()
        .is_some_and(|l| l.ctx.storage.lost().is_some())
}

fn release(inflight: InFlight, runtime: &Runtime, object: ObjectId) {
    if inflight.by_log {
        // The log's writer released (and counted) them already.
        return;
    }
    if inflight.wrote {
        count_durable(runtime, inflight.committed_at, inflight.events);
    }
    output::release(runtime, object, inflight.outputs);
}

/// Counts a durable batch that wrote.
pub(super) fn count_durable(runtime: &Runtime, committed_at: Instant, events: usize) {
    let metrics = &runtime.0.metrics;
    metrics.commit_latency.observe(committed_at.elapsed());
    metrics
        .commits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics
        .committed_events
        .fetch_add(events as u64, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) async fn run<T: DurableObject>(args: ActorArgs) {
    let span = tracing::info_span!("object", class = %args.key.class, id = %args.key.id);
    run_inner::<T>(args).instrument(span).await;
}

async fn run_inner<T: DurableObject>(args: ActorArgs) {
    let ActorArgs {
        key,
        generation,
        mut rx,
        runtime,
        _alive,
    } = args;
    let metrics = runtime.0.metrics.clone();
    metrics
        .live_objects
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let idle = runtime.0.config.idle_timeout;
    let file_commit = runtime.0.config.file_commit_interval;
    let max_batch = runtime.0.config.max_batch.max(1);
    let mut live: Option<Live<T>> = None;
    let (done_tx, done_rx) = watch::channel(());
    let mut draining = false;
    let mut batch: Vec<Command> = Vec::with_capacity(max_batch);
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut stashed_delete: Option<oneshot::Sender<Result<(), ErrorDetail>>> = None;
    let mut missing = Missing::default();
    let mut wal = WalKeeper::new(
        object_path(&runtime.0.config.data_dir, &key.class, key.id),
        runtime.0.config.storage.wal_checkpoint_bytes,
        [key.id.0[0], key.id.0[1]],
    );

    loop {
        // Release the oldest in-flight batch as soon as it is durable. While
        // one waits, the next batch starts only once PIPELINE_AFTER commands
        // are queued (bounded by MAX_IN_FLIGHT): its outputs could not leave
        // earlier anyway, and what arrives meanwhile joins it — fewer, larger
        // commits under load, the same latency when idle.
        let accepting =
            inflight.is_empty() || (inflight.len() < MAX_IN_FLIGHT && rx.len() >= PIPELINE_AFTER);
        if inflight.front().is_some_and(|f| f.ack.is_none()) {
            if let Some(done) = inflight.pop_front() {
                release(done, &runtime, key.id);
            }
            continue;
        }
        let first = if let Some(reply) = stashed_delete.take() {
            Some(Command::Delete { reply })
        } else if let Some(ack) = inflight.front_mut().and_then(|f| f.ack.as_mut()) {
            tokio::select! {
                biased;
                result = ack => {
                    let result = result.unwrap_or(Err(LogError::Closed));
                    let Some(done) = inflight.pop_front() else { continue };
                    match result {
                        Ok(()) => release(done, &runtime, key.id),
                        Err(e) => {
                            metrics.error("log_failed");
                            tracing::error!(error = %e, "batch could not be made durable");
                            let err = error(ErrorCode::ObjectBroken, format!("batch could not be made durable: {e}; the object restarts from storage"));
                            output::fail(&runtime, key.id, done.outputs, &err);
                            for later in inflight.drain(..) {
                                output::fail(&runtime, key.id, later.outputs, &err);
                            }
                            retire(&mut live, &metrics);
                        }
                    }
                    continue;
                }
                cmd = rx.recv(), if accepting => cmd,
            }
        } else if draining {
            rx.recv().await
        } else {
            // An open transaction is committed to the file once it has been
            // open for the commit interval, or when the object goes idle.
            let open_for = live.as_ref().and_then(|l| l.ctx.storage.open_for());
            let wait = match open_for {
                Some(t) => file_commit.saturating_sub(t).min(idle),
                None => idle,
            };
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(cmd) => cmd,
                Err(_) if open_for.is_some() => {
                    flush(&mut live, &metrics);
                    continue;
                }
                Err(_) if is_lost(&live) || missing.why.is_some() => {
                    // Its file refused batches the log holds: never evicted
                    // (a new start would read the file) until caught up.
                    let _ = reclaim(
                        &mut live,
                        &mut missing,
                        &mut inflight,
                        &mut wal,
                        &runtime,
                        &key,
                    )
                    .await;
                    continue;
                }
                Err(_) => {
                    // Idle: leave a tombstone, close the mailbox, then run
                    // whatever was queued before it closed.
                    runtime.mark_stopping(key.id, generation, done_rx.clone());
                    rx.close();
                    draining = true;
                    metrics
                        .evictions
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!("evicting idle object");
                    continue;
                }
            }
        };
        let Some(first) = first else {
            if inflight.is_empty() {
                break;
            }
            // Mailbox closed: finish the in-flight batches, then stop.
            draining = true;
            continue;
        };
        // A deletion runs alone, after everything before it; a flush right
        // after the batch before it.
        let mut deletion = None;
        let mut flush_for = None;
        match first {
            Command::Delete { reply } => deletion = Some(reply),
            Command::Flush { reply } => flush_for = Some(reply),
            first => {
                batch.push(first);
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(Command::Delete { reply }) => {
                            deletion = Some(reply);
                            break;
                        }
                        Ok(Command::Flush { reply }) => {
                            flush_for = Some(reply);
                            break;
                        }
                        Ok(cmd) => batch.push(cmd),
                        Err(_) => break,
                    }
                }
            }
        }
        if deletion.is_none() && (is_lost(&live) || missing.why.is_some()) {
            if let Err(e) = reclaim(
                &mut live,
                &mut missing,
                &mut inflight,
                &mut wal,
                &runtime,
                &key,
            )
            .await
            {
                for cmd in batch.drain(..) {
                    cmd.fail(&runtime, &key, e.clone());
                }
                if let Some(reply) = flush_for.take() {
                    inflight.push_back(answer(reply, Err(e)));
                }
                continue;
            }
        }
        if batch.is_empty() {
            if let Some(reply) = flush_for.take() {
                inflight.push_back(flushed(&mut live, &metrics, reply));
            }
            if let Some(reply) = deletion.take() {
                // Let every earlier batch reach its clients first.
                settle_inflight(&mut inflight, &runtime, key.id).await;
                wal.join().await;
                flush(&mut live, &metrics);
                crate::sys::blocking(|| drop(live.take()));
                let deleted = match delete_object(&runtime, &key) {
                    Ok(()) => log_deletion(&runtime, &key).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(deleted);
            }
            continue;
        }
        if live.is_none() {
            match crate::sys::blocking(|| start::<T>(&key, &runtime)) {
                Ok(l) => live = Some(l),
                Err(e) => {
                    metrics.error("constructor_failed");
                    tracing::error!(error = %e.message, "object failed to start");
                    for cmd in batch.drain(..) {
                        cmd.fail(&runtime, &key, e.clone());
                    }
                    if let Some(reply) = flush_for.take() {
                        inflight.push_back(flushed(&mut live, &metrics, reply));
                    }
                    // Stop: the next command starts a fresh attempt.
                    runtime.mark_stopping(key.id, generation, done_rx.clone());
                    rx.close();
                    draining = true;
                    continue;
                }
            }
        }
        let Some(l) = live.as_mut() else { continue };
        wal.before_batch(&mut l.ctx.storage, &metrics);
        // The log may release this batch's outputs itself only if no earlier
        // batch's outputs still wait here: they must leave first.
        let by_log = inflight.iter().all(|f| f.by_log);
        match run_batch(l, &runtime, &mut batch, by_log).await {
            BatchEnd::Committed(f) => {
                if f.wrote {
                    wal.after_commit(&mut l.ctx.storage, &metrics);
                }
                inflight.push_back(f);
                if l.ctx.storage.open_for().is_some_and(|t| t >= file_commit) {
                    flush(&mut live, &metrics);
                }
            }
            BatchEnd::Broken => {
                if live.is_some() && !is_lost(&live) {
                    tracing::warn!("object broken; restarting from storage");
                }
                retire(&mut live, &metrics);
            }
        }
        if let Some(reply) = flush_for.take() {
            inflight.push_back(flushed(&mut live, &metrics, reply));
        }
        // A deletion found behind this batch runs next, before any new command.
        stashed_delete = deletion.take();
    }
    // Closing leaves the WAL in place (no fsync); a large one is folded into
    // the database first. Either way, keep the file work off the async worker.
    wal.join().await;
    flush(&mut live, &metrics);
    crate::sys::blocking(|| {
        if let Some(l) = live
            .as_mut()
            .filter(|l| l.ctx.storage.lost().is_none())
            .filter(|l| l.ctx.storage.wal_file_bytes() > WAL_KEEP_BYTES)
        {
            if let Err(e) = l.ctx.storage.checkpoint_wal() {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
        drop(live)
    });
    runtime.0.catalog.touch(key.id, crate::catalog::now_ms());
    runtime.remove_stopped(key.id, generation);
    metrics
        .live_objects
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    drop(done_tx);
}

/// Deletes an evicted object's files, its sockets, catalog entry and alarm.
fn delete_object(runtime: &Runtime, key: &ObjectKey) -> Result<(), ErrorDetail> {
    for outbox in runtime.0.sockets.remove_object(&key.id) {
        outbox.push(crate::sockets::OutFrame::Close(
            1001,
            "object deleted".into(),
        ));
    }
    let path = object_path(&runtime.0.config.data_dir, &key.class, key.id);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) if suffix.is_empty() => runtime.object_removed(),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(error(
                    ErrorCode::Storage,
                    format!("cannot delete {}: {e}", path.display()),
                ))
            }
        }
    }
    if let Some(dir) = crate::storage::parent_dir(&path) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    runtime.0.alarms.unschedule(key.id);
    runtime.0.alarms.reindex_lazily(runtime, key, None);
    runtime.0.catalog.forget(key.id);
    tracing::info!(class = %key.class, id = %key.id, "object deleted");
    Ok(())
}

/// Makes the deletion durable in the commit log (after the files are gone,
/// before it is acknowledged and before the object can be created again):
/// recovery then forgets the deleted object's logged batches instead of
/// replaying them into a new object of the same name.
async fn log_deletion(runtime: &Runtime, key: &ObjectKey) -> Result<(), ErrorDetail> {
    let durable = match runtime
        .0
        .log
        .submit(crate::commitlog::record::Record::deletion(
            &key.class, key.id,
        )) {
        Ok(ack) => ack.await.unwrap_or(Err(LogError::Closed)),
        Err(e) => Err(e),
    };
    if durable.is_ok() {
        // Batches the object's file never took (a lost transaction) are void
        // now: the checkpointer need not wait for them, nor for a new object
        // of the same name to commit its own.
        runtime.0.log.unflushed().remove(key.id);
    }
    durable.map_err(|e| {
        tracing::error!(error = %e, class = %key.class, id = %key.id, "the deletion could not be logged");
        error(
            ErrorCode::Storage,
            format!("the object's files are deleted, but the deletion could not be made durable: {e}"),
        )
    })
}

/// Opens storage and runs the constructor in a durable transaction of its own.
fn start<T: DurableObject>(key: &ObjectKey, runtime: &Runtime) -> Result<Live<T>, ErrorDetail> {
    let config = &runtime.0.config;
    let path = object_path(&config.data_dir, &key.class, key.id);
    let created = !path.exists();
    let broken = |e: StorageError| {
        error(
            ErrorCode::ObjectBroken,
            format!("cannot open object storage: {e}"),
        )
    };
    if created {
        runtime.admit_new_object()?;
    }
    let mut storage = match Storage::open(&path, config.storage.clone()) {
        Ok(storage) => storage,
        Err(e) => {
            if created && !path.exists() {
                runtime.object_removed();
            }
            return Err(broken(e));
        }
    };
    storage.track_unflushed(runtime.0.log.unflushed(), key.id);
    if created {
        runtime.0.catalog.register(key, crate::catalog::now_ms());
    }
    storage.begin_batch().map_err(broken)?;
    let mut ctx = Ctx::new(key.clone(), storage, runtime.clone());
    runtime
        .0
        .metrics
        .constructions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let object = match std::panic::catch_unwind(AssertUnwindSafe(|| T::new(&mut ctx))) {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            ctx.storage.rollback();
            return Err(error(
                ErrorCode::ObjectBroken,
                format!("constructor failed: {e}"),
            ));
        }
        Err(_) => {
            ctx.storage.rollback();
            return Err(error(ErrorCode::ObjectBroken, "constructor panicked"));
        }
    };
    // Constructors run rarely and usually migrate: make their writes durable
    // in the object's own file rather than through the log. A constructor
    // that only read (a counter waking up) needs no fsync at all.
    let commit = ctx.storage.finish_batch().and_then(|changes| {
        let wrote = changes.is_some();
        ctx.storage.commit(wrote)?;
        if wrote {
            crate::sys::blocking(|| ctx.storage.sync_files())?;
        }
        Ok(())
    });
    if let Err(e) = commit {
        ctx.storage.rollback();
        return Err(broken(e));
    }
    ctx.storage.release_memory();
    Ok(Live { object, ctx })
}
