//! The events of one batch: each runs in its own savepoint (an event that
//! fails has its writes rolled back alone); alarms check the object's own
//! alarm row before their handler runs. The actor (`actor.rs`) owns the loop,
//! the pipeline of in-flight batches and the output gate.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;
use roost_protocol::{ErrorCode, ErrorDetail};

use super::actor::{BatchEnd, InFlight, Live};
use super::alarms::AlarmInfo;
use super::output::{self, Admission, AlarmUpdate, Output};
use super::{error, Command, Runtime};
use crate::commitlog::record::Record;
use crate::metrics::Metrics;
use crate::object::{DurableObject, ObjectError};
use crate::storage::StorageError;

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
        Command::Closed { .. }
        | Command::Alarm { .. }
        | Command::Delete { .. }
        | Command::Flush { .. } => false,
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
            let (result, fatal) = settle(outcome, metrics, &method);
            (result.is_ok(), Some(Output::Reply(reply, result)), fatal)
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
            // First, so that every failure path from here on finds it.
            outputs.push(Output::Received(socket));
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
        // Alarms ran above; the actor's loop takes deletions and flushes.
        Command::Alarm { .. } | Command::Delete { .. } | Command::Flush { .. } => return Ok(()),
        Command::Fetch { request, reply } => {
            let outcome = AssertUnwindSafe(l.object.fetch(&mut l.ctx, request))
                .catch_unwind()
                .await;
            let (result, fatal) = settle(outcome, metrics, "fetch");
            let ok = result.as_ref().is_ok_and(|resp| resp.status < 400);
            (ok, Some(Output::Fetch(reply, result)), fatal)
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
    if let Err(e) = l.ctx.storage.end_event(ok) {
        // A failed event whose error took SQLite's whole transaction with
        // it (SQLITE_FULL may): the event keeps its own error (413, 507),
        // the rest of the batch is undone.
        return Err(match own {
            Some(own) if !ok => EventFailure::Undone(e.to_string(), own),
            own => {
                outputs.extend(own);
                EventFailure::Broken(e.to_string(), Vec::new())
            }
        });
    }
    if let Some(own) = own {
        outputs.push(own);
    }
    if panicked {
        return Err(EventFailure::Panicked);
    }
    Ok(())
}

/// A `call` or `fetch` handler's outcome as the caller's answer, and
/// whether the object must restart (a panic, or a fatal error). Errors are
/// counted; panics are logged with `what` (the method, or "fetch").
fn settle<T>(
    outcome: std::thread::Result<Result<T, ObjectError>>,
    metrics: &Metrics,
    what: &str,
) -> (Result<T, ErrorDetail>, bool) {
    match outcome {
        Ok(Ok(v)) => (Ok(v), false),
        Ok(Err(e)) => {
            metrics.error("handler_error");
            (Err(e.detail()), e.is_fatal())
        }
        Err(_) => {
            tracing::error!(what, "handler panicked");
            (
                Err(error(ErrorCode::Internal, "the handler panicked")),
                true,
            )
        }
    }
}

