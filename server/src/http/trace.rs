//! The access log and request ids. Every request gets an `x-request-id` (the
//! client's own if it sent a usable one, else a new one), returned in the
//! response; `tower-http`'s `TraceLayer` opens a span per request with the
//! method, matched route, object and request id — so whatever the handler
//! logs (an `ApiError` included) carries them — and writes one line per
//! request, target `roost::access`, with status and latency. Health, readiness
//! and metrics probes log at debug level, everything else at info.
//!
//! Not here: socket lifetimes (`sockets::conn` logs open and close lines
//! under the same target) and connections refused at accept (`http::serve`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// The request id header, read from the client and set on every response.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Routes that probes hit every few seconds: their lines are debug-level.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The request's id as the middleware set it, if it ran.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// A client's id is kept if it is short and plain (it ends up in log lines).
fn usable(id: &HeaderValue) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=".contains(c))
}

/// A new id: a per-process random prefix and a counter (unique within the
/// process, unlikely to repeat across restarts).
fn new_id() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:08x}-{n:06x}"))
        .expect("invariant: hex digits and a dash are a valid header value")
}

/// Gives a request its id (in its headers, where the span and the handlers
/// read it) and returns it, for the accept loop to set on the response.
pub(crate) fn assign_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let id = match headers.get(REQUEST_ID) {
        Some(v) if usable(v) => v.clone(),
        _ => new_id(),
    };
    headers.insert(REQUEST_ID, id.clone());
    id
}

/// `class/name` of the object a route addresses.
struct Object<'a>(&'a str, &'a str);

impl std::fmt::Display for Object<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// The object a route addresses, read from the URI path at the route's
/// `{class}`/`{name}` (or `{doc}`: a `ydoc`) segments.
fn object_of<'a>(route: &str, path: &'a str) -> Option<Object<'a>> {
    let (mut class, mut name) = (None, None);
    for (pattern, segment) in route.split('/').zip(path.split('/')) {
        match pattern {
            "{class}" => class = Some(segment),
            "{name}" => name = Some(segment),
            "{doc}" => (class, name) = (Some("ydoc"), Some(segment)),
            _ => {}
        }
    }
    Some(Object(class?, name?))
}

fn make_span<B>(req: &axum::http::Request<B>) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str);
    let method = req.method().as_str();
    let request_id = request_id(req.headers()).unwrap_or("-");
    // Given at creation (not `record`ed after): the span's fields are
    // formatted once.
    let object = object_of(route, req.uri().path()).map(tracing::field::display);
    if PROBES.contains(&route) {
        tracing::debug_span!(target: "roost::access", "request", method = %method, route = %route, object, request_id = %request_id)
    } else {
        tracing::info_span!(target: "roost::access", "request", method = %method, route = %route, object, request_id = %request_id)
    }
}

fn on_response<B>(res: &axum::http::Response<B>, latency: Duration, span: &Span) {
    let status = res.status().as_u16();
    let latency_ms = latency.as_micros() as f64 / 1000.0;
    let info = span
        .metadata()
        .is_some_and(|m| *m.level() == tracing::Level::INFO);
    if info {
        tracing::info!(target: "roost::access", status, latency_ms, "request");
    } else {
        tracing::debug!(target: "roost::access", status, latency_ms, "request");
    }
}

/// `TraceLayer` with our span, our response line and nothing else.
pub(crate) type AccessLog = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request) -> Span,
    (),
    fn(&Response, Duration, &Span),
    (),
    (),
    (),
>;

/// The access log layer (see the module docs). Failures are not logged
/// again here: `ApiError` already logged them, inside the request's span.
pub(crate) fn access_log() -> AccessLog {
    TraceLayer::new_for_http()
        .make_span_with(make_span::<axum::body::Body> as fn(&Request) -> Span)
        .on_request(())
        .on_response(on_response::<axum::body::Body> as fn(&Response, Duration, &Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_read_from_the_route() {
        let route = "/v1/objects/{class}/{name}/call/{method}";
        let object = |route, path| object_of(route, path).map(|o| o.to_string());
        assert_eq!(
            object(route, "/v1/objects/counter/a%20b/call/get").as_deref(),
            Some("counter/a%20b")
        );
        assert_eq!(
            object("/v1/yjs/{doc}/state", "/v1/yjs/notes/state").as_deref(),
            Some("ydoc/notes")
        );
        assert_eq!(object("/healthz", "/healthz"), None);
    }

    #[test]
    fn client_ids_are_kept_only_when_plain() {
        assert!(usable(&HeaderValue::from_static("abc-123_x.y")));
        assert!(!usable(&HeaderValue::from_static("a b")));
        assert!(!usable(&HeaderValue::from_static("")));
        assert!(!usable(
            &HeaderValue::from_str(&"x".repeat(129)).expect("a valid header value")
        ));
        assert_ne!(new_id(), new_id());
    }
}
