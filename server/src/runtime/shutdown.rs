//! Graceful shutdown of the runtime (ARCHITECTURE.md, "Shutdown answers"):
//! new commands are refused with `shutting_down`; every actor finishes what
//! is already queued and answers it; then every socket gets 1012 and its
//! close handshake. All within the drain timeout: what is still running
//! then is abandoned, and nothing it did not acknowledge is promised.
//! Last, `close_storage` leaves the data folder as small as it can: no
//! empty log segment, no WAL beside the objects' files or the catalog.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Runtime;

impl Runtime {
    /// Stops every actor after it finishes what is queued, and waits for all;
    /// then closes every socket with 1012 and waits (up to 5 s) for them.
    pub async fn shutdown(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.0.shutting_down.store(true, Ordering::Release);
        self.stop_console_queries();
        // Dropping the directory's senders lets each actor drain its mailbox and exit.
        self.drop_live_slots();
        if let Ok(mut alive) = self.0.alive_tx.lock() {
            alive.take();
        }
        let mut rx = self.0.alive_rx.lock().await;
        let drained =
            tokio::time::timeout_at(deadline, async { while rx.recv().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                objects = self.0.directory.len(),
                "objects still running at the drain timeout; exiting without them (nothing they did not acknowledge is promised)"
            );
        }
        self.sockets().close_all(1012, "server restarting");
        while !self.sockets().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !self.sockets().is_empty() {
            tracing::warn!("sockets still open at the drain timeout");
        }
    }

    /// After `shutdown`: the commit log written, checkpointed and closed
    /// (keeping no empty segment), the feed closed, the closed objects'
    /// WALs folded into their files (for up to 5 s; the rest keep them),
    /// the catalog closed with its WAL.
    pub(crate) async fn close_storage(&self) {
        self.log().close().await;
        crate::feed::close(self).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        self.0.tidier.finish(deadline).await;
        self.catalog().close().await;
    }
}
