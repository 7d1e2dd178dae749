//! Named versions of a Yjs document over HTTP (`classes/ydoc/versions.rs`
//! holds them):
//! - `POST /v1/yjs/{doc}/versions` `{"name": "..."}` — save the document
//!   as it is now (201; 409 if the name is taken);
//! - `GET /v1/yjs/{doc}/versions` — list them;
//! - `GET /v1/yjs/{doc}/versions/{name}` — one, as a Yjs v1 update;
//! - `DELETE /v1/yjs/{doc}/versions/{name}`;
//! - `POST /v1/yjs/{doc}/versions/{name}/restore` — a new update on top
//!   that makes the document equal to the version again.
//!
//! The token rules are the document's: read tokens list and read.

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use roost_protocol::ErrorCode;
use serde::Deserialize;

use super::error::ApiError;
use crate::id::ObjectKey;
use crate::object::FetchRequest;
use crate::runtime::Runtime;

/// One request to the document's `fetch`.
struct Forward<'a> {
    method: &'a str,
    path: &'a str,
    name: Option<String>,
}

async fn forward(
    runtime: &Runtime,
    doc: String,
    headers: &HeaderMap,
    query: HashMap<String, String>,
    to: Forward<'_>,
) -> Result<Response, ApiError> {
    let key = ObjectKey::new("ydoc", &doc)
        .map_err(|e| ApiError::new(ErrorCode::BadName, e.to_string()))?;
    let access = super::access::authorize(runtime, headers, &query, &key)?;
    let mut params = HashMap::new();
    if let Some(name) = to.name {
        params.insert("name".to_owned(), name);
    }
    let request = FetchRequest {
        method: to.method.into(),
        path: to.path.into(),
        query: params,
        body: Vec::new(),
        read_only: access.read_only,
        headers: super::access::forwarded_headers(headers),
        identity: access.identity,
    };
    super::yjs::fetch(runtime, key, request).await
}

fn bad_path(e: PathRejection) -> ApiError {
    ApiError::new(ErrorCode::BadName, e.body_text())
}

#[derive(Deserialize)]
pub(crate) struct CreateBody {
    name: String,
}

/// `POST /v1/yjs/{doc}/versions`.
pub(crate) async fn create(
    State(runtime): State<Runtime>,
    path: Result<Path<String>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(doc) = path.map_err(bad_path)?;
    let body = super::rpc::json_body(body, r#"{"name": "..."}"#)?;
    let to = Forward {
        method: "POST",
        path: "versions",
        name: Some(body.name),
    };
    forward(&runtime, doc, &headers, query, to).await
}

/// `GET /v1/yjs/{doc}/versions`.
pub(crate) async fn list(
    State(runtime): State<Runtime>,
    path: Result<Path<String>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(doc) = path.map_err(bad_path)?;
    let to = Forward {
        method: "GET",
        path: "versions",
        name: None,
    };
    forward(&runtime, doc, &headers, query, to).await
}

/// `GET` (read) and `DELETE` `/v1/yjs/{doc}/versions/{name}`, and `POST
/// .../{name}/restore`: `method` and `path` say which.
async fn one(
    runtime: Runtime,
    path: Result<Path<(String, String)>, PathRejection>,
    query: HashMap<String, String>,
    headers: HeaderMap,
    method: &str,
    fetch_path: &str,
) -> Result<Response, ApiError> {
    let Path((doc, name)) = path.map_err(bad_path)?;
    let to = Forward {
        method,
        path: fetch_path,
        name: Some(name),
    };
    forward(&runtime, doc, &headers, query, to).await
}

/// `GET /v1/yjs/{doc}/versions/{name}`: the version as a Yjs v1 update.
pub(crate) async fn read(
    State(runtime): State<Runtime>,
    path: Result<Path<(String, String)>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    one(runtime, path, query, headers, "GET", "version").await
}

/// `DELETE /v1/yjs/{doc}/versions/{name}`.
pub(crate) async fn delete(
    State(runtime): State<Runtime>,
    path: Result<Path<(String, String)>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    one(runtime, path, query, headers, "DELETE", "version").await
}

/// `POST /v1/yjs/{doc}/versions/{name}/restore`.
pub(crate) async fn restore(
    State(runtime): State<Runtime>,
    path: Result<Path<(String, String)>, PathRejection>,
    super::Params(query): super::Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    one(runtime, path, query, headers, "POST", "restore").await
}
