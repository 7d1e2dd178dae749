//! The server's edge as operators and browsers see it: the access log and
//! request ids, CORS (`--cors-origin`) and the Origin check on WebSocket
//! upgrades.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::SinkExt;
use roost_tests::{http, ServerProcess};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// An OPTIONS preflight for `POST` on a call route from `origin`; returns
/// the status and the response's headers.
async fn preflight(
    server: &ServerProcess,
    origin: &str,
) -> anyhow::Result<(u16, reqwest::header::HeaderMap)> {
    let resp = http()
        .request(
            reqwest::Method::OPTIONS,
            server.url("/v1/objects/counter/c/call/get"),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.headers().clone()))
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A call from a page on `origin`: its status and `Access-Control-Allow-Origin`.
async fn call_from(server: &ServerProcess, origin: &str) -> anyhow::Result<(u16, Option<String>)> {
    let resp = http()
        .post(server.url("/v1/objects/counter/c/call/get"))
        .header("Origin", origin)
        .json(&Value::Null)
        .send()
        .await?;
    let allow = header(resp.headers(), "access-control-allow-origin").map(str::to_owned);
    Ok((resp.status().as_u16(), allow))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_are_sent_only_to_listed_origins() -> anyhow::Result<()> {
    // Default: same-origin, no CORS headers at all.
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (_, headers) = preflight(&server, "https://app.example").await?;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    assert_eq!(
        call_from(&server, "https://app.example").await?,
        (200, None)
    );
    server.terminate().await?;

    // A list (comma-separated and repeated).
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--cors-origin",
            "https://app.example,https://other.example",
            "--cors-origin",
            "http://localhost:5173",
        ],
    )
    .await?;
    for origin in [
        "https://app.example",
        "https://other.example",
        "http://localhost:5173",
    ] {
        let (status, headers) = preflight(&server, origin).await?;
        assert_eq!(status, 200, "preflight from {origin}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(origin)
        );
        let allowed = header(&headers, "access-control-allow-headers")
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        let methods = header(&headers, "access-control-allow-methods").unwrap_or("");
        assert!(methods.contains("POST"), "{methods}");
        assert_eq!(
            call_from(&server, origin).await?,
            (200, Some(origin.to_owned()))
        );
    }
    let (_, headers) = preflight(&server, "https://evil.example").await?;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    assert_eq!(call_from(&server, "https://evil.example").await?.1, None);
    server.terminate().await?;

    // Any origin.
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--cors-origin", "*"]).await?;
    let (status, headers) = preflight(&server, "https://evil.example").await?;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    server.terminate().await?;
    Ok(())
}

