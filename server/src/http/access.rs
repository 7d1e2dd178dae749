//! Per-request access checks shared by the object routes: the token (header
//! or `?token=`), and the per-IP connection limit for WebSockets.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use roost_protocol::ErrorCode;

use super::error::ApiError;
use crate::auth::{token_from, Access};
use crate::id::ObjectKey;
use crate::runtime::Runtime;

/// The `{class}/{name}` of a route, validated (400 `bad_name` otherwise).
pub(crate) fn object_key(
    path: Result<axum::extract::Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<ObjectKey, ApiError> {
    let axum::extract::Path((class, name)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadName, e.body_text()))?;
    ObjectKey::new(&class, &name).map_err(|e| ApiError::new(ErrorCode::BadName, e.to_string()))
}

/// What the request's token allows on `key` (401/403 otherwise).
pub(crate) fn authorize(
    runtime: &Runtime,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    key: &ObjectKey,
) -> Result<Access, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = token_from(authorization, query.get("token").map(String::as_str));
    Ok(runtime.config().auth.check(token, key)?)
}

/// The request's headers for an object (names lower-case), without the
/// token's (`authorization`) and the cookie, which the object has no need
/// to see.
pub(crate) fn forwarded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION && *name != header::COOKIE)
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// The query without the token, as handed to `on_connect`.
pub(crate) fn without_token(mut query: HashMap<String, String>) -> HashMap<String, String> {
    query.remove("token");
    query
}
