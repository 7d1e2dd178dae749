//! A small WebSocket client for tests: the JSON envelope over tokio-tungstenite.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Stream,
    next_id: u64,
    /// Frames read while waiting for something else, served first.
    backlog: std::collections::VecDeque<Value>,
}

/// What a read produced.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Text(String),
    Binary(Vec<u8>),
    Closed(Option<u16>, String),
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client {
            ws,
            next_id: 1,
            backlog: Default::default(),
        })
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    pub async fn send_call(&mut self, method: &str, args: Value) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let text = serde_json::json!({"type": "call", "id": id, "method": method, "args": args})
            .to_string();
        self.send_text(&text).await?;
        Ok(id)
    }

    /// Next frame (skipping pings/pongs), within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Frame> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {timeout:?}"))?;
            return Ok(match msg {
                None => Frame::Closed(None, String::new()),
                Some(Err(e)) => Frame::Closed(None, e.to_string()),
                Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                    Ok(v) => Frame::Json(v),
                    Err(_) => Frame::Text(t.as_str().to_owned()),
                },
                Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                Some(Ok(Message::Close(Some(f)))) => {
                    Frame::Closed(Some(f.code.into()), f.reason.as_str().to_owned())
                }
                Some(Ok(Message::Close(None))) => Frame::Closed(None, String::new()),
                Some(Ok(_)) => continue,
            });
        }
    }

    /// Next JSON frame.
    pub async fn json(&mut self) -> Result<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Ok(v);
        }
        match self.next(Duration::from_secs(10)).await? {
            Frame::Json(v) => Ok(v),
            other => bail!("expected JSON, got {other:?}"),
        }
    }

    /// Next pushed event named `event` (skipping other frames).
    pub async fn event(&mut self, event: &str) -> Result<Value> {
        loop {
            let v = self.json().await?;
            if v["type"] == "event" && v["event"] == event {
                return Ok(v["data"].clone());
            }
        }
    }

    /// Calls and waits for the matching result (skipping pushed events).
    pub async fn call(&mut self, method: &str, args: Value) -> Result<Value> {
        let id = self.send_call(method, args).await?;
        let mut skipped = Vec::new();
        let result = loop {
            let v = match self.next(Duration::from_secs(10)).await? {
                Frame::Json(v) => v,
                other => bail!("expected JSON, got {other:?}"),
            };
            if v["type"] == "result" && v["id"] == id {
                break v;
            }
            skipped.push(v);
        };
        self.backlog.extend(skipped);
        Ok(result)
    }
}
