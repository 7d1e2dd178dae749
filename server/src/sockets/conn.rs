//! One task per WebSocket, whatever it speaks: admission through the
//! object's `on_connect`, then a loop that writes what the object queued
//! (feed all, flush once) and reads what the client sends, and the close.
//!
//! This module owns what both protocols share: admission, the outbox
//! writer, the frame-rate limit, token expiry, frames too large (1009),
//! the client's close frame, delivering a frame to the object
//! (`Conn::deliver`) and closing when the object refuses it. What a text or
//! binary frame means is up to the socket's protocol: [`super::yjs`] or
//! [`super::envelope`] (`receive` dispatches by `SocketMode`). Protocol
//! pings are answered by the WebSocket library; Roost's heartbeat pings
//! (Yjs `[102]`, envelope `{"type":"ping"}`), which browsers can send and
//! see, are answered by the protocols from this task: a busy object never
//! delays them, a frozen server never answers them. A slow reader whose
//! outbox overflows is dropped (its close code is 1013 as seen by the
//! object).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use roost_protocol::close::{self, TOKEN_EXPIRED};
use roost_protocol::ErrorCode;
use tokio::sync::oneshot;

use super::session::{expired, expiry_timer, Session};
use super::{OutFrame, Outbox, SocketEntry, SocketId, SocketMessage, SocketMode};
use crate::auth::Access;
use crate::id::ObjectKey;
use crate::runtime::{Admission, Command, ConnectRequest, Runtime};

/// Sends a close frame (errors ignored: the connection may be gone).
pub(super) async fn send_close(ws: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
}

/// Sends a close frame and ends the loop with the same code and reason.
pub(super) async fn close_with(ws: &mut WebSocket, code: u16, reason: String) -> End {
    send_close(ws, code, &reason).await;
    (code, reason)
}

/// What a socket is served with, known before the upgrade completes.
pub(crate) struct Upgrade {
    pub runtime: Runtime,
    pub key: ObjectKey,
    pub request: ConnectRequest,
    pub access: Access,
    pub mode: SocketMode,
    /// The upgrade request's `x-request-id`, for the socket's open line.
    pub request_id: Option<Box<str>>,
    /// Another node relays this socket (cluster mode, object sockets): its
    /// binary frames are framed and its state is told to the relay.
    pub relayed: bool,
    /// The relay resumes this socket, which another owner accepted.
    pub resume: Option<Box<super::ResumedSocket>>,
}

/// Serves one upgraded socket until it closes, in a task of its own.
///
/// The task axum spawned for the upgrade ends as soon as this returns: its
/// future is sized for the handshake as well as for whatever the callback
/// returns, so serving the socket inside it would cost a larger task than
/// the socket's own (tokio rounds task cells to 128 bytes). The socket's task
/// is allocated after the HTTP request's buffers were freed.
pub(crate) fn serve(up: Box<Upgrade>, ws: WebSocket) -> std::future::Ready<()> {
    tokio::spawn(serve_socket(up, ws));
    std::future::ready(())
}

/// What an idle socket's task holds besides the WebSocket.
///
/// An idle socket costs what this future holds while it waits in `run`, so
/// everything that runs rarely — admission, writing, handling a frame,
/// closing — is a separately boxed future that exists only while it runs.
/// Once admitted, the upgrade's arguments are dropped (the object's key is
/// kept once per object, in its socket table). An `async move` block (unlike
/// an `async fn`) keeps no second copy of the socket. The future's size is
/// logged once at debug level.
fn serve_socket(
    mut up: Box<Upgrade>,
    mut ws: WebSocket,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let task = async move {
        let request = std::mem::take(&mut up.request);
        let Some((socket, table, outbox)) = Box::pin(admit(&up, request, &mut ws)).await else {
            return;
        };
        let Upgrade {
            runtime,
            access,
            mode,
            relayed,
            ..
        } = *up;
        let conn = Conn {
            runtime,
            table,
            outbox,
            socket,
            mode,
            relayed,
        };
        let session = Session::new(
            conn.runtime.0.config.sockets.max_messages_per_sec,
            access.expires_ms,
        );
        let (code, reason) = run(&conn, &mut ws, session).await;
        if code != close::ABNORMAL {
            Box::pin(linger(&mut ws)).await;
        }
        Box::pin(finish(&conn, code, reason, ws)).await;
    };
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::debug!(bytes = std::mem::size_of_val(&task), "socket task future");
    });
    task
}

