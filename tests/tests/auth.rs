//! Access control, the admin API and guard rails, against the real binary.

use std::time::Duration;

use roost_protocol::yjs as wire;
use roost_tests::ws::{Client, Frame};
use roost_tests::yclient::YClient;
use roost_tests::{http, roost_bin, ServerProcess};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-0123456789";
const ADMIN: &str = "admin-token-abcdef";

fn mint(obj: &[&str], perm: &str, ttl: &str, secret: &str) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new(roost_bin());
    cmd.args(["token", "--perm", perm, "--ttl", ttl, "--secret", secret]);
    for o in obj {
        cmd.args(["--obj", o]);
    }
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "roost token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn start(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<ServerProcess> {
    let mut args = vec!["--auth-secret", SECRET, "--admin-token", ADMIN];
    args.extend_from_slice(extra);
    ServerProcess::start(dir, &args).await
}

async fn rpc(
    server: &ServerProcess,
    name: &str,
    method: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = http().post(server.url(&format!("/v1/objects/counter/{name}/call/{method}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// HTTP status of a refused WebSocket handshake; for an accepted one, the
/// close code it is closed with at once (4401/4403: refused for its token),
/// else 101.
async fn ws_status(url: &str) -> u16 {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    match tokio_tungstenite::connect_async(url).await {
        Ok((mut ws, _)) => {
            let first = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
            match first {
                Ok(Some(Ok(Message::Close(Some(frame))))) => u16::from(frame.code),
                _ => 101,
            }
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix_holds_for_rpc_object_sockets_and_yjs_sockets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[]).await?;
    let write = mint(&["counter/a", "room/*", "ydoc/d"], "write", "1h", SECRET)?;
    let other = mint(&["counter/b"], "write", "1h", SECRET)?;
    let wrong_secret = mint(&["counter/a"], "write", "1h", "not-the-secret")?;
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJvYmoiOlsiY291bnRlci9hIl0sInBlcm0iOiJ3cml0ZSIsImV4cCI6OTk5OTk5OTk5OX0.";
    let short = mint(&["counter/a", "room/r", "ydoc/d"], "write", "1s", SECRET)?;
    // RPC
    assert_eq!(rpc(&server, "a", "increment", None).await?.0, 401);
    assert_eq!(
        rpc(&server, "a", "increment", Some("garbage")).await?.0,
        401
    );
    assert_eq!(
        rpc(&server, "a", "increment", Some(&wrong_secret)).await?.0,
        401
    );
    assert_eq!(rpc(&server, "a", "increment", Some(none)).await?.0, 401);
    assert_eq!(rpc(&server, "a", "increment", Some(&other)).await?.0, 403);
    let (status, body) = rpc(&server, "a", "increment", Some(&write)).await?;
    assert_eq!((status, body), (200, json!(1)));
    let q = http()
        .post(server.url(&format!("/v1/objects/counter/a/call/get?token={write}")))
        .send()
        .await?;
    assert_eq!(q.status(), 200, "?token= works too");
    // Sockets, both kinds: accepted, then closed with 4401/4403 (a
    // browser never sees a refused upgrade's status).
    for path in ["/v1/objects/room/r/ws", "/v1/yjs/d"] {
        assert_eq!(
            ws_status(&server.ws_url(path)).await,
            4401,
            "{path} without a token"
        );
        assert_eq!(
            ws_status(&server.ws_url(&format!("{path}?token=garbage"))).await,
            4401
        );
        assert_eq!(
            ws_status(&server.ws_url(&format!("{path}?token={wrong_secret}"))).await,
            4401
        );
        assert_eq!(
            ws_status(&server.ws_url(&format!("{path}?token={none}"))).await,
            4401
        );
        assert_eq!(
            ws_status(&server.ws_url(&format!("{path}?token={other}"))).await,
            4403
        );
        assert_eq!(
            ws_status(&server.ws_url(&format!("{path}?token={write}"))).await,
            101
        );
    }
    // Expired tokens.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(rpc(&server, "a", "get", Some(&short)).await?.0, 401);
    assert_eq!(
        ws_status(&server.ws_url(&format!("/v1/yjs/d?token={short}"))).await,
        4401
    );
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_tokens_cannot_write_anywhere() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[]).await?;
    let write = mint(&["counter/c", "room/r", "ydoc/doc"], "write", "1h", SECRET)?;
    let read = mint(&["counter/c", "room/r", "ydoc/doc"], "read", "1h", SECRET)?;
    rpc(&server, "c", "increment", Some(&write)).await?;
    let (status, body) = rpc(&server, "c", "increment", Some(&read)).await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(rpc(&server, "c", "get", Some(&read)).await?.1, json!(1));
    // A read-only room member can read history but not post.
    let mut reader =
        Client::connect(&server.ws_url(&format!("/v1/objects/room/r/ws?name=ro&token={read}")))
            .await?;
    reader.event("history").await?;
    let r = reader.call("send", json!({"text": "sneaky"})).await?;
    assert_eq!(r["error"]["code"], "forbidden");
    // A read-only Yjs client: updates refused, awareness still relayed.
    let mut writer = YClient::new();
    writer
        .connect(&server.ws_url(&format!("/v1/yjs/doc?token={write}")))
        .await?;
    writer.insert(0, "mine").await?;
    // Wait until the server has stored it (the update is in flight until then).
    let state_url = server.url(&format!("/v1/yjs/doc/state?token={write}"));
    for _ in 0..200 {
        let bytes = http().get(&state_url).send().await?.bytes().await?;
        if roost_tests::yclient::text_of_update(&bytes)? == "mine" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut ro = YClient::new();
    ro.connect(&server.ws_url(&format!("/v1/yjs/doc?token={read}")))
        .await?;
    assert_eq!(ro.text(), "mine");
    ro.insert(0, "evil ").await?;
    writer.drain(Duration::from_millis(300)).await?;
    assert_eq!(
        writer.text(),
        "mine",
        "a read-only update reached another client"
    );
    let state = http()
        .get(server.url(&format!("/v1/yjs/doc/state?token={read}")))
        .send()
        .await?
        .bytes()
        .await?;
    assert_eq!(roost_tests::yclient::text_of_update(&state)?, "mine");
    let post = http()
        .post(server.url(&format!("/v1/yjs/doc/update?token={read}")))
        .body(vec![0u8, 0])
        .send()
        .await?;
    assert_eq!(post.status(), 403);
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        yrs::ClientID::new(5),
        yrs::sync::awareness::AwarenessUpdateEntry {
            clock: 1,
            json: std::sync::Arc::from(r#"{"user":"ro"}"#),
        },
    );
    ro.send(yrs::sync::protocol::Message::Awareness(
        yrs::sync::awareness::AwarenessUpdate { clients },
    ))
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let relays = roost_tests::metric(&http(), &server, "roost_awareness_relays_total").await?;
    assert!(relays >= 1.0);
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_close_when_their_token_expires_unless_refreshed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[]).await?;
    let short = mint(&["room/x"], "write", "2s", SECRET)?;
    let fresh = mint(&["room/x"], "write", "1h", SECRET)?;
    let mut expiring =
        Client::connect(&server.ws_url(&format!("/v1/objects/room/x/ws?token={short}"))).await?;
    let mut refreshed =
        Client::connect(&server.ws_url(&format!("/v1/objects/room/x/ws?token={short}"))).await?;
    refreshed
        .send_text(&json!({"type": "auth", "token": fresh}).to_string())
        .await?;
    let ack = refreshed.event("auth").await?;
    assert!(ack["exp"].as_i64().unwrap_or(0) > 0);
    let bad = json!({"type": "auth", "token": "garbage"}).to_string();
    refreshed.send_text(&bad).await?;
    assert_eq!(refreshed.event("error").await?["code"], "unauthorized");
    let code = loop {
        match expiring.next(Duration::from_secs(10)).await? {
            Frame::Closed(code, _) => break code,
            _ => continue,
        }
    };
    assert_eq!(code, Some(1008));
    let r = refreshed.call("who", Value::Null).await?;
    assert!(
        r["ok"].is_array(),
        "the refreshed socket is still open: {r}"
    );
    server.terminate().await?;
    Ok(())
}

/// The next close frame on `client` within `wait` (other frames skipped).
async fn closed(client: &mut Client, wait: Duration) -> anyhow::Result<(Option<u16>, String)> {
    loop {
        if let Frame::Closed(code, reason) = client.next(wait).await? {
            return Ok((code, reason));
        }
    }
}

/// Sends a binary frame and waits for the `[102]` that answers a ping.
async fn yjs_ping(client: &mut Client) -> anyhow::Result<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    client
        .ws
        .send(Message::Binary(wire::PING_FRAME.to_vec().into()))
        .await?;
    loop {
        match client.next(Duration::from_secs(5)).await? {
            Frame::Binary(b) if b == wire::PING_FRAME => return Ok(()),
            Frame::Closed(code, reason) => anyhow::bail!("closed: {code:?} {reason}"),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yjs_sockets_refresh_their_token_in_band() -> anyhow::Result<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[]).await?;
    let short = mint(&["ydoc/d"], "write", "2s", SECRET)?;
    let fresh = mint(&["ydoc/d"], "write", "1h", SECRET)?;
    let other = mint(&["ydoc/other"], "write", "1h", SECRET)?;
    let url = server.ws_url(&format!("/v1/yjs/d?token={short}"));
    let (mut expiring, mut refreshed) =
        (Client::connect(&url).await?, Client::connect(&url).await?);
    let binary = |bytes: Vec<u8>| Message::Binary(bytes.into());
    refreshed
        .ws
        .send(binary(wire::refresh_frame(&fresh)))
        .await?;
    yjs_ping(&mut refreshed).await?;
    // A token for another object, or bytes that are no token, close the socket.
    for frame in [
        wire::refresh_frame(&other),
        vec![wire::MSG_REFRESH, 2, 0xff, 0xfe],
    ] {
        let mut refused = Client::connect(&url).await?;
        refused.ws.send(binary(frame)).await?;
        let (code, reason) = closed(&mut refused, Duration::from_secs(5)).await?;
        assert_eq!(code, Some(1008));
        assert!(reason.starts_with("token refresh refused: "), "{reason}");
    }
    let (code, reason) = closed(&mut expiring, Duration::from_secs(10)).await?;
    assert_eq!((code, reason.as_str()), (Some(1008), "token expired"));
    yjs_ping(&mut refreshed).await?;
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_listen_publicly_without_a_secret() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(roost_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--auth-secret") && err.contains("--allow-anonymous"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_lists_inspects_queries_read_only_and_deletes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[]).await?;
    let write = mint(&["counter/*"], "write", "1h", SECRET)?;
    for name in ["x1", "x2", "y1"] {
        rpc(&server, name, "increment", Some(&write)).await?;
    }
    let client = http();
    let get = |path: &str, token: &str| {
        client
            .get(server.url(path))
            .bearer_auth(token.to_owned())
            .send()
    };
    // Access tokens are not admin tokens.
    assert_eq!(get("/v1/admin/objects", &write).await?.status(), 401);
    assert_eq!(
        client
            .get(server.url("/v1/admin/objects"))
            .send()
            .await?
            .status(),
        401
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let list: Value = get("/v1/admin/objects?class=counter&prefix=x&limit=1", ADMIN)
        .await?
        .json()
        .await?;
    assert_eq!(list["objects"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["objects"][0]["name"], "x1");
    let cursor = list["next_cursor"].as_str().unwrap_or_default().to_owned();
    let page2: Value = get(
        &format!("/v1/admin/objects?class=counter&prefix=x&cursor={cursor}"),
        ADMIN,
    )
    .await?
    .json()
    .await?;
    assert_eq!(page2["objects"][0]["name"], "x2");
    // A cursor that no page gave is refused, not read as the first page.
    let answer = get("/v1/admin/objects?cursor=x1", ADMIN).await?;
    assert_eq!(answer.status(), 400);
    // A limit out of range is refused, not quietly replaced.
    for bad in ["limit=0", "limit=-5", "limit=abc", "limit=1001"] {
        let answer = get(&format!("/v1/admin/objects?{bad}"), ADMIN).await?;
        assert_eq!(answer.status(), 400, "{bad}");
        let body: Value = answer.json().await?;
        assert_eq!(body["error"]["code"], "bad_request", "{bad}");
        assert_eq!(
            body["error"]["message"], "`limit` must be a whole number from 1 to 1000",
            "{bad}"
        );
    }
    // So is a parameter given twice (which one was meant?), here and on an
    // object's own routes.
    for path in [
        "/v1/admin/objects?limit=1&limit=2",
        "/v1/objects/counter/x1/fetch?token=a&token=b",
    ] {
        let answer = get(path, ADMIN).await?;
        assert_eq!(answer.status(), 400, "{path}");
        let body: Value = answer.json().await?;
        assert_eq!(body["error"]["code"], "bad_request", "{path}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("given more than once")),
            "{path}: {body}"
        );
    }
    let details: Value = get("/v1/admin/objects/counter/x1", ADMIN)
        .await?
        .json()
        .await?;
    assert!(
        details["storage_bytes"].as_u64().unwrap_or(0) > 0,
        "{details}"
    );
    assert_eq!(details["live"], true);
    assert_eq!(
        get("/v1/admin/objects/counter/nope", ADMIN).await?.status(),
        404
    );
    let sql = |q: &str| {
        client
            .post(server.url("/v1/admin/objects/counter/x1/sql"))
            .bearer_auth(ADMIN)
            .json(&json!({ "sql": q }))
            .send()
    };
    let r: Value = sql("SELECT count(*) AS n FROM _roost_kv")
        .await?
        .json()
        .await?;
    assert_eq!(r["columns"], json!(["n"]));
    assert_eq!(r["rows"], json!([[1]]));
    for q in [
        "INSERT INTO _roost_kv VALUES (x'00', x'00')",
        "UPDATE _roost_kv SET value = x'00'",
        "DELETE FROM _roost_kv",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "PRAGMA user_version = 7",
        "CREATE TABLE t(x)",
    ] {
        let resp = sql(q).await?;
        assert_eq!(resp.status(), 403, "{q} was not refused");
    }
    assert_eq!(sql("SELECT 1; DELETE FROM _roost_kv").await?.status(), 400);
    assert_eq!(
        rpc(&server, "x1", "get", Some(&write)).await?.1,
        json!(1),
        "nothing changed"
    );
    let del = client
        .delete(server.url("/v1/admin/objects/counter/x1"))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    assert_eq!(del.status(), 200);
    assert_eq!(
        get("/v1/admin/objects/counter/x1", ADMIN).await?.status(),
        404
    );
    assert_eq!(
        rpc(&server, "x1", "get", Some(&write)).await?.1,
        json!(0),
        "deleted objects start afresh"
    );
    server.terminate().await?;
    // Without --admin-token, the admin API does not exist.
    let server = ServerProcess::start(dir.path(), &[]).await?;
    assert_eq!(
        client
            .get(server.url("/v1/admin/objects"))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .status(),
        404
    );
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_rails_trigger_and_the_server_stays_healthy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--mailbox-depth",
            "2",
            "--max-socket-messages-per-sec",
            "5",
            "--max-doc-bytes",
            "3000",
        ],
    )
    .await?;
    let client = http();
    // Mailbox depth: a burst of concurrent calls on one object gets some 503s.
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, url) = (
            client.clone(),
            server.url("/v1/objects/counter/busy/call/increment"),
        );
        tasks.push(tokio::spawn(async move {
            client.post(url).send().await.map(|r| r.status().as_u16())
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await??);
    }
    assert!(codes.contains(&503), "no overload answer in {codes:?}");
    assert!(codes.contains(&200));
    // Connections per IP (every TCP connection counts, so on a server of its own).
    let capped_dir = tempfile::tempdir()?;
    let capped =
        ServerProcess::start(capped_dir.path(), &["--max-connections-per-ip", "3"]).await?;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&capped.ws_url("/v1/objects/room/ip/ws")).await?;
        // Admitted (with --mailbox-depth 2, an admission queued behind
        // others could be refused, closing the socket and freeing its slot).
        c.event("history").await?;
        held.push(c);
    }
    assert_eq!(
        ws_status(&capped.ws_url("/v1/objects/room/ip/ws")).await,
        429
    );
    drop(held);
    capped.terminate().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Messages per second per socket.
    let mut chatty = Client::connect(&server.ws_url("/v1/objects/room/rate/ws")).await?;
    for _ in 0..50 {
        if chatty.send_text("ping").await.is_err() {
            break;
        }
    }
    let code = loop {
        match chatty.next(Duration::from_secs(5)).await? {
            Frame::Closed(code, _) => break code,
            _ => continue,
        }
    };
    assert_eq!(code, Some(1008));
    // Document size.
    let mut big = YClient::new();
    big.connect(&server.ws_url("/v1/yjs/big")).await?;
    big.insert(0, &"x".repeat(5000)).await?;
    assert_eq!(big.drain(Duration::from_secs(2)).await?, Some(1009));
    let state = client
        .get(server.url("/v1/yjs/big/state"))
        .send()
        .await?
        .bytes()
        .await?;
    assert_eq!(
        roost_tests::yclient::text_of_update(&state)?,
        "",
        "nothing stored"
    );
    assert_eq!(
        client.get(server.url("/healthz")).send().await?.status(),
        200
    );
    server.terminate().await?;
    Ok(())
}

/// With an auth secret, `/metrics` needs the admin token on the main
/// address; `--metrics-listen` serves it without one on its own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_token_when_auth_is_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let free = std::net::TcpListener::bind("127.0.0.1:0")?;
    let metrics_at = free.local_addr()?.to_string();
    drop(free);
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--auth-secret",
            "s3cret",
            "--admin-token",
            "adm",
            "--metrics-listen",
            &metrics_at,
        ],
    )
    .await?;
    let client = http();
    let anonymous = client.get(server.url("/metrics")).send().await?;
    assert_eq!(anonymous.status(), 401);
    let admin = client
        .get(server.url("/metrics"))
        .bearer_auth("adm")
        .send()
        .await?;
    assert_eq!(admin.status(), 200);
    assert!(admin.text().await?.contains("roost_"));
    let scraper = client
        .get(format!("http://{metrics_at}/metrics"))
        .send()
        .await?;
    assert_eq!(scraper.status(), 200);
    let other = client
        .get(format!("http://{metrics_at}/v1/admin/objects"))
        .send()
        .await?;
    assert_eq!(other.status(), 404, "only /metrics is served there");
    server.terminate().await?;
    Ok(())
}
