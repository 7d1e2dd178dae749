//! Outputs: everything an event produces for the outside world, held back by
//! the output gate until the event's batch is durable, then released in order.

use std::collections::HashMap;

use axum::extract::ws::Message;
use roost_protocol::{ErrorDetail, ServerFrame};
use serde_json::Value;
use tokio::sync::oneshot;

use super::Runtime;
use crate::id::ObjectId;
use crate::sockets::{OutFrame, SocketId, Staged};

/// How `on_connect` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Accept the socket with these tags (at most 10, each ≤ 256 bytes).
    Accept {
        /// The socket's tags.
        tags: Vec<String>,
    },
    /// Refuse it: the socket is closed with this code and reason.
    Reject {
        /// The WebSocket close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

impl Admission {
    /// Accept the socket with no tags.
    pub fn accept() -> Admission {
        Admission::Accept { tags: Vec::new() }
    }

    /// Accept the socket with these tags.
    pub fn accept_with_tags<I: IntoIterator<Item = S>, S: Into<String>>(tags: I) -> Admission {
        Admission::Accept {
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }
}

/// What a socket's client sent when it connected.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    /// The query-string parameters of the upgrade request.
    pub query: HashMap<String, String>,
    /// The upgrade request's headers (names lower-case), the token's
    /// excepted. Who holds the token: `Ctx::identity`.
    pub headers: Vec<(String, String)>,
}

/// Where the result of a call goes.
pub(crate) enum Reply {
    Http(oneshot::Sender<Result<Value, ErrorDetail>>),
    Socket { socket: SocketId, id: u64 },
}

pub(crate) enum Output {
    Reply(Reply, Result<Value, ErrorDetail>),
    Admission(oneshot::Sender<Admission>, Admission),
    Send(SocketId, Message),
    Broadcast {
        tag: Option<String>,
        msg: Message,
        except: Option<SocketId>,
    },
    Close(SocketId, u16, String),
    /// A relayed socket's state for its relay (cluster mode): sent only
    /// once the batch that set it is durable.
    Relay(SocketId, bytes::Bytes),
    /// A message from this socket ran in the batch. Nothing to send once
    /// the batch is durable; if the batch fails, the message's effects are
    /// undone and the socket is closed (1011) so that its client learns it,
    /// reconnects and sends its state again (a Yjs provider resyncs).
    Received(SocketId),
    /// Drop a closed socket's entry (its `on_close` could not run).
    Forget(SocketId),
    /// Tell the scheduler the object's next alarm.
    Alarm(AlarmUpdate),
    Fetch(
        oneshot::Sender<Result<crate::object::FetchResponse, ErrorDetail>>,
        Result<crate::object::FetchResponse, ErrorDetail>,
    ),
    /// An event for the change feed (`Ctx::emit`): published once durable,
    /// dropped with a failed batch (whose row was rolled back with it).
    Feed(Box<crate::feed::FeedEvent>),
}

pub(crate) struct AlarmUpdate {
    pub key: crate::id::ObjectKey,
    /// The next time to fire, or `None` for no alarm.
    pub next: Option<i64>,
    /// Retry count to fire with.
    pub retry: u32,
    /// The index may be raised (lazily) to `next`: true when `next` is the
    /// object's stored alarm time, false for a retry's backoff time.
    pub reindex: bool,
    /// Set when this update comes from an alarm attempt with that retry
    /// count: if the batch fails, the attempt is retried.
    pub attempt: Option<u32>,
}

pub(crate) fn result_frame(id: u64, result: Result<Value, ErrorDetail>) -> String {
    match result {
        Ok(v) => ServerFrame::ok(id, v).encode(),
        Err(e) => ServerFrame::err(id, e).encode(),
    }
}

/// Sends a call's result to where it is due.
pub(crate) fn deliver_reply(
    runtime: &Runtime,
    object: ObjectId,
    reply: Reply,
    result: Result<Value, ErrorDetail>,
) {
    match reply {
        Reply::Http(tx) => {
            let _ = tx.send(result);
        }
        Reply::Socket { socket, id } => push(
            runtime,
            object,
            socket,
            OutFrame::Msg(Message::Text(result_frame(id, result).into())),
        ),
    }
}

/// Releases the outputs of a durable batch, in order. Socket frames are
/// gathered per socket and queued together (one lock and one wake-up per
/// socket per batch); per-socket order is kept, and staged frames are queued
/// before any admission or HTTP reply that follows them.
pub(crate) fn release(runtime: &Runtime, object: ObjectId, outputs: Vec<Output>) {
    let table = runtime.sockets().get(&object);
    let mut staged = Staged::default();
    for out in outputs {
        match out {
            Output::Reply(Reply::Socket { socket, id }, result) => {
                if let Some(t) = &table {
                    let frame = Message::Text(result_frame(id, result).into());
                    t.stage(socket, OutFrame::Msg(frame), &mut staged);
                }
            }
            Output::Reply(reply, result) => {
                std::mem::take(&mut staged).flush();
                deliver_reply(runtime, object, reply, result);
            }
            Output::Admission(tx, a) => {
                // What the object sent while admitting goes first.
                std::mem::take(&mut staged).flush();
                let _ = tx.send(a);
            }
            Output::Send(socket, msg) => {
                if let Some(t) = &table {
                    t.stage(socket, OutFrame::Msg(msg), &mut staged);
                }
            }
            Output::Broadcast { tag, msg, except } => {
                if let Some(t) = &table {
                    t.stage_broadcast(tag.as_deref(), &msg, except, &mut staged);
                }
            }
            Output::Close(socket, code, reason) => {
                if let Some(t) = &table {
                    t.stage(socket, OutFrame::Close(code, reason), &mut staged);
                }
            }
            Output::Relay(socket, state) => {
                if let Some(t) = &table {
                    t.stage(socket, OutFrame::Control(state), &mut staged);
                }
            }
            Output::Received(_) => {}
            Output::Forget(socket) => runtime.sockets().remove(&object, socket),
            Output::Alarm(u) => apply_alarm(runtime, u),
            Output::Fetch(tx, r) => {
                std::mem::take(&mut staged).flush();
                let _ = tx.send(r);
            }
            Output::Feed(event) => {
                if let Some(feed) = runtime.0.feed.get() {
                    feed.publish(*event);
                }
            }
        }
    }
    staged.flush();
}

/// Queues one frame for one socket of the object, if it is still open.
fn push(runtime: &Runtime, object: ObjectId, socket: SocketId, frame: OutFrame) {
    if let Some(outbox) = runtime
        .sockets()
        .get(&object)
        .and_then(|t| t.outbox(socket))
    {
        outbox.push(frame);
    }
}

/// Closes a socket whose message could not be saved (its batch failed).
pub(crate) fn close_unsaved(runtime: &Runtime, object: ObjectId, socket: SocketId) {
    push(
        runtime,
        object,
        socket,
        OutFrame::Close(1011, UNSAVED.into()),
    );
}

/// The close reason of [`close_unsaved`].
pub(crate) const UNSAVED: &str = "the object could not save a message; reconnect";

fn apply_alarm(runtime: &Runtime, u: AlarmUpdate) {
    let alarms = runtime.alarms();
    match u.next {
        Some(at) => {
            if u.reindex {
                alarms.reindex_lazily(runtime, &u.key, Some(at));
            }
            alarms.schedule(&u.key, at, u.retry);
        }
        None => {
            alarms.unschedule(u.key.id);
            alarms.reindex_lazily(runtime, &u.key, None);
        }
    }
}

/// Turns the outputs of a failed batch into errors: replies fail, sockets
/// that were connecting are refused, frames are dropped, and sockets whose
/// messages were undone are closed.
pub(crate) fn fail(runtime: &Runtime, object: ObjectId, outputs: Vec<Output>, e: &ErrorDetail) {
    for out in outputs {
        match out {
            Output::Received(socket) => close_unsaved(runtime, object, socket),
            Output::Reply(reply, _) => deliver_reply(runtime, object, reply, Err(e.clone())),
            Output::Admission(tx, _) => {
                let _ = tx.send(Admission::Reject {
                    code: 1011,
                    reason: "object broken".into(),
                });
            }
            Output::Send(..)
            | Output::Broadcast { .. }
            | Output::Close(..)
            | Output::Relay(..)
            | Output::Feed(_) => {}
            Output::Forget(socket) => runtime.sockets().remove(&object, socket),
            Output::Fetch(tx, _) => {
                let _ = tx.send(Err(e.clone()));
            }
            Output::Alarm(u) => {
                // The attempt's batch was lost: try again after the backoff.
                if let Some(attempt) = u.attempt {
                    let alarms = runtime.alarms();
                    let at = runtime.clock().now_ms()
                        + alarms.config.backoff(attempt + 1).as_millis() as i64;
                    alarms.schedule(&u.key, at, attempt + 1);
                }
            }
        }
    }
}