/// Lists the socket and asks the object's `on_connect`; `None` if refused
/// (the socket is then closed with the reason).
async fn admit(
    up: &Upgrade,
    request: ConnectRequest,
    ws: &mut WebSocket,
) -> Option<(SocketId, Arc<super::ObjectSockets>, Arc<Outbox>)> {
    let Upgrade {
        runtime,
        key,
        access,
        mode,
        request_id,
        ..
    } = up;
    let request_id = request_id.as_deref().unwrap_or("-");
    let hub = &runtime.0.sockets;
    let limits = &runtime.0.config.sockets;
    let outbox = Arc::new(Outbox::new(limits.max_outbox_bytes));
    let mut entry = SocketEntry::new(outbox.clone(), access.read_only);
    if access.identity.is_some() {
        entry.set_holder(access);
    }
    entry.relayed = up.relayed;
    let socket = match &up.resume {
        None => hub.next_id(),
        Some(resumed) => resumed.list(hub, &mut entry),
    };
    let Some(table) = hub.insert(key, socket, entry, limits.max_sockets_per_object) else {
        let (code, reason) = match up.resume {
            None => (close::TRY_AGAIN, "too many sockets on this object"),
            Some(_) => (
                close::RESTARTING,
                "the socket could not be resumed; reconnect",
            ),
        };
        tracing::info!(target: "roost::access", class = %key.class, name = %key.name, %request_id, code, reason, "socket refused");
        send_close(ws, code, reason).await;
        return None;
    };
    let metrics = &runtime.0.metrics;
    metrics.open_sockets.fetch_add(1, Ordering::Relaxed);
    if up.resume.is_some() {
        let resumed = &metrics.cluster_sockets_resumed;
        resumed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "roost::access", %socket, class = %key.class, name = %key.name, %request_id, "socket resumed from a relay");
        return Some((socket, table, outbox));
    }
    if let Admission::Reject { code, reason } = ask(runtime, key, socket, request).await {
        // Frames the object queued before refusing (rare) are dropped.
        hub.remove(&key.id, socket);
        metrics.open_sockets.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(target: "roost::access", %socket, class = %key.class, name = %key.name, %request_id, code, ?reason, "socket refused");
        send_close(ws, code, &reason).await;
        return None;
    }
    tracing::info!(target: "roost::access", %socket, class = %key.class, name = %key.name, %request_id, "socket open");
    if *mode == SocketMode::Yjs {
        super::yjs::greet(&table, &outbox);
    }
    Some((socket, table, outbox))
}

/// Asks the object's `on_connect` whether it takes the socket.
async fn ask(
    runtime: &Runtime,
    key: &ObjectKey,
    socket: SocketId,
    request: ConnectRequest,
) -> Admission {
    let (reply, wait) = oneshot::channel();
    let connect = Command::Connect {
        socket,
        request: Box::new(request),
        reply,
    };
    match runtime.send(key, connect).await {
        Ok(()) => wait.await.unwrap_or(Admission::Reject {
            code: close::OBJECT_BROKEN,
            reason: "object stopped".into(),
        }),
        Err(e) => Admission::Reject {
            code: close::for_error(e.code),
            reason: e.message,
        },
    }
}

