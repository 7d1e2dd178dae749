//! The JSON-envelope protocol on a socket (`/v1/objects/{class}/{name}/ws`,
//! [`SocketMode::Envelope`](super::SocketMode::Envelope); frames in
//! `roost_protocol::envelope`).
//!
//! A text frame equal to the object's auto-response request is answered
//! here without waking the object. Otherwise: a `call` envelope becomes a
//! `Command::Call` answered on this socket, `{"type":"ping"}` is answered
//! `{"type":"pong"}` at once, `{"type":"auth"}` refreshes the token
//! (answered by an `auth` or `error` event), a malformed envelope is
//! answered by an `error` event (the socket stays open), and any other
//! text or binary frame goes to the object's `on_message`.

use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use roost_protocol::{ClientFrame, DecodeError, ErrorCode, ServerFrame};
use serde_json::Value;

use super::conn::{Conn, End};
use super::session::Session;
use super::{OutFrame, SocketMessage};
use crate::runtime::{Call, Command, Reply};

/// Handles one text or binary frame; `Some` ends the loop.
pub(super) async fn receive(
    conn: &Conn,
    ws: &mut WebSocket,
    session: &mut Session,
    msg: Message,
) -> Option<End> {
    match msg {
        Message::Text(text) => receive_text(conn, ws, session, text).await,
        Message::Binary(bytes) => {
            let metrics = &conn.runtime.0.metrics;
            metrics.frames_in.fetch_add(1, Ordering::Relaxed);
            conn.deliver(ws, SocketMessage::Binary(bytes.to_vec()))
                .await
        }
        _ => None,
    }
}

async fn receive_text(
    conn: &Conn,
    ws: &mut WebSocket,
    session: &mut Session,
    text: Utf8Bytes,
) -> Option<End> {
    let metrics = &conn.runtime.0.metrics;
    metrics.frames_in.fetch_add(1, Ordering::Relaxed);
    if let Some((req, resp)) = conn.table.auto_response() {
        if text.as_str() == req {
            metrics.auto_responses.fetch_add(1, Ordering::Relaxed);
            send(conn, resp);
            return None;
        }
    }
    match ClientFrame::decode(text.as_str()) {
        Ok(ClientFrame::Call { id, method, args }) => call(conn, id, method, args).await,
        Ok(ClientFrame::Ping) => send(conn, ServerFrame::Pong.encode()),
        Ok(ClientFrame::Other(_)) | Err(DecodeError::NotJson(_)) => {
            let msg = SocketMessage::Text(text.as_str().to_owned());
            return conn.deliver(ws, msg).await;
        }
        Ok(ClientFrame::Auth { token }) => auth(conn, session, &token),
        Err(DecodeError::BadCall(why)) => {
            let message = format!("malformed call envelope: {why}");
            send(
                conn,
                ServerFrame::error_event(ErrorCode::BadRequest, &message).encode(),
            );
        }
    }
    None
}

/// Queues a text frame for this socket.
fn send(conn: &Conn, text: String) {
    conn.outbox.push(OutFrame::Msg(Message::Text(text.into())));
}

/// Sends a call to the object; its result is sent to this socket (by the
/// runtime, once durable), or an error result at once if it was refused.
async fn call(conn: &Conn, id: u64, method: String, args: Value) {
    let socket = conn.socket;
    let read_only = conn
        .table
        .with_table(|t| t.get(&socket).is_some_and(|e| e.read_only));
    let cmd = Command::Call(Box::new(Call {
        method,
        args,
        read_only,
        from: Some(socket),
        identity: None,
        reply: Reply::Socket { socket, id },
    }));
    if let Err(e) = conn.runtime.send_wait(conn.table.key(), cmd).await {
        send(conn, ServerFrame::err(id, e).encode());
    }
}

/// `{"type":"auth","token":T}`: answered by an `auth` event with the new
/// expiry, or an `error` event (the old token stays).
fn auth(conn: &Conn, session: &mut Session, token: &str) {
    let frame = match session.refresh(conn, token) {
        Ok(exp) => ServerFrame::auth_event(exp),
        Err(e) => {
            let message = format!("token refresh refused: {}", e.message);
            ServerFrame::error_event(e.code, &message)
        }
    };
    send(conn, frame.encode());
}
