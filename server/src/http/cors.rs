//! Browsers on other origins (`--cors-origin`): CORS headers on the HTTP API,
//! preflights included, and the Origin check on WebSocket upgrades (which
//! CORS does not cover: a browser opens a socket to any origin and only
//! tells the server where the page came from).
//!
//! Without `--cors-origin` the server stays same-origin: no CORS headers,
//! and a socket whose `Origin` is not the server's own is refused. Clients
//! that send no `Origin` (anything but a browser) are not affected.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use roost_protocol::ErrorCode;
use tower_http::cors::{AllowMethods, AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::trace::REQUEST_ID;

/// Set by reverse proxies that rewrite `Host`: the host the browser used.
const X_FORWARDED_HOST: header::HeaderName = header::HeaderName::from_static("x-forwarded-host");

/// Parses one `--cors-origin` value: `*`, or `http(s)://host[:port]` (a
/// trailing `/` is dropped; compared without case).
pub(crate) fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
    if text == "*" {
        return Ok(text);
    }
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']) => {
            HeaderValue::from_str(&text).map_err(|e| e.to_string())?;
            Ok(text)
        }
        _ => Err(format!(
            "`{text}` is not an origin: use `*` or scheme://host[:port], e.g. https://app.example.com"
        )),
    }
}

/// The CORS layer for `origins`, or none when the list is empty.
pub(crate) fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
            .expose_headers([REQUEST_ID])
            .max_age(Duration::from_secs(600)),
    )
}

/// `host[:port]` without the scheme's default port.
fn authority<'a>(scheme: &str, host: &'a str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    host.strip_suffix(default).unwrap_or(host)
}

/// Whether a WebSocket upgrade may proceed: no `Origin` (not a browser), the
/// server's own origin (same host and port as `Host`, or as a proxy's
/// `X-Forwarded-Host`), or a listed one. Trusting `X-Forwarded-Host` opens
/// nothing: the check stops pages in browsers, which cannot set headers on
/// a WebSocket handshake, and any other client can send any `Origin`.
pub(crate) fn check_socket_origin(origins: &[String], headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
    if origins.iter().any(|o| o == "*" || *o == origin) {
        return Ok(());
    }
    if let Some((scheme, from)) = origin.split_once("://") {
        let hosts = [header::HOST, X_FORWARDED_HOST]
            .into_iter()
            .flat_map(|name| headers.get_all(name))
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for host in hosts {
            let host = host.trim().to_ascii_lowercase();
            if authority(scheme, from) == authority(scheme, &host) {
                return Ok(());
            }
        }
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "WebSocket from origin `{origin}` refused: only the server's own origin and those listed with --cors-origin may connect"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_str(origin).expect("a valid header value"),
        );
        h.insert(
            header::HOST,
            HeaderValue::from_str(host).expect("a valid header value"),
        );
        h
    }

    #[test]
    fn origins_parse() {
        assert_eq!(
            parse_origin("https://App.example.com/").as_deref(),
            Ok("https://app.example.com")
        );
        assert_eq!(parse_origin("*").as_deref(), Ok("*"));
        assert!(parse_origin("app.example.com").is_err());
        assert!(parse_origin("https://a.com/path").is_err());
    }

    #[test]
    fn socket_origins() {
        let none: Vec<String> = Vec::new();
        assert!(check_socket_origin(&none, &HeaderMap::new()).is_ok());
        assert!(
            check_socket_origin(&none, &headers("http://127.0.0.1:8787", "127.0.0.1:8787")).is_ok()
        );
        assert!(check_socket_origin(&none, &headers("https://a.com", "a.com:443")).is_ok());
        assert!(check_socket_origin(&none, &headers("http://evil.com", "127.0.0.1:8787")).is_err());
        let listed = vec!["http://app.com".to_owned()];
        assert!(check_socket_origin(&listed, &headers("http://app.com", "api.com")).is_ok());
        assert!(check_socket_origin(&listed, &headers("http://evil.com", "api.com")).is_err());
        let mut proxied = headers("https://app.com", "127.0.0.1:8787");
        proxied.insert(X_FORWARDED_HOST, HeaderValue::from_static("app.com"));
        assert!(check_socket_origin(&none, &proxied).is_ok());
        let any = vec!["*".to_owned()];
        assert!(check_socket_origin(&any, &headers("http://evil.com", "api.com")).is_ok());
    }
}
