//! The `lobby` demo class (demos/lobby/lobby.rs) against the real binary:
//! seats are never over-booked under concurrent joins, the host role passes
//! on, state survives restarts, and an empty lobby closes through its alarm.

use std::time::Duration;

use roost_tests::ws::Client;
use roost_tests::{call, http, ServerProcess};
use serde_json::{json, Value};

fn lobby_ws(server: &ServerProcess, name: &str) -> String {
    server.ws_url(&format!("/v1/objects/lobby/{name}/ws"))
}

/// Waits for a `state` event satisfying `pred` (bounded).
async fn state_where(c: &mut Client, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    for _ in 0..50 {
        let s = c.event("state").await?;
        if pred(&s) {
            return Ok(s);
        }
    }
    anyhow::bail!("no matching state event in 50")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_never_exceed_the_seats() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();

    // Over HTTP: 24 joins at once into 4 seats.
    let joins = (0..24).map(|i| {
        let client = client.clone();
        let server = &server;
        async move {
            call(
                &client,
                server,
                "lobby",
                "rush",
                "join",
                json!({"name": format!("p{i}"), "player": format!("id{i}")}),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(joins).await;
    let mut ok = 0;
    for r in results {
        let (status, body) = r?;
        if status == 200 {
            ok += 1;
        } else {
            assert_eq!(body["error"]["code"], "application", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("full"),
                "{body}"
            );
        }
    }
    assert_eq!(ok, 4);
    let (_, state) = call(&client, &server, "lobby", "rush", "state", Value::Null).await?;
    assert_eq!(
        state["players"].as_array().map(Vec::len),
        Some(4),
        "{state}"
    );

    // Over WebSockets: 10 sockets join at once into 3 seats.
    let (status, _) = call(
        &client,
        &server,
        "lobby",
        "sockets",
        "configure",
        json!({"seats": 3}),
    )
    .await?;
    assert_eq!(status, 200);
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(Client::connect(&lobby_ws(&server, "sockets")).await?);
    }
    let mut ids = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        ids.push(
            c.send_call("join", json!({"name": format!("s{i}")}))
                .await?,
        );
    }
    let mut ok = 0;
    for (c, id) in clients.iter_mut().zip(ids) {
        let result = loop {
            let v = c.json().await?;
            if v["type"] == "result" && v["id"] == id {
                break v;
            }
        };
        if result.get("ok").is_some() {
            ok += 1;
        } else {
            assert_eq!(result["error"]["code"], "application", "{result}");
        }
    }
    assert_eq!(ok, 3);
    let (_, state) = call(&client, &server, "lobby", "sockets", "state", Value::Null).await?;
    assert_eq!(
        state["players"].as_array().map(Vec::len),
        Some(3),
        "{state}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_passes_on_and_the_host_starts_when_all_are_ready() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let url = lobby_ws(&server, "game");
    let mut a = Client::connect(&url).await?;
    let mut b = Client::connect(&url).await?;
    let mut c = Client::connect(&url).await?;
    let ra = a.call("join", json!({"name": "ann"})).await?;
    let rb = b.call("join", json!({"name": "bob"})).await?;
    let rc = c.call("join", json!({"name": "cat"})).await?;
    // Views name players by handle (`you` in the join answer), never by
    // their id: without auth an id is the secret that acts as the player.
    let (pa, pb, pc) = (
        ra["ok"]["you"].clone(),
        rb["ok"]["you"].clone(),
        rc["ok"]["you"].clone(),
    );
    assert_eq!(rc["ok"]["state"]["host"], pa);
    for r in [&ra, &rb, &rc] {
        let id = r["ok"]["player"].as_str().unwrap_or_default();
        assert!(id.len() >= 32, "a drawn player id is 128 random bits: {r}");
        assert!(!rc["ok"]["state"].to_string().contains(id), "{rc}");
    }

    // Not everyone is ready: no start; a non-host cannot start.
    let r = a.call("start", Value::Null).await?;
    assert_eq!(r["error"]["code"], "application", "{r}");
    for x in [&mut a, &mut b] {
        let r = x.call("ready", json!({"ready": true})).await?;
        assert_eq!(r["ok"]["ready"], true, "{r}");
    }

    // The host's socket closes: bob is host, cat sees it.
    a.ws.close(None).await?;
    drop(a);
    let s = state_where(&mut c, |s| s["host"] == pb).await?;
    assert_eq!(s["players"].as_array().map(Vec::len), Some(2), "{s}");
    assert_eq!(s["players"][0]["name"], "bob");
    assert_eq!(s["players"][0]["host"], true);

    let r = c.call("start", Value::Null).await?;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("host"),
        "{r}"
    );
    let r = c.call("ready", Value::Null).await?; // toggle → true
    assert_eq!(r["ok"]["ready"], true, "{r}");
    let r = b.call("start", Value::Null).await?;
    assert_eq!(r["ok"]["status"], "started", "{r}");
    state_where(&mut c, |s| s["status"] == "started").await?;

    // A newcomer cannot join a started game.
    let mut d = Client::connect(&url).await?;
    let r = d.call("join", json!({"name": "dan"})).await?;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("started"),
        "{r}"
    );

    // The host leaves by call: cat is host, and alone the game is over.
    let r = b.call("leave", Value::Null).await?;
    assert_eq!(r["ok"]["left"], true, "{r}");
    let s = state_where(&mut c, |s| s["host"] == pc).await?;
    assert_eq!(s["status"], "open", "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_state_survives_restart_and_kill9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    for (name, player) in [("ann", "a"), ("bob", "b")] {
        let (status, body) = call(
            &client,
            &server,
            "lobby",
            "persist",
            "join",
            json!({"name": name, "player": player}),
        )
        .await?;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call(
        &client,
        &server,
        "lobby",
        "persist",
        "ready",
        json!({"player": "b", "ready": true}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    server.terminate().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (_, s) = call(&client, &server, "lobby", "persist", "state", Value::Null).await?;
    assert_eq!(s["host"], handle("a"), "{s}");
    assert_eq!(s["players"][1]["ready"], true, "{s}");

    // A reconnecting page rebinds to its seat with ?player=, and learns its
    // handle.
    let mut b = Client::connect(&server.ws_url("/v1/objects/lobby/persist/ws?player=b")).await?;
    let first = b.event("state").await?;
    assert_eq!(first["you"], handle("b"), "{first}");
    let r = b.call("ready", json!({"ready": false})).await?;
    assert_eq!(r["ok"]["ready"], false, "{r}");
    drop(b);

    let (status, _) = call(
        &client,
        &server,
        "lobby",
        "persist",
        "ready",
        json!({"player": "a", "ready": true}),
    )
    .await?;
    assert_eq!(status, 200);
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (_, s) = call(&client, &server, "lobby", "persist", "state", Value::Null).await?;
    assert_eq!(s["players"][0]["ready"], true, "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_lobby_closes_through_its_alarm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    let (status, body) = call(
        &client,
        &server,
        "lobby",
        "brief",
        "configure",
        json!({"close_after_ms": 400, "seats": 2}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["closes_at"].is_i64(), "{body}");

    // Someone joins in time: the alarm is cancelled.
    let (status, body) = call(
        &client,
        &server,
        "lobby",
        "brief",
        "join",
        json!({"name": "ann", "player": "a"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["state"]["closes_at"].is_null(), "{body}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, s) = call(&client, &server, "lobby", "brief", "state", Value::Null).await?;
    assert_eq!(s["status"], "open", "{s}");

    // A watcher sees the lobby close after the last player leaves.
    let mut watcher = Client::connect(&lobby_ws(&server, "brief")).await?;
    watcher.event("state").await?;
    let (status, _) = call(
        &client,
        &server,
        "lobby",
        "brief",
        "leave",
        json!({"player": "a"}),
    )
    .await?;
    assert_eq!(status, 200);
    let s = state_where(&mut watcher, |s| s["status"] == "closed").await?;
    assert_eq!(s["players"], json!([]), "{s}");
    assert_eq!(s["seats"], 4, "configuration is cleared too: {s}");

    // The alarm also fires after a restart (the lobby empties, then the server stops).
    let (_, _) = call(
        &client,
        &server,
        "lobby",
        "later",
        "configure",
        json!({"close_after_ms": 1000}),
    )
    .await?;
    server.terminate().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let mut closed = false;
    for _ in 0..60 {
        let (_, s) = call(&client, &server, "lobby", "later", "state", Value::Null).await?;
        if s["status"] == "closed" {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the lobby did not close after the restart");

    // Joining a closed lobby opens it afresh.
    let (status, body) = call(
        &client,
        &server,
        "lobby",
        "later",
        "join",
        json!({"name": "zed"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"]["status"], "open", "{body}");
    Ok(())
}

/// With auth on, a player is the token's `sub`: naming another player in
/// `join`, `ready` or `?player=` changes nothing for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_a_player_is_the_token_holder() -> anyhow::Result<()> {
    const SECRET: &str = "lobby-secret-0123456789";
    let mint = |sub: &str, name: Option<&str>| -> anyhow::Result<String> {
        let mut cmd = std::process::Command::new(roost_tests::roost_bin());
        cmd.args([
            "token", "--obj", "lobby/*", "--secret", SECRET, "--sub", sub,
        ]);
        if let Some(n) = name {
            cmd.args(["--name", n]);
        }
        let out = cmd.output()?;
        anyhow::ensure!(out.status.success(), "roost token failed");
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let (ann, ben) = (mint("ann", Some("Ann"))?, mint("ben", None)?);
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--auth-secret", SECRET]).await?;
    let as_ = |token: String, method: &'static str, args: Value| {
        let url = server.url(&format!("/v1/objects/lobby/l/call/{method}"));
        async move {
            let resp = http()
                .post(url)
                .bearer_auth(token)
                .json(&args)
                .send()
                .await?;
            let status = resp.status().as_u16();
            anyhow::Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    // Ann asks to join as ben under another name: she joins as herself.
    let (status, joined) = as_(
        ann.clone(),
        "join",
        json!({"name": "Mallory", "player": "ben"}),
    )
    .await?;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["player"], "ann");
    assert_eq!(joined["state"]["players"][0]["name"], "Ann");
    // Ben, not seated, cannot make Ann ready.
    let (status, _) = as_(ben.clone(), "ready", json!({"player": "ann"})).await?;
    assert_ne!(status, 200);
    let (_, state) = as_(ann.clone(), "state", Value::Null).await?;
    assert_eq!(state["players"][0]["ready"], false, "{state}");
    // A socket claiming ann with ben's token is bound to ben, who is not seated.
    let mut c =
        Client::connect(&server.ws_url(&format!("/v1/objects/lobby/l/ws?player=ann&token={ben}")))
            .await?;
    c.event("state").await?;
    let r = c.call("ready", json!({})).await?;
    assert!(!r["error"].is_null(), "{r}");
    let (_, joined) = as_(ben.clone(), "join", json!({"name": "Ben"})).await?;
    assert_eq!(joined["player"], "ben");
    server.terminate().await?;
    Ok(())
}

/// A player's handle as views show it: the first 6 bytes of the SHA-256 of
/// its id, in hex (`demos/lobby/lobby.rs`).
fn handle(id: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
