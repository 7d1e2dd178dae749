//! The events of a batch: one handler per command that runs inside a batch
//! (`Call`, `Connect`, `Message`, `Closed`, `Fetch`; `Alarm` in
//! [`alarm_event`](super::alarm_event)). `Flush` and `Delete` never reach a
//! batch: the actor takes them first.
//!
//! Architecture Invariant (bad input changes nothing): each event runs in
//! its own savepoint, opened by `Event::begin`; an event that fails has its
//! writes rolled back alone and its outputs dropped, except its own answer
//! (the error). A handler that panics or returns a fatal error fails the
//! whole batch (`EventFailure::Panicked`): the object's memory cannot be
//! trusted, and it restarts from storage.
//!
//! Every handler ends the same way ([`Event::finish`]): the outputs the
//! handler produced (kept only if it succeeded), the savepoint released or
//! rolled back, then the command's own answer. A handler whose savepoint
//! cannot open puts the answer it owes on the failure path instead, so the
//! batch's failure turns it into an error.

use std::sync::Arc;

use crate::auth::Identity;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use roost_protocol::{ErrorCode, ErrorDetail};

use super::output::{Admission, ConnectRequest, Output, Reply};
use super::state::Live;
use super::{error, Call, Command, Runtime};
use crate::metrics::Metrics;
use crate::object::{DurableObject, FetchRequest, FetchResponse, ObjectError};
use crate::sockets::{SocketId, SocketMessage};
use crate::storage::StorageError;

/// Why an event failed its whole batch.
pub(super) enum EventFailure {
    /// Storage could not open or close the event's savepoint; the outputs
    /// are the command's own answer, to fail with the batch.
    Broken(String, Vec<Output>),
    /// A failed event's error undid the whole transaction; its own answer
    /// (that error) stands.
    Undone(String, Output),
    /// A handler panicked (or returned a fatal error); the object's memory
    /// cannot be trusted.
    Panicked,
}

/// Runs one event inside its savepoint and pushes its outputs (kept only if
/// the event succeeded).
pub(super) async fn run_event<T: DurableObject>(
    l: &mut Live<T>,
    runtime: &Runtime,
    cmd: Command,
    outputs: &mut Vec<Output>,
) -> Result<(), EventFailure> {
    let event = Event {
        l,
        runtime,
        outputs,
    };
    match cmd {
        Command::Call(call) => {
            let Call {
                method,
                args,
                read_only,
                from,
                identity,
                reply,
            } = *call;
            event
                .call(method, args, read_only, (from, identity), reply)
                .await
        }
        Command::Connect {
            socket,
            request,
            reply,
        } => event.connect(socket, *request, reply).await,
        Command::Message { socket, msg } => event.message(socket, msg).await,
        Command::Closed {
            socket,
            code,
            reason,
        } => event.closed(socket, code, reason).await,
        Command::Fetch { request, reply } => event.fetch(*request, reply).await,
        Command::Alarm { retry } => event.alarm(retry).await,
        // The actor takes these before a batch forms (`Actor::gather`).
        Command::Delete { .. } | Command::Flush { .. } => Ok(()),
    }
}

/// One event as it runs: the loaded object, the runtime, and the outputs
/// of its batch so far.
pub(super) struct Event<'a, T> {
    pub(super) l: &'a mut Live<T>,
    pub(super) runtime: &'a Runtime,
    pub(super) outputs: &'a mut Vec<Output>,
}

/// How a handler ended.
struct Ended {
    /// Keep the event's writes and outputs.
    ok: bool,
    /// The command's own answer, if it owes one.
    own: Option<Output>,
    /// A panic or a fatal error: the batch fails and the object restarts.
    fatal: bool,
}

fn not_run() -> ErrorDetail {
    error(ErrorCode::ObjectBroken, "not run")
}

