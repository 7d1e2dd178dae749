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
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::alarms::AlarmInfo;
use super::output::{self, Admission, AlarmUpdate, Output};
use super::{error, Command, Runtime};
use crate::commitlog::record::Record;
use crate::commitlog::LogError;
use crate::ctx::Ctx;
use crate::id::{object_path, ObjectId, ObjectKey};
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

struct Live<T> {
    object: T,
    ctx: Ctx,
}

/// Most batches an object may have committed but not yet durable.
const MAX_IN_FLIGHT: usize = 4;
/// Look at the WAL's size after this many committed batches...
const WAL_CHECK_EVERY: u64 = 64;
/// ...and checkpoint it beyond this size (and when evicting beyond `WAL_KEEP_BYTES`).
const WAL_CHECKPOINT_BYTES: u64 = 1024 * 1024;
const WAL_KEEP_BYTES: u64 = 1024 * 1024;

/// A committed batch whose outputs wait for durability.
struct InFlight {
    /// Resolves when the log has fsynced the batch; `None` if there was
    /// nothing to make durable (or it already is).
    ack: Option<oneshot::Receiver<Result<(), LogError>>>,
    outputs: Vec<Output>,
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

fn release(inflight: InFlight, runtime: &Runtime, object: ObjectId) {
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
    output::release(runtime, object, inflight.outputs);
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
    let mut stashed_delete: Option<oneshot::Sender<Result<(), ErrorDetail>>> = None;

    loop {
        // Release the oldest in-flight batch as soon as it is durable, while
        // still accepting new commands (bounded by MAX_IN_FLIGHT).
        let accepting = inflight.len() < MAX_IN_FLIGHT;
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
        // A deletion runs alone, after everything before it.
        let mut deletion = None;
        if let Command::Delete { reply } = first {
            deletion = Some(reply);
        } else {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(Command::Delete { reply }) => {
                        deletion = Some(reply);
                        break;
                    }
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            if let Some(reply) = deletion.take() {
                // Let every earlier batch reach its clients first.
                while let Some(mut f) = inflight.pop_front() {
                    let result = match f.ack.take() {
                        Some(ack) => ack.await.unwrap_or(Err(LogError::Closed)),
                        None => Ok(()),
                    };
                    match result {
                        Ok(()) => release(f, &runtime, key.id),
                        Err(e) => {
                            let err = error(
                                ErrorCode::ObjectBroken,
                                format!("batch could not be made durable: {e}"),
                            );
                            output::fail(&runtime, key.id, f.outputs, &err);
                        }
                    }
                }
                crate::sys::blocking(|| drop(live.take()));
                let _ = reply.send(delete_object(&runtime, &key));
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
        // A deletion found behind this batch runs next, before any new command.
        stashed_delete = deletion.take();
        if batches_since_checkpoint >= WAL_CHECK_EVERY {
            batches_since_checkpoint = 0;
            if let Some(l) = live
                .as_ref()
                .filter(|l| l.ctx.storage.wal_bytes() > WAL_CHECKPOINT_BYTES)
            {
                if let Err(e) = crate::sys::blocking(|| l.ctx.storage.checkpoint_wal()) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        }
    }
    // Closing leaves the WAL in place (no fsync); a large one is folded into
    // the database first. Either way, keep the file work off the async worker.
    crate::sys::blocking(|| {
        if let Some(l) = live
            .as_ref()
            .filter(|l| l.ctx.storage.wal_bytes() > WAL_KEEP_BYTES)
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
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    runtime.0.alarms.unschedule(key.id);
    runtime.0.alarms.reindex_lazily(runtime, key, None);
    runtime.0.catalog.forget(key.id);
    tracing::info!(class = %key.class, id = %key.id, "object deleted");
    Ok(())
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

/// Runs one event inside its savepoint; returns whether to keep its writes,
/// and pushes its outputs (kept only if the event succeeded).
async fn run_event<T: DurableObject>(
    l: &mut Live<T>,
    runtime: &Runtime,
    cmd: Command,
    outputs: &mut Vec<Output>,
) -> Result<(), EventFailure> {
    if let Command::Alarm { retry } = cmd {
        return run_alarm(l, runtime, retry, outputs).await;
    }
    let metrics = &runtime.0.metrics;
    let limits = &runtime.0.config.sockets;
    let read_only = match &cmd {
        Command::Call { read_only, .. } => *read_only,
        Command::Connect { socket, .. } | Command::Message { socket, .. } => {
            l.ctx.socket_read_only(*socket)
        }
        Command::Fetch { request, .. } => request.read_only,
        Command::Inspect { .. } => true,
        Command::Closed { .. } | Command::Alarm { .. } | Command::Delete { .. } => false,
    };
    let prepared = l
        .ctx
        .storage
        .begin_event()
        .and_then(|()| l.ctx.storage.set_read_only(read_only));
    if let Err(e) = prepared {
        // Put the command's own answer on the failure path.
        let mut own = Vec::new();
        push_failure(cmd, &mut own);
        return Err(EventFailure::Broken(e.to_string(), own));
    }
    l.ctx.outputs.clear();
    // Each arm: run the handler, catching panics; decide the command's own output.
    let (ok, own, panicked): (bool, Option<Output>, bool) = match cmd {
        Command::Call {
            method,
            args,
            from,
            reply,
            ..
        } => {
            l.ctx.caller = from;
            let outcome = AssertUnwindSafe(l.object.call(&mut l.ctx, &method, args))
                .catch_unwind()
                .await;
            l.ctx.caller = None;
            match outcome {
                Ok(Ok(v)) => (true, Some(Output::Reply(reply, Ok(v))), false),
                Ok(Err(e)) => {
                    metrics.error("handler_error");
                    let fatal = e.is_fatal();
                    (false, Some(Output::Reply(reply, Err(e.detail()))), fatal)
                }
                Err(_) => {
                    tracing::error!(method = %method, "handler panicked");
                    let e = error(ErrorCode::Internal, "the handler panicked");
                    (false, Some(Output::Reply(reply, Err(e))), true)
                }
            }
        }
        Command::Connect {
            socket,
            request,
            reply,
        } => {
            let outcome = AssertUnwindSafe(l.object.on_connect(&mut l.ctx, socket, &request))
                .catch_unwind()
                .await;
            match outcome {
                Ok(Ok(Admission::Accept { tags })) => {
                    if tags.len() > limits.max_tags
                        || tags.iter().any(|t| t.len() > limits.max_tag_bytes)
                    {
                        let reason = format!(
                            "on_connect returned invalid tags (at most {} tags of at most {} bytes)",
                            limits.max_tags, limits.max_tag_bytes
                        );
                        tracing::warn!(%socket, "on_connect returned invalid tags");
                        (
                            false,
                            Some(Output::Admission(
                                reply,
                                Admission::Reject { code: 1011, reason },
                            )),
                            false,
                        )
                    } else {
                        l.ctx.accept_socket(socket, tags.clone());
                        (
                            true,
                            Some(Output::Admission(reply, Admission::Accept { tags })),
                            false,
                        )
                    }
                }
                Ok(Ok(reject @ Admission::Reject { .. })) => {
                    (true, Some(Output::Admission(reply, reject)), false)
                }
                Ok(Err(e)) => {
                    metrics.error("handler_error");
                    let fatal = e.is_fatal();
                    let reject = Admission::Reject {
                        code: 1011,
                        reason: e.to_string(),
                    };
                    (false, Some(Output::Admission(reply, reject)), fatal)
                }
                Err(_) => {
                    tracing::error!(%socket, "on_connect panicked");
                    let reject = Admission::Reject {
                        code: 1011,
                        reason: "on_connect panicked".into(),
                    };
                    (false, Some(Output::Admission(reply, reject)), true)
                }
            }
        }
        Command::Message { socket, msg } => {
            l.ctx.caller = Some(socket);
            let outcome = AssertUnwindSafe(l.object.on_message(&mut l.ctx, socket, msg))
                .catch_unwind()
                .await;
            l.ctx.caller = None;
            match outcome {
                Ok(Ok(())) => (true, None, false),
                Ok(Err(e)) => {
                    metrics.error("handler_error");
                    tracing::debug!(%socket, error = %e, "on_message failed");
                    let frame = roost_protocol::ServerFrame::event(
                        "error",
                        serde_json::to_value(e.detail()).unwrap_or_default(),
                    );
                    (
                        false,
                        Some(Output::Send(
                            socket,
                            axum::extract::ws::Message::Text(frame.encode().into()),
                        )),
                        e.is_fatal(),
                    )
                }
                Err(_) => {
                    tracing::error!(%socket, "on_message panicked");
                    (false, None, true)
                }
            }
        }
        Command::Alarm { .. } | Command::Delete { .. } => return Ok(()),
        Command::Inspect { sql, reply } => {
            let result = crate::storage::inspect::query(&l.ctx.storage, &sql);
            (false, Some(Output::Reply(reply, result)), false)
        }
        Command::Fetch { request, reply } => {
            let outcome = AssertUnwindSafe(l.object.fetch(&mut l.ctx, request))
                .catch_unwind()
                .await;
            match outcome {
                Ok(Ok(resp)) => {
                    let ok = resp.status < 400;
                    (ok, Some(Output::Fetch(reply, Ok(resp))), false)
                }
                Ok(Err(e)) => {
                    metrics.error("handler_error");
                    let fatal = e.is_fatal();
                    (false, Some(Output::Fetch(reply, Err(e.detail()))), fatal)
                }
                Err(_) => {
                    tracing::error!("fetch panicked");
                    let e = error(ErrorCode::Internal, "the handler panicked");
                    (false, Some(Output::Fetch(reply, Err(e))), true)
                }
            }
        }
        Command::Closed {
            socket,
            code,
            reason,
        } => {
            let outcome = AssertUnwindSafe(l.object.on_close(&mut l.ctx, socket, code, &reason))
                .catch_unwind()
                .await;
            runtime.0.sockets.remove(&l.ctx.key.id, socket);
            match outcome {
                Ok(Ok(())) => (true, None, false),
                Ok(Err(e)) => {
                    metrics.error("handler_error");
                    tracing::debug!(%socket, error = %e, "on_close failed");
                    (false, None, e.is_fatal())
                }
                Err(_) => (false, None, true),
            }
        }
    };
    let produced = std::mem::take(&mut l.ctx.outputs);
    if ok {
        outputs.extend(produced);
    }
    if let Some(own) = own {
        outputs.push(own);
    }
    if let Err(e) = l.ctx.storage.end_event(ok) {
        return Err(EventFailure::Broken(e.to_string(), Vec::new()));
    }
    if panicked {
        return Err(EventFailure::Panicked);
    }
    Ok(())
}

enum EventFailure {
    /// Storage could not open or close the event's savepoint.
    Broken(String, Vec<Output>),
    /// A handler panicked; the object's memory cannot be trusted.
    Panicked,
}

/// The output a command owes its caller, for commands failed before running.
fn push_failure(cmd: Command, outputs: &mut Vec<Output>) {
    match cmd {
        Command::Call { reply, .. } => outputs.push(Output::Reply(
            reply,
            Err(error(ErrorCode::ObjectBroken, "not run")),
        )),
        Command::Connect { reply, .. } => outputs.push(Output::Admission(
            reply,
            Admission::Reject {
                code: 1011,
                reason: "object broken".into(),
            },
        )),
        Command::Message { .. } => {}
        Command::Closed { socket, .. } => outputs.push(Output::Forget(socket)),
        Command::Fetch { reply, .. } => outputs.push(Output::Fetch(
            reply,
            Err(error(ErrorCode::ObjectBroken, "not run")),
        )),
        Command::Inspect { reply, .. } => outputs.push(Output::Reply(
            reply,
            Err(error(ErrorCode::ObjectBroken, "not run")),
        )),
        Command::Alarm { .. } => {}
        Command::Delete { reply } => {
            let _ = reply.send(Err(error(ErrorCode::ObjectBroken, "not run")));
        }
    }
}

/// Delivers a due alarm: checks the object's own alarm row (the index may be
/// early or stale), runs the handler, and consumes the alarm only on success.
async fn run_alarm<T: DurableObject>(
    l: &mut Live<T>,
    runtime: &Runtime,
    retry: u32,
    outputs: &mut Vec<Output>,
) -> Result<(), EventFailure> {
    let storage_err =
        |e: crate::storage::StorageError| EventFailure::Broken(e.to_string(), Vec::new());
    let key = l.ctx.key.clone();
    let update = |next: Option<i64>, retry: u32, reindex: bool, attempt: Option<u32>| {
        Output::Alarm(AlarmUpdate {
            key: key.clone(),
            next,
            retry,
            reindex,
            attempt,
        })
    };
    let now = runtime.0.clock.now_ms();
    let stored = l.ctx.storage.alarm().map_err(storage_err)?;
    let at = match stored {
        None => {
            outputs.push(update(None, 0, true, None));
            return Ok(());
        }
        Some(at) if at > now => {
            outputs.push(update(Some(at), 0, true, None));
            return Ok(());
        }
        Some(at) => at,
    };
    let config = &runtime.0.alarms.config;
    l.ctx.storage.begin_event().map_err(storage_err)?;
    l.ctx.outputs.clear();
    if retry == 0 {
        runtime
            .0
            .metrics
            .alarm_lateness
            .observe(std::time::Duration::from_millis(
                now.saturating_sub(at).max(0) as u64,
            ));
    }
    let info = AlarmInfo {
        retry_count: retry,
        is_retry: retry > 0,
        scheduled_ms: at,
    };
    let outcome = AssertUnwindSafe(l.object.alarm(&mut l.ctx, info))
        .catch_unwind()
        .await;
    let produced = std::mem::take(&mut l.ctx.outputs);
    match outcome {
        Ok(Ok(())) => {
            // Consume the alarm unless the handler set a new one.
            let consumed = (|| {
                if l.ctx.storage.alarm()? == Some(at) {
                    l.ctx.storage.delete_alarm()?;
                }
                l.ctx.storage.alarm()
            })();
            let next = match consumed {
                Ok(next) => next,
                Err(e) => {
                    let _ = l.ctx.storage.end_event(false);
                    return Err(storage_err(e));
                }
            };
            l.ctx.storage.end_event(true).map_err(storage_err)?;
            runtime
                .0
                .metrics
                .alarms_fired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            outputs.extend(produced);
            outputs.push(update(next, 0, true, Some(retry)));
            Ok(())
        }
        Ok(Err(_)) | Err(_) => {
            let panicked = outcome.is_err();
            if let Ok(Err(e)) = &outcome {
                tracing::warn!(error = %e, retry, "alarm handler failed");
            } else {
                tracing::error!(retry, "alarm handler panicked");
            }
            runtime.0.metrics.error("alarm_failed");
            l.ctx.storage.end_event(false).map_err(storage_err)?;
            if retry >= config.max_retries {
                tracing::error!(retries = retry, "alarm dropped after its last retry");
                l.ctx.storage.begin_event().map_err(storage_err)?;
                let deleted = l.ctx.storage.delete_alarm();
                l.ctx
                    .storage
                    .end_event(deleted.is_ok())
                    .map_err(storage_err)?;
                deleted.map_err(storage_err)?;
                outputs.push(update(None, 0, true, None));
            } else {
                let next = now + config.backoff(retry + 1).as_millis() as i64;
                outputs.push(update(Some(next), retry + 1, false, Some(retry)));
            }
            if panicked {
                return Err(EventFailure::Panicked);
            }
            Ok(())
        }
    }
}

async fn run_batch<T: DurableObject>(
    l: &mut Live<T>,
    runtime: &Runtime,
    batch: &mut Vec<Command>,
) -> BatchEnd {
    let metrics = &runtime.0.metrics;
    let object = l.ctx.key.id;
    let key = l.ctx.key.clone();
    let n = batch.len();
    metrics
        .events
        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    let mut outputs: Vec<Output> = Vec::with_capacity(n);
    let fail_all = |outputs: Vec<Output>, batch: &mut Vec<Command>, e: ErrorDetail| {
        output::fail(runtime, object, outputs, &e);
        for cmd in batch.drain(..) {
            cmd.fail(runtime, &key, e.clone());
        }
    };
    let broken = |what: &str, e: &dyn std::fmt::Display| {
        error(
            ErrorCode::ObjectBroken,
            format!("{what}: {e}; the object restarts from storage"),
        )
    };

    if let Err(e) = l.ctx.storage.begin_batch() {
        fail_all(outputs, batch, broken("cannot begin transaction", &e));
        return BatchEnd::Broken;
    }
    let mut failure = None;
    let mut cmds = std::mem::take(batch).into_iter();
    while let Some(cmd) = cmds.next() {
        if let Err(f) = run_event(l, runtime, cmd, &mut outputs).await {
            failure = Some(f);
            batch.extend(cmds);
            break;
        }
    }
    if let Some(f) = failure {
        // Undo the whole batch: its in-memory state cannot be trusted.
        l.ctx.storage.rollback();
        let e = match f {
            EventFailure::Broken(msg, own) => {
                outputs.extend(own);
                broken("storage failed during an event", &msg)
            }
            EventFailure::Panicked => error(
                ErrorCode::ObjectBroken,
                "an event in this batch panicked; nothing was saved",
            ),
        };
        fail_all(outputs, batch, e);
        return BatchEnd::Broken;
    }

    let changes = match l.ctx.storage.finish_batch() {
        Ok(c) => c,
        Err(e) => {
            l.ctx.storage.rollback();
            metrics.error("commit_failed");
            fail_all(outputs, batch, broken("cannot finish batch", &e));
            return BatchEnd::Broken;
        }
    };
    // An alarm set in this batch must be in the durable index before the
    // batch commits (the index may be early, never late or missing).
    if std::mem::take(&mut l.ctx.alarm_touched) {
        let next = match l.ctx.storage.alarm() {
            Ok(next) => next,
            Err(e) => {
                l.ctx.storage.rollback();
                fail_all(outputs, batch, broken("cannot read the alarm", &e));
                return BatchEnd::Broken;
            }
        };
        if let Some(at) = next {
            if let Err(e) = runtime.0.alarms.ensure_indexed(runtime, &key, at).await {
                l.ctx.storage.rollback();
                fail_all(outputs, batch, broken("cannot index the alarm", &e));
                return BatchEnd::Broken;
            }
        }
        outputs.push(Output::Alarm(AlarmUpdate {
            key: key.clone(),
            next,
            retry: 0,
            reindex: false,
            attempt: None,
        }));
    }
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
        fail_all(outputs, batch, broken("commit failed", &e));
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
                    outputs,
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
                        outputs,
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
        outputs,
        committed_at,
        events: n,
        wrote,
    })
}
