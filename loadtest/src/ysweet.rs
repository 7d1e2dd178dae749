//! y-sweet's token handshake, done once per document before any socket
//! opens. A y-sweet client does not pick its socket URL: the application
//! asks the server's HTTP API for it.
//!
//! 1. `POST /doc/new` with `{"docId": NAME}` creates the document (or loads
//!    it if it exists).
//! 2. `POST /doc/NAME/auth` with `{}` answers `{"url": "ws://HOST/d/NAME/ws",
//!    "token": ...}`; the token is absent when the server runs without an
//!    auth key.
//! 3. The y-websocket provider connects to `{url}/{NAME}?token=TOKEN` and
//!    speaks plain y-websocket framing from there on.
//!
//! With `y-sweet serve --auth KEY`, both HTTP calls need the server token
//! (`y-sweet gen-auth` prints it) as `Authorization: Bearer`; roost-load
//! takes it from `--token`. The handshake is setup, not measured: connect
//! times stay WebSocket upgrade plus sync, as for the other servers.

use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde::Deserialize;

use crate::http1::HttpConn;
use crate::target::{encode_segment, Target};
use crate::yjs::Protocol;

/// The whole handshake (all documents) must finish within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The fields of y-sweet's auth answer that a client needs.
#[derive(Debug, Deserialize)]
struct ClientToken {
    url: String,
    #[serde(default)]
    token: Option<String>,
}

/// The socket path for each of `docs`, in order. For y-sweet this runs the
/// handshake (creating each document first if `create`); for the other
/// protocols it is `Protocol::path` and asks nothing.
pub(crate) async fn doc_paths(
    protocol: Protocol,
    target: &Target,
    docs: &[String],
    server_token: &str,
    create: bool,
    allow_remote: bool,
) -> anyhow::Result<Vec<String>> {
    if protocol != Protocol::YSweet {
        return Ok(docs
            .iter()
            .map(|d| protocol.path(&target.base_path, d))
            .collect());
    }
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(target, docs, server_token, create, allow_remote),
    )
    .await
    .with_context(|| format!("y-sweet handshake took over {HANDSHAKE_TIMEOUT:?}"))?
}

