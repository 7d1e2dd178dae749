//! The y-websocket protocol on a socket (`/v1/yjs/{doc}`,
//! [`SocketMode::Yjs`](super::SocketMode::Yjs)).
//!
//! Every frame is binary and read whole (`roost_protocol::yjs::read_frame`)
//! before any of it is used; it is then dispatched by its first message:
//! sync (0) goes to the document's object, awareness (1) and query
//! awareness (3) are answered here from the table's awareness store (the
//! object sleeps on), Roost's `ping` (102) is answered at once and
//! `refresh` (101) replaces the socket's token. Other types are ignored.
//! A text frame, a malformed frame, refused awareness or a refused token
//! closes the socket with 1008.
//!
//! A newcomer is sent every known awareness state on admission (`greet`);
//! a closing socket's awareness clients are removed for everyone (`forget`).

use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, WebSocket};
use roost_protocol::close;
use roost_protocol::yjs::{self as wire, MSG_PING, MSG_REFRESH};

use super::conn::{close_with, send_close, Conn, End};
use super::session::Session;
use super::{ObjectSockets, OutFrame, Outbox, SocketId, SocketMessage};

/// Handles one text or binary frame; `Some` ends the loop.
pub(super) async fn receive(
    conn: &Conn,
    ws: &mut WebSocket,
    session: &mut Session,
    msg: Message,
) -> Option<End> {
    let Message::Binary(bytes) = msg else {
        send_close(ws, close::POLICY, "y-websocket messages are binary frames").await;
        return Some((close::POLICY, "text frame on a Yjs socket".into()));
    };
    let socket = conn.socket;
    let runtime = &conn.runtime;
    runtime.0.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
    // Read whole (loops, no recursion) before any of it is used:
    // an empty, truncated or garbled frame closes the socket.
    if let Err(e) = wire::read_frame(&bytes) {
        tracing::info!(%socket, error = %e, "malformed y-protocols frame");
        let reason = "malformed y-protocols message".into();
        return Some(close_with(ws, close::POLICY, reason).await);
    }
    match bytes.first() {
        // sync: the document's object handles it.
        Some(0) => {
            return conn
                .deliver(ws, SocketMessage::Binary(bytes.to_vec()))
                .await
        }
        // awareness: merged and relayed here, the object sleeps on.
        Some(1) => return awareness(conn, ws, &bytes).await,
        // query awareness
        Some(3) => greet(&conn.table, &conn.outbox),
        // Roost extension: heartbeat, answered in kind at once.
        Some(&MSG_PING) => {
            let pong = axum::body::Bytes::from_static(&wire::PING_FRAME);
            conn.outbox.push(OutFrame::Msg(Message::Binary(pong)));
        }
        // Roost extension: in-band token refresh.
        Some(&MSG_REFRESH) => return refresh(conn, ws, session, &bytes).await,
        Some(_) => {
            tracing::debug!(%socket, "ignoring unknown y-protocols message type");
        }
        None => {
            return Some(close_with(ws, close::POLICY, "empty frame".into()).await);
        }
    }
    None
}

/// Merges an awareness frame into the document's awareness and relays it;
/// refused (over a bound, or not one awareness message): close 1008.
async fn awareness(conn: &Conn, ws: &mut WebSocket, bytes: &[u8]) -> Option<End> {
    let limits = &conn.runtime.0.config.sockets;
    if let Err(why) = conn.table.apply_awareness(conn.socket, bytes, limits) {
        tracing::info!(socket = %conn.socket, error = %why, "awareness message refused");
        // A close reason has at most 123 bytes.
        let reason: String = format!("awareness refused: {why}")
            .chars()
            .take(120)
            .collect();
        return Some(close_with(ws, close::POLICY, reason).await);
    }
    let metrics = &conn.runtime.0.metrics;
    metrics.awareness_relays.fetch_add(1, Ordering::Relaxed);
    None
}

/// `[101, varString(token)]`: a refused token closes the socket (1008).
async fn refresh(
    conn: &Conn,
    ws: &mut WebSocket,
    session: &mut Session,
    bytes: &[u8],
) -> Option<End> {
    let refreshed = wire::refresh_token(bytes)
        .map_err(|e| e.to_string())
        .and_then(|t| session.refresh(conn, t).map_err(|e| e.message));
    if let Err(why) = refreshed {
        send_close(ws, close::POLICY, &format!("token refresh refused: {why}")).await;
        return Some((close::POLICY, "token refresh refused".into()));
    }
    None
}

/// Queues every known awareness state (if any) for one socket: a newcomer
/// learns who is here from the socket layer alone.
pub(super) fn greet(table: &ObjectSockets, outbox: &Outbox) {
    if let Some(state) = table.awareness_state() {
        outbox.push(OutFrame::Msg(state));
    }
}

/// Removes the awareness clients a closing socket announced, for everyone.
pub(super) fn forget(table: &ObjectSockets, socket: SocketId) {
    table.drop_awareness_of(socket);
}

#[cfg(test)]
mod tests {
    use yrs::sync::protocol::Message as YMessage;
    use yrs::updates::decoder::Decode;
    use yrs::updates::encoder::Encode;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    /// The standard y-protocols messages the server sends (sync replies
    /// and broadcasts by the `ydoc` class, awareness by this layer) are
    /// encoded by yrs: it must write the shared vectors byte for byte.
    /// (Roost's own messages are checked by `roost-protocol`'s tests.)
    #[test]
    fn yrs_writes_the_shared_yjs_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../protocol/vectors/yjs.json");
        let text = std::fs::read_to_string(path).expect("read yjs.json");
        let file: serde_json::Value = serde_json::from_str(&text).expect("parse yjs.json");
        let messages = file["messages"].as_array().expect("messages");
        let mut checked = 0;
        for v in messages
            .iter()
            .filter(|v| v["message_type"].as_u64() < Some(100))
        {
            let name = v["name"].as_str().expect("name");
            let bytes = hex(v["hex"].as_str().expect("hex"));
            let msg = YMessage::decode_v1(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(msg.encode_v1(), bytes, "{name}: yrs re-encodes");
            checked += 1;
        }
        assert!(checked >= 9, "sync, awareness and query vectors");
    }
}
