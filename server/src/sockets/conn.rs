//! One task per WebSocket: admission through the object's `on_connect`, then
//! a loop that writes what the object queued and reads what the client sends.
//!
//! Auto-responses are answered here without waking the object; protocol
//! pings are answered by the WebSocket library, and Roost's heartbeat pings
//! (Yjs `[102]`, envelope `{"type":"ping"}`), which browsers can send and
//! see, are answered here: a busy object never delays them, a frozen server
//! never answers them. A frame over the size limit
//! closes the socket with 1009; a slow reader whose outbox overflows is
//! dropped (its close code is 1013 as seen by the object).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use roost_protocol::yjs::MSG_PING;
use roost_protocol::{ClientFrame, DecodeError, ErrorCode, ServerFrame};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::{OutFrame, Outbox, SocketEntry, SocketId, SocketMessage, SocketMode};
use crate::auth::Access;
use crate::id::ObjectKey;
use crate::runtime::{Admission, Command, ConnectRequest, Reply, Runtime};

async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
}

fn error_event(code: ErrorCode, message: &str) -> Message {
    let data = serde_json::json!({"code": code.as_str(), "message": message});
    Message::Text(ServerFrame::event("error", data).encode().into())
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
            ..
        } = *up;
        let conn = Conn {
            runtime,
            table,
            outbox,
            socket,
            mode,
        };
        let session = Session::new(
            conn.runtime.0.config.sockets.max_messages_per_sec,
            access.expires_ms,
        );
        let (code, reason) = run(&conn, &mut ws, session).await;
        if code != 1006 {
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
    let mode = *mode;
    let hub = &runtime.0.sockets;
    let limits = &runtime.0.config.sockets;
    let socket = hub.next_id();
    let outbox = Arc::new(Outbox::new(limits.max_outbox_bytes));
    let entry = SocketEntry::new(outbox.clone(), access.read_only);
    let Some(table) = hub.insert(key, socket, entry, limits.max_sockets_per_object) else {
        tracing::info!(target: "roost::access", class = %key.class, name = %key.name, %request_id, code = 1013, "socket refused: too many sockets on this object");
        close(ws, 1013, "too many sockets on this object").await;
        return None;
    };
    let metrics = &runtime.0.metrics;
    metrics.open_sockets.fetch_add(1, Ordering::Relaxed);

    let (reply, wait) = oneshot::channel();
    let admission = match runtime
        .send(
            key,
            Command::Connect {
                socket,
                request,
                reply,
            },
        )
        .await
    {
        Ok(()) => wait.await.unwrap_or(Admission::Reject {
            code: 1011,
            reason: "object stopped".into(),
        }),
        Err(e) => Admission::Reject {
            code: if e.code == ErrorCode::Overloaded {
                1013
            } else {
                1011
            },
            reason: e.message,
        },
    };
    if let Admission::Reject { code, reason } = admission {
        // Frames the object queued before refusing (rare) are dropped.
        hub.remove(&key.id, socket);
        metrics.open_sockets.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(target: "roost::access", %socket, class = %key.class, name = %key.name, %request_id, code, ?reason, "socket refused");
        close(ws, code, &reason).await;
        return None;
    }
    tracing::info!(target: "roost::access", %socket, class = %key.class, name = %key.name, %request_id, "socket open");
    if mode == SocketMode::Yjs {
        // A newcomer learns who is here, from the socket layer alone.
        if let Some(state) = table.awareness_state() {
            outbox.push(OutFrame::Msg(state));
        }
    }
    Some((socket, table, outbox))
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
        table.drop_awareness_of(socket);
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

/// Roost extension on Yjs sockets: `[101, varString(token)]`.
const MSG_REFRESH: u8 = 101;

/// Checks a refreshed token; on success updates the socket's permission and
/// returns its new expiry.
fn refresh(
    runtime: &Runtime,
    key: &ObjectKey,
    table: &super::ObjectSockets,
    socket: SocketId,
    token: &str,
) -> Result<Option<i64>, roost_protocol::ErrorDetail> {
    let access = runtime.0.config.auth.check(Some(token), key)?;
    table.with_table(|t| {
        if let Some(e) = t.get_mut(&socket) {
            e.read_only = access.read_only;
        }
    });
    Ok(access.expires_ms)
}

/// What the socket loop works with (the object's key is in its table).
/// Dropping it uncounts the connection from its IP address.
struct Conn {
    runtime: Runtime,
    table: Arc<super::ObjectSockets>,
    outbox: Arc<Outbox>,
    socket: SocketId,
    mode: SocketMode,
}

/// What the loop learns from the frames it reads: the frame-rate bucket
/// (`rate` frames per second, bursts of `rate`; the rate is the server's,
/// passed in, so that idle sockets keep no copy) and the token's expiry.
struct Session {
    /// When the bucket was last refilled.
    last: tokio::time::Instant,
    tokens: f32,
    /// Set when a token refresh changed `expires`.
    expiry_changed: bool,
    /// When the socket's token expires (ms since the epoch); `NO_EXPIRY` if
    /// it has none.
    expires: i64,
}

const NO_EXPIRY: i64 = i64::MAX;

impl Session {
    fn new(rate: u32, expires: Option<i64>) -> Session {
        Session {
            last: tokio::time::Instant::now(),
            tokens: rate.max(1) as f32,
            expiry_changed: false,
            expires: expires.unwrap_or(NO_EXPIRY),
        }
    }

    fn expires(&self) -> Option<i64> {
        (self.expires != NO_EXPIRY).then_some(self.expires)
    }

    fn set_expires(&mut self, expires: Option<i64>) {
        let expires = expires.unwrap_or(NO_EXPIRY);
        self.expiry_changed |= expires != self.expires;
        self.expires = expires;
    }

    /// Takes a token for one frame; false if the socket is over its rate.
    fn take_token(&mut self, rate: u32) -> bool {
        let rate = f64::from(rate.max(1));
        let now = tokio::time::Instant::now();
        let tokens = f64::from(self.tokens) + now.duration_since(self.last).as_secs_f64() * rate;
        self.tokens = tokens.min(rate) as f32;
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The close code and reason the loop ended with.
type End = (u16, String);

/// A timer for a token expiry (boxed: most sockets have none).
fn expiry_timer(expires: Option<i64>) -> Option<Pin<Box<Sleep>>> {
    expires.map(|ms| {
        let left = ms - crate::catalog::now_ms();
        Box::pin(tokio::time::sleep(
            Duration::from_millis(left.max(0) as u64),
        ))
    })
}

fn expired(timer: &mut Option<Pin<Box<Sleep>>>) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match timer {
        Some(t) => std::future::Future::poll(t.as_mut(), cx),
        None => std::task::Poll::Pending,
    })
}

fn slow_consumer(conn: &Conn) -> End {
    let metrics = &conn.runtime.0.metrics;
    metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
    tracing::info!(socket = %conn.socket, "disconnecting a slow client: outbound queue over its limit");
    (1013, "outbound queue full".into())
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
                Box::pin(close(ws, 1008, "token expired")).await;
                return (1008, "token expired".into());
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
                    OutFrame::Msg(m) => ws.feed(m).await?,
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
        return Some((1006, "write failed".into()));
    }
    closing
}

