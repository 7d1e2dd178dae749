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
//! 4. Only then release the outputs: every reply of the batch.
//!
//! Architecture Invariant (output gate): no output of a batch leaves before
//! the batch is durable. If the commit or the durability step fails, every
//! output of the batch becomes an error and the object restarts from storage.
//!
//! Pipelining: while batch N waits for its fsync, the actor may run batch
//! N+1 (up to `MAX_IN_FLIGHT` batches). Outputs wait in a FIFO and are
//! released strictly in batch order, each only once its own batch — and so
//! every earlier one — is durable. Batches that wrote nothing still queue
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

use futures_util::FutureExt;
use roost_protocol::{ErrorCode, ErrorDetail};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::{error, Command, Runtime};
use crate::commitlog::record::Record;
use crate::commitlog::LogError;
use crate::ctx::Ctx;
use crate::id::{object_path, ObjectKey};
use crate::object::DurableObject;
use crate::storage::{Storage, StorageError};

pub(crate) struct ActorArgs {
    pub key: ObjectKey,
    pub generation: u64,
    pub rx: mpsc::Receiver<Command>,
    pub runtime: Runtime,
    /// Held for the actor's whole life; the runtime's shutdown waits for it.
    pub _alive: mpsc::Sender<()>,
}

/// Replies held back until their batch is durable.
type Pending = Vec<(
    oneshot::Sender<Result<Value, ErrorDetail>>,
    Result<Value, ErrorDetail>,
)>;

/// Most batches an object may have committed but not yet durable.
const MAX_IN_FLIGHT: usize = 4;
/// Run SQLite's WAL checkpoint after this many committed batches.
const WAL_CHECKPOINT_EVERY: u64 = 2000;

/// A committed batch whose outputs wait for durability.
struct InFlight {
    /// Resolves when the log has fsynced the batch; `None` if there was
    /// nothing to make durable (or it already is).
    ack: Option<oneshot::Receiver<Result<(), LogError>>>,
    pending: Pending,
    committed_at: Instant,
    events: usize,
    wrote: bool,
}

/// What happened to a batch.
enum BatchEnd {
    /// Committed; outputs wait in the FIFO.
    Committed(InFlight),
    /// Commit failed or a handler panicked: outputs already became errors
    /// and the object must restart from storage.
    Broken,
}

fn release(inflight: InFlight, runtime: &Runtime) {
    let metrics = &runtime.0.metrics;
    if inflight.wrote {
        metrics
            .commit_latency
            .observe(inflight.committed_at.elapsed());
        metrics
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics
            .committed_events
            .fetch_add(inflight.events as u64, std::sync::atomic::Ordering::Relaxed);
    }
    for (reply, result) in inflight.pending {
        let _ = reply.send(result);
    }
}

fn fail_inflight(inflight: InFlight, e: &ErrorDetail) {
    for (reply, _) in inflight.pending {
        let _ = reply.send(Err(e.clone()));
    }
}

struct Live<T> {
    object: T,
    ctx: Ctx,
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
    let max_batch = runtime.0.config.max_batch.max(1);
    let mut live: Option<Live<T>> = None;
    let (done_tx, done_rx) = watch::channel(());
    let mut draining = false;
    let mut batch: Vec<Command> = Vec::with_capacity(max_batch);
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut batches_since_checkpoint: u64 = 0;