/// Opens a WebSocket at `path` with `Origin: origin` (none if `None`);
/// returns 101 or the refusal's status and JSON body.
async fn ws_from(
    server: &ServerProcess,
    path: &str,
    origin: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = server.ws_url(path).into_client_request()?;
    if let Some(origin) = origin {
        request.headers_mut().insert("Origin", origin.parse()?);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            Ok((101, Value::Null))
        }
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Ok((
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_from_foreign_origins_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let own = server.base.clone();
    for path in ["/v1/objects/room/r/ws", "/v1/yjs/d"] {
        let (status, body) = ws_from(&server, path, Some("https://evil.example")).await?;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{path}: {body}");
        assert_eq!(ws_from(&server, path, Some(&own)).await?.0, 101, "{path}");
        assert_eq!(ws_from(&server, path, None).await?.0, 101, "{path}");
    }
    server.terminate().await?;

    let dir = tempfile::tempdir()?;
    let server =
        ServerProcess::start(dir.path(), &["--cors-origin", "https://app.example"]).await?;
    for path in ["/v1/objects/room/r/ws", "/v1/yjs/d"] {
        assert_eq!(
            ws_from(&server, path, Some("https://app.example")).await?.0,
            101,
            "{path}"
        );
        assert_eq!(
            ws_from(&server, path, Some("https://evil.example"))
                .await?
                .0,
            403,
            "{path}"
        );
    }
    server.terminate().await?;
    Ok(())
}

/// Waits up to 5 s for a log line that contains every one of `parts`.
async fn log_line(
    server: &mut ServerProcess,
    seen: &mut Vec<String>,
    parts: &[&str],
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        seen.extend(server.drain_logs());
        if let Some(line) = seen.iter().find(|l| parts.iter().all(|p| l.contains(p))) {
            return Ok(line.clone());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("no log line with {parts:?} in:\n{}", seen.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_sockets_are_logged_with_their_request_id() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = ServerProcess::start(dir.path(), &[]).await?;
    let mut seen = Vec::new();
    let client = http();

    // The client's id is echoed and logged with the route, object and status.
    let resp = client
        .post(server.url("/v1/objects/counter/c/call/increment"))
        .header("x-request-id", "test-req-42")
        .json(&serde_json::json!({"by": 1}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(resp.headers(), "x-request-id"), Some("test-req-42"));
    let line = log_line(
        &mut server,
        &mut seen,
        &["roost::access", "request_id=test-req-42"],
    )
    .await?;
    for part in [
        "INFO",
        "method=POST",
        "route=/v1/objects/{class}/{name}/call/{method}",
        "object=counter/c",
        "status=200",
        "latency_ms=",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }

    // Without one, the server makes one up, returns and logs it.
    let resp = client.get(server.url("/v1/nosuch")).send().await?;
    assert_eq!(resp.status(), 404);
    let id = header(resp.headers(), "x-request-id")
        .context("no x-request-id on the response")?
        .to_owned();
    assert!(!id.is_empty());
    log_line(
        &mut server,
        &mut seen,
        &["roost::access", &format!("request_id={id}"), "status=404"],
    )
    .await?;

    // Probes stay out of the info-level log.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(client.get(server.url(path)).send().await?.status(), 200);
    }

    // A socket: the upgrade, its open line and its close line with the code.
    let mut request = server
        .ws_url("/v1/objects/room/r/ws")
        .into_client_request()?;
    request
        .headers_mut()
        .insert("x-request-id", "test-sock-7".parse()?);
    let (mut ws, resp) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("test-sock-7")
    );
    log_line(
        &mut server,
        &mut seen,
        &[
            "socket open",
            "request_id=test-sock-7",
            "class=room",
            "name=r",
        ],
    )
    .await?;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    })))
    .await?;
    log_line(
        &mut server,
        &mut seen,
        &["socket closed", "class=room", "code=1001", "reason=\"bye\""],
    )
    .await?;
    log_line(
        &mut server,
        &mut seen,
        &["roost::access", "request_id=test-sock-7", "status=101"],
    )
    .await?;
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("route=/healthz") || l.contains("route=/readyz")),
        "probes were logged at info:\n{}",
        seen.join("\n")
    );
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_reach_clients_without_paths_and_the_log_with_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = ServerProcess::start(dir.path(), &["--admin-token", "adm"]).await?;
    let client = http();
    let (status, _) = roost_tests::call(
        &client,
        &server,
        "counter",
        "c",
        "increment",
        serde_json::json!({"by": 1}),
    )
    .await?;
    assert_eq!(status, 200);
    // The object's WAL becomes a directory: deleting the
    // object then fails with an error naming that path.
    let shm = roost_tests::walk(&server.data)
        .into_iter()
        .find(|p| {
            let p = p.to_string_lossy();
            p.contains("objects") && p.ends_with(".sqlite-wal")
        })
        .context("no -wal file for the object")?;
    std::fs::remove_file(&shm)?;
    std::fs::create_dir(&shm)?;
    let resp = client
        .delete(server.url("/v1/admin/objects/counter/c"))
        .bearer_auth("adm")
        .header("x-request-id", "test-del-1")
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await?;
    assert_eq!(status, 500, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("<path>"), "{body}");
    let data = server.data.to_string_lossy().into_owned();
    assert!(!message.contains(&data), "{body}");
    assert!(!message.contains("objects/counter"), "{body}");
    // The log has the whole message, with the request's id.
    let mut seen = Vec::new();
    log_line(
        &mut server,
        &mut seen,
        &["request failed", "request_id=test-del-1", &data],
    )
    .await?;
    server.terminate().await?;
    Ok(())
}
