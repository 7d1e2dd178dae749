//! `GET /v1/objects/{class}/{name}/ws`: upgrades into the object's socket layer.

use axum::extract::rejection::PathRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use roost_protocol::{close, ErrorCode};

use super::error::ApiError;
use crate::runtime::{ConnectRequest, Runtime};
use crate::sockets::{ResumedSocket, SocketMode};

/// Each socket's read buffer, allocated for its whole life: it is a good part
/// of an idle socket's memory. Frames up to this size arrive in one read;
/// larger ones take `len / 256` reads (the buffer grows to the largest frame
/// seen, the reads stay this size). Typical Yjs updates and awareness
/// messages fit.
const READ_BUFFER_BYTES: usize = 256;

/// Outgoing frames gather in the write buffer until this size or the end of
/// a batch (the socket task flushes after every drain), so a burst of
/// broadcasts costs one `send` per socket rather than one per frame. The
/// library keeps the buffer's capacity after a burst, so it stays small.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Applies the socket limits to an upgrade (small buffers: idle sockets are cheap).
pub(crate) fn configure(upgrade: WebSocketUpgrade, runtime: &Runtime) -> WebSocketUpgrade {
    let max = runtime.config().sockets.max_frame_bytes;
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(max)
        .max_frame_size(max)
}

/// A socket route whose token was refused: a browser never sees the HTTP
/// status of a refused upgrade (only 1006), so the upgrade is accepted and
/// closed at once with 4401 (unauthenticated) or 4403 (forbidden) and the
/// reason. Any other error stays an HTTP answer.
pub(crate) fn refuse(upgrade: WebSocketUpgrade, error: ApiError) -> Result<Response, ApiError> {
    let Some(code) = close::for_auth(error.0.code) else {
        return Err(error);
    };
    let reason = close::clip_reason(&error.0.message).to_owned();
    tracing::info!(code, reason = %reason, "socket refused for its token");
    Ok(close_at_once(upgrade, code, reason))
}

/// Accepts the upgrade and closes the socket at once with `code`.
fn close_at_once(upgrade: WebSocketUpgrade, code: u16, reason: String) -> Response {
    upgrade.on_upgrade(move |mut ws| async move {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // The client's close completes the handshake; do not wait long.
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while let Some(Ok(msg)) = ws.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    })
}

/// How long a refused socket waits for the client's close frame.
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) async fn object_socket(
    State(runtime): State<Runtime>,
    path: Result<Path<(String, String)>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    super::cors::check_socket_origin(&runtime.config().cors_origins, &headers)?;
    let key = super::access::object_key(path)?;
    if !runtime.registry().contains(&key.class) {
        return Err(ApiError::new(
            ErrorCode::UnknownClass,
            format!("no class named `{}`", key.class),
        ));
    }
    let access = match super::access::authorize(&runtime, &headers, &query, &key) {
        Ok(access) => access,
        Err(e) => return refuse(upgrade, e),
    };
    let (relayed, resume) = match relay_of(&runtime, &headers, &key) {
        Ok(relay) => relay,
        Err(reason) => return Ok(close_at_once(upgrade, close::RESTARTING, reason.into())),
    };
    let request = ConnectRequest {
        query: super::access::without_token(query),
        headers: super::access::forwarded_headers(&headers),
    };
    let up = Box::new(crate::sockets::conn::Upgrade {
        runtime: runtime.clone(),
        key,
        request,
        access,
        mode: SocketMode::Envelope,
        request_id: super::trace::request_id(&headers).map(Into::into),
        relayed,
        resume,
    });
    let mut response =
        configure(upgrade, &runtime).on_upgrade(move |ws| crate::sockets::conn::serve(up, ws));
    if relayed {
        // Tells the relay that this node frames the connection.
        response.headers_mut().insert(
            crate::cluster::RELAY,
            axum::http::HeaderValue::from_static("framed"),
        );
    }
    Ok(response)
}

/// In cluster mode, whether another node relays this socket, and the
/// state it resumes (`cluster::resume`); `Err` if that state is not one a
/// node of this cluster signed for this object.
fn relay_of(
    runtime: &Runtime,
    headers: &HeaderMap,
    key: &crate::id::ObjectKey,
) -> Result<(bool, Option<Box<ResumedSocket>>), &'static str> {
    let Some(cluster) = runtime.cluster() else {
        return Ok((false, None));
    };
    let relayed = headers
        .get(crate::cluster::RELAY)
        .is_some_and(|v| cluster.is_relay(v.as_bytes()));
    let Some(state) = headers.get(crate::cluster::RESUME).filter(|_| relayed) else {
        return Ok((relayed, None));
    };
    let resumed = state
        .to_str()
        .ok()
        .and_then(|s| cluster.resumed(key, s))
        .ok_or("the socket's state could not be resumed; reconnect")?;
    Ok((relayed, Some(Box::new(resumed))))
}
