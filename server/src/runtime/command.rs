//! `Command`: the closed set of events an object's actor handles, as they
//! travel through its mailbox, and how a command is answered when it cannot
//! run at all (`Command::fail`).
//!
//! Where each variant is handled:
//! - `Call`, `Connect`, `Message`, `Closed`, `Fetch`: one handler each in
//!   [`events`](super::events), inside a batch, each in its own savepoint.
//! - `Alarm`: [`alarm_event`](super::alarm_event), inside a batch.
//! - `Flush`: [`actor`](super::actor) (`Actor::flush_for_console`), answered
//!   in order behind every earlier batch, with no batch of its own.
//! - `Delete`: [`delete`](super::delete), alone, after everything before it.

use roost_protocol::{ErrorCode, ErrorDetail};
use serde_json::Value;
use tokio::sync::oneshot;

use super::output::{self, Admission, ConnectRequest, Reply};
use super::Runtime;
use crate::id::ObjectKey;
use crate::sockets::{SocketId, SocketMessage};

/// The answer to a `Delete`.
pub(crate) type DeleteReply = oneshot::Sender<Result<(), ErrorDetail>>;

/// A call for an object's `call` handler.
pub(crate) struct Call {
    pub method: String,
    pub args: Value,
    pub read_only: bool,
    /// The socket the call came from, if any (its token's holder is the
    /// caller then).
    pub from: Option<SocketId>,
    /// The caller of an HTTP call: who holds its token.
    pub identity: Option<std::sync::Arc<crate::auth::Identity>>,
    /// Answered after the batch is durable.
    pub reply: Reply,
}

/// A command for an object's actor: the closed set of events it handles.
/// The large variants are boxed: every loaded object's mailbox allocates
/// its slots in blocks of 32 commands of the largest variant's size.
pub(crate) enum Command {
    Call(Box<Call>),
    Connect {
        socket: SocketId,
        request: Box<ConnectRequest>,
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
    Alarm {
        retry: u32,
    },
    /// Commit the open transaction to the object's file (the admin console
    /// reads the file next); answered once every earlier batch is durable.
    Flush {
        reply: Reply,
    },
    /// Delete the object: its files, sockets, catalog entry and alarm.
    Delete {
        reply: DeleteReply,
    },
    /// An HTTP request for the object's `fetch`.
    Fetch {
        request: Box<crate::object::FetchRequest>,
        reply: oneshot::Sender<Result<crate::object::FetchResponse, ErrorDetail>>,
    },
}

impl Command {
    /// Answers the command with an error without running it.
    pub(crate) fn fail(self, runtime: &Runtime, key: &ObjectKey, error: ErrorDetail) {
        let object = key.id;
        match self {
            Command::Call(call) => output::deliver_reply(runtime, object, call.reply, Err(error)),
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
            Command::Closed { socket, .. } => runtime.sockets().remove(&object, socket),
            Command::Fetch { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Flush { reply } => output::deliver_reply(runtime, object, reply, Err(error)),
            Command::Delete { reply } => {
                let _ = reply.send(Err(error));
            }
            Command::Alarm { retry, .. } => {
                // Not run: try again after the backoff, as for a failed attempt.
                let alarms = runtime.alarms();
                let at =
                    runtime.clock().now_ms() + alarms.config.backoff(retry + 1).as_millis() as i64;
                alarms.schedule(key, at, retry + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every loaded object's mailbox allocates its slots in blocks of 32
    /// commands: a large variant costs each loaded object its size x 32.
    #[test]
    fn a_command_stays_small() {
        let size = std::mem::size_of::<super::Command>();
        assert!(size <= 48, "Command is {size} bytes");
    }
}
