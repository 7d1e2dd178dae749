//! [`Ctx`]: what a handler can reach — the object's key, its caller
//! (`identity`), its storage, its sockets and its alarm (no other
//! objects: a handler awaiting another object could deadlock a cycle). One `Ctx` belongs to one live object and lives
//! in its actor.
//!
//! Everything a handler sends through `Ctx` (socket messages, broadcasts,
//! closes) is an output: it is held until the event's batch is durable, and
//! dropped if the event fails.

use std::sync::Arc;

use axum::extract::ws::Message;
use roost_protocol::ServerFrame;
use serde_json::Value;

use crate::id::{ObjectId, ObjectKey};
use crate::object::ObjectError;
use crate::runtime::output::Output;
use crate::runtime::registry::Settings;
use crate::runtime::Runtime;
use crate::sockets::{ObjectSockets, SocketId, SocketMessage};
use crate::storage::Storage;

/// What a handler is given besides its arguments: the object's name and id,
/// storage, sockets, alarm and the caller of the event being handled.
pub struct Ctx {
    pub(crate) key: ObjectKey,
    pub(crate) storage: Storage,
    pub(crate) runtime: Runtime,
    /// Outputs of the event being run.
    pub(crate) outputs: Vec<Output>,
    /// The socket whose frame or call is being handled.
    pub(crate) caller: Option<SocketId>,
    /// Who holds the token of the event being handled (`identity`).
    pub(crate) identity: Option<Arc<crate::auth::Identity>>,
    /// The batch set or deleted the alarm.
    pub(crate) alarm_touched: bool,
    /// What the class was registered with (`ServerBuilder::class_with`).
    settings: Option<Settings>,
}

