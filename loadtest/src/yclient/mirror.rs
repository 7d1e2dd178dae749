//! Where a document starts, for the `prepend` workload: one observer
//! connection per document (it sends nothing and is not counted) applies
//! every update the server broadcasts, in the server's order, to a yrs
//! `Doc`, and publishes the id of the text's first character. Prepending
//! clients use it as their right origin, as a real client at position 0
//! would (its own `Doc` in sync with the server's): one apply per update
//! and document, instead of one per update and client.
//!
//! Only what the server has broadcast is published, so a client never
//! names an item the server lacks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use yrs::updates::decoder::Decode as _;
use yrs::{Assoc, Doc, IndexedSequence as _, StateVector, Transact as _, Update};

use crate::target::Target;
use crate::ws::{Kind, WsConn};
use crate::yjs::{self, Framer, Incoming, Protocol, TEXT_NAME};

/// No first character yet.
pub(crate) const NONE: u64 = u64::MAX;

/// The first character's id, `client << 32 | clock` (client ids are below 2^32).
pub(crate) type FirstChar = Arc<AtomicU64>;

/// A running observer: its first-character cell and its task.
pub(crate) struct Mirror {
    pub first: FirstChar,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Mirror {
    /// Connects and waits for the initial sync (bounded by `timeout`).
    pub(crate) async fn start(
        target: &Target,
        protocol: Protocol,
        path: &str,
        doc: &str,
        token: &str,
        timeout: Duration,
    ) -> anyhow::Result<Mirror> {
        let first = Arc::new(AtomicU64::new(NONE));
        let (stop, stop_rx) = watch::channel(false);
        let (synced_tx, synced) = tokio::sync::oneshot::channel();
        let conn = tokio::time::timeout(timeout, WsConn::connect(target, path, &[]))
            .await
            .context("the observer did not connect in time")??;
        let observer = Observer {
            conn,
            framer: Framer::new(protocol, doc),
            protocol,
            doc: Doc::new(),
            first: first.clone(),
        };
        let task = tokio::spawn(observer.run(token.to_string(), stop_rx, synced_tx));
        tokio::time::timeout(timeout, synced)
            .await
            .context("the observer did not sync in time")?
            .context("the observer failed before its sync")?;
        Ok(Mirror { first, stop, task })
    }

    /// Stops the observer; its error, if it failed.
    pub(crate) async fn finish(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

struct Observer {
    conn: WsConn,
    framer: Framer,
    protocol: Protocol,
    doc: Doc,
    first: FirstChar,
}

impl Observer {
    async fn run(
        mut self,
        token: String,
        mut stop: watch::Receiver<bool>,
        synced: tokio::sync::oneshot::Sender<()>,
    ) -> anyhow::Result<()> {
        if let Some(auth) = self.framer.auth(&token) {
            self.conn.send_binary(auth).await?;
        }
        let empty = StateVector::default();
        self.conn.send_binary(self.framer.step1(&empty)).await?;
        let mut synced = Some(synced);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                n = self.conn.read_more() => {
                    if n? == 0 {
                        anyhow::bail!("the server closed the observer's connection");
                    }
                    if self.apply_buffered().await? {
                        if let Some(s) = synced.take() {
                            let _ = s.send(());
                        }
                    }
                    self.conn.flush_control().await?;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.conn.close()).await;
        Ok(())
    }

    /// Applies every buffered update, then publishes the first character;
    /// whether a step 2 was among them.
    async fn apply_buffered(&mut self) -> anyhow::Result<bool> {
        let (mut step2, mut owe) = (false, false);
        {
            let mut txn = self.doc.transact_mut();
            while let Some(msg) = self.conn.next_buffered()? {
                if msg.kind != Kind::Binary {
                    continue;
                }
                let update = match yjs::classify(self.protocol, msg.payload)? {
                    Incoming::Update(u) => u,
                    Incoming::Step2(u) => {
                        step2 = true;
                        u
                    }
                    Incoming::Step1(_) => {
                        owe = true;
                        continue;
                    }
                    _ => continue,
                };
                txn.apply_update(Update::decode_v1(update)?)?;
            }
        }
        if owe {
            self.conn.send_binary(self.framer.step2(&[0, 0])).await?;
        }
        let text = self.doc.get_or_insert_text(TEXT_NAME);
        let txn = self.doc.transact();
        if let Some(id) = text
            .sticky_index(&txn, 0, Assoc::After)
            .and_then(|s| s.id().copied())
        {
            self.first.store(
                (id.client.get() << 32) | u64::from(id.clock),
                Ordering::Relaxed,
            );
        }
        Ok(step2)
    }
}
