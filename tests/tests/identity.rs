//! Who is calling: identity from the token into objects (the `room` shows
//! the verified name, a spoofed `?name=` is ignored), revocation by `jti`
//! and by `sub` (closes live sockets with 4403, survives a restart), and
//! rotating the secret without a restart (sockets on the old secret's
//! tokens closed when its grace period ends).

use std::time::Duration;

use roost_tests::ws::{Client, Frame};
use roost_tests::{http, roost_bin, ServerProcess};
use serde_json::{json, Value};

const SECRET: &str = "identity-secret-0123456789";
const ADMIN: &str = "identity-admin";
/// The calls whose status the revocation and rotation tests read.
const WHO: &str = "/v1/objects/room/x/call/who";
const GET: &str = "/v1/objects/counter/c/call/get";

/// `roost token` with extra flags.
fn mint(secret: &str, obj: &str, extra: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(roost_bin())
        .args(["token", "--obj", obj, "--ttl", "1h", "--secret", secret])
        .args(extra)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "roost token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn revoke(server: &ServerProcess, body: Value) -> anyhow::Result<Value> {
    let resp = http()
        .post(server.url("/v1/admin/revoke"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "revoke: {}", resp.status());
    Ok(resp.json().await?)
}

/// The HTTP status of a call to `path` with `token`.
async fn status_with(server: &ServerProcess, path: &str, token: &str) -> anyhow::Result<u16> {
    let resp = http()
        .post(server.url(path))
        .bearer_auth(token)
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// The close code a socket gets next (skipping other frames).
async fn closed_with(c: &mut Client) -> anyhow::Result<Option<u16>> {
    loop {
        if let Frame::Closed(code, _) = c.next(Duration::from_secs(5)).await? {
            return Ok(code);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_shows_the_verified_name_never_the_one_asked_for() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--auth-secret", SECRET]).await?;
    let alice = mint(SECRET, "room/r", &["--sub", "u-alice", "--name", "Alice"])?;
    // Alice asks to be Bob: the room ignores it.
    let mut a =
        Client::connect(&server.ws_url(&format!("/v1/objects/room/r/ws?name=Bob&token={alice}")))
            .await?;
    a.event("history").await?;
    let joined = a.call("join", json!({"name": "Bob"})).await?;
    assert_eq!(joined["ok"]["name"], "Alice", "{joined}");
    a.call("send", json!({"text": "hi"})).await?;
    let msg = a.event("message").await?;
    assert_eq!(msg["name"], "Alice");
    // Over HTTP too: a `name` argument is ignored for a verified caller.
    let resp: Value = http()
        .post(server.url("/v1/objects/room/r/call/send"))
        .bearer_auth(&alice)
        .json(&json!({"text": "from http", "name": "Mallory"}))
        .send()
        .await?
        .json()
        .await?;
    assert!(resp["id"].is_i64(), "{resp}");
    let history: Value = http()
        .post(server.url("/v1/objects/room/r/call/history"))
        .bearer_auth(&alice)
        .json(&json!({"limit": 10}))
        .send()
        .await?
        .json()
        .await?;
    let names: Vec<&str> = history
        .as_array()
        .or_else(|| history["messages"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{history}");
    assert!(names.iter().all(|n| *n == "Alice"), "{history}");
    // Without a name claim, the subject is the name.
    let bob = mint(SECRET, "room/r", &["--sub", "u-bob"])?;
    let mut b =
        Client::connect(&server.ws_url(&format!("/v1/objects/room/r/ws?name=Alice&token={bob}")))
            .await?;
    b.event("history").await?;
    let joined = a.event("join").await?;
    assert_eq!(joined["name"], "u-bob");
    server.terminate().await?;
    Ok(())
}

/// A token that names no holder (no `sub`, no `name`) cannot pass for
/// someone else: the room names it `anonymous` whatever `?name=`, `join`
/// or `send` ask for, and the lobby refuses its calls rather than take a
/// `player` argument (before, it could post as "Alice" and make Alice
/// leave her seat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_holder_cannot_act_as_another() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--auth-secret", SECRET]).await?;
    let alice = mint(
        SECRET,
        "room/*",
        &["--obj", "lobby/*", "--sub", "alice", "--name", "Alice"],
    )?;
    let nobody = mint(SECRET, "room/*", &["--obj", "lobby/*"])?;
    let mut m = Client::connect(
        &server.ws_url(&format!("/v1/objects/room/r/ws?name=Alice&token={nobody}")),
    )
    .await?;
    m.event("history").await?;
    let joined = m.call("join", json!({"name": "Alice"})).await?;
    assert_eq!(joined["ok"]["name"], "anonymous", "{joined}");
    m.call("send", json!({"text": "I am Alice"})).await?;
    assert_eq!(m.event("message").await?["name"], "anonymous");
    let post = |token: &str, path: &str, body: Value| {
        http()
            .post(server.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let resp: Value = post(
        &nobody,
        "/v1/objects/room/r/call/send",
        json!({"text": "hi", "name": "Alice"}),
    )
    .await?
    .json()
    .await?;
    assert!(resp["id"].is_i64(), "{resp}");
    let history: Value = post(&alice, "/v1/objects/room/r/call/history", json!({}))
        .await?
        .json()
        .await?;
    let names: Vec<&str> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["anonymous", "anonymous"], "{history}");
    // The lobby: Alice takes a seat; a holderless token cannot unseat her.
    let r = post(
        &alice,
        "/v1/objects/lobby/l/call/join",
        json!({"name": "Alice"}),
    )
    .await?;
    assert_eq!(r.status(), 200);
    let joined: Value = r.json().await?;
    assert_eq!(joined["player"], "alice", "{joined}");
    for (method, args) in [
        ("leave", json!({"player": "alice"})),
        ("ready", json!({"player": "alice"})),
        ("join", json!({"name": "Mallory", "player": "alice"})),
    ] {
        let r = post(&nobody, &format!("/v1/objects/lobby/l/call/{method}"), args).await?;
        assert!(r.status().is_client_error(), "{method}: {}", r.status());
    }
    let state: Value = post(&alice, "/v1/objects/lobby/l/call/state", json!({}))
        .await?
        .json()
        .await?;
    assert_eq!(state["players"][0]["id"], joined["you"], "{state}");
    assert_eq!(state["players"][0]["name"], "Alice", "{state}");
    assert_eq!(state["players"][0]["ready"], false, "{state}");
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_closes_its_sockets_and_outlives_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let args = ["--auth-secret", SECRET, "--admin-token", ADMIN];
    let server = ServerProcess::start(dir.path(), &args).await?;
    let t1 = mint(SECRET, "room/*", &["--sub", "carol", "--jti", "t1"])?;
    let t2 = mint(SECRET, "room/*", &["--sub", "carol", "--jti", "t2"])?;
    let dave = mint(SECRET, "room/*", &["--sub", "dave"])?;
    let url = |t: &str| server.ws_url(&format!("/v1/objects/room/x/ws?token={t}"));
    let mut c1 = Client::connect(&url(&t1)).await?;
    let mut c2 = Client::connect(&url(&t2)).await?;
    let mut d = Client::connect(&url(&dave)).await?;
    for c in [&mut c1, &mut c2, &mut d] {
        c.event("history").await?;
    }
    // One token: its socket closes with 4403, the other one of the same
    // subject stays open.
    let answer = revoke(&server, json!({"jti": "t1"})).await?;
    assert_eq!(answer["closed_sockets"], 1);
    assert_eq!(closed_with(&mut c1).await?, Some(4403));
    assert!(c2.call("who", json!(null)).await?["error"].is_null());
    // The revoked token no longer opens anything: 4403 on a socket, 403 over HTTP.
    let mut again = Client::connect(&url(&t1)).await?;
    assert_eq!(closed_with(&mut again).await?, Some(4403));
    assert_eq!(status_with(&server, WHO, &t1).await?, 403);
    // A subject: every token of it issued until now.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = revoke(&server, json!({"sub": "carol"})).await?;
    assert_eq!(answer["closed_sockets"], 1);
    assert_eq!(closed_with(&mut c2).await?, Some(4403));
    assert_eq!(status_with(&server, WHO, &t2).await?, 403);
    assert_eq!(
        status_with(&server, WHO, &dave).await?,
        200,
        "another subject is untouched"
    );
    assert!(d.call("who", json!(null)).await?["error"].is_null());
    // A token minted for carol after the revocation works (a new login).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = mint(SECRET, "room/*", &["--sub", "carol"])?;
    assert_eq!(status_with(&server, WHO, &fresh).await?, 200);
    // Bad requests change nothing.
    let bad = http()
        .post(server.url("/v1/admin/revoke"))
        .bearer_auth(ADMIN)
        .json(&json!({"jti": "a", "sub": "b"}))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    server.kill9().await?;
    // Recorded in the catalog: still refused after a kill -9 and restart.
    let server = ServerProcess::start(dir.path(), &args).await?;
    assert_eq!(status_with(&server, WHO, &t1).await?, 403);
    assert_eq!(status_with(&server, WHO, &t2).await?, 403);
    assert_eq!(status_with(&server, WHO, &fresh).await?, 200);
    assert_eq!(status_with(&server, WHO, &dave).await?, 200);
    server.terminate().await?;
    Ok(())
}

/// A socket's token is the one it refreshed to: revoking that token closes
/// the socket, object and Yjs sockets alike (before, revocation matched
/// only the token the socket opened with, and a refreshed socket outlived
/// the revocation of the token it was using). A refresh to another
/// holder's token (`sub`) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_token_a_socket_refreshed_to_closes_it() -> anyhow::Result<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir()?;
    let args = ["--auth-secret", SECRET, "--admin-token", ADMIN];
    let server = ServerProcess::start(dir.path(), &args).await?;
    let both = |extra: &[&str]| -> anyhow::Result<String> {
        let mut flags = vec!["--obj", "ydoc/*"];
        flags.extend_from_slice(extra);
        mint(SECRET, "room/*", &flags)
    };
    let r1 = both(&["--sub", "erin", "--jti", "r1"])?;
    let r2 = both(&["--sub", "erin", "--jti", "r2"])?;
    let mallory = both(&["--sub", "mallory", "--jti", "m1"])?;
    let mut room =
        Client::connect(&server.ws_url(&format!("/v1/objects/room/x/ws?token={r1}"))).await?;
    room.event("history").await?;
    let auth = |t: &str| json!({"type": "auth", "token": t}).to_string();
    room.send_text(&auth(&mallory)).await?;
    let refused = room.event("error").await?;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    room.send_text(&auth(&r2)).await?;
    room.event("auth").await?;
    let mut doc = Client::connect(&server.ws_url(&format!("/v1/yjs/d?token={r1}"))).await?;
    doc.ws
        .send(Message::Binary(
            roost_protocol::yjs::refresh_frame(&r2).into(),
        ))
        .await?;
    // The refresh is handled before the next frame: a ping answered means it took.
    doc.ws
        .send(Message::Binary(
            roost_protocol::yjs::PING_FRAME.to_vec().into(),
        ))
        .await?;
    loop {
        match doc.next(Duration::from_secs(5)).await? {
            Frame::Binary(b) if b == roost_protocol::yjs::PING_FRAME => break,
            Frame::Closed(code, reason) => anyhow::bail!("closed: {code:?} {reason}"),
            _ => continue,
        }
    }
    // Revoking the token they opened with no longer matters...
    let answer = revoke(&server, json!({"jti": "r1"})).await?;
    assert_eq!(answer["closed_sockets"], 0, "{answer}");
    assert!(room.call("who", json!(null)).await?["error"].is_null());
    // ...revoking the one they use now closes both.
    let answer = revoke(&server, json!({"jti": "r2"})).await?;
    assert_eq!(answer["closed_sockets"], 2, "{answer}");
    assert_eq!(closed_with(&mut room).await?, Some(4403));
    assert_eq!(closed_with(&mut doc).await?, Some(4403));
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_rotates_on_sighup_with_a_grace_period() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("secret");
    std::fs::write(&file, "first-secret-0123456789\n")?;
    let file_arg = file.to_str().unwrap_or_default();
    let data = dir.path().join("data");
    let args = ["--auth-secret-file", file_arg, "--auth-secret-grace", "2s"];
    let server = ServerProcess::start(&data, &args).await?;
    let old = mint("first-secret-0123456789", "counter/*", &["--obj", "room/*"])?;
    let new = mint(
        "second-secret-0123456789",
        "counter/*",
        &["--obj", "room/*"],
    )?;
    assert_eq!(status_with(&server, GET, &old).await?, 200);
    // Sockets opened with the old secret's token: one refreshes in-band to
    // the new secret's during the grace period, one does not.
    let room = |token: &str| server.ws_url(&format!("/v1/objects/room/x/ws?token={token}"));
    let mut stays = Client::connect(&room(&old)).await?;
    stays.event("history").await?;
    let mut retired = Client::connect(&room(&old)).await?;
    retired.event("history").await?;
    assert_eq!(status_with(&server, GET, &new).await?, 401);
    std::fs::write(&file, "second-secret-0123456789\n")?;
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &server.pid.to_string()])
        .status()?;
    assert!(kill.success());
    let mut rotated = false;
    for _ in 0..50 {
        if status_with(&server, GET, &new).await? == 200 {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new secret was not taken");
    assert_eq!(
        status_with(&server, GET, &old).await?,
        200,
        "the old one is in its grace period"
    );
    stays
        .send_text(&json!({"type": "auth", "token": new}).to_string())
        .await?;
    stays.event("auth").await?;
    let mut opened_new = Client::connect(&room(&new)).await?;
    opened_new.event("history").await?;
    // When the grace period ends, the socket still on the old secret's
    // token is closed (4401); the others stay open.
    let code = tokio::time::timeout(Duration::from_secs(4), closed_with(&mut retired)).await??;
    assert_eq!(code, Some(4401));
    assert_eq!(
        status_with(&server, GET, &old).await?,
        401,
        "the grace period is over"
    );
    assert_eq!(status_with(&server, GET, &new).await?, 200);
    for socket in [&mut stays, &mut opened_new] {
        let answer = socket.call("who", json!(null)).await?;
        assert!(answer["error"].is_null(), "{answer}");
    }
    server.terminate().await?;
    Ok(())
}