/// After the loop ended: forget the socket's awareness, close the
/// connection and tell the object.
async fn finish(conn: &Conn, code: u16, reason: String, ws: WebSocket) {
    let Conn {
        ref runtime,
        ref table,
        socket,
        mode,
        ..
    } = *conn;
    let hub = &runtime.0.sockets;
    let key = table.key();
    if mode == SocketMode::Yjs {
        super::yjs::forget(table, socket);
    }
    runtime
        .0
        .metrics
        .open_sockets
        .fetch_sub(1, Ordering::Relaxed);
    tracing::info!(target: "roost::access", %socket, class = %key.class, name = %key.name, code, ?reason, "socket closed");
    // Stop queueing to it, but keep its attachment for `on_close`; the actor
    // removes the entry after `on_close` ran (this wakes a hibernated object).
    table.with_table(|t| {
        if let Some(e) = t.get_mut(&socket) {
            e.accepted = false;
        }
    });
    drop(ws);
    let still_listed = table.with_table(|t| t.contains_key(&socket));
    if !still_listed {
        // The object was deleted with its sockets: nothing to tell it.
        return;
    }
    if runtime
        .send(
            key,
            Command::Closed {
                socket,
                code,
                reason,
            },
        )
        .await
        .is_err()
    {
        hub.remove(&key.id, socket);
    }
}

/// What the socket loop works with (the object's key is in its table).
pub(super) struct Conn {
    pub(super) runtime: Runtime,
    pub(super) table: Arc<super::ObjectSockets>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) socket: SocketId,
    mode: SocketMode,
    /// Binary frames are framed for a relay (`cluster::resume`).
    relayed: bool,
}

impl Conn {
    /// Hands a frame to the object's `on_message`; `Some` ends the loop if
    /// the object could not take it (see `refused`).
    pub(super) async fn deliver(&self, ws: &mut WebSocket, msg: SocketMessage) -> Option<End> {
        let cmd = Command::Message {
            socket: self.socket,
            msg,
        };
        match self.runtime.send_wait(self.table.key(), cmd).await {
            Ok(()) => None,
            Err(e) => Some(Box::pin(refused(self, ws, &e)).await),
        }
    }
}

/// The close code and reason the loop ended with.
pub(super) type End = (u16, String);

/// Ends the loop of a socket whose outbox overflowed (1013).
fn slow_consumer(conn: &Conn) -> End {
    let metrics = &conn.runtime.0.metrics;
    metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
    tracing::info!(socket = %conn.socket, "disconnecting a slow client: outbound queue over its limit");
    (close::TRY_AGAIN, "outbound queue full".into())
}

/// The socket loop; returns the close code and reason. While it waits it
/// holds only the socket, a `Notified` and a read future: queued frames are
/// written and incoming frames handled by boxed futures.
async fn run(conn: &Conn, ws: &mut WebSocket, mut session: Session) -> End {
    let mut timer = expiry_timer(session.expires());
    loop {
        // Write everything queued, giving up on a client too slow to take it.
        // (A block, so that the empty queue is not kept across the wait.)
        {
            let (frames, killed) = conn.outbox.take();
            if killed {
                return slow_consumer(conn);
            }
            if !frames.is_empty() {
                if let Some(end) = Box::pin(write(conn, ws, frames)).await {
                    return end;
                }
                continue;
            }
        }
        let incoming = tokio::select! {
            () = conn.outbox.ready() => continue,
            () = expired(&mut timer) => {
                tracing::info!(socket = %conn.socket, "closing a socket whose token expired");
                Box::pin(send_close(ws, close::POLICY, TOKEN_EXPIRED)).await;
                return (close::POLICY, TOKEN_EXPIRED.into());
            }
            // (`poll_next` rather than `recv()`, whose future is larger.)
            incoming = std::future::poll_fn(|cx| ws.poll_next_unpin(cx)) => incoming,
        };
        if let Some(end) = Box::pin(receive(conn, ws, &mut session, incoming)).await {
            return end;
        }
        if std::mem::take(&mut session.expiry_changed) {
            timer = expiry_timer(session.expires());
        }
    }
}