impl<T: DurableObject> Event<'_, T> {
    fn metrics(&self) -> &Metrics {
        self.runtime.metrics()
    }

    /// Opens the event's savepoint (lazily: with its first SQL), read-only
    /// if asked, and forgets outputs left over from an earlier event.
    fn begin(&mut self, read_only: bool) -> Result<(), StorageError> {
        let storage = &mut self.l.ctx.storage;
        storage
            .begin_event()
            .and_then(|()| storage.set_read_only(read_only))?;
        self.l.ctx.outputs.clear();
        self.l.ctx.identity = None;
        Ok(())
    }

    /// Keeps or drops what the handler produced, closes the savepoint, then
    /// pushes the command's own answer.
    fn finish(self, ended: Ended) -> Result<(), EventFailure> {
        let Ended { ok, own, fatal } = ended;
        let produced = std::mem::take(&mut self.l.ctx.outputs);
        if ok {
            self.outputs.extend(produced);
        }
        if let Err(e) = self.l.ctx.storage.end_event(ok) {
            // A failed event whose error took SQLite's whole transaction with
            // it (SQLITE_FULL may): the event keeps its own error (413, 507),
            // the rest of the batch is undone.
            return Err(match own {
                Some(own) if !ok => EventFailure::Undone(e.to_string(), own),
                own => {
                    self.outputs.extend(own);
                    EventFailure::Broken(e.to_string(), Vec::new())
                }
            });
        }
        if let Some(own) = own {
            self.outputs.push(own);
        }
        if fatal {
            return Err(EventFailure::Panicked);
        }
        Ok(())
    }

    async fn call(
        mut self,
        method: String,
        args: serde_json::Value,
        read_only: bool,
        (from, identity): (Option<SocketId>, Option<Arc<Identity>>),
        reply: Reply,
    ) -> Result<(), EventFailure> {
        if let Err(e) = self.begin(read_only) {
            let own = Output::Reply(reply, Err(not_run()));
            return Err(EventFailure::Broken(e.to_string(), vec![own]));
        }
        self.l.ctx.caller = from;
        self.l.ctx.identity = identity.or_else(|| from.and_then(|s| self.l.ctx.socket_identity(s)));
        let outcome = AssertUnwindSafe(self.l.object.call(&mut self.l.ctx, &method, args))
            .catch_unwind()
            .await;
        self.l.ctx.caller = None;
        let (result, fatal) = answer_of(outcome, self.metrics(), &method);
        self.finish(Ended {
            ok: result.is_ok(),
            own: Some(Output::Reply(reply, result)),
            fatal,
        })
    }

    async fn connect(
        mut self,
        socket: SocketId,
        request: ConnectRequest,
        reply: tokio::sync::oneshot::Sender<Admission>,
    ) -> Result<(), EventFailure> {
        let read_only = self.l.ctx.socket_read_only(socket);
        if let Err(e) = self.begin(read_only) {
            let reject = Admission::Reject {
                code: 1011,
                reason: "object broken".into(),
            };
            let own = Output::Admission(reply, reject);
            return Err(EventFailure::Broken(e.to_string(), vec![own]));
        }
        self.l.ctx.identity = self.l.ctx.socket_identity(socket);
        let outcome = AssertUnwindSafe(self.l.object.on_connect(&mut self.l.ctx, socket, &request))
            .catch_unwind()
            .await;
        let ended = self.admit(socket, outcome, reply);
        self.finish(ended)
    }

    /// `on_connect`'s decision as the socket's admission. Tags past the
    /// socket limits refuse the socket (1011) like a failed handler.
    fn admit(
        &mut self,
        socket: SocketId,
        outcome: std::thread::Result<Result<Admission, ObjectError>>,
        reply: tokio::sync::oneshot::Sender<Admission>,
    ) -> Ended {
        let limits = &self.runtime.config().sockets;
        let (ok, admission, fatal) = match outcome {
            Ok(Ok(Admission::Accept { tags })) => {
                if tags.len() > limits.max_tags
                    || tags.iter().any(|t| t.len() > limits.max_tag_bytes)
                {
                    let reason = format!(
                        "on_connect returned invalid tags (at most {} tags of at most {} bytes)",
                        limits.max_tags, limits.max_tag_bytes
                    );
                    tracing::warn!(%socket, "on_connect returned invalid tags");
                    (false, Admission::Reject { code: 1011, reason }, false)
                } else {
                    self.l.ctx.accept_socket(socket, tags.clone());
                    (true, Admission::Accept { tags }, false)
                }
            }
            Ok(Ok(reject @ Admission::Reject { .. })) => (true, reject, false),
            Ok(Err(e)) => {
                self.metrics().error("handler_error");
                let reason = e.to_string();
                (
                    false,
                    Admission::Reject { code: 1011, reason },
                    e.is_fatal(),
                )
            }
            Err(_) => {
                tracing::error!(%socket, "on_connect panicked");
                let reason = "on_connect panicked".into();
                (false, Admission::Reject { code: 1011, reason }, true)
            }
        };
        Ended {
            ok,
            own: Some(Output::Admission(reply, admission)),
            fatal,
        }
    }

    async fn message(mut self, socket: SocketId, msg: SocketMessage) -> Result<(), EventFailure> {
        let read_only = self.l.ctx.socket_read_only(socket);
        if let Err(e) = self.begin(read_only) {
            let own = Output::Received(socket);
            return Err(EventFailure::Broken(e.to_string(), vec![own]));
        }
        // First, so that every failure path from here on finds it.
        self.outputs.push(Output::Received(socket));
        self.l.ctx.caller = Some(socket);
        self.l.ctx.identity = self.l.ctx.socket_identity(socket);
        let outcome = AssertUnwindSafe(self.l.object.on_message(&mut self.l.ctx, socket, msg))
            .catch_unwind()
            .await;
        self.l.ctx.caller = None;
        let ended = match outcome {
            Ok(Ok(())) => Ended {
                ok: true,
                own: None,
                fatal: false,
            },
            Ok(Err(e)) => {
                self.metrics().error("handler_error");
                tracing::debug!(%socket, error = %e, "on_message failed");
                let frame = roost_protocol::ServerFrame::event(
                    "error",
                    serde_json::to_value(e.detail()).unwrap_or_default(),
                );
                let text = axum::extract::ws::Message::Text(frame.encode().into());
                Ended {
                    ok: false,
                    own: Some(Output::Send(socket, text)),
                    fatal: e.is_fatal(),
                }
            }
            Err(_) => {
                tracing::error!(%socket, "on_message panicked");
                Ended {
                    ok: false,
                    own: None,
                    fatal: true,
                }
            }
        };
        self.finish(ended)
    }

    async fn closed(
        mut self,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> Result<(), EventFailure> {
        if let Err(e) = self.begin(false) {
            let own = Output::Forget(socket);
            return Err(EventFailure::Broken(e.to_string(), vec![own]));
        }
        self.l.ctx.identity = self.l.ctx.socket_identity(socket);
        let outcome = AssertUnwindSafe(self.l.object.on_close(
            &mut self.l.ctx,
            socket,
            code,
            &reason,
        ))
        .catch_unwind()
        .await;
        self.runtime.sockets().remove(&self.l.ctx.key.id, socket);
        let (ok, fatal) = match outcome {
            Ok(Ok(())) => (true, false),
            Ok(Err(e)) => {
                self.metrics().error("handler_error");
                tracing::debug!(%socket, error = %e, "on_close failed");
                (false, e.is_fatal())
            }
            Err(_) => (false, true),
        };
        self.finish(Ended {
            ok,
            own: None,
            fatal,
        })
    }

    async fn fetch(
        mut self,
        request: FetchRequest,
        reply: tokio::sync::oneshot::Sender<Result<FetchResponse, ErrorDetail>>,
    ) -> Result<(), EventFailure> {
        if let Err(e) = self.begin(request.read_only) {
            let own = Output::Fetch(reply, Err(not_run()));
            return Err(EventFailure::Broken(e.to_string(), vec![own]));
        }
        self.l.ctx.identity = request.identity.clone();
        let outcome = AssertUnwindSafe(self.l.object.fetch(&mut self.l.ctx, request))
            .catch_unwind()
            .await;
        let (result, fatal) = answer_of(outcome, self.metrics(), "fetch");
        let ok = result.as_ref().is_ok_and(|resp| resp.status < 400);
        self.finish(Ended {
            ok,
            own: Some(Output::Fetch(reply, result)),
            fatal,
        })
    }
}

/// A `call` or `fetch` handler's outcome as the caller's answer, and
/// whether the object must restart (a panic, or a fatal error). Errors are
/// counted; panics are logged with `what` (the method, or "fetch").
fn answer_of<T>(
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
