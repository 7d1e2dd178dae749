//! The Rust-side writers of one crash cycle: HTTP `counter.increment`,
//! HTTP `counter.increment_later` (alarm-applied) and room `send` calls over
//! the object WebSocket. Each writer has one call in flight, never retries a
//! call (so a counter can never move by more than the calls attempted), and
//! keeps writing until told to stop, which happens only after the server has
//! been killed: the kill lands in the middle of their traffic. A reply that
//! was already in the socket buffer when the server died still counts: it
//! was sent, so it was acknowledged.
//!
//! What a writer returns is what it attempted and what was acknowledged;
//! `ledger.rs` keeps those across cycles and checks them.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use roost_protocol::{ClientFrame, ServerFrame};
use tokio::sync::watch;

use super::Rng;
use crate::http1::HttpConn;
use crate::target::Target;
use crate::ws::{Kind, WsConn};

/// Give up on one call after this long (counted as attempted, not acknowledged).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Counter calls: attempted and acknowledged.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct CallTally {
    pub attempted: u64,
    pub acked: u64,
    /// `increment_later` only: the latest acknowledged due time (ms since the epoch).
    pub last_due_ms: i64,
}

/// One acknowledged room message.
#[derive(Debug, Clone)]
pub(super) struct RoomAck {
    pub id: i64,
    pub text: String,
}

#[derive(Debug, Default)]
pub(super) struct RoomTally {
    pub attempted: u64,
    pub acked: Vec<RoomAck>,
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn pause(rng: &mut Rng, min_ms: u64, max_ms: u64) {
    tokio::time::sleep(Duration::from_millis(rng.range(min_ms, max_ms))).await;
}

/// Sleeps for `d`, or until stopped.
async fn idle(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Longer than the suite's `--idle-timeout` (1 s): the object is evicted.
fn idle_pause(rng: &mut Rng) -> Duration {
    Duration::from_millis(rng.range(1_100, 1_600))
}

/// `POST path` until stopped, after `start_after`; `later_max_delay_ms`
/// makes each body an `increment_later` with a random delay and reads
/// `scheduled_ms` from each reply. Now and then the writer pauses for longer
/// than the idle timeout, so its object is evicted and loaded again.
pub(super) async fn counter_writer(
    target: Target,
    path: String,
    later_max_delay_ms: Option<u64>,
    start_after: Duration,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) -> CallTally {
    let mut t = CallTally::default();
    let mut conn: Option<HttpConn> = None;
    idle(&mut stop, start_after).await;
    while !stopped(&stop) {
        if rng.range(0, 99) == 0 {
            let d = idle_pause(&mut rng);
            idle(&mut stop, d).await;
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match HttpConn::connect(&target).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    pause(&mut rng, 10, 30).await;
                    continue;
                }
            },
        };
        let body = match later_max_delay_ms {
            Some(max) => format!(r#"{{"by":1,"delay_ms":{}}}"#, rng.range(0, max)),
            None => r#"{"by":1}"#.to_string(),
        };
        t.attempted += 1;
        match tokio::time::timeout(CALL_TIMEOUT, c.post_json(&path, Bytes::from(body))).await {
            Ok(Ok((status, reply))) if status.is_success() => {
                t.acked += 1;
                if later_max_delay_ms.is_some() {
                    let due = serde_json::from_slice::<serde_json::Value>(&reply)
                        .ok()
                        .and_then(|v| v.get("scheduled_ms").and_then(serde_json::Value::as_i64));
                    // An acknowledged call without its due time: assume the latest possible.
                    t.last_due_ms = t.last_due_ms.max(due.unwrap_or(i64::MAX / 2));
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => conn = None,
        }
        pause(&mut rng, 0, 20).await;
    }
    t
}

/// One room member: after `start_after`, connects and calls `send` with
/// unique texts until stopped, reconnecting after a broken connection.
pub(super) async fn room_writer(
    target: Target,
    room: String,
    tag: String,
    start_after: Duration,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) -> RoomTally {
    let mut t = RoomTally::default();
    idle(&mut stop, start_after).await;
    let path = format!("/v1/objects/room/{room}/ws?name={tag}");
    let mut next_id: u64 = 1;
    let mut seq: u64 = 0;
    while !stopped(&stop) {
        let mut conn = match WsConn::connect(&target, &path, &[]).await {
            Ok(c) => c,
            Err(_) => {
                pause(&mut rng, 10, 30).await;
                continue;
            }
        };
        while !stopped(&stop) {
            let text = format!("{tag}.{seq}");
            seq += 1;
            let id = next_id;
            next_id += 1;
            t.attempted += 1;
            let frame = ClientFrame::call(id, "send", serde_json::json!({ "text": text }));
            let res = tokio::time::timeout(CALL_TIMEOUT, async {
                conn.send_text(&frame).await?;
                await_result(&mut conn, id).await
            })
            .await;
            match res {
                Ok(Ok(Some(msg_id))) => t.acked.push(RoomAck { id: msg_id, text }),
                Ok(Ok(None)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
            pause(&mut rng, 5, 60).await;
        }
    }
    t
}

/// Reads frames until the result of call `id`: `Some(message id)` if it
/// succeeded, `None` if it failed; an error if the socket broke.
async fn await_result(conn: &mut WsConn, id: u64) -> anyhow::Result<Option<i64>> {
    loop {
        let msg = conn
            .next_message()
            .await?
            .context("server closed the connection")?;
        match msg.kind {
            Kind::Close => anyhow::bail!("server closed the socket"),
            Kind::Binary => continue,
            Kind::Text => {}
        }
        let Ok(text) = std::str::from_utf8(msg.payload) else {
            continue;
        };
        // Events (other members' messages, history, presence) are skipped.
        if text.starts_with(r#"{"type":"event""#) {
            continue;
        }
        if let Ok(ServerFrame::Result { id: got, ok, error }) = ServerFrame::decode(text) {
            if got != id {
                continue;
            }
            if error.is_some() {
                return Ok(None);
            }
            let msg_id = ok
                .as_ref()
                .and_then(|v| v.get("id"))
                .and_then(serde_json::Value::as_i64)
                .context("`send` result without an id")?;
            return Ok(Some(msg_id));
        }
    }
}