/// Handles one read result; `Some` ends the loop.
async fn receive(
    conn: &Conn,
    ws: &mut WebSocket,
    session: &mut Session,
    incoming: Option<Result<Message, axum::Error>>,
) -> Option<End> {
    let Conn {
        ref runtime,
        ref table,
        ref outbox,
        socket,
        mode,
        ..
    } = *conn;
    let key = table.key();
    let metrics = &runtime.0.metrics;
    let max_frame = runtime.0.config.sockets.max_frame_bytes;
    let msg = match incoming {
        None => return Some((1006, String::new())),
        Some(Ok(m)) => {
            outbox.heard();
            m
        }
        Some(Err(e)) => {
            let text = e.to_string();
            if text.contains("Space limit exceeded")
                || text.contains("too long")
                || text.contains("Message too big")
                || text.contains("size")
            {
                tracing::info!(%socket, error = %text, "frame too large");
                close(ws, 1009, &format!("frame larger than {max_frame} bytes")).await;
                return Some((1009, "frame too large".into()));
            }
            return Some((1006, text));
        }
    };
    if matches!(msg, Message::Text(_) | Message::Binary(_))
        && !session.take_token(runtime.0.config.sockets.max_messages_per_sec)
    {
        tracing::info!(%socket, "closing a socket over its message rate");
        close(ws, 1008, "message rate limit exceeded").await;
        return Some((1008, "message rate limit exceeded".into()));
    }
    match msg {
        Message::Text(_) if mode == SocketMode::Yjs => {
            close(ws, 1008, "y-websocket messages are binary frames").await;
            return Some((1008, "text frame on a Yjs socket".into()));
        }
        Message::Binary(bytes) if mode == SocketMode::Yjs => {
            metrics.frames_in.fetch_add(1, Ordering::Relaxed);
            // Read whole (loops, no recursion) before any of it is used:
            // an empty, truncated or garbled frame closes the socket.
            if let Err(e) = roost_protocol::yjs::read_frame(&bytes) {
                tracing::info!(%socket, error = %e, "malformed y-protocols frame");
                close(ws, 1008, "malformed y-protocols message").await;
                return Some((1008, "malformed y-protocols message".into()));
            }
            match bytes.first() {
                // sync: the document's object handles it.
                Some(0) => {
                    let cmd = Command::Message {
                        socket,
                        msg: SocketMessage::Binary(bytes.to_vec()),
                    };
                    if let Err(e) = runtime.send_wait(key, cmd).await {
                        return Some(Box::pin(refused(conn, ws, &e)).await);
                    }
                }
                // awareness: merged and relayed here, the object sleeps on.
                Some(1) => {
                    let limits = &runtime.0.config.sockets;
                    if let Err(why) = table.apply_awareness(socket, &bytes, limits) {
                        tracing::info!(%socket, error = %why, "awareness message refused");
                        // A close reason has at most 123 bytes.
                        let reason: String = format!("awareness refused: {why}")
                            .chars()
                            .take(120)
                            .collect();
                        close(ws, 1008, &reason).await;
                        return Some((1008, reason));
                    }
                    metrics.awareness_relays.fetch_add(1, Ordering::Relaxed);
                }
                // query awareness
                Some(3) => {
                    if let Some(state) = table.awareness_state() {
                        outbox.push(OutFrame::Msg(state));
                    }
                }
                // Roost extension: heartbeat, answered in kind at once.
                Some(&MSG_PING) => {
                    let pong = axum::body::Bytes::from_static(&[MSG_PING]);
                    outbox.push(OutFrame::Msg(Message::Binary(pong)));
                }
                // Roost extension: in-band token refresh.
                Some(&MSG_REFRESH) => {
                    let mut decoder = yrs::updates::decoder::DecoderV1::from(&bytes[1..]);
                    let token =
                        yrs::encoding::read::Read::read_string(&mut decoder).map(str::to_owned);
                    match token.map_err(|e| e.to_string()).and_then(|t| {
                        refresh(runtime, key, table, socket, &t).map_err(|e| e.message)
                    }) {
                        Ok(exp) => session.set_expires(exp),
                        Err(why) => {
                            close(ws, 1008, &format!("token refresh refused: {why}")).await;
                            return Some((1008, "token refresh refused".into()));
                        }
                    }
                }
                Some(_) => {
                    tracing::debug!(%socket, "ignoring unknown y-protocols message type");
                }
                None => {
                    close(ws, 1008, "empty frame").await;
                    return Some((1008, "empty frame".into()));
                }
            }
        }
        Message::Text(text) => {
            metrics.frames_in.fetch_add(1, Ordering::Relaxed);
            if let Some((req, resp)) = table.auto_response() {
                if text.as_str() == req {
                    metrics.auto_responses.fetch_add(1, Ordering::Relaxed);
                    outbox.push(OutFrame::Msg(Message::Text(resp.into())));
                    return None;
                }
            }
            match ClientFrame::decode(text.as_str()) {
                Ok(ClientFrame::Call { id, method, args }) => {
                    let read_only =
                        table.with_table(|t| t.get(&socket).is_some_and(|e| e.read_only));
                    let cmd = Command::Call {
                        method,
                        args,
                        read_only,
                        from: Some(socket),
                        reply: Reply::Socket { socket, id },
                    };
                    if let Err(e) = runtime.send_wait(key, cmd).await {
                        let frame = ServerFrame::err(id, e).encode();
                        outbox.push(OutFrame::Msg(Message::Text(frame.into())));
                    }
                }
                Ok(ClientFrame::Ping) => {
                    let pong = ServerFrame::Pong.encode();
                    outbox.push(OutFrame::Msg(Message::Text(pong.into())));
                }
                Ok(ClientFrame::Other(_)) | Err(DecodeError::NotJson(_)) => {
                    let cmd = Command::Message {
                        socket,
                        msg: SocketMessage::Text(text.as_str().to_owned()),
                    };
                    if let Err(e) = runtime.send_wait(key, cmd).await {
                        return Some(Box::pin(refused(conn, ws, &e)).await);
                    }
                }
                Ok(ClientFrame::Auth { token }) => {
                    match refresh(runtime, key, table, socket, &token) {
                        Ok(exp) => {
                            session.set_expires(exp);
                            let data = serde_json::json!({ "exp": exp });
                            outbox.push(OutFrame::Msg(Message::Text(
                                ServerFrame::event("auth", data).encode().into(),
                            )));
                        }
                        Err(e) => {
                            outbox.push(OutFrame::Msg(error_event(
                                e.code,
                                &format!("token refresh refused: {}", e.message),
                            )));
                        }
                    }
                }
                Err(DecodeError::BadCall(why)) => {
                    outbox.push(OutFrame::Msg(error_event(
                        ErrorCode::BadRequest,
                        &format!("malformed call envelope: {why}"),
                    )));
                }
            }
        }
        Message::Binary(bytes) => {
            metrics.frames_in.fetch_add(1, Ordering::Relaxed);
            let cmd = Command::Message {
                socket,
                msg: SocketMessage::Binary(bytes.to_vec()),
            };
            if let Err(e) = runtime.send_wait(key, cmd).await {
                return Some(Box::pin(refused(conn, ws, &e)).await);
            }
        }
        Message::Close(frame) => {
            return Some(frame.map_or((1005, String::new()), |f| {
                (f.code, f.reason.as_str().to_owned())
            }));
        }
        Message::Ping(_) | Message::Pong(_) => {}
    }
    None
}

/// A message the object could not take. If the server is shutting down, the
/// socket stops reading but keeps writing what the object still sends for
/// earlier messages (replies, `saved` acknowledgements) until the shutdown's
/// own 1012 close, queued after every object finished; otherwise it closes
/// now (1013 overloaded, 1011 otherwise).
async fn refused(conn: &Conn, ws: &mut WebSocket, e: &roost_protocol::ErrorDetail) -> End {
    let code = match e.code {
        ErrorCode::Overloaded => 1013,
        ErrorCode::ShuttingDown => return write_until_close(conn, ws).await,
        _ => 1011,
    };
    close(ws, code, &e.message).await;
    (code, e.message.clone())
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
