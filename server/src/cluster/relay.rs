//! WebSockets for objects owned by another node, relayed frame by frame
//! from the node the client connected to to the owner.
//!
//! A relayed Yjs socket outlives its owner: when the upstream socket ends
//! without a final close (the owner died, restarts, or handed the object
//! over), the relay routes again — another node takes the object over from
//! the log — connects to the new owner and re-syncs both ways: it asks the
//! owner for its whole state (sync step 1 with an empty state vector) and
//! passes the owner's step 1 to the client, whose step 2 brings anything
//! the owner lacks. The client's socket stays open throughout. An object
//! socket (`/ws`) is resumed on the new owner with the state the old one
//! last told the relay (`resume.rs`); its calls in flight fail with
//! `object_moved`. While no owner is reachable the relay does not read
//! the client (the one frame whose send failed is kept and sent first).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{self, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

use super::forward::{unreachable_owner, FORWARDED};
use super::owner::Route;
use super::resume::{self, Resumable};
use super::Cluster;
use crate::id::ObjectKey;
use crate::runtime::Runtime;

/// How long a relay looks for a new owner after its upstream ended.
const RELAY_RECONNECT_FOR: Duration = Duration::from_secs(30);
/// Sync step 1 with an empty state vector: "send me everything".
const SYNC_STEP1_EMPTY: [u8; 4] = [0, 0, 1, 0];

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the upstream socket to `addr` for the client's request.
/// `extra`: the relay's own headers (`resume.rs`). Also says whether the
/// owner frames the connection for a relay (it answered `roost-relay`).
async fn connect_upstream(
    cluster: &Cluster,
    addr: &str,
    path: &str,
    headers: &axum::http::HeaderMap,
    extra: &[(&'static str, String)],
) -> Result<(Upstream, bool), tungstenite::Error> {
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
    for (name, value) in extra {
        if let Ok(v) = value.parse() {
            request.headers_mut().insert(*name, v);
        }
    }
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok((ws, response.headers().contains_key(resume::RELAY)))
}

/// Accepts the client's socket and relays it to the owner.
pub(super) async fn relay(
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
    let yjs = path.starts_with("/v1/yjs/");
    let mut object = (!yjs).then(Resumable::default);
    let extra = relay_headers(&cluster, object.as_ref());
    let upstream = match connect_upstream(&cluster, &addr, &path, &parts.headers, &extra).await {
        Ok((ws, framed)) => {
            if let Some(object) = object.as_mut() {
                object.framed = framed;
            }
            ws
        }
        Err(tungstenite::Error::Http(resp)) => {
            let (p, body) = resp.into_parts();
            return Response::from_parts(p, Body::from(body.unwrap_or_default()));
        }
        Err(e) => return unreachable_owner(e),
    };
    let headers = parts.headers.clone();
    crate::http::ws_configure(upgrade, &runtime).on_upgrade(move |client| async move {
        let relay = Relay {
            cluster,
            runtime,
            key,
            path,
            headers,
            link: Link {
                object,
                pending: None,
            },
        };
        relay.run(client, upstream).await;
    })
}

/// An object socket's relay headers: the cluster's relay token, and the
/// state to resume once the owner accepted the socket.
fn relay_headers(cluster: &Cluster, object: Option<&Resumable>) -> Vec<(&'static str, String)> {
    let Some(object) = object else {
        return Vec::new();
    };
    let mut extra = vec![(resume::RELAY, cluster.relay_token())];
    if let Some(state) = object.resume_header() {
        extra.push((resume::RESUME, state));
    }
    extra
}

struct Relay {
    cluster: Cluster,
    runtime: Runtime,
    key: ObjectKey,
    path: String,
    headers: axum::http::HeaderMap,
    link: Link,
}

/// What a relay keeps across its upstream connections.
struct Link {
    /// An object socket's state and calls in flight (`None`: Yjs).
    object: Option<Resumable>,
    /// The client's frame whose send upstream failed: sent first next time.
    pending: Option<tungstenite::Message>,
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
    async fn run(mut self, mut client: ws::WebSocket, mut upstream: Upstream) {
        loop {
            match pump(&mut client, &mut upstream, &mut self.link).await {
                Ended::Client => {
                    let _ = upstream.close(None).await;
                    return;
                }
                Ended::Closed(frame) => {
                    let _ = client.send(ws::Message::Close(frame)).await;
                    return;
                }
                Ended::Lost if self.link.object.is_some() => match self.resume(&mut client).await {
                    Some(next) => upstream = next,
                    None => return,
                },
                Ended::Lost => match self.reconnect().await {
                    Some((next, _)) => {
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
            }
        }
    }

    /// An object socket's owner was lost: fails its calls in flight and
    /// resumes it on the new owner, or closes it (1012 if its owner had
    /// not accepted it yet, 1013 if no node took the object over).
    async fn resume(&mut self, client: &mut ws::WebSocket) -> Option<Upstream> {
        let object = self.link.object.as_mut()?;
        for frame in object.fail_calls() {
            if client.send(ws::Message::Text(frame.into())).await.is_err() {
                return None;
            }
        }
        if object.resume_header().is_none() {
            let reason = "the object's node went away; reconnect";
            let _ = client.send(close_frame(1012, reason)).await;
            return None;
        }
        let Some((next, framed)) = self.reconnect().await else {
            let reason = "no node could take the object over";
            let _ = client.send(close_frame(1013, reason)).await;
            return None;
        };
        if let Some(object) = self.link.object.as_mut() {
            object.framed = framed;
        }
        Some(next)
    }

    async fn reconnect(&self) -> Option<(Upstream, bool)> {
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
            let extra = relay_headers(&self.cluster, self.link.object.as_ref());
            match connect_upstream(&self.cluster, &addr, &self.path, &self.headers, &extra).await {
                Ok(connected) => {
                    tracing::info!(class = %self.key.class, id = %self.key.id, %addr, "cluster: relay reconnected to the new owner");
                    return Some(connected);
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

/// Passes frames both ways until one side ends, the client's pending
/// frame first.
async fn pump(client: &mut ws::WebSocket, upstream: &mut Upstream, link: &mut Link) -> Ended {
    if let Some(msg) = link.pending.take() {
        if let Some(end) = to_owner(upstream, link, msg).await {
            return end;
        }
    }
    loop {
        tokio::select! {
            from_client = client.recv() => {
                let out = match from_client {
                    Some(Ok(ws::Message::Text(t))) => tungstenite::Message::Text(t.as_str().into()),
                    Some(Ok(ws::Message::Binary(b))) => tungstenite::Message::Binary(b),
                    Some(Ok(ws::Message::Ping(b))) => tungstenite::Message::Ping(b),
                    Some(Ok(ws::Message::Pong(b))) => tungstenite::Message::Pong(b),
                    Some(Ok(ws::Message::Close(_))) | None | Some(Err(_)) => return Ended::Client,
                };
                if let Some(end) = to_owner(upstream, link, out).await {
                    return end;
                }
            }
            from_upstream = upstream.next() => {
                let msg = match from_upstream {
                    Some(Ok(m)) => m,
                    None | Some(Err(_)) => return Ended::Lost,
                };
                match from_owner(msg, link) {
                    Step::Pass(out) => {
                        if client.send(out).await.is_err() {
                            return Ended::Client;
                        }
                    }
                    Step::Skip => {}
                    Step::End(end) => return end,
                }
            }
        }
    }
}

/// Sends a client's frame upstream; on failure keeps it for the next
/// owner. An object socket's call counts as in flight once sent.
async fn to_owner(
    upstream: &mut Upstream,
    link: &mut Link,
    msg: tungstenite::Message,
) -> Option<Ended> {
    let call = match (&link.object, &msg) {
        (Some(_), tungstenite::Message::Text(t)) => resume::call_id(t.as_str()),
        _ => None,
    };
    if upstream.send(msg.clone()).await.is_err() {
        link.pending = Some(msg);
        return Some(Ended::Lost);
    }
    if let (Some(id), Some(object)) = (call, link.object.as_mut()) {
        object.sent_call(id);
    }
    None
}

/// What to do with a frame from the owner.
enum Step {
    Pass(ws::Message),
    Skip,
    End(Ended),
}

fn from_owner(msg: tungstenite::Message, link: &mut Link) -> Step {
    let out = match msg {
        tungstenite::Message::Text(t) => {
            if let Some(object) = link.object.as_mut() {
                object.owner_text(t.as_str());
            }
            ws::Message::Text(t.as_str().into())
        }
        tungstenite::Message::Binary(b) => match link.object.as_mut() {
            None => ws::Message::Binary(b),
            Some(object) => match object.owner_binary(b) {
                Some(data) => ws::Message::Binary(data),
                None => return Step::Skip,
            },
        },
        tungstenite::Message::Ping(b) => ws::Message::Ping(b),
        tungstenite::Message::Pong(b) => ws::Message::Pong(b),
        tungstenite::Message::Close(frame) => {
            let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
            // A Yjs socket's owner going away (shutdown, moved, restart) is
            // not the end of it. An object socket's owner closing it is:
            // frames after the close may not have run, and its client must
            // learn so.
            if link.object.is_none() && matches!(code, 1001 | 1006 | 1011 | 1012 | 1013) {
                return Step::End(Ended::Lost);
            }
            return Step::End(Ended::Closed(frame.map(|f| ws::CloseFrame {
                code: u16::from(f.code),
                reason: f.reason.as_str().into(),
            })));
        }
        tungstenite::Message::Frame(_) => return Step::Skip,
    };
    Step::Pass(out)
}
