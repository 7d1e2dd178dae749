//! Alarms against the real binary: they survive `kill -9`, fire exactly once
//! per set, fire for evicted objects, and drive the room's follow-up.

use std::time::Duration;

use roost_tests::ws::Client;
use roost_tests::{call, http, metric, ServerProcess};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_survive_kill9_and_fire_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    for i in 0..20 {
        let (status, body) = call(
            &client,
            &server,
            "counter",
            &format!("later{i}"),
            "increment_later",
            json!({"by": 1, "delay_ms": 1500}),
        )
        .await?;
        assert_eq!(status, 200, "{body}");
    }
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    // Do not touch the objects: the index alone must bring them back.
    let mut fired = 0.0;
    for _ in 0..100 {
        fired = metric(&client, &server, "roost_alarms_fired_total").await?;
        if fired >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fired, 20.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        let (_, body) = call(
            &client,
            &server,
            "counter",
            &format!("later{i}"),
            "get",
            Value::Null,
        )
        .await?;
        assert_eq!(body, json!(1), "object later{i}");
    }
    // And not again after another restart.
    server.terminate().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(&client, &server, "roost_alarms_dispatched_total").await?,
        0.0
    );
    let (_, body) = call(&client, &server, "counter", "later7", "get", Value::Null).await?;
    assert_eq!(body, json!(1));
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_fires_for_an_evicted_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "100ms"]).await?;
    let client = http();
    call(
        &client,
        &server,
        "counter",
        "evicted",
        "increment_later",
        json!({"by": 5, "delay_ms": 800}),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        metric(&client, &server, "roost_live_objects").await?,
        0.0,
        "evicted before the alarm"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        metric(&client, &server, "roost_alarms_fired_total").await?,
        1.0
    );
    let (_, body) = call(&client, &server, "counter", "evicted", "get", Value::Null).await?;
    assert_eq!(body, json!(5));
    let bad = call(
        &client,
        &server,
        "counter",
        "evicted",
        "increment_later",
        json!({"by": 1}),
    )
    .await?;
    assert_eq!(bad.0, 400);
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_posts_its_followup_after_the_last_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "200ms"]).await?;
    let mut a = Client::connect(&server.ws_url("/v1/objects/room/support/ws?name=ann")).await?;
    a.event("history").await?;
    let r = a
        .call(
            "followup",
            json!({"after_ms": 700, "text": "How did we do?"}),
        )
        .await?;
    assert_eq!(r["ok"]["followup"]["after_ms"], 700);
    a.call("send", json!({"text": "hello"})).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second message re-arms the follow-up.
    a.call("send", json!({"text": "anyone?"})).await?;
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = a.event("message").await?;
        got.push((
            m["name"].as_str().unwrap_or("").to_owned(),
            m["text"].as_str().unwrap_or("").to_owned(),
        ));
    }
    assert_eq!(got[2], ("roost".to_owned(), "How did we do?".to_owned()));
    // Exactly one follow-up, stored in the history.
    assert!(a.next(Duration::from_millis(1200)).await.is_err());
    let h = a.call("history", json!({"limit": 10})).await?;
    assert_eq!(h["ok"].as_array().map(Vec::len), Some(3));
    server.terminate().await?;
    Ok(())
}

/// Setting a follow-up in a room that already has messages arms it at
/// once: it is posted `after_ms` later with no further message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followup_set_after_the_conversation_still_arrives() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "200ms"]).await?;
    let mut a = Client::connect(&server.ws_url("/v1/objects/room/quiet/ws?name=ann")).await?;
    a.event("history").await?;
    a.call("send", json!({"text": "hello"})).await?;
    a.event("message").await?;
    a.call("followup", json!({"after_ms": 400, "text": "Still there?"}))
        .await?;
    let m = a.event("message").await?;
    assert_eq!(
        (m["name"].as_str(), m["text"].as_str()),
        (Some("roost"), Some("Still there?"))
    );
    server.terminate().await?;
    Ok(())
}

/// A follow-up delay is bounded (1 ms to a year): one that would reach past
/// `i64::MAX` ms is refused with 400 and arms nothing. (Before, `now +
/// after_ms` wrapped to a time just above `i64::MIN`, which the scheduler
/// put first yet slept on for centuries: no other object's alarm fired.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_followup_delay_is_refused_and_other_alarms_still_fire() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    call(
        &client,
        &server,
        "room",
        "evil",
        "send",
        json!({"text": "hi"}),
    )
    .await?;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let wraps = i64::MAX - now_ms + 3_600_000;
    let year = 365 * 24 * 3600 * 1000_i64;
    for after_ms in [
        json!(wraps),
        json!(i64::MAX),
        json!(year + 1),
        json!(0),
        json!(-5),
        json!("5"),
        json!(1.5),
    ] {
        let (status, body) = call(
            &client,
            &server,
            "room",
            "evil",
            "followup",
            json!({"after_ms": after_ms, "text": "evil"}),
        )
        .await?;
        assert_eq!(status, 400, "after_ms {after_ms}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    let (status, _) = call(
        &client,
        &server,
        "room",
        "evil",
        "followup",
        json!({"after_ms": year}),
    )
    .await?;
    assert_eq!(status, 200, "a year is allowed");
    // Another room's follow-up still arrives on time.
    let mut a = Client::connect(&server.ws_url("/v1/objects/room/victim/ws?name=ann")).await?;
    a.event("history").await?;
    a.call("send", json!({"text": "hello"})).await?;
    a.event("message").await?;
    a.call("followup", json!({"after_ms": 300, "text": "Still there?"}))
        .await?;
    let m = tokio::time::timeout(Duration::from_secs(5), a.event("message")).await??;
    assert_eq!(m["text"], "Still there?");
    let (_, history) = call(&client, &server, "room", "evil", "history", json!({})).await?;
    assert_eq!(
        history.as_array().map(Vec::len),
        Some(1),
        "no follow-up posted: {history}"
    );
    server.terminate().await?;
    Ok(())
}