async fn handshake(
    target: &Target,
    docs: &[String],
    server_token: &str,
    create: bool,
    allow_remote: bool,
) -> anyhow::Result<Vec<String>> {
    if let Some(bad) = docs.iter().find(|d| {
        d.is_empty()
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        bail!("y-sweet document names may hold only letters, digits, '-' and '_': {bad:?}");
    }
    let mut http = HttpConn::connect(target)
        .await
        .with_context(|| format!("connecting to y-sweet at {}", target.addr))?;
    http.set_bearer(server_token);
    let mut paths = Vec::with_capacity(docs.len());
    for doc in docs {
        if create {
            let body = serde_json::json!({ "docId": doc }).to_string();
            let path = target.path("/doc/new");
            let (status, answer) = http.post_json(&path, Bytes::from(body)).await?;
            check(status, &answer, &path)?;
        }
        let path = target.path(&format!("/doc/{doc}/auth"));
        let (status, answer) = http.post_json(&path, Bytes::from_static(b"{}")).await?;
        if status == hyper::StatusCode::NOT_FOUND && !create {
            bail!("y-sweet does not know document {doc:?} (was it stored before the restart?)");
        }
        check(status, &answer, &path)?;
        let grant: ClientToken = serde_json::from_slice(&answer)
            .with_context(|| format!("y-sweet's answer to POST {path} is not a client token"))?;
        paths.push(socket_path(&grant, doc, target, allow_remote)?);
    }
    Ok(paths)
}

fn check(status: hyper::StatusCode, body: &[u8], path: &str) -> anyhow::Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let hint = if status == hyper::StatusCode::UNAUTHORIZED {
        " (the server has an auth key: pass its server token with --token)"
    } else {
        ""
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    bail!("y-sweet answered POST {path} with HTTP {status}{hint}: {text}")
}

/// `{url}/{doc}?token=...`, as the y-websocket provider builds it, as a path
/// on the server being loaded (a URL naming another server is refused).
fn socket_path(
    grant: &ClientToken,
    doc: &str,
    target: &Target,
    allow_remote: bool,
) -> anyhow::Result<String> {
    let at = Target::parse(&grant.url, allow_remote)
        .with_context(|| format!("y-sweet's socket URL {:?}", grant.url))?;
    if at.addr != target.addr {
        bail!(
            "y-sweet hands out socket URL {:?}, which is not the server under load ({}); run it without --url-prefix",
            grant.url,
            target.addr
        );
    }
    let mut path = format!("{}/{}", at.base_path, encode_segment(doc));
    if let Some(t) = grant.token.as_deref().filter(|t| !t.is_empty()) {
        path.push_str("?token=");
        path.push_str(&encode_segment(t));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn builds_the_provider_path() {
        let target = Target::parse("http://127.0.0.1:8080", false).expect("valid");
        let grant: ClientToken =
            serde_json::from_str(r#"{"url":"ws://127.0.0.1:8080/d/doc-1/ws","baseUrl":"x","docId":"doc-1","token":"a+b/c="}"#)
                .expect("json");
        assert_eq!(
            socket_path(&grant, "doc-1", &target, false).expect("path"),
            "/d/doc-1/ws/doc-1?token=a%2Bb%2Fc%3D"
        );
        let grant: ClientToken =
            serde_json::from_str(r#"{"url":"ws://127.0.0.1:8080/d/d/ws","docId":"d"}"#)
                .expect("json");
        assert_eq!(
            socket_path(&grant, "d", &target, false).expect("path"),
            Protocol::YSweet.path("", "d")
        );
        let elsewhere: ClientToken =
            serde_json::from_str(r#"{"url":"ws://127.0.0.1:9/d/d/ws"}"#).expect("json");
        assert!(socket_path(&elsewhere, "d", &target, false).is_err());
    }

    /// Answers HTTP/1.1 requests on one connection like y-sweet's API does
    /// (with an auth key): records each request line and whether it carried
    /// the bearer token.
    async fn fake_ysweet(listener: tokio::net::TcpListener) -> Vec<String> {
        let mut seen = Vec::new();
        let Ok((mut s, _)) = listener.accept().await else {
            return seen;
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // One request: headers, then Content-Length bytes of body.
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return seen,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return seen,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let line = head.lines().next().unwrap_or("").to_string();
            let authed = head.contains("authorization: bearer st");
            buf.drain(..end + 4 + len);
            let (status, body) = if !authed {
                ("401 Unauthorized", String::new())
            } else if line.starts_with("post /doc/new ") {
                ("200 OK", r#"{"docId":"x"}"#.to_string())
            } else if let Some(doc) = line
                .strip_prefix("post /doc/")
                .and_then(|r| r.split_once("/auth "))
                .map(|(d, _)| d.to_string())
            {
                let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                (
                    "200 OK",
                    format!(
                        r#"{{"url":"ws://127.0.0.1:{port}/d/{doc}/ws","docId":"{doc}","token":"t:{doc}"}}"#
                    ),
                )
            } else {
                ("404 Not Found", String::new())
            };
            seen.push(line);
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).await.is_err() {
                return seen;
            }
        }
    }

    #[tokio::test]
    async fn handshake_creates_authorizes_and_builds_paths() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(fake_ysweet(listener));
        let target = Target::parse(&url, false).expect("valid");
        let docs = vec!["a-1".to_string(), "b_2".to_string()];
        let paths = doc_paths(Protocol::YSweet, &target, &docs, "st", true, false)
            .await
            .expect("handshake");
        assert_eq!(
            paths,
            vec!["/d/a-1/ws/a-1?token=t%3Aa-1", "/d/b_2/ws/b_2?token=t%3Ab_2"]
        );
        let seen = server.await.expect("server");
        assert_eq!(
            seen,
            vec![
                "post /doc/new http/1.1",
                "post /doc/a-1/auth http/1.1",
                "post /doc/new http/1.1",
                "post /doc/b_2/auth http/1.1",
            ]
        );
    }

    #[tokio::test]
    async fn handshake_reports_a_missing_server_token() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(fake_ysweet(listener));
        let target = Target::parse(&url, false).expect("valid");
        let err = doc_paths(Protocol::YSweet, &target, &["d".into()], "", false, false)
            .await
            .expect_err("401");
        assert!(format!("{err:#}").contains("--token"), "{err:#}");
        drop(server);
    }

    #[tokio::test]
    async fn other_protocols_ask_nothing() {
        let target = Target::parse("http://127.0.0.1:1/base", false).expect("valid");
        let paths = doc_paths(
            Protocol::YWebsocket,
            &target,
            &["d".into()],
            "",
            true,
            false,
        )
        .await
        .expect("no I/O");
        assert_eq!(paths, vec!["/base/d"]);
    }

    #[tokio::test]
    async fn refuses_names_y_sweet_refuses() {
        // Checked before connecting: nothing listens on port 1.
        let target = Target::parse("http://127.0.0.1:1", false).expect("valid");
        let err = doc_paths(Protocol::YSweet, &target, &["a b".into()], "", true, false)
            .await
            .expect_err("bad name");
        assert!(format!("{err:#}").contains("letters"), "{err:#}");
    }
}
