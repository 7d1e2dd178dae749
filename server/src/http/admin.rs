//! The admin API (`/v1/admin/...`), enabled only with `--admin-token`:
//! list objects, one object's details, read-only SQL on its database, and
//! deleting it. Access tokens are not admin tokens.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use roost_protocol::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::id::{object_path, ObjectKey};
use crate::runtime::Runtime;

pub(super) fn admin(runtime: &Runtime, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    Ok(runtime.config().auth.check_admin(token)?)
}

pub(super) fn existing(
    runtime: &Runtime,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<ObjectKey, ApiError> {
    let key = super::access::object_key(path)?;
    if !object_path(&runtime.config().data_dir, &key.class, key.id).exists() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no object {}/{}", key.class, key.name),
        ));
    }
    Ok(key)
}

pub(crate) async fn list(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    super::Params(q): super::Params,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let limit = super::query_number(&q, "limit", 100, 1..=1000)? as u32;
    let after = match q.get("cursor") {
        None => None,
        Some(c) => Some(crate::catalog::parse_cursor(c).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequest,
                "`cursor` must be a `next_cursor` of an earlier page (class/name)",
            )
        })?),
    };
    let mut objects = runtime
        .catalog()
        .list(
            q.get("class").cloned(),
            q.get("prefix").cloned(),
            after,
            limit + 1,
        )
        .await;
    let next_cursor = if objects.len() > limit as usize {
        objects.truncate(limit as usize);
        objects.last().map(|o| format!("{}/{}", o.class, o.name))
    } else {
        None
    };
    Ok(Json(
        json!({ "objects": objects, "next_cursor": next_cursor }),
    ))
}

pub(crate) async fn details(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let key = existing(&runtime, path)?;
    let file = object_path(&runtime.config().data_dir, &key.class, key.id);
    let size = |suffix: &str| {
        let mut p = file.as_os_str().to_owned();
        p.push(suffix);
        std::fs::metadata(&p).map_or(0, |m| m.len())
    };
    let entry = runtime.catalog().get(key.id).await;
    Ok(Json(json!({
        "class": key.class,
        "name": key.name,
        "id": key.id.to_string(),
        "storage_bytes": size("") + size("-wal"),
        "live": runtime.is_live(&key.id),
        "sockets": runtime.sockets_of(&key.id),
        "next_alarm_ms": runtime.indexed_alarm(&key.id),
        "created_ms": entry.as_ref().map(|e| e.created_ms),
        "last_active_ms": entry.as_ref().map(|e| e.last_active_ms),
        // In a cluster the request was routed to the owner: this node.
        "owner": runtime.cluster().map(|c| c.node_id()),
    })))
}

/// `GET /v1/admin/objects/{class}/{name}/log` (cluster mode): the object's
/// replicated log — each record's sequence, kind and the node that appended
/// it — for checking who owned the object when.
pub(crate) async fn log(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let key = super::access::object_key(path)?;
    let Some(cluster) = runtime.cluster() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "objects have a replicated log only in cluster mode",
        ));
    };
    let entries = cluster.read_log(&key, None).await.map_err(|e| {
        ApiError::new(
            ErrorCode::ObjectMoved,
            format!("cannot read the log: {e}; retry"),
        )
    })?;
    let records: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let batches = crate::commitlog::record::decode_segment(&e.payload).0.len();
            json!({
                "seq": e.seq,
                "kind": e.kind,
                "node": e.node,
                "incarnation": e.incarnation,
                "batches": batches,
            })
        })
        .collect();
    Ok(Json(json!({ "records": records })))
}

/// `GET /v1/admin/cluster`: this node, the live nodes, what this node owns.
pub(crate) async fn cluster(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let Some(cluster) = runtime.cluster() else {
        return Ok(Json(json!({ "mode": "single", "nodes": [] })));
    };
    let nodes: Vec<Value> = cluster
        .nodes()
        .await
        .into_iter()
        .map(|n| {
            json!({
                "node": n.node,
                "addr": n.addr,
                "incarnation": n.incarnation,
                "started_ms": n.started_ms,
                "state": "live",
            })
        })
        .collect();
    Ok(Json(json!({
        "mode": "cluster",
        "node": cluster.node_id(),
        "owned_objects": cluster.owned_count(),
        "nodes": nodes,
    })))
}

#[derive(Deserialize)]
pub(crate) struct SqlBody {
    sql: String,
}

pub(crate) async fn sql(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<SqlBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let key = existing(&runtime, path)?;
    let body = super::rpc::json_body(body, r#"{"sql": "..."}"#)?;
    Ok(Json(runtime.inspect(&key, &body.sql).await?))
}

pub(crate) async fn delete(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let key = existing(&runtime, path)?;
    runtime.delete(&key).await?;
    Ok(Json(
        json!({ "deleted": format!("{}/{}", key.class, key.name) }),
    ))
}

/// `POST /v1/admin/backup`: a tar archive of every object and the catalog,
/// holding every write acknowledged before the request (see `backup.rs`).
pub(crate) async fn backup(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    admin(&runtime, &headers)?;
    let slot = crate::backup::BackupSlot::take()
        .ok_or_else(|| ApiError::new(ErrorCode::Overloaded, "a backup is already running"))?;
    let name = format!("roost-backup-{}.tar", crate::catalog::now_ms());
    axum::response::Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )
        .body(crate::backup::stream(runtime, slot))
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

#[derive(Deserialize)]
pub(crate) struct RevokeBody {
    jti: Option<String>,
    sub: Option<String>,
}

/// `POST /v1/admin/revoke` `{"jti": "..."}` or `{"sub": "..."}`: refuses
/// that token, or every token of that subject issued until now (tokens
/// minted later work), from now on and after restarts (recorded in the
/// catalog), and closes the matching open sockets with 4403.
pub(crate) async fn revoke(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&runtime, &headers)?;
    let expected = r#"{"jti": "..."} or {"sub": "..."}"#;
    let bad = || ApiError::new(ErrorCode::BadRequest, format!("expected {expected}"));
    let body = super::rpc::json_body(body, expected)?;
    let now = crate::auth::now_secs();
    let (kind, value) = match (body.jti, body.sub) {
        (Some(jti), None) if !jti.is_empty() => ("jti", jti),
        (None, Some(sub)) if !sub.is_empty() => ("sub", sub),
        _ => return Err(bad()),
    };
    runtime
        .catalog()
        .revoke(kind, value.clone(), now)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Storage,
                format!("cannot record the revocation: {e}"),
            )
        })?;
    let auth = &runtime.config().auth;
    let matches: Box<dyn Fn(&crate::auth::Identity) -> bool> = if kind == "jti" {
        auth.revoke(Some(value.clone()), None);
        let v = value.clone();
        Box::new(move |i| i.jti.as_deref() == Some(v.as_str()))
    } else {
        auth.revoke(None, Some((value.clone(), now)));
        let v = value.clone();
        Box::new(move |i| i.sub.as_deref() == Some(v.as_str()))
    };
    let closed = runtime.sockets().close_where(
        |i, _| matches(i),
        roost_protocol::close::FORBIDDEN,
        "token revoked",
    );
    tracing::info!(kind, value = %value, closed, "token revoked");
    Ok(Json(
        json!({ "revoked": { kind: value }, "closed_sockets": closed }),
    ))
}
