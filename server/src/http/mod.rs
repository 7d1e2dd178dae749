//! The HTTP edge: routes, status codes and JSON error bodies. The only module
//! that knows HTTP; everything below it speaks `ErrorDetail`.

mod access;
mod admin;
mod admin_page;
mod admin_views;
pub(crate) mod cors;
mod demos;
pub(crate) mod error;
mod feed;
mod openapi;
mod rpc;
pub(crate) mod serve;
pub(crate) mod trace;
mod versions;
mod ws;
mod yjs;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{any, delete, get, post};
use axum::Router;
use roost_protocol::ErrorCode;

use crate::runtime::Runtime;
use error::ApiError;
pub(crate) use ws::configure as ws_configure;

/// A request's query parameters. A parameter given twice is 400
/// `bad_request`: which one was meant is a guess (`class=a&class=b` on the
/// feed would silently read only `b`).
pub(crate) struct Params(pub(crate) std::collections::HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let bad = |message: String| ApiError::new(ErrorCode::BadRequest, message);
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    bad(format!(
                        "the query string cannot be read: {}",
                        e.body_text()
                    ))
                })?;
        let mut params = std::collections::HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if params.contains_key(&name) {
                return Err(bad(format!(
                    "query parameter `{name}` is given more than once"
                )));
            }
            params.insert(name, value);
        }
        Ok(Params(params))
    }
}

/// The whole number `name` of a query (`default` if absent), or 400
/// `bad_request` naming the range it must be in.
pub(crate) fn query_number(
    q: &std::collections::HashMap<String, String>,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, error::ApiError> {
    let Some(text) = q.get(name) else {
        return Ok(default);
    };
    text.parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            error::ApiError::new(
                roost_protocol::ErrorCode::BadRequest,
                format!(
                    "`{name}` must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

pub(crate) fn router(runtime: Runtime, max_body_bytes: usize) -> Router {
    let cors = cors::layer(&runtime.config().cors_origins);
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/objects/{class}/{name}/call/{method}", post(rpc::call))
        .route("/v1/objects/{class}/{name}/ws", get(ws::object_socket))
        .route("/v1/objects/{class}/{name}/fetch", any(rpc::fetch))
        .route("/v1/objects/{class}/{name}/fetch/{*path}", any(rpc::fetch))
        .route("/v1/admin/objects", get(admin::list))
        .route("/v1/feed", get(feed::read))
        .route("/v1/admin/backup", post(admin::backup))
        .route("/v1/admin/revoke", post(admin::revoke))
        .route("/v1/admin/cluster", get(admin::cluster))
        .route(
            "/v1/admin/objects/{class}/{name}",
            get(admin::details).delete(admin::delete),
        )
        .route("/v1/admin/objects/{class}/{name}/sql", post(admin::sql))
        .route("/v1/admin/objects/{class}/{name}/log", get(admin::log))
        .route("/v1/admin/objects/{class}/{name}/kv", get(admin_views::kv))
        .route(
            "/v1/admin/objects/{class}/{name}/sockets",
            get(admin_views::sockets),
        )
        .route(
            "/v1/admin/objects/{class}/{name}/sockets/{socket}",
            delete(admin_views::close_socket),
        )
        .route("/v1/admin/yjs/{doc}", get(admin_views::yjs_doc))
        .route("/admin", get(admin_page::page))
        .route("/admin/app.js", get(admin_page::script))
        .route("/v1/yjs/{doc}", get(yjs::socket))
        .route("/v1/yjs/{doc}/state", get(yjs::state))
        .route("/v1/yjs/{doc}/update", post(yjs::update))
        .route(
            "/v1/yjs/{doc}/versions",
            get(versions::list).post(versions::create),
        )
        .route(
            "/v1/yjs/{doc}/versions/{name}",
            get(versions::read).delete(versions::delete),
        )
        .route(
            "/v1/yjs/{doc}/versions/{name}/restore",
            post(versions::restore),
        )
        .merge(demos::router())
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes));
    // Cluster mode: a request for an object owned elsewhere goes there (a
    // single node pays nothing for it: the layer is not there).
    let router = if runtime.cluster().is_some() {
        router.layer(axum::middleware::from_fn_with_state(
            runtime.clone(),
            crate::cluster::route_layer,
        ))
    } else {
        router
    };
    // Layers run per route (after routing, so `MatchedPath` is known), the
    // last added outermost: the access log's span, then CORS (which answers
    // preflights itself). The request id is given before routing
    // (`serve.rs`).
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(trace::access_log()).with_state(runtime)
}

/// Liveness: 200 while the process can serve; 503 once the commit log
/// broke (every write fails until a restart, which loses nothing).
async fn healthz(State(runtime): State<Runtime>) -> axum::response::Response {
    match log_broken(&runtime) {
        Some(answer) => answer,
        None => "ok\n".into_response(),
    }
}

/// Readiness: 200 while serving, 503 once a shutdown began or the commit
/// log broke (the listener opens only after recovery, so there is no
/// "recovering" answer to give).
async fn readyz(State(runtime): State<Runtime>) -> axum::response::Response {
    if runtime.is_shutting_down() {
        return ApiError::new(ErrorCode::ShuttingDown, "the server is draining").into_response();
    }
    match log_broken(&runtime) {
        Some(answer) => answer,
        None => "ready\n".into_response(),
    }
}

/// The probes' 503 once a write or `fdatasync` of the commit log failed.
fn log_broken(runtime: &Runtime) -> Option<axum::response::Response> {
    if !runtime.log().is_broken() {
        return None;
    }
    let mut answer = ApiError::new(
        ErrorCode::Internal,
        "the commit log is broken after a failed write; every write fails until the server restarts",
    )
    .into_response();
    *answer.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    Some(answer)
}

/// `GET /metrics`. With `--auth-secret` set it needs the admin token
/// (`Authorization: Bearer`); `--metrics-listen` serves it without one on a
/// separate address instead (`metrics_router`).
async fn metrics(
    State(runtime): State<Runtime>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let auth = &runtime.config().auth;
    if auth.requires_tokens() {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if let Err(mut e) = auth.check_admin(token) {
            if e.code == ErrorCode::NotFound {
                e.message = "with --auth-secret, /metrics needs the admin token (--admin-token) or its own address (--metrics-listen)".into();
            }
            return ApiError::from(e).into_response();
        }
    }
    open_metrics(State(runtime)).await.into_response()
}

async fn open_metrics(State(runtime): State<Runtime>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        runtime.metrics().render(),
    )
}

/// The router of `--metrics-listen`: `/metrics` only, no token.
pub(crate) fn metrics_router(runtime: Runtime) -> Router {
    Router::new()
        .route("/metrics", get(open_metrics))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "only /metrics is served here") })
        .with_state(runtime)
}
