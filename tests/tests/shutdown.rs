//! SIGTERM under load: every call that reached an object is answered (its
//! result, or a clear `shutting_down` error), sockets are closed with 1012,
//! and nothing is committed without its caller being told.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roost_tests::{call, http, ServerProcess};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const HTTP_OBJECTS: usize = 3;
const SOCKETS: usize = 8;

#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    refused: AtomicU64,
    /// Requests whose connection broke after they were sent.
    dropped: AtomicU64,
    /// Answers that were neither a result nor a clear refusal.
    odd: AtomicU64,
}

/// One HTTP client on its own keep-alive connection, incrementing until
/// the server stops answering.
async fn http_client(url: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    while !stop.load(Ordering::Relaxed) {
        match client.post(&url).json(&json!({"by": 1})).send().await {
            Ok(resp) if resp.status() == 200 => {
                tally.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(resp) if resp.status() == 503 => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if body["error"]["code"] == "shutting_down" {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.odd.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {
                tally.odd.fetch_add(1, Ordering::Relaxed);
            }
            // The listener is gone: this request never reached the server.
            Err(e) if e.is_connect() => break,
            Err(_) => {
                tally.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// One object socket with up to 64 calls in flight; returns its close code.
async fn socket_client(url: String, tally: Arc<Tally>) -> anyhow::Result<Option<u16>> {
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let (mut tx, mut rx) = ws.split();
    let window = Arc::new(tokio::sync::Semaphore::new(64));
    let writer = {
        let window = window.clone();
        tokio::spawn(async move {
            for id in 1u64..=200_000 {
                let Ok(permit) = window.clone().acquire_owned().await else {
                    break;
                };
                permit.forget();
                let frame =
                    json!({"type": "call", "id": id, "method": "increment", "args": {"by": 1}});
                if tx
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let mut code = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(30), rx.next())
        .await
        .map(|m| m.and_then(Result::ok))
    {
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str())?;
                if v["type"] != "result" {
                    continue;
                }
                window.add_permits(1);
                if v.get("ok").is_some() {
                    tally.acked.fetch_add(1, Ordering::Relaxed);
                } else if v["error"]["code"] == "shutting_down" {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.odd.fetch_add(1, Ordering::Relaxed);
                }
            }
            Message::Close(frame) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    writer.abort();
    Ok(code)
}

/// Invariant: an increment that committed was answered — the sum of every
/// counter after the restart equals the number of successful replies — and
/// every socket is closed with 1012, never dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_call_is_answered_through_a_shutdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for i in 0..24 {
        let url = server.url(&format!(
            "/v1/objects/counter/h{}/call/increment",
            i % HTTP_OBJECTS
        ));
        clients.push(tokio::spawn(http_client(url, stop.clone(), tally.clone())));
    }
    let mut sockets = Vec::new();
    for j in 0..SOCKETS {
        let url = server.ws_url(&format!("/v1/objects/counter/s{j}/ws"));
        sockets.push(tokio::spawn(socket_client(url, tally.clone())));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = tally.acked.load(Ordering::Relaxed);
    assert!(before > 0, "no call was answered before the shutdown");
    let code = server.terminate().await?;
    assert_eq!(code, Some(0), "SIGTERM should exit cleanly");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    for s in sockets {
        assert_eq!(s.await??, Some(1012), "a socket was not closed with 1012");
    }
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    let mut committed = 0;
    let names = (0..HTTP_OBJECTS)
        .map(|i| format!("h{i}"))
        .chain((0..SOCKETS).map(|j| format!("s{j}")));
    for name in names {
        let (status, body) = call(&client, &server, "counter", &name, "get", Value::Null).await?;
        assert_eq!(status, 200);
        committed += body.as_u64().unwrap_or(0);
    }
    let acked = tally.acked.load(Ordering::Relaxed);
    let (refused, dropped, odd) = (
        tally.refused.load(Ordering::Relaxed),
        tally.dropped.load(Ordering::Relaxed),
        tally.odd.load(Ordering::Relaxed),
    );
    eprintln!(
        "acked {acked}, committed {committed}, refused {refused}, dropped {dropped}, odd {odd}"
    );
    assert_eq!(
        committed, acked,
        "calls committed without their answer reaching the caller"
    );
    assert_eq!(
        odd, 0,
        "answers that were neither a result nor `shutting_down`"
    );
    server.terminate().await?;
    Ok(())
}
