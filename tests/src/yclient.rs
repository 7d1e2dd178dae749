//! A y-websocket client built on yrs, for Rust-side Yjs tests.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use yrs::sync::protocol::{Message as YMessage, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::ws::Stream;

pub struct YClient {
    pub doc: Doc,
    ws: Option<Stream>,
    /// Number of `saved` acknowledgements seen (last value).
    pub saved: u64,
}

impl YClient {
    pub fn new() -> YClient {
        YClient {
            doc: Doc::new(),
            ws: None,
            saved: 0,
        }
    }

    /// Connects and runs the full sync handshake (both directions).
    pub async fn connect(&mut self, url: &str) -> Result<()> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        self.ws = Some(ws);
        let sv = self.doc.transact().state_vector();
        self.send(YMessage::Sync(SyncMessage::SyncStep1(sv)))
            .await?;
        // Expect the server's step 1 (answer it) and its step 2 (to ours).
        let mut got_step2 = false;
        let mut answered = false;
        while !(got_step2 && answered) {
            let frame = self.next_binary(Duration::from_secs(10)).await?;
            for msg in decode(&frame)? {
                match msg {
                    YMessage::Sync(SyncMessage::SyncStep1(sv)) => {
                        let diff = self.doc.transact().encode_state_as_update_v1(&sv);
                        self.send(YMessage::Sync(SyncMessage::SyncStep2(diff)))
                            .await?;
                        answered = true;
                    }
                    YMessage::Sync(SyncMessage::SyncStep2(u)) => {
                        self.apply(&u)?;
                        got_step2 = true;
                    }
                    other => self.handle(other)?,
                }
            }
        }
        Ok(())
    }

    pub fn disconnect(&mut self) {
        self.ws = None;
    }

    pub fn is_connected(&self) -> bool {
        self.ws.is_some()
    }

    pub async fn send(&mut self, msg: YMessage) -> Result<()> {
        self.send_raw(msg.encode_v1()).await
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> Result<()> {
        let ws = self.ws.as_mut().ok_or_else(|| anyhow!("not connected"))?;
        ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// Inserts `text` at `index` in the local document only and returns the
    /// update (to send some other way, e.g. `POST /v1/yjs/{doc}/update`).
    pub fn edit(&mut self, index: u32, text: &str) -> Vec<u8> {
        let before = self.doc.transact().state_vector();
        {
            let t = self.doc.get_or_insert_text("t");
            let mut txn = self.doc.transact_mut();
            t.insert(&mut txn, index, text);
        }
        self.doc.transact().encode_state_as_update_v1(&before)
    }

    /// Inserts `text` at `index` and sends the update.
    pub async fn insert(&mut self, index: u32, text: &str) -> Result<()> {
        let update = self.edit(index, text);
        if self.ws.is_some() {
            self.send(YMessage::Sync(SyncMessage::Update(update)))
                .await?;
        }
        Ok(())
    }

    pub fn text(&self) -> String {
        let t = self.doc.get_or_insert_text("t");
        t.get_string(&self.doc.transact())
    }

    pub fn text_len(&self) -> u32 {
        self.text().chars().count() as u32
    }

    fn apply(&mut self, update: &[u8]) -> Result<()> {
        let u = Update::decode_v1(update).map_err(|e| anyhow!("bad update from server: {e}"))?;
        self.doc
            .transact_mut()
            .apply_update(u)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    }

    fn handle(&mut self, msg: YMessage) -> Result<()> {
        match msg {
            YMessage::Sync(SyncMessage::Update(u)) | YMessage::Sync(SyncMessage::SyncStep2(u)) => {
                self.apply(&u)
            }
            _ => Ok(()),
        }
    }

    /// Applies whatever arrives within `wait`. Returns the close code if the
    /// server closed the socket.
    pub async fn drain(&mut self, wait: Duration) -> Result<Option<u16>> {
        loop {
            let Some(ws) = self.ws.as_mut() else {
                return Ok(None);
            };
            let next = match tokio::time::timeout(wait, ws.next()).await {
                Err(_) => return Ok(None),
                Ok(n) => n,
            };
            match next {
                None => {
                    self.ws = None;
                    return Ok(Some(1006));
                }
                Some(Err(_)) => {
                    self.ws = None;
                    return Ok(Some(1006));
                }
                Some(Ok(Message::Close(f))) => {
                    self.ws = None;
                    return Ok(Some(f.map_or(1005, |f| f.code.into())));
                }
                Some(Ok(Message::Binary(b))) => {
                    if b.first() == Some(&100) {
                        // varUint: 7 bits per byte, low first.
                        self.saved = b[1..]
                            .iter()
                            .take(10)
                            .enumerate()
                            .fold(0, |n, (i, x)| n | (u64::from(x & 0x7f) << (7 * i)));
                        continue;
                    }
                    for msg in decode(&b)? {
                        self.handle(msg)?;
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Applies incoming frames until the text equals `want` (bounded by `timeout`).
    pub async fn wait_for_text(&mut self, want: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.text() != want {
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "text is {:?}, still not {want:?} after {timeout:?}",
                    self.text()
                );
            }
            self.drain(Duration::from_millis(20)).await?;
        }
        Ok(())
    }

    /// The next binary frame within `wait`, unapplied (other frames skipped).
    pub async fn next_binary(&mut self, wait: Duration) -> Result<Vec<u8>> {
        loop {
            let ws = self.ws.as_mut().ok_or_else(|| anyhow!("not connected"))?;
            match tokio::time::timeout(wait, ws.next()).await {
                Err(_) => bail!("no frame within {wait:?}"),
                Ok(Some(Ok(Message::Binary(b)))) => return Ok(b.to_vec()),
                Ok(Some(Ok(Message::Close(f)))) => bail!("closed: {f:?}"),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => bail!("{e}"),
                Ok(None) => bail!("closed"),
            }
        }
    }
}

impl Default for YClient {
    fn default() -> Self {
        YClient::new()
    }
}

fn decode(frame: &[u8]) -> Result<Vec<YMessage>> {
    let mut decoder = DecoderV1::from(frame);
    MessageReader::new(&mut decoder)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("bad frame from server: {e}"))
}

/// The text of a document encoded as a v1 update.
pub fn text_of_update(update: &[u8]) -> Result<String> {
    let doc = Doc::new();
    let u = Update::decode_v1(update).map_err(|e| anyhow!("{e}"))?;
    doc.transact_mut()
        .apply_update(u)
        .map_err(|e| anyhow!("{e}"))?;
    let t = doc.get_or_insert_text("t");
    let s = t.get_string(&doc.transact());
    let _ = StateVector::default();
    Ok(s)
}
