//! Requests for objects owned by another node go to the owner: HTTP
//! requests are proxied (one hop: a forwarded request is never forwarded
//! again), WebSockets are relayed frame by frame from the node the client
//! connected to.
//!
//! A relayed Yjs socket outlives its owner: when the upstream socket ends
//! without a final close (the owner died, restarts, or handed the object
//! over), the relay routes again — another node takes the object over from
//! the log — connects to the new owner and re-syncs both ways: it asks the
//! owner for its whole state (sync step 1 with an empty state vector) and
//! passes the owner's step 1 to the client, whose step 2 brings anything
//! the owner lacks. The client's socket stays open throughout. Object
//! sockets (`/ws`) keep their attachment and tags in the owner's socket
//! table, which died with it: they are closed with 1012 and reconnect.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{self, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use roost_protocol::ErrorCode;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

use super::owner::Route;
use super::Cluster;
use crate::http::error::ApiError;
use crate::id::ObjectKey;
use crate::runtime::Runtime;

/// Marks a request one node forwarded to another.
const FORWARDED: &str = "roost-forwarded-by";
/// How long a relay looks for a new owner after its upstream ended.
const RELAY_RECONNECT_FOR: Duration = Duration::from_secs(30);
/// Sync step 1 with an empty state vector: "send me everything".
const SYNC_STEP1_EMPTY: [u8; 4] = [0, 0, 1, 0];

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
                relay(cluster, runtime, key, req, node.addr).await
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

fn unreachable_owner(e: impl std::fmt::Display) -> Response {
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

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the upstream socket to `addr` for the client's request.
async fn connect_upstream(
    cluster: &Cluster,
    addr: &str,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Result<Upstream, tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for name in [
        axum::http::header::AUTHORIZATION,
        axum::http::header::ORIGIN,
    ] {
        if let Some(v) = headers.get(&name) {
            request.headers_mut().insert(name, v.clone());
        }
    }
    if let Ok(v) = cluster.node_id().parse() {
        request.headers_mut().insert(FORWARDED, v);
    }
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok(ws)
}

/// Accepts the client's socket and relays it to the owner.
async fn relay(
    cluster: Cluster,
    runtime: Runtime,
    key: ObjectKey,
    req: Request,
    addr: String,
) -> Response {
    let (mut parts, _) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let upstream = match connect_upstream(&cluster, &addr, &path, &parts.headers).await {
        Ok(ws) => ws,
        Err(tungstenite::Error::Http(resp)) => {
            let (p, body) = resp.into_parts();
            return Response::from_parts(p, Body::from(body.unwrap_or_default()));
        }
        Err(e) => return unreachable_owner(e),
    };
    let yjs = path.starts_with("/v1/yjs/");
    let headers = parts.headers.clone();
    crate::http::ws_configure(upgrade, &runtime).on_upgrade(move |client| async move {
        let relay = Relay {
            cluster,
            runtime,
            key,
            path,
            headers,
            yjs,
        };
        relay.run(client, upstream).await;
    })
}

struct Relay {
    cluster: Cluster,
    runtime: Runtime,
    key: ObjectKey,
    path: String,
    headers: axum::http::HeaderMap,
    yjs: bool,
}

/// How one upstream connection ended.
enum Ended {
    /// The client left (or closed): done.
    Client,
    /// The upstream closed with this frame: pass it on, done.
    Closed(Option<ws::CloseFrame>),
    /// The upstream vanished: find the new owner.
    Lost,
}

impl Relay {
    async fn run(self, mut client: ws::WebSocket, mut upstream: Upstream) {
        loop {
            match pump(&mut client, &mut upstream).await {
                Ended::Client => {
                    let _ = upstream.close(None).await;
                    return;
                }
                Ended::Closed(frame) => {
                    let _ = client.send(ws::Message::Close(frame)).await;
                    return;
                }
                Ended::Lost if self.yjs => match self.reconnect().await {
                    Some(next) => {
                        upstream = next;
                        // Ask the new owner for everything; its own step 1
                        // reaches the client, whose step 2 fills the owner in.
                        let step1 = tungstenite::Message::Binary(SYNC_STEP1_EMPTY.to_vec().into());
                        if upstream.send(step1).await.is_err() {
                            continue;
                        }
                    }
                    None => {
                        let _ = client
                            .send(close_frame(1013, "no node could take the document over"))
                            .await;
                        return;
                    }
                },
                Ended::Lost => {
                    let _ = client
                        .send(close_frame(1012, "the object's node went away; reconnect"))
                        .await;
                    return;
                }
            }
        }
    }

    async fn reconnect(&self) -> Option<Upstream> {
        let started = Instant::now();
        while started.elapsed() < RELAY_RECONNECT_FOR && !self.runtime.is_shutting_down() {
            let addr = match self.cluster.route(&self.key, &self.runtime).await {
                Ok(Route::Local) => self.cluster.0.config.advertise.clone(),
                Ok(Route::Remote(node)) => node.addr,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            match connect_upstream(&self.cluster, &addr, &self.path, &self.headers).await {
                Ok(ws) => {
                    tracing::info!(class = %self.key.class, id = %self.key.id, %addr, "cluster: relay reconnected to the new owner");
                    return Some(ws);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        None
    }
}

fn close_frame(code: u16, reason: &str) -> ws::Message {
    ws::Message::Close(Some(ws::CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Passes frames both ways until one side ends.
async fn pump(client: &mut ws::WebSocket, upstream: &mut Upstream) -> Ended {
    loop {
        tokio::select! {
            from_client = client.recv() => {
                let msg = match from_client {
                    Some(Ok(ws::Message::Close(_))) | None | Some(Err(_)) => return Ended::Client,
                    Some(Ok(m)) => m,
                };
                let out = match msg {
                    ws::Message::Text(t) => tungstenite::Message::Text(t.as_str().into()),
                    ws::Message::Binary(b) => tungstenite::Message::Binary(b),
                    ws::Message::Ping(b) => tungstenite::Message::Ping(b),
                    ws::Message::Pong(b) => tungstenite::Message::Pong(b),
                    ws::Message::Close(_) => return Ended::Client,
                };
                if upstream.send(out).await.is_err() {
                    return Ended::Lost;
                }
            }
            from_upstream = upstream.next() => {
                let msg = match from_upstream {
                    Some(Ok(m)) => m,
                    None | Some(Err(_)) => return Ended::Lost,
                };
                let out = match msg {
                    tungstenite::Message::Text(t) => ws::Message::Text(t.as_str().into()),
                    tungstenite::Message::Binary(b) => ws::Message::Binary(b),
                    tungstenite::Message::Ping(b) => ws::Message::Ping(b),
                    tungstenite::Message::Pong(b) => ws::Message::Pong(b),
                    tungstenite::Message::Close(frame) => {
                        let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                        // The owner going away (shutdown, moved, restart) is
                        // not the end of a relayed socket.
                        if matches!(code, 1001 | 1006 | 1011 | 1012 | 1013) {
                            return Ended::Lost;
                        }
                        return Ended::Closed(frame.map(|f| ws::CloseFrame { code: u16::from(f.code), reason: f.reason.as_str().into() }));
                    }
                    tungstenite::Message::Frame(_) => continue,
                };
                if client.send(out).await.is_err() {
                    return Ended::Client;
                }
            }
        }
    }
}
