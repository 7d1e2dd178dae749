//! End-to-end tests of hibernatable WebSockets and the `room` class against
//! the real binary with real WebSocket clients.

use std::time::Duration;

use roost_tests::ws::{Client, Frame};
use roost_tests::{http, metric, ServerProcess};
use serde_json::{json, Value};

async fn join(server: &ServerProcess, room: &str, name: &str) -> anyhow::Result<(Client, Value)> {
    let mut c =
        Client::connect(&server.ws_url(&format!("/v1/objects/room/{room}/ws?name={name}"))).await?;
    let history = c.event("history").await?;
    Ok((c, history))
}

async fn wait_for(server: &ServerProcess, name: &str, want: f64) -> anyhow::Result<()> {
    roost_tests::wait_metric(server, name, want).await
}

/// Collects `n` message events from a client, returning their texts in order.
async fn texts(c: &mut Client, n: usize) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = c.event("message").await?;
        out.push(m["text"].as_str().unwrap_or_default().to_owned());
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_hibernates_with_clients_and_wakes_on_a_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "300ms"]).await?;
    let client = http();
    let (mut a, h) = join(&server, "lobby", "ann").await?;
    assert_eq!(h["messages"], json!([]));
    let (mut b, _) = join(&server, "lobby", "bob").await?;
    let (mut c, _) = join(&server, "lobby", "cy").await?;
    let r = a.call("send", json!({"text": "first"})).await?;
    assert!(r["ok"]["id"].is_i64(), "{r}");
    for cl in [&mut a, &mut b, &mut c] {
        assert_eq!(texts(cl, 1).await?, ["first"]);
    }
    // Idle: the room hibernates although three sockets are open.
    wait_for(&server, "roost_live_objects", 0.0).await?;
    let starts = metric(&client, &server, "roost_object_starts_total").await?;
    assert_eq!(metric(&client, &server, "roost_open_sockets").await?, 3.0);
    // A message wakes it; history and presence survived.
    for i in 0..20 {
        b.send_call("send", json!({"text": format!("m{i}")}))
            .await?;
    }
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for cl in [&mut a, &mut b, &mut c] {
        assert_eq!(
            texts(cl, 20).await?,
            want,
            "every client gets every message once, in order"
        );
    }
    assert_eq!(
        metric(&client, &server, "roost_object_starts_total").await?,
        starts + 1.0
    );
    let who = c.call("who", Value::Null).await?;
    let mut names: Vec<String> = serde_json::from_value(who["ok"].clone())?;
    names.sort();
    assert_eq!(names, ["ann", "bob", "cy"]);
    let hist = a.call("history", json!({"limit": 100})).await?;
    assert_eq!(hist["ok"].as_array().map(Vec::len), Some(21));
    // No duplicates arrived later.
    assert!(a.next(Duration::from_millis(300)).await.is_err());
    // A newcomer gets the history; the others see the join, then the leave.
    let (d, h) = join(&server, "lobby", "dee").await?;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(21));
    assert_eq!(a.event("join").await?["name"], "dee");
    drop(d);
    assert_eq!(a.event("leave").await?["name"], "dee");
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_responses_and_pings_do_not_wake_the_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "200ms"]).await?;
    let client = http();
    let (mut a, _) = join(&server, "quiet", "ann").await?;
    wait_for(&server, "roost_live_objects", 0.0).await?;
    let starts = metric(&client, &server, "roost_object_starts_total").await?;
    for _ in 0..10 {
        a.send_text("ping").await?;
        match a.next(Duration::from_secs(5)).await? {
            Frame::Text(t) => assert_eq!(t, "pong"),
            other => anyhow::bail!("expected pong, got {other:?}"),
        }
        use futures_util::SinkExt;
        a.ws.send(tokio_tungstenite::tungstenite::Message::Ping(
            b"hi".to_vec().into(),
        ))
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        metric(&client, &server, "roost_object_starts_total").await?,
        starts
    );
    assert_eq!(metric(&client, &server, "roost_live_objects").await?, 0.0);
    assert!(metric(&client, &server, "roost_socket_auto_responses_total").await? >= 10.0);
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_disconnected() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--max-socket-queue-bytes", "262144"]).await?;
    let client = http();
    let (_stalled, _) = join(&server, "busy", "sleepy").await?; // never reads again
    let (mut reader, _) = join(&server, "busy", "reader").await?;
    let rss_before = server.rss_kib()?;
    let text = "x".repeat(4000);
    let n = 3000;
    let mut got = 0;
    let url = server.url("/v1/objects/room/busy/call/send");
    // Bounded: n messages, each posted over HTTP, then read by the reader.
    for _ in 0..n {
        let resp = client
            .post(&url)
            .json(&json!({"text": text, "name": "writer"}))
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        reader.event("message").await?;
        got += 1;
    }
    assert_eq!(got, n, "the reading client received every message");
    wait_for(&server, "roost_socket_slow_consumers_total", 1.0).await?;
    let rss_after = server.rss_kib()?;
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(
        client.get(server.url("/healthz")).send().await?.status(),
        200
    );
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_message_survives_kill9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (mut a, _) = join(&server, "durable", "ann").await?;
    let (mut b, _) = join(&server, "durable", "bob").await?;
    a.send_call("send", json!({"text": "remember me"})).await?;
    assert_eq!(texts(&mut b, 1).await?, ["remember me"]);
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (_c, h) = join(&server, "durable", "cy").await?;
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, ["remember me"]);
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_room_carries_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--max-frame-bytes", "10000"]).await?;
    let (mut a, _) = join(&server, "rough", "ann").await?;
    // Malformed call envelope: an error event, the socket stays open.
    a.send_text(r#"{"type":"call","method":5}"#).await?;
    let e = a.event("error").await?;
    assert_eq!(e["code"], "bad_request");
    // Unknown method: an error result.
    let r = a.call("nope", Value::Null).await?;
    assert_eq!(r["error"]["code"], "unknown_method");
    // Bad arguments: an error result, nothing stored.
    let r = a.call("send", json!({"text": ""})).await?;
    assert_eq!(r["error"]["code"], "bad_request");
    let r = a.call("send", json!({"text": "ok"})).await?;
    assert!(r["ok"]["id"].is_i64());
    // An oversized frame closes that socket with 1009.
    a.send_text(&"y".repeat(20_000)).await?;
    loop {
        match a.next(Duration::from_secs(5)).await? {
            Frame::Closed(code, _) => {
                assert_eq!(code, Some(1009));
                break;
            }
            _ => continue,
        }
    }
    // The room is unaffected.
    let (mut b, h) = join(&server, "rough", "bob").await?;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(1));
    let r = b.call("send", json!({"text": "still here"})).await?;
    assert!(r["ok"]["id"].is_i64());
    // Unknown class and bad names are refused before the upgrade.
    assert!(Client::connect(&server.ws_url("/v1/objects/nosuch/x/ws"))
        .await
        .is_err());
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_sockets_with_1012() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (mut a, _) = join(&server, "bye", "ann").await?;
    let pid = server.pid;
    let waiter = tokio::spawn(async move { server.terminate().await });
    loop {
        match a.next(Duration::from_secs(10)).await? {
            Frame::Closed(code, _) => {
                assert_eq!(code, Some(1012), "pid {pid}");
                break;
            }
            _ => continue,
        }
    }
    assert_eq!(waiter.await??, Some(0));
    Ok(())
}

