//! Roost's application-level heartbeat against the real binary: a Yjs
//! socket's `[102]` and an object socket's `{"type":"ping"}` are answered
//! in kind by the socket layer, without waking the object and without
//! disturbing the document; a frozen server answers nothing until it runs
//! again.

use std::time::Duration;

use roost_protocol::yjs::MSG_PING;
use roost_tests::ws::{Client, Frame};
use roost_tests::yclient::YClient;
use roost_tests::{http, metric, wait_metric, wait_stored_text, ServerProcess};
use serde_json::json;

/// Sends `[102]` and waits for the `[102]` that answers it, skipping any
/// other frame (the sync and awareness traffic a document may send).
async fn ping(client: &mut YClient, wait: Duration) -> anyhow::Result<()> {
    send_ping(client, vec![MSG_PING], wait).await
}

/// Sends `frame` (a ping, maybe followed by more) and waits for the pong.
async fn send_ping(client: &mut YClient, frame: Vec<u8>, wait: Duration) -> anyhow::Result<()> {
    client.send_raw(frame).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if client.next_binary(left).await? == [MSG_PING] {
            return Ok(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yjs_ping_is_answered_without_waking_or_disturbing_the_document() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "200ms"]).await?;
    let client = http();
    let url = server.ws_url("/v1/yjs/beat");
    let mut writer = YClient::new();
    writer.connect(&url).await?;
    writer.insert(0, "before").await?;
    wait_stored_text(&server, "beat", "before").await?;
    // The document hibernates; pings are answered by the socket layer alone.
    wait_metric(&server, "roost_live_objects", 0.0).await?;
    let starts = metric(&client, &server, "roost_object_starts_total").await?;
    for _ in 0..5 {
        ping(&mut writer, Duration::from_secs(5)).await?;
    }
    assert_eq!(
        metric(&client, &server, "roost_object_starts_total").await?,
        starts,
        "a ping woke the document"
    );
    // A ping in front of other messages in one frame is read as one byte.
    send_ping(&mut writer, vec![MSG_PING, 3], Duration::from_secs(5)).await?;
    // Sync still works both ways on the same socket, and for a newcomer.
    writer.insert(6, " after").await?;
    wait_stored_text(&server, "beat", "before after").await?;
    let mut reader = YClient::new();
    reader.connect(&url).await?;
    assert_eq!(reader.text(), "before after");
    ping(&mut reader, Duration::from_secs(5)).await?;
    writer.insert(0, "> ").await?;
    reader
        .wait_for_text("> before after", Duration::from_secs(10))
        .await?;
    // Other unknown message types are still ignored (with their payload).
    writer.send_raw(vec![42, 1, 2]).await?;
    ping(&mut writer, Duration::from_secs(5)).await?;
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_ping_is_answered_with_pong_without_waking_the_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "200ms"]).await?;
    let client = http();
    let mut a = Client::connect(&server.ws_url("/v1/objects/room/beat/ws?name=ann")).await?;
    a.event("history").await?;
    wait_metric(&server, "roost_live_objects", 0.0).await?;
    let starts = metric(&client, &server, "roost_object_starts_total").await?;
    for _ in 0..5 {
        a.send_text(r#"{"type":"ping"}"#).await?;
        match a.next(Duration::from_secs(5)).await? {
            Frame::Json(v) => assert_eq!(v, json!({"type": "pong"})),
            other => anyhow::bail!("expected a pong, got {other:?}"),
        }
    }
    assert_eq!(
        metric(&client, &server, "roost_object_starts_total").await?,
        starts,
        "a ping woke the room"
    );
    // Calls still work on the same socket.
    let r = a.call("send", json!({"text": "still here"})).await?;
    assert!(r["ok"]["id"].is_i64(), "{r}");
    server.terminate().await?;
    Ok(())
}

/// Sends SIGCONT to a stopped process when dropped, so a failing test never
/// leaves the server frozen.
struct Stopped(u32);

impl Stopped {
    /// Returns once every thread of `pid` is stopped: `kill` returns when
    /// the signal is sent, and a thread still running on the other core
    /// could answer a frame sent right after it.
    fn stop(pid: u32) -> anyhow::Result<Stopped> {
        signal("-STOP", pid)?;
        let stopped = Stopped(pid);
        for _ in 0..400 {
            if all_threads_stopped(pid)? {
                return Ok(stopped);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        anyhow::bail!("{pid} did not stop within 2 s")
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = signal("-CONT", self.0);
    }
}

/// Whether every thread of `pid` is in state T (stopped).
fn all_threads_stopped(pid: u32) -> anyhow::Result<bool> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("stat"))?;
        // The state follows the command name's closing parenthesis.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next());
        if state != Some('T') {
            return Ok(false);
        }
    }
    Ok(true)
}

fn signal(which: &str, pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {which} {pid} failed: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_answers_no_ping_until_it_runs_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let mut c = YClient::new();
    c.connect(&server.ws_url("/v1/yjs/frozen")).await?;
    ping(&mut c, Duration::from_secs(5)).await?;
    let frozen = Stopped::stop(server.pid)?;
    c.send_raw(vec![MSG_PING]).await?;
    let got = c.next_binary(Duration::from_millis(700)).await;
    assert!(got.is_err(), "a stopped server answered: {got:?}");
    drop(frozen);
    // The ping sent while it was stopped is answered once it runs.
    assert_eq!(c.next_binary(Duration::from_secs(5)).await?, [MSG_PING]);
    server.terminate().await?;
    Ok(())
}