impl Ctx {
    pub(crate) fn new(key: ObjectKey, storage: Storage, runtime: Runtime) -> Ctx {
        let settings = runtime.registry().settings(&key.class).cloned();
        Ctx {
            settings,
            key,
            storage,
            runtime,
            outputs: Vec::new(),
            caller: None,
            identity: None,
            alarm_touched: false,
        }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.key.id
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// The name the object's class is registered under.
    pub fn class(&self) -> &str {
        &self.key.class
    }

    /// The settings the object's class was registered with
    /// (`ServerBuilder::class_with`), if they are an `S`.
    pub fn settings<S: std::any::Any>(&self) -> Option<&S> {
        self.settings.as_deref()?.downcast_ref()
    }

    /// The object's own storage: the KV API and direct SQL.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Milliseconds since the epoch, on the runtime's clock (the one alarms use).
    pub fn now_ms(&self) -> i64 {
        self.runtime.clock().now_ms()
    }

    /// Sets the object's one alarm to `at_ms` (ms since the epoch), replacing
    /// any other. Part of the event: undone if the event or its commit fails.
    pub fn set_alarm(&mut self, at_ms: i64) -> Result<(), ObjectError> {
        self.storage.set_alarm(at_ms)?;
        self.alarm_touched = true;
        Ok(())
    }

    /// The alarm time, if one is set.
    pub fn get_alarm(&self) -> Result<Option<i64>, ObjectError> {
        Ok(self.storage.alarm()?)
    }

    /// Cancels the alarm (part of the event, like `set_alarm`).
    pub fn delete_alarm(&mut self) -> Result<(), ObjectError> {
        self.storage.delete_alarm()?;
        self.alarm_touched = true;
        Ok(())
    }

    fn table(&self) -> Option<Arc<ObjectSockets>> {
        self.runtime.sockets().get(&self.key.id)
    }

    /// The socket whose frame or `call` envelope is being handled, if any.
    pub fn caller_socket(&self) -> Option<SocketId> {
        self.caller
    }

    /// Who is calling: the holder of the token behind the event being
    /// handled — an RPC call, a `fetch`, or a socket's `on_connect`,
    /// message, call or `on_close` — as the token's issuer vouched for it
    /// (`sub`, `name`, `claims`, `jti`). `None` without auth (anonymous
    /// access) and during alarms.
    pub fn identity(&self) -> Option<&crate::auth::Identity> {
        self.identity.as_deref()
    }

    /// Whether the event being handled may only read (a read-only token):
    /// its writes fail with `forbidden` and change nothing.
    pub fn read_only(&self) -> bool {
        self.storage.is_read_only()
    }

    /// Who holds `socket`'s token (see [`identity`](Self::identity)).
    pub fn socket_identity(&self, socket: SocketId) -> Option<Arc<crate::auth::Identity>> {
        self.table()
            .and_then(|t| t.with_table(|t| t.get(&socket).and_then(|e| e.identity().cloned())))
    }

    /// Accepted sockets with `tag` (every accepted socket if `None`).
    pub fn sockets(&self, tag: Option<&str>) -> Vec<SocketId> {
        self.table().map(|t| t.ids(tag)).unwrap_or_default()
    }

    /// The tags a socket was accepted with.
    pub fn tags(&self, socket: SocketId) -> Vec<String> {
        self.table()
            .and_then(|t| t.with_table(|t| t.get(&socket).map(|e| e.tags().to_vec())))
            .unwrap_or_default()
    }

    /// Sends a frame to one socket (after this event's batch is durable).
    pub fn send(&mut self, socket: SocketId, msg: SocketMessage) {
        self.outputs.push(Output::Send(socket, msg.into_ws()));
    }

    /// Sends `{"type":"event","event":E,"data":D}` to one socket.
    pub fn send_event(&mut self, socket: SocketId, event: &str, data: Value) {
        let text = ServerFrame::event(event, data).encode();
        self.outputs
            .push(Output::Send(socket, Message::Text(text.into())));
    }

    /// Sends a frame to every accepted socket with `tag` (all if `None`),
    /// except `except`. The frame is encoded once for all recipients.
    pub fn broadcast(&mut self, tag: Option<&str>, msg: SocketMessage, except: Option<SocketId>) {
        self.outputs.push(Output::Broadcast {
            tag: tag.map(str::to_owned),
            msg: msg.into_ws(),
            except,
        });
    }

    /// Broadcasts `{"type":"event","event":E,"data":D}`.
    pub fn broadcast_event(
        &mut self,
        tag: Option<&str>,
        event: &str,
        data: Value,
        except: Option<SocketId>,
    ) {
        let text = ServerFrame::event(event, data).encode();
        self.broadcast(tag, SocketMessage::Text(text), except);
    }

    /// Emits an event to the change feed (`--feed`; a no-op for a class it
    /// does not name): a row in this object's `_roost_feed` table, written
    /// in this event's batch, so it exists if and only if the batch commits;
    /// readers (`GET /v1/feed`, the webhook) see it once the batch is
    /// durable. `kind` is 1 to 128 bytes, e.g. `order.paid`.
    pub fn emit(&mut self, kind: &str, data: Value) -> Result<(), ObjectError> {
        let Some(feed) = self.runtime.0.feed.get() else {
            return Ok(());
        };
        if !feed.config().feeds(&self.key.class) {
            return Ok(());
        }
        if kind.is_empty() || kind.len() > crate::feed::object::MAX_KIND_BYTES {
            return Err(ObjectError::app("an event kind is 1 to 128 bytes"));
        }
        let keep = feed.config().object_rows;
        let now = self.now_ms();
        let indexed = |mark_key: &str| feed.indexed(mark_key);
        let event = crate::feed::object::record(
            self.storage.sql(),
            &self.key,
            kind,
            data,
            now,
            keep,
            indexed,
        )?;
        self.outputs.push(Output::Feed(Box::new(event)));
        Ok(())
    }

    /// Whether `emit` writes events for this object's class.
    pub(crate) fn feeds(&self) -> bool {
        self.runtime
            .0
            .feed
            .get()
            .is_some_and(|f| f.config().feeds(&self.key.class))
    }

    /// Closes a socket with a code and reason.
    pub fn close(&mut self, socket: SocketId, code: u16, reason: &str) {
        self.outputs
            .push(Output::Close(socket, code, reason.to_owned()));
    }

    /// Stores bytes with the socket (≤ 16 KiB by default); they survive the
    /// object's hibernation. Takes effect at once.
    pub fn set_attachment(&mut self, socket: SocketId, bytes: Vec<u8>) -> Result<(), ObjectError> {
        let limit = self.runtime.config().sockets.max_attachment_bytes;
        if bytes.len() > limit {
            return Err(ObjectError::app(format!(
                "attachment is {} bytes; the limit is {limit}",
                bytes.len()
            )));
        }
        let stored = self.table().and_then(|t| {
            t.with_table(|t| {
                t.get_mut(&socket).map(|e| {
                    e.set_attachment(bytes);
                    e.relayed && e.accepted
                })
            })
        });
        match stored {
            Some(relayed) => {
                if relayed {
                    self.tell_relay(socket);
                }
                Ok(())
            }
            None => Err(ObjectError::app(format!("no socket {socket}"))),
        }
    }

    /// Queues, as an output of this event, a relayed socket's state for its
    /// relay (cluster mode), which resumes the socket with it on the next
    /// owner if this one dies. An attachment set while `on_connect` runs
    /// goes with the socket's acceptance.
    fn tell_relay(&mut self, socket: SocketId) {
        let (Some(cluster), Some(table)) = (self.runtime.cluster(), self.table()) else {
            return;
        };
        let frame = table.with_table(|t| {
            t.get(&socket)
                .map(|e| cluster.state_frame(&self.key, socket, e.tags(), e.attachment()))
        });
        if let Some(frame) = frame {
            self.outputs.push(Output::Relay(socket, frame));
        }
    }

    /// The bytes stored with the socket, if any.
    pub fn attachment(&self, socket: SocketId) -> Option<Vec<u8>> {
        self.table().and_then(|t| {
            t.with_table(|t| {
                t.get(&socket)
                    .and_then(|e| e.attachment().map(<[u8]>::to_vec))
            })
        })
    }

    /// From now on, a text frame equal to `request` is answered with
    /// `response` by the socket layer, without waking the object. `None` clears.
    pub fn set_auto_response(&mut self, pair: Option<(String, String)>) {
        if let Some(t) = self.table() {
            t.set_auto_response(pair);
        }
    }

    pub(crate) fn socket_read_only(&self, socket: SocketId) -> bool {
        self.table()
            .and_then(|t| t.with_table(|t| t.get(&socket).map(|e| e.read_only)))
            .unwrap_or(false)
    }

    pub(crate) fn accept_socket(&mut self, socket: SocketId, tags: Vec<String>) {
        let relayed = self.table().is_some_and(|t| {
            t.with_table(|t| {
                t.get_mut(&socket).is_some_and(|e| {
                    e.set_tags(tags);
                    e.accepted = true;
                    e.relayed
                })
            })
        });
        if relayed {
            self.tell_relay(socket);
        }
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("key", &self.key)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}