enum EventFailure {
    /// Storage could not open or close the event's savepoint.
    Broken(String, Vec<Output>),
    /// A failed event's error undid the whole transaction; its own answer
    /// (that error) stands.
    Undone(String, Output),
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
        Command::Message { socket, .. } => outputs.push(Output::Received(socket)),
        Command::Closed { socket, .. } => outputs.push(Output::Forget(socket)),
        Command::Fetch { reply, .. } => outputs.push(Output::Fetch(
            reply,
            Err(error(ErrorCode::ObjectBroken, "not run")),
        )),
        Command::Flush { reply } => outputs.push(Output::Reply(
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

pub(super) async fn run_batch<T: DurableObject>(
    l: &mut Live<T>,
    runtime: &Runtime,
    batch: &mut Vec<Command>,
    by_log: bool,
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
    // Gives up on the batch (its storage already rolled back): counts the
    // failure as `kind` and logs it, if it is one to count, then fails every
    // output and every command not run.
    let give_up = |outputs: Vec<Output>,
                   batch: &mut Vec<Command>,
                   kind: Option<&str>,
                   what: &str,
                   e: &dyn std::fmt::Display| {
        if let Some(kind) = kind {
            metrics.error(kind);
            tracing::error!(error = %e, "{what}");
        }
        fail_all(outputs, batch, broken(what, e));
        BatchEnd::Broken
    };

    if let Err(e) = l.ctx.storage.begin_batch() {
        return give_up(outputs, batch, None, "cannot begin transaction", &e);
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
            EventFailure::Undone(msg, own) => {
                output::release(runtime, object, vec![own]);
                broken("another event's storage error undid this batch", &msg)
            }
            EventFailure::Panicked => error(
                ErrorCode::ObjectBroken,
                "an event in this batch panicked; nothing was saved",
            ),
        };
        fail_all(outputs, batch, e);
        return BatchEnd::Broken;
    }
    // The object's own end of the batch, outside every event's savepoint.
    l.ctx.outputs.clear();
    let ctx = &mut l.ctx;
    let object_hook = &mut l.object;
    match std::panic::catch_unwind(AssertUnwindSafe(|| object_hook.before_commit(ctx))) {
        Ok(Ok(())) => outputs.append(&mut l.ctx.outputs),
        outcome => {
            l.ctx.storage.rollback();
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "it panicked".to_owned(),
            };
            let what = "the batch's before_commit failed";
            return give_up(outputs, batch, Some("handler_error"), what, &why);
        }
    }

    let changes = match l.ctx.storage.finish_batch() {
        Ok(c) => c,
        Err(e) => {
            l.ctx.storage.rollback();
            return give_up(
                outputs,
                batch,
                Some("commit_failed"),
                "cannot finish batch",
                &e,
            );
        }
    };
    // An alarm set in this batch must be in the durable index before the
    // batch commits (the index may be early, never late or missing).
    if std::mem::take(&mut l.ctx.alarm_touched) {
        let next = match l.ctx.storage.alarm() {
            Ok(next) => next,
            Err(e) => {
                l.ctx.storage.rollback();
                return give_up(outputs, batch, None, "cannot read the alarm", &e);
            }
        };
        if let Some(at) = next {
            if let Err(e) = runtime.0.alarms.ensure_indexed(runtime, &key, at).await {
                l.ctx.storage.rollback();
                return give_up(outputs, batch, None, "cannot index the alarm", &e);
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
        // The batch stays in the open transaction; the actor commits that
        // to the file later (`flush`), or now with no commit interval.
        if runtime.0.config.file_commit_interval.is_zero() {
            l.ctx.storage.commit(changes.is_some())
        } else {
            l.ctx.storage.end_batch(changes.is_some())
        }
    };
    if let Err(e) = committed {
        l.ctx.storage.rollback();
        return give_up(outputs, batch, Some("commit_failed"), "commit failed", &e);
    }
    let committed_at = Instant::now();
    let wrote = changes.is_some();
    let ack = match changes {
        None => None,
        Some(changes)
            if changes.needs_file_sync()
                || runtime.0.config.durability == crate::config::Durability::File =>
        {
            let storage = &mut l.ctx.storage;
            if let Err(e) = crate::sys::blocking(|| storage.sync_files()) {
                let what = "batch could not be made durable";
                return give_up(outputs, batch, Some("log_failed"), what, &e);
            }
            None
        }
        Some(changes) => {
            let record = Record {
                class: l.ctx.key.class.clone(),
                id: l.ctx.key.id,
                seq: l.ctx.storage.commit_seq(),
                changeset: changes.changeset,
            };
            let submitted = if by_log {
                // Released by the log's writer the moment the batch is
                // durable (or failed there): the object's task need not be
                // scheduled first.
                let outputs = std::mem::take(&mut outputs);
                let rt = runtime.clone();
                runtime.0.log.submit_then(
                    record,
                    Box::new(move |result| match result {
                        Ok(()) => {
                            super::actor::count_durable(&rt, committed_at, n);
                            output::release(&rt, object, outputs);
                        }
                        Err(e) => {
                            let err = error(
                                ErrorCode::ObjectBroken,
                                format!("batch could not be made durable: {e}; the object restarts from storage"),
                            );
                            output::fail(&rt, object, outputs, &err);
                        }
                    }),
                )
            } else {
                runtime.0.log.submit(record)
            };
            match submitted {
                Ok(ack) => Some(ack),
                Err(e) => {
                    let what = "batch could not be made durable";
                    return give_up(outputs, batch, Some("log_failed"), what, &e);
                }
            }
        }
    };
    BatchEnd::Committed(InFlight {
        by_log: by_log && ack.is_some(),
        ack,
        outputs,
        committed_at,
        events: n,
        wrote,
    })
}
