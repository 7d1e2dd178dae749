//! Webhooks (`--webhook`) against the real binary and a receiver run here
//! (plain HTTP/1.1 on 127.0.0.1) that refuses the first attempts: every
//! acknowledged event arrives at least once, per object in order, signed,
//! with a kill -9 of the server between delivery attempts and another
//! after deliveries resumed.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roost_tests::{call, http, metric, ServerProcess};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "webhook-test-secret";

/// What the receiver saw.
#[derive(Default)]
struct Received {
    attempts: usize,
    /// Events of accepted deliveries, in arrival order.
    events: Vec<Value>,
    bad_signatures: usize,
}

fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    // RFC 2104 over SHA-256 (64-byte blocks); the key is short.
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner_hash = Sha256::new()
        .chain_update(&inner)
        .chain_update(body)
        .finalize();
    let mac = Sha256::new()
        .chain_update(&outer)
        .chain_update(inner_hash)
        .finalize();
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads one HTTP/1.1 request: (headers lower-cased, body).
async fn read_request(stream: &mut tokio::net::TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(buf.len() < 1 << 20, "headers too long");
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the headers ended");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the body ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((head, buf[head_end..head_end + length].to_vec()))
}

/// Runs the receiver: the first `refuse` attempts get 500, the rest 200.
async fn receiver(listener: TcpListener, seen: Arc<Mutex<Received>>, refuse: usize) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(Ok((head, body))) =
                tokio::time::timeout(Duration::from_secs(10), read_request(&mut stream)).await
            else {
                return;
            };
            let ok = {
                let mut r = seen.lock().expect("lock");
                r.attempts += 1;
                let want = format!(
                    "x-roost-signature: sha256={}",
                    hmac_sha256(SECRET.as_bytes(), &body)
                );
                if !head.contains(&want) {
                    r.bad_signatures += 1;
                }
                let accept = r.attempts > refuse;
                if accept {
                    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    r.events
                        .extend(parsed["events"].as_array().cloned().unwrap_or_default());
                }
                accept
            };
            let status = if ok {
                "200 OK"
            } else {
                "500 Internal Server Error"
            };
            let reply =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn start(data: &str, hook: &str) -> anyhow::Result<ServerProcess> {
    let extra = ["--webhook-max-backoff", "400ms", "--webhook-batch", "7"];
    start_with(std::path::Path::new(data), hook, &extra).await
}

/// A server feeding `room` to the webhook at `hook`, with `extra` flags.
async fn start_with(
    data: &std::path::Path,
    hook: &str,
    extra: &[&str],
) -> anyhow::Result<ServerProcess> {
    let mut args = vec![
        "--feed",
        "room",
        "--webhook",
        hook,
        "--webhook-secret",
        SECRET,
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(data, &args).await
}

async fn send(server: &ServerProcess, room: &str, text: &str) -> anyhow::Result<()> {
    let args = json!({ "text": text, "name": "bot" });
    let (status, body) = call(&http(), server, "room", room, "send", args).await?;
    anyhow::ensure!(status == 200, "send: {status} {body}");
    Ok(())
}

async fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_every_event_in_order_through_failures_and_kill9() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Received::default()));
    let receiving = tokio::spawn(receiver(listener, seen.clone(), 3));
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let attempts = || seen.lock().expect("lock").attempts;
    let mut sent = Vec::new();

    // 1. Events while the receiver refuses; kill -9 between two attempts.
    let server = start(data, &hook).await?;
    for i in 0..12 {
        let text = format!("a{i}");
        send(&server, &format!("r{}", i % 3), &text).await?;
        sent.push(text);
    }
    wait_until("a first refused attempt", 10, || attempts() >= 1).await?;
    assert!(attempts() <= 3, "still refusing");
    // The metrics say so: indexed, not delivered, failing.
    let client = http();
    assert!(metric(&client, &server, "roost_feed_indexed_total").await? >= 12.0);
    assert!(metric(&client, &server, "roost_feed_newest_seq").await? >= 12.0);
    assert!(metric(&client, &server, "roost_webhook_failures_total").await? >= 1.0);
    assert_eq!(
        metric(&client, &server, "roost_webhook_delivered_total").await?,
        0.0
    );
    server.kill9().await?;

    // 2. After the restart the same events are retried until accepted.
    let server = start(data, &hook).await?;
    wait_until("attempts past the refusals", 20, || attempts() > 3).await?;
    for i in 0..9 {
        let text = format!("b{i}");
        send(&server, &format!("r{}", i % 3), &text).await?;
        sent.push(text);
    }
    // Kill -9 again once deliveries flow, then send more.
    let delivered = || seen.lock().expect("lock").events.len();
    wait_until("some deliveries", 20, || delivered() >= 7).await?;
    server.kill9().await?;
    let server = start(data, &hook).await?;
    for i in 0..6 {
        let text = format!("c{i}");
        send(&server, &format!("r{}", i % 3), &text).await?;
        sent.push(text);
    }
    let all: HashSet<String> = sent.iter().cloned().collect();
    wait_until("every event delivered", 30, || {
        let r = seen.lock().expect("lock");
        let got: HashSet<String> = r
            .events
            .iter()
            .filter_map(|e| e["data"]["text"].as_str().map(str::to_owned))
            .collect();
        all.is_subset(&got)
    })
    .await?;
    // Caught up: the webhook's cursor reaches the feed's newest seq.
    let mut caught_up = false;
    for _ in 0..100 {
        let newest = metric(&client, &server, "roost_feed_newest_seq").await?;
        let cursor = metric(&client, &server, "roost_webhook_cursor_seq").await?;
        if newest > 0.0 && cursor == newest {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        caught_up,
        "the webhook cursor metric never reached the newest seq"
    );
    assert!(metric(&client, &server, "roost_webhook_delivered_total").await? >= 6.0);
    server.kill9().await?;
    receiving.abort();

    let r = seen.lock().expect("lock");
    assert_eq!(
        r.bad_signatures, 0,
        "every delivery carries a valid signature"
    );
    // Per room: in order of first arrival, the texts are in the order sent
    // and the object_seqs count up from 1; repeats (at least once) only
    // ever re-deliver what came before.
    let mut first: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    let mut seen_keys = HashSet::new();
    for e in &r.events {
        assert_eq!(e["class"], "room");
        assert_eq!(e["kind"], "room.message");
        let room = e["object"].as_str().unwrap_or("").to_owned();
        let seq = e["object_seq"].as_i64().unwrap_or(-1);
        if seen_keys.insert((room.clone(), seq)) {
            let text = e["data"]["text"].as_str().unwrap_or("").to_owned();
            first.entry(room).or_default().push((seq, text));
        }
    }
    for (room, got) in first {
        let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
        let want: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, want, "{room}: out of order");
        let texts: Vec<&String> = got.iter().map(|(_, t)| t).collect();
        let sent_here: Vec<&String> = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| format!("r{}", i_room(*i, &sent)) == room)
            .map(|(_, t)| t)
            .collect();
        assert_eq!(texts, sent_here, "{room}: texts not in the order sent");
    }
    Ok(())
}

