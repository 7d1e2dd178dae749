//! `GET /v1/objects/{class}/{name}/ws`: upgrades into the object's socket layer.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::WebSocketUpgrade;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use roost_protocol::ErrorCode;

use super::error::ApiError;
use crate::runtime::{ConnectRequest, Runtime};
use crate::sockets::SocketMode;

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

pub(crate) async fn object_socket(
    State(runtime): State<Runtime>,
    path: Result<Path<(String, String)>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
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
    let access = super::access::authorize(&runtime, &headers, &query, &key)?;
    let request = ConnectRequest {
        query: super::access::without_token(query),
    };
    let up = Box::new(crate::sockets::conn::Upgrade {
        runtime: runtime.clone(),
        key,
        request,
        access,
        mode: SocketMode::Envelope,
        request_id: super::trace::request_id(&headers).map(Into::into),
    });
    Ok(configure(upgrade, &runtime).on_upgrade(move |ws| crate::sockets::conn::serve(up, ws)))
}
