//! Requests for objects owned by another node go to the owner: HTTP
//! requests are proxied (one hop: a forwarded request is never forwarded
//! again); WebSockets are relayed (`relay.rs`) from the node the client
//! connected to.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use roost_protocol::ErrorCode;

use super::owner::Route;
use super::Cluster;
use crate::http::error::ApiError;
use crate::id::ObjectKey;
use crate::runtime::Runtime;

/// Marks a request one node forwarded to another.
pub(super) const FORWARDED: &str = "roost-forwarded-by";

/// The pooled HTTP client nodes forward with.
pub(super) struct HttpClient(Client<HttpConnector, Body>);

impl HttpClient {
    pub(super) fn new() -> HttpClient {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        HttpClient(client)
    }
}

/// `GET url` and parse JSON (a NATS monitoring endpoint).
pub(super) async fn get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    let client = HttpClient::new();
    let uri: axum::http::Uri = url.parse()?;
    let req = axum::http::Request::get(uri).body(Body::empty())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.0.request(req)).await??;
    let body = axum::body::to_bytes(Body::new(resp.into_body()), 16 * 1024 * 1024).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// The object a request path addresses, if it addresses one of a
/// registered class.
fn object_of(path: &str, runtime: &Runtime) -> Option<ObjectKey> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (class, name) = match parts.as_slice() {
        ["v1", "objects", class, name, _, ..] => (*class, *name),
        ["v1", "admin", "objects", class, name, ..] => (*class, *name),
        ["v1", "admin", "yjs", doc, ..] => ("ydoc", *doc),
        ["v1", "yjs", doc, ..] => ("ydoc", *doc),
        _ => return None,
    };
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .ok()?;
    runtime.registry().get(class)?;
    ObjectKey::new(class, &name).ok()
}

/// The middleware: requests for objects owned elsewhere go there.
pub(crate) async fn route_layer(
    State(runtime): State<Runtime>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cluster) = runtime.cluster().cloned() else {
        return next.run(req).await;
    };
    let Some(key) = object_of(req.uri().path(), &runtime) else {
        return next.run(req).await;
    };
    // A request this node would refuse (shutting down, no or a bad token)
    // is answered here: it never makes a node take an object over.
    if runtime.is_shutting_down() || !allowed(&runtime, &req, &key) {
        return next.run(req).await;
    }
    match cluster.route(&key, &runtime).await {
        Ok(Route::Local) => next.run(req).await,
        Ok(Route::Remote(_)) if req.headers().contains_key(FORWARDED) => ApiError::new(
            ErrorCode::ObjectMoved,
            "the object moved while this request was forwarded; retry",
        )
        .into_response(),
        Ok(Route::Remote(node)) => {
            cluster
                .0
                .metrics
                .cluster_forwarded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if is_upgrade(&req) {
                super::relay::relay(cluster, runtime, key, req, node.addr).await
            } else {
                proxy(&cluster, req, &node).await
            }
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Whether the request's token opens `key` (or, on an admin route, is the
/// admin token).
fn allowed(runtime: &Runtime, req: &Request, key: &ObjectKey) -> bool {
    let auth = &runtime.config().auth;
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query_token = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.strip_prefix("token="))
            .find_map(|t| percent_encoding::percent_decode_str(t).decode_utf8().ok())
    });
    let token = crate::auth::token_from(header, query_token.as_deref());
    if req.uri().path().starts_with("/v1/admin/") {
        auth.check_admin(token).is_ok()
    } else {
        auth.check(token, key).is_ok()
    }
}

fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub(super) fn unreachable_owner(e: impl std::fmt::Display) -> Response {
    ApiError::new(
        ErrorCode::ObjectMoved,
        format!("the object's owner could not be reached ({e}); retry"),
    )
    .into_response()
}

/// Sends the request to the owner and its answer back.
/// If the owner stops renewing its liveness meanwhile (it died or is
/// paused), the request is given up with a retryable 503: the next one
/// goes to whichever node takes the object over.
async fn proxy(cluster: &Cluster, req: Request, node: &super::NodeInfo) -> Response {
    let addr = &node.addr;
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match format!("http://{addr}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => return unreachable_owner(e),
    };
    parts.headers.remove(axum::http::header::CONNECTION);
    if let Ok(v) = cluster.node_id().parse() {
        parts.headers.insert(FORWARDED, v);
    }
    let req = axum::http::Request::from_parts(parts, body);
    tokio::select! {
        answer = cluster.0.http.0.request(req) => match answer {
            Ok(resp) => resp.map(Body::new),
            Err(e) => unreachable_owner(e),
        },
        () = cluster.until_gone(node) => unreachable_owner("it stopped renewing its liveness"),
    }
}