/// The room the `i`th sent text went to (each phase cycles r0, r1, r2).
fn i_room(i: usize, sent: &[String]) -> usize {
    let n: usize = sent[i][1..].parse().unwrap_or(0);
    n % 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_webhook_setting_stops_the_start_with_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().expect("utf-8");
    for (args, says) in [
        (
            vec![
                "--webhook",
                "https://example.invalid/hook",
                "--webhook-secret",
                "s",
            ],
            "only http://",
        ),
        (
            vec!["--webhook", "http://127.0.0.1:9/hook"],
            "--webhook-secret",
        ),
        // A class the feed does not carry: nothing would ever be delivered.
        (
            vec![
                "--feed",
                "room",
                "--webhook",
                "http://127.0.0.1:9/hook",
                "--webhook-secret",
                "s",
                "--webhook-class",
                "ydoc",
            ],
            "--webhook-class",
        ),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(roost_tests::roost_bin())
                .args(["serve", "--listen", "127.0.0.1:0", "--data", data])
                .args(&args)
                .kill_on_drop(true)
                .output(),
        )
        .await??;
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    Ok(())
}

/// A receiver away longer than `--feed-retention` loses the events the
/// index dropped meanwhile (the index does not grow without bound behind
/// it): that gap is logged as an error, and delivery goes on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_away_past_retention_gets_a_logged_gap_then_the_rest() -> anyhow::Result<()> {
    // A port nobody listens on yet.
    let addr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let hook = format!("http://{addr}/hook");
    let dir = tempfile::tempdir()?;
    let extra = ["--webhook-max-backoff", "200ms", "--feed-retention", "1s"];
    let mut server = start_with(dir.path(), &hook, &extra).await?;
    for i in 0..3 {
        send(&server, "away", &format!("lost{i}")).await?;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let listener = TcpListener::bind(addr).await?;
    let seen = Arc::new(Mutex::new(Received::default()));
    let receiving = tokio::spawn(receiver(listener, seen.clone(), 0));
    send(&server, "away", "kept").await?;
    let delivered = |text: &str| {
        seen.lock()
            .expect("lock")
            .events
            .iter()
            .any(|e| e["data"]["text"] == text)
    };
    wait_until("the event after the gap", 20, || delivered("kept")).await?;
    let logs = server.drain_logs().join("\n");
    assert!(
        logs.contains("dropped by --feed-retention before delivery"),
        "{logs}"
    );
    assert!(metric(&http(), &server, "roost_webhook_gaps_total").await? >= 1.0);
    server.kill9().await?;
    receiving.abort();
    Ok(())
}

/// A receiver too slow for a whole batch within `--webhook-timeout` (here:
/// more than two events take it a second) still gets every event: after
/// each failure the webhook sends half as many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_too_slow_for_a_whole_batch_gets_smaller_ones() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    let receiving = {
        let got = got.clone();
        tokio::spawn(async move {
            // Connections wait in the backlog (and time out) until the
            // events are all queued: then they go out as one batch of ten.
            let _ = opened.await;
            while let Ok((mut stream, _)) = listener.accept().await {
                let got = got.clone();
                tokio::spawn(async move {
                    let Ok((_, body)) = read_request(&mut stream).await else {
                        return;
                    };
                    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let events = parsed["events"].as_array().cloned().unwrap_or_default();
                    if events.len() > 2 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    } else {
                        got.lock().expect("lock").extend(
                            events
                                .iter()
                                .filter_map(|e| e["data"]["text"].as_str().map(str::to_owned)),
                        );
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        })
    };
    let dir = tempfile::tempdir()?;
    let extra = [
        "--webhook-timeout",
        "300ms",
        "--webhook-max-backoff",
        "200ms",
    ];
    let server = start_with(dir.path(), &hook, &extra).await?;
    let sent: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for text in &sent {
        send(&server, "slow", text).await?;
    }
    let _ = open.send(());
    wait_until("every event through small batches", 20, || {
        let got = got.lock().expect("lock");
        sent.iter().all(|t| got.contains(t))
    })
    .await?;
    assert!(metric(&http(), &server, "roost_webhook_failures_total").await? >= 1.0);
    server.kill9().await?;
    receiving.abort();
    Ok(())
}
