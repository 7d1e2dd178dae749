//! The admin console in the browser: `GET /admin` (a plain HTML page) and
//! `GET /admin/app.js` (its script, no framework), embedded in the binary.
//! The page asks for the admin token and calls the admin API with it
//! (`admin.rs`, `admin_views.rs`) and `/metrics`; serving the page itself
//! needs no token, since it holds no data.
//!
//! Deliberately not a static-file server: two fixed files, nothing read from
//! disk, and a content security policy that allows only this origin.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("admin_page/index.html");
const SCRIPT: &str = include_str!("admin_page/app.js");

/// Scripts only from this origin (no inline script); inline styles are the
/// page's own.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /admin`.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /admin/app.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
