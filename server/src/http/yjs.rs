//! Yjs routes: `GET /v1/yjs/{doc}` (y-websocket WebSocket), `GET
//! /v1/yjs/{doc}/state[?at=RFC3339]` and `POST /v1/yjs/{doc}/update`. Each
//! document is the `ydoc` object named `{doc}`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::WebSocketUpgrade;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use roost_protocol::ErrorCode;

use super::error::ApiError;
use crate::id::ObjectKey;
use crate::object::FetchRequest;
use crate::runtime::{ConnectRequest, Runtime};
use crate::sockets::SocketMode;

fn doc_key(path: Result<Path<String>, PathRejection>) -> Result<ObjectKey, ApiError> {
    let Path(doc) = path.map_err(|e| ApiError::new(ErrorCode::BadName, e.body_text()))?;
    ObjectKey::new("ydoc", &doc).map_err(|e| ApiError::new(ErrorCode::BadName, e.to_string()))
}

pub(crate) async fn socket(
    State(runtime): State<Runtime>,
    path: Result<Path<String>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    super::cors::check_socket_origin(&runtime.config().cors_origins, &headers)?;
    let key = doc_key(path)?;
    let access = match super::access::authorize(&runtime, &headers, &query, &key) {
        Ok(access) => access,
        Err(e) => return super::ws::refuse(upgrade, e),
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
        mode: SocketMode::Yjs,
        request_id: super::trace::request_id(&headers).map(Into::into),
        relayed: false,
        resume: None,
    });
    Ok(super::ws::configure(upgrade, &runtime)
        .on_upgrade(move |ws| crate::sockets::conn::serve(up, ws)))
}

/// Sends `request` to the object's `fetch` and turns its answer into HTTP.
pub(crate) async fn fetch(
    runtime: &Runtime,
    key: ObjectKey,
    request: FetchRequest,
) -> Result<Response, ApiError> {
    let resp = runtime.fetch(&key, request).await?;
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok((
        status,
        [(header::CONTENT_TYPE, resp.content_type)],
        resp.body,
    )
        .into_response())
}

pub(crate) async fn state(
    State(runtime): State<Runtime>,
    path: Result<Path<String>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = doc_key(path)?;
    let access = super::access::authorize(&runtime, &headers, &query, &key)?;
    let query = super::access::without_token(query);
    let request = FetchRequest {
        method: "GET".into(),
        path: "state".into(),
        query,
        body: Vec::new(),
        read_only: true,
        headers: super::access::forwarded_headers(&headers),
        identity: access.identity,
    };
    fetch(&runtime, key, request).await
}

pub(crate) async fn update(
    State(runtime): State<Runtime>,
    path: Result<Path<String>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = doc_key(path)?;
    let access = super::access::authorize(&runtime, &headers, &query, &key)?;
    let body = super::rpc::body_bytes(body)?;
    let request = FetchRequest {
        method: "POST".into(),
        path: "update".into(),
        query: HashMap::new(),
        body: body.to_vec(),
        read_only: access.read_only,
        headers: super::access::forwarded_headers(&headers),
        identity: access.identity,
    };
    fetch(&runtime, key, request).await
}