/// Writes `frames`; `Some` ends the loop (write failed, a close frame was
/// sent, or the outbox overflowed meanwhile).
async fn write(conn: &Conn, ws: &mut WebSocket, frames: VecDeque<OutFrame>) -> Option<End> {
    let mut closing = None;
    let written = {
        let write = async {
            for frame in frames {
                match frame {
                    OutFrame::Msg(Message::Binary(b)) if conn.relayed => {
                        ws.feed(Message::Binary(super::relay_data(&b))).await?;
                    }
                    OutFrame::Msg(m) => ws.feed(m).await?,
                    OutFrame::Control(b) => ws.feed(Message::Binary(b)).await?,
                    OutFrame::Close(code, reason) => {
                        let frame = CloseFrame {
                            code,
                            reason: reason.as_str().into(),
                        };
                        ws.feed(Message::Close(Some(frame))).await?;
                        closing = Some((code, reason));
                        break;
                    }
                }
            }
            ws.flush().await
        };
        tokio::select! {
            r = write => r,
            () = conn.outbox.killed() => return Some(slow_consumer(conn)),
        }
    };
    if written.is_err() {
        return Some((close::ABNORMAL, "write failed".into()));
    }
    closing
}

/// Handles one read result; `Some` ends the loop. Text and binary frames
/// go to the socket's protocol once they pass the frame-rate limit.
async fn receive(
    conn: &Conn,
    ws: &mut WebSocket,
    session: &mut Session,
    incoming: Option<Result<Message, axum::Error>>,
) -> Option<End> {
    let msg = match incoming {
        None => return Some((close::ABNORMAL, String::new())),
        Some(Ok(m)) => {
            conn.outbox.heard();
            m
        }
        Some(Err(e)) => return Some(read_failed(conn, ws, e).await),
    };
    if matches!(msg, Message::Text(_) | Message::Binary(_))
        && !session.take_token(conn.runtime.0.config.sockets.max_messages_per_sec)
    {
        tracing::info!(socket = %conn.socket, "closing a socket over its message rate");
        let reason = "message rate limit exceeded".into();
        return Some(close_with(ws, close::POLICY, reason).await);
    }
    match msg {
        Message::Close(frame) => Some(frame.map_or((close::NO_STATUS, String::new()), |f| {
            (f.code, f.reason.as_str().to_owned())
        })),
        Message::Ping(_) | Message::Pong(_) => None,
        msg => match conn.mode {
            SocketMode::Yjs => super::yjs::receive(conn, ws, session, msg).await,
            SocketMode::Envelope => super::envelope::receive(conn, ws, session, msg).await,
        },
    }
}

/// A read failed: a frame over the size limit closes the socket with 1009;
/// anything else means the connection is gone.
async fn read_failed(conn: &Conn, ws: &mut WebSocket, e: axum::Error) -> End {
    let text = e.to_string();
    if text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("Message too big")
        || text.contains("size")
    {
        let max_frame = conn.runtime.0.config.sockets.max_frame_bytes;
        tracing::info!(socket = %conn.socket, error = %text, "frame too large");
        let reason = format!("frame larger than {max_frame} bytes");
        send_close(ws, close::TOO_LARGE, &reason).await;
        return (close::TOO_LARGE, "frame too large".into());
    }
    (close::ABNORMAL, text)
}

/// A message the object could not take. If the server is shutting down, the
/// socket stops reading but keeps writing what the object still sends for
/// earlier messages (replies, `saved` acknowledgements) until the shutdown's
/// own 1012 close, queued after every object finished; otherwise it closes
/// now (1013 overloaded, 1011 otherwise).
async fn refused(conn: &Conn, ws: &mut WebSocket, e: &roost_protocol::ErrorDetail) -> End {
    if e.code == ErrorCode::ShuttingDown {
        return write_until_close(conn, ws).await;
    }
    close_with(ws, close::for_error(e.code), e.message.clone()).await
}

/// Writes queued frames, reading nothing, until a close frame was written.
async fn write_until_close(conn: &Conn, ws: &mut WebSocket) -> End {
    loop {
        let (frames, killed) = conn.outbox.take();
        if killed {
            return slow_consumer(conn);
        }
        if frames.is_empty() {
            conn.outbox.ready().await;
            continue;
        }
        if let Some(end) = Box::pin(write(conn, ws, frames)).await {
            return end;
        }
    }
}

/// How long a socket that sent its close frame waits for the client's.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Completes the close handshake: reads (and drops) what the client still
/// sends until its close frame, so the connection is not torn down with
/// unread input — a reset, which discards our close frame in flight and
/// shows the client 1006 instead of the code we sent. Reading also flushes
/// the reply to a close the client started.
async fn linger(ws: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