    loop {
        // Release the oldest in-flight batch as soon as it is durable, while
        // still accepting new commands (bounded by MAX_IN_FLIGHT).
        let accepting = inflight.len() < MAX_IN_FLIGHT;
        if inflight.front().is_some_and(|f| f.ack.is_none()) {
            if let Some(done) = inflight.pop_front() {
                release(done, &runtime);
            }
            continue;
        }
        let first = if let Some(ack) = inflight.front_mut().and_then(|f| f.ack.as_mut()) {
            tokio::select! {
                biased;
                result = ack => {
                    let result = result.unwrap_or(Err(LogError::Closed));
                    let Some(done) = inflight.pop_front() else { continue };
                    match result {
                        Ok(()) => release(done, &runtime),
                        Err(e) => {
                            metrics.error("log_failed");
                            tracing::error!(error = %e, "batch could not be made durable");
                            let err = error(ErrorCode::ObjectBroken, format!("batch could not be made durable: {e}; the object restarts from storage"));
                            fail_inflight(done, &err);
                            for later in inflight.drain(..) {
                                fail_inflight(later, &err);
                            }
                            live = None;
                        }
                    }
                    continue;
                }
                cmd = rx.recv(), if accepting => cmd,
            }
        } else if draining {
            rx.recv().await
        } else {
            match tokio::time::timeout(idle, rx.recv()).await {
                Ok(cmd) => cmd,
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
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        if live.is_none() {
            match start::<T>(&key, &runtime) {
                Ok(l) => live = Some(l),
                Err(e) => {
                    metrics.error("constructor_failed");
                    tracing::error!(error = %e.message, "object failed to start");
                    for cmd in batch.drain(..) {
                        cmd.fail(e.clone());
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
        match run_batch(l, &runtime, &mut batch).await {
            BatchEnd::Committed(f) => {
                if f.wrote {
                    batches_since_checkpoint += 1;
                }
                inflight.push_back(f);
            }
            BatchEnd::Broken => {
                tracing::warn!("object broken; restarting from storage");
                live = None;
            }
        }
        if batches_since_checkpoint >= WAL_CHECKPOINT_EVERY {
            batches_since_checkpoint = 0;
            if let Some(l) = live.as_ref() {
                if let Err(e) = crate::sys::blocking(|| l.ctx.storage.checkpoint_wal()) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        }
    }
    // Closing the connection checkpoints the WAL (fsyncs): keep it off the
    // async worker.
    crate::sys::blocking(|| drop(live));
    runtime.0.catalog.touch(key.id, crate::catalog::now_ms());
    runtime.remove_stopped(key.id, generation);
    metrics
        .live_objects
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    drop(done_tx);
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
    let mut storage = Storage::open(&path, config.storage.clone()).map_err(broken)?;
    if created {
        runtime.0.catalog.register(key, crate::catalog::now_ms());
    }
    storage.begin_batch().map_err(broken)?;
    let mut ctx = Ctx {
        key: key.clone(),
        storage,
        runtime: runtime.clone(),
    };
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
    // in the object's own file rather than through the log.
    let commit = ctx
        .storage
        .commit(false)
        .and_then(|()| ctx.storage.sync_files());
    if let Err(e) = commit {
        ctx.storage.rollback();
        return Err(broken(e));
    }
    Ok(Live { object, ctx })
}

async fn run_batch<T: DurableObject>(
    l: &mut Live<T>,
    runtime: &Runtime,
    batch: &mut Vec<Command>,
) -> BatchEnd {
    let metrics = &runtime.0.metrics;
    let n = batch.len();
    metrics
        .events
        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    let mut pending: Pending = Vec::with_capacity(n);
    let fail_all = |pending: Pending, batch: &mut Vec<Command>, e: ErrorDetail| {
        for (reply, _) in pending {
            let _ = reply.send(Err(e.clone()));
        }
        for cmd in batch.drain(..) {
            cmd.fail(e.clone());
        }
    };
    let broken = |what: &str, e: &dyn std::fmt::Display| {
        error(
            ErrorCode::ObjectBroken,
            format!("{what}: {e}; the object restarts from storage"),
        )
    };

    if let Err(e) = l.ctx.storage.begin_batch() {
        fail_all(pending, batch, broken("cannot begin transaction", &e));
        return BatchEnd::Broken;
    }
    let mut panicked = false;
    for cmd in batch.drain(..) {
        match cmd {
            Command::Call {
                method,
                args,
                read_only,
                reply,
            } => {
                let prepared = l
                    .ctx
                    .storage
                    .begin_event()
                    .and_then(|()| l.ctx.storage.set_read_only(read_only));
                if let Err(e) = prepared {
                    pending.push((reply, Err(broken("cannot start event", &e))));
                    panicked = true;
                    break;
                }
                let outcome = AssertUnwindSafe(l.object.call(&mut l.ctx, &method, args))
                    .catch_unwind()
                    .await;
                let (keep, result) = match outcome {
                    Ok(Ok(v)) => (true, Ok(v)),
                    Ok(Err(e)) => {
                        metrics.error("handler_error");
                        (false, Err(e.detail()))
                    }
                    Err(_) => {
                        tracing::error!(method = %method, "handler panicked");
                        panicked = true;
                        (
                            false,
                            Err(error(ErrorCode::Internal, "the handler panicked")),
                        )
                    }
                };
                if let Err(e) = l.ctx.storage.end_event(keep) {
                    pending.push((reply, Err(broken("cannot end event", &e))));
                    panicked = true;
                    break;
                }
                pending.push((reply, result));
            }
        }
    }
    if panicked {
        // Undo the whole batch: its in-memory state cannot be trusted.
        l.ctx.storage.rollback();
        let e = error(
            ErrorCode::ObjectBroken,
            "an event in this batch failed; nothing was saved",
        );
        for (reply, result) in pending {
            let _ = reply.send(result.and(Err(e.clone())));
        }
        fail_all(Vec::new(), batch, e);
        return BatchEnd::Broken;
    }

    let changes = match l.ctx.storage.finish_batch() {
        Ok(c) => c,
        Err(e) => {
            l.ctx.storage.rollback();
            metrics.error("commit_failed");
            fail_all(pending, batch, broken("cannot finish batch", &e));
            return BatchEnd::Broken;
        }
    };
    let injected = runtime
        .0
        .config
        .fault
        .as_ref()
        .is_some_and(|hook| hook(&l.ctx.key.class, &l.ctx.key.name));
    let committed = if injected {
        Err(StorageError::Injected(
            "commit failure injected by test hook".into(),
        ))
    } else {
        l.ctx.storage.commit(changes.is_some())
    };
    if let Err(e) = committed {
        l.ctx.storage.rollback();
        metrics.error("commit_failed");
        tracing::error!(error = %e, "commit failed");
        fail_all(pending, batch, broken("commit failed", &e));
        return BatchEnd::Broken;
    }
    let committed_at = Instant::now();
    let wrote = changes.is_some();
    let ack = match changes {
        None => None,
        Some(changes) if changes.needs_file_sync() => {
            let storage = &l.ctx.storage;
            if let Err(e) = crate::sys::blocking(|| storage.sync_files()) {
                metrics.error("log_failed");
                tracing::error!(error = %e, "batch could not be made durable");
                fail_all(
                    pending,
                    batch,
                    broken("batch could not be made durable", &e),
                );
                return BatchEnd::Broken;
            }
            None
        }
        Some(changes) => {
            let submitted = runtime.0.log.submit(Record {
                class: l.ctx.key.class.clone(),
                id: l.ctx.key.id,
                seq: l.ctx.storage.commit_seq(),
                changeset: changes.changeset,
            });
            match submitted {
                Ok(ack) => Some(ack),
                Err(e) => {
                    metrics.error("log_failed");
                    tracing::error!(error = %e, "batch could not be made durable");
                    fail_all(
                        pending,
                        batch,
                        broken("batch could not be made durable", &e),
                    );
                    return BatchEnd::Broken;
                }
            }
        }
    };
    BatchEnd::Committed(InFlight {
        ack,
        pending,
        committed_at,
        events: n,
        wrote,
    })
}
