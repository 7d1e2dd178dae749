//! The socket layer: WebSockets that belong to an object but outlive its
//! memory. The frames themselves are defined in `roost_protocol`.
//!
//! - `table` — [`SocketHub`]: object id → [`ObjectSockets`], one
//!   [`SocketEntry`] per socket (tags, attachment, read-only flag, outbox);
//!   broadcasts.
//! - `outbox` — [`Outbox`], the bounded queue of frames for one socket;
//!   [`Staged`], a batch's frames for many; the ping [`heartbeat`].
//! - `conn` — one task per socket: admission, the write/read loop, the
//!   frame-rate limit, token expiry, closing; dispatches each text or
//!   binary frame to the socket's protocol:
//! - `yjs` — y-websocket ([`SocketMode::Yjs`]): sync to the object,
//!   awareness, `ping` and `refresh` answered here;
//! - `envelope` — the JSON envelope ([`SocketMode::Envelope`]): calls,
//!   auto-responses, `ping`, `auth`, the rest to `on_message`;
//! - `session` — per-socket frame rate, token expiry and refresh;
//! - `awareness` — Yjs awareness states, kept and relayed without the object.
//!
//! Architecture Invariant: the tables are kept by the hub, not by the actor,
//! so they survive hibernation: the actor may be evicted while its sockets
//! stay open, and the next frame re-creates it.
//!
//! Architecture Invariant: an outbox never holds more than its byte limit. A
//! push that would exceed it drops the queue and kills the socket (closed
//! 1013): a slow reader is disconnected, never buffered without bound, and
//! never blocks the object.
//!
//! A table is behind a `std::sync::Mutex` because it is shared by the actor
//! and the socket tasks (critical sections are a few map operations, never
//! an await). This module does not run object code.

pub(crate) mod awareness;
pub(crate) mod conn;
mod envelope;
mod outbox;
mod session;
mod table;
mod yjs;

use std::fmt;

use axum::extract::ws::Message;

pub(crate) use outbox::{heartbeat, OutFrame, Outbox, Staged};
pub(crate) use table::{ObjectSockets, SocketEntry, SocketHub};

/// Identifies one socket, unique within the process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct SocketId(pub u64);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A relayed socket's state, presented by its relay to resume it on this
/// node after its owner died (cluster mode): listed as it was, without
/// `on_connect`.
pub(crate) struct ResumedSocket {
    pub socket: SocketId,
    pub tags: Vec<String>,
    pub attachment: Option<Vec<u8>>,
}

impl ResumedSocket {
    /// Fills `entry` as the socket's last owner accepted it and keeps its
    /// id out of the ids `hub` hands out; returns the id. Its object is not
    /// asked again.
    pub(crate) fn list(&self, hub: &SocketHub, entry: &mut SocketEntry) -> SocketId {
        hub.skip_past(self.socket);
        entry.set_tags(self.tags.clone());
        if let Some(a) = &self.attachment {
            entry.set_attachment(a.clone());
        }
        entry.accepted = true;
        self.socket
    }
}

/// An object's binary frame as a relay connection carries it (cluster
/// mode): after the kind byte `cluster::RELAY_DATA`.
pub(crate) fn relay_data(b: &[u8]) -> bytes::Bytes {
    let mut framed = Vec::with_capacity(b.len() + 1);
    framed.push(crate::cluster::RELAY_DATA);
    framed.extend_from_slice(b);
    framed.into()
}

/// A frame from or to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketMessage {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl SocketMessage {
    pub(crate) fn into_ws(self) -> Message {
        match self {
            SocketMessage::Text(t) => Message::Text(t.into()),
            SocketMessage::Binary(b) => Message::Binary(b.into()),
        }
    }
}

/// Limits of the socket layer.
#[derive(Clone, Debug)]
pub struct SocketLimits {
    /// Largest incoming frame/message, in bytes (close 1009 beyond).
    pub max_frame_bytes: usize,
    /// Most bytes queued to one socket before it is disconnected (close 1013).
    pub max_outbox_bytes: usize,
    /// Most sockets one object may hold (new ones are refused with 1013).
    pub max_sockets_per_object: usize,
    /// Most tags per socket, and longest tag in bytes.
    pub max_tags: usize,
    /// Longest tag, in bytes.
    pub max_tag_bytes: usize,
    /// Largest attachment per socket, in bytes.
    pub max_attachment_bytes: usize,
    /// Most frames per second one socket may send (burst of the same size);
    /// beyond it the socket is closed with 1008.
    pub max_messages_per_sec: u32,
    /// Awareness: most client ids one socket may announce, most entries and
    /// most bytes of states one document holds (beyond: close 1008).
    pub max_awareness_per_socket: usize,
    /// Most awareness entries one document holds (`--max-awareness-per-doc`).
    pub max_awareness_per_doc: usize,
    /// Most bytes of awareness states one document holds
    /// (`--max-awareness-bytes`).
    pub max_awareness_bytes: usize,
    /// A socket silent this long is pinged; one that stays silent three
    /// times as long again is closed (1001). Zero: never.
    pub ping_interval: std::time::Duration,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_frame_bytes: 1024 * 1024,
            max_outbox_bytes: 4 * 1024 * 1024,
            max_sockets_per_object: 10_000,
            max_tags: 10,
            max_tag_bytes: 256,
            max_attachment_bytes: 16 * 1024,
            max_messages_per_sec: 10_000,
            max_awareness_per_socket: 16,
            max_awareness_per_doc: 10_000,
            max_awareness_bytes: 2 * 1024 * 1024,
            ping_interval: std::time::Duration::from_secs(15),
        }
    }
}

/// What a socket speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SocketMode {
    /// JSON envelope (`/v1/objects/{class}/{name}/ws`).
    Envelope,
    /// y-websocket protocol (`/v1/yjs/{doc}`): awareness is handled by the
    /// socket layer, sync messages go to the object.
    Yjs,
}