/// Replies leave in the order their events ran, whether their batch wrote
/// (released by the commit log's writer the moment it is durable) or only
/// read (released by the object once every batch before it is durable):
/// bursts of reads pipelined between writes, each read seeing the writes
/// before it and none after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_of_writing_and_reading_batches_leave_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (mut a, _) = join(&server, "order", "ann").await?;
    let (mut b, _) = join(&server, "order", "bob").await?;
    // id → the text the reply must show (a send's own id is checked by order).
    let mut want: Vec<(u64, Option<String>)> = Vec::new();
    for round in 0..40 {
        let text = format!("m{round}");
        want.push((a.send_call("send", json!({ "text": text })).await?, None));
        for _ in 0..(round * 7) % 41 {
            let id = a.send_call("history", json!({"limit": 1})).await?;
            want.push((id, Some(text.clone())));
        }
    }
    let mut got = Vec::new();
    while got.len() < want.len() {
        match a.next(Duration::from_secs(10)).await? {
            Frame::Json(v) if v["type"] == "result" => got.push(v),
            Frame::Json(_) => {}
            other => anyhow::bail!("expected JSON, got {other:?}"),
        }
    }
    for ((id, last), r) in want.iter().zip(&got) {
        assert_eq!(r["id"], json!(id), "replies in the order of their calls");
        if let Some(last) = last {
            assert_eq!(r["ok"][0]["text"], json!(last), "call {id} read {r}");
        } else {
            assert!(r["ok"]["id"].is_i64(), "{r}");
        }
    }
    let all: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&mut b, 40).await?, all);
    server.terminate().await?;
    Ok(())
}

/// Invariant: a client that stops answering (frozen, or gone without a
/// close) loses its socket; one that answers pings — as every WebSocket
/// client does by itself — keeps it, idle or not, and the room sleeps on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--socket-ping-interval", "200ms"]).await?;
    let (mut alive, _) = join(&server, "beat", "alive").await?;
    let (mut frozen, _) = join(&server, "beat", "frozen").await?;
    wait_for(&server, "roost_open_sockets", 2.0).await?;
    // `alive` reads (and so answers pings); `frozen` reads nothing, until
    // the server holds one socket (bounded).
    let client = http();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the frozen socket stayed open"
        );
        // (Read raw: tungstenite answers a ping it read with its next
        // write or flush; a browser answers at once.)
        let _ = tokio::time::timeout(
            Duration::from_millis(50),
            futures_util::StreamExt::next(&mut alive.ws),
        )
        .await;
        futures_util::SinkExt::flush(&mut alive.ws).await?;
        if metric(&client, &server, "roost_open_sockets").await? == 1.0 {
            break;
        }
    }
    let r = alive.call("who", json!({})).await?;
    assert_eq!(r["ok"], json!(["alive"]));
    // The frozen client, once it reads again, finds the server's close.
    let code = loop {
        match frozen.next(Duration::from_secs(5)).await? {
            Frame::Closed(code, _) => break code,
            _ => continue,
        }
    };
    assert!(matches!(code, Some(1001) | None), "closed with {code:?}");
    server.terminate().await?;
    Ok(())
}
