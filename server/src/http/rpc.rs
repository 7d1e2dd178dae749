//! `POST /v1/objects/{class}/{name}/call/{method}`: JSON args in, the method's
//! JSON result out, after the call's batch is durable.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use std::collections::HashMap;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use roost_protocol::ErrorCode;
use serde_json::Value;

use super::error::ApiError;
use crate::id::ObjectKey;
use crate::runtime::Runtime;

pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::TooLarge,
                "request body is larger than the configured limit (--max-body-bytes)",
            )
        } else {
            ApiError::new(ErrorCode::BadRequest, e.body_text())
        }
    })
}

/// A JSON body, or 413 `too_large` past `--max-body-bytes` and 400
/// `bad_request` saying what was `expected` otherwise.
pub(crate) fn json_body<T>(
    body: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
    expected: &str,
) -> Result<T, ApiError> {
    match body {
        Ok(axum::Json(body)) => Ok(body),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            ErrorCode::TooLarge,
            "request body is larger than the configured limit (--max-body-bytes)",
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("expected {expected}: {}", e.body_text()),
        )),
    }
}

pub(crate) async fn call(
    State(runtime): State<Runtime>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    super::Params(query): super::Params,
    // The request itself, not a `HeaderMap` (a copy of the headers) and a
    // body extractor: its headers are read in place, then its body.
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let Path((class, name, method)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadName, e.body_text()))?;
    let key = ObjectKey::new(&class, &name)
        .map_err(|e| ApiError::new(ErrorCode::BadName, e.to_string()))?;
    let access = super::access::authorize(&runtime, request.headers(), &query, &key)?;
    let body = body_bytes(Bytes::from_request(request, &runtime).await)?;
    let args: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("body is not valid JSON: {e}"),
            )
        })?
    };
    let value = runtime.call_as(&key, &method, args, &access).await?;
    Ok(Json(value))
}

/// `ANY /v1/objects/{class}/{name}/fetch[/{*path}]`: the request goes to
/// the object's `fetch` (method, the path after `fetch/`, the query without
/// the token, the body), and its response comes back as it is, after the
/// batch that handled it is durable.
pub(crate) async fn fetch(
    State(runtime): State<Runtime>,
    method: axum::http::Method,
    Path(params): Path<HashMap<String, String>>,
    super::Params(query): super::Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    let (Some(class), Some(name)) = (params.get("class"), params.get("name")) else {
        return Err(ApiError::new(ErrorCode::BadName, "missing class or name"));
    };
    let key = ObjectKey::new(class, name)
        .map_err(|e| ApiError::new(ErrorCode::BadName, e.to_string()))?;
    let access = super::access::authorize(&runtime, &headers, &query, &key)?;
    let request = crate::object::FetchRequest {
        method: method.as_str().to_owned(),
        path: params.get("path").cloned().unwrap_or_default(),
        query: super::access::without_token(query),
        body: body_bytes(body)?.to_vec(),
        read_only: access.read_only,
        headers: super::access::forwarded_headers(&headers),
        identity: access.identity,
    };
    super::yjs::fetch(&runtime, key, request).await
}
