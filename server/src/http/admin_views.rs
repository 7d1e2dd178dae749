//! Admin routes the console (`/admin`) reads besides `admin.rs`'s, each
//! behind the admin token:
//! - `GET /v1/admin/objects/{class}/{name}/kv` — the object's key-value
//!   entries, values decoded as JSON (through the read-only SQL console:
//!   it never starts or changes the object);
//! - `GET /v1/admin/objects/{class}/{name}/sockets` — its open sockets;
//! - `DELETE /v1/admin/objects/{class}/{name}/sockets/{socket}` — closes
//!   one (1000, "closed by an administrator");
//! - `GET /v1/admin/yjs/{doc}` — a Yjs document as JSON and its versions.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use roost_protocol::ErrorCode;
use serde_json::{json, Value};

use super::admin::{admin, existing};
use super::error::ApiError;
use crate::id::ObjectKey;
use crate::object::FetchRequest;
use crate::runtime::Runtime;
use crate::sockets::{OutFrame, SocketId};

/// Most KV entries one answer lists.
const MAX_KV_ENTRIES: usize = 1000;

/// `GET /v1/admin/objects/{class}/{name}/kv`.
pub(crate) async fn kv(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let key = existing(&runtime, path)?;
    let has_kv = runtime
        .inspect(
            &key,
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_roost_kv'",
        )
        .await?;
    if has_kv["rows"][0][0] != json!(1) {
        return Ok(Json(json!({ "entries": [], "truncated": false })));
    }
    let sql = format!(
        "SELECT CAST(key AS TEXT), CAST(value AS TEXT) FROM _roost_kv ORDER BY key LIMIT {}",
        MAX_KV_ENTRIES + 1
    );
    let result = runtime.inspect(&key, &sql).await?;
    let rows = result["rows"].as_array().cloned().unwrap_or_default();
    let truncated = rows.len() > MAX_KV_ENTRIES;
    let entries: Vec<Value> = rows
        .into_iter()
        .take(MAX_KV_ENTRIES)
        .map(|row| {
            let text = row[1].as_str().unwrap_or_default();
            // Values are stored as JSON; anything else is shown as text.
            let value = serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!(text));
            json!({ "key": row[0], "value": value })
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "truncated": truncated })))
}

fn socket_list(runtime: &Runtime, key: &ObjectKey) -> Vec<Value> {
    let Some(table) = runtime.sockets().get(&key.id) else {
        return Vec::new();
    };
    let mut sockets: Vec<(SocketId, Value)> = table.with_table(|t| {
        t.iter()
            .map(|(id, e)| {
                let identity = e
                    .identity()
                    .map(|i| json!({ "sub": i.sub, "name": i.name }));
                let row = json!({
                    "id": id.0,
                    "accepted": e.accepted,
                    "read_only": e.read_only,
                    "tags": e.tags(),
                    "identity": identity,
                });
                (*id, row)
            })
            .collect()
    });
    sockets.sort_by_key(|(id, _)| *id);
    sockets.into_iter().map(|(_, v)| v).collect()
}

/// `GET /v1/admin/objects/{class}/{name}/sockets`.
pub(crate) async fn sockets(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let key = existing(&runtime, path)?;
    Ok(Json(json!({ "sockets": socket_list(&runtime, &key) })))
}

/// `DELETE /v1/admin/objects/{class}/{name}/sockets/{socket}`.
pub(crate) async fn close_socket(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let Path((class, name, socket)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadName, e.body_text()))?;
    let key = existing(&runtime, Ok(Path((class, name))))?;
    let id = socket.parse::<u64>().map(SocketId).map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "a socket id is a number, as `sockets` lists it",
        )
    })?;
    let outbox = runtime
        .sockets()
        .get(&key.id)
        .and_then(|table| table.outbox(id))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such open socket"))?;
    outbox.push(OutFrame::Close(1000, "closed by an administrator".into()));
    Ok(Json(json!({ "closed": id.0 })))
}

/// `GET /v1/admin/yjs/{doc}`: `{"content": {"roots": ...}, "versions": [...]}`.
pub(crate) async fn yjs_doc(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let Path(doc) = path.map_err(|e| ApiError::new(ErrorCode::BadName, e.body_text()))?;
    let key = existing(&runtime, Ok(Path(("ydoc".to_owned(), doc))))?;
    let mut answer = serde_json::Map::new();
    for (field, route) in [("content", "content"), ("versions", "versions")] {
        let request = FetchRequest {
            method: "GET".into(),
            path: route.into(),
            query: HashMap::new(),
            body: Vec::new(),
            read_only: true,
            headers: Vec::new(),
            identity: None,
        };
        let resp = runtime.fetch(&key, request).await?;
        let value: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        if resp.status != 200 {
            return Err(ApiError::new(ErrorCode::Internal, value.to_string()));
        }
        answer.insert(field.to_owned(), value);
    }
    let versions = answer
        .get_mut("versions")
        .and_then(|v| v.get_mut("versions"))
        .map(Value::take)
        .unwrap_or_default();
    answer.insert("versions".into(), versions);
    Ok(Json(Value::Object(answer)))
}
