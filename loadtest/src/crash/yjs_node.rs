//! The Yjs writers: `tests/node/crash-client.js`, the official y-websocket
//! provider in Node, run as one child process for the whole run. It lives
//! through every kill (its providers reconnect by themselves) and reports
//! each edit Roost acknowledged with its `saved` message as a line
//! `ack <doc> <marker>`, which arrive here through a channel.
//!
//! The driver pauses the providers right after each kill (they disconnect;
//! every ack line is read before the `paused` answer) and resumes them after
//! the check, so the check reads what the server kept, not what a provider
//! re-sent. Closing the child's stdin (or dropping this handle, which kills
//! it) ends the child.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

pub(super) struct NodeWriters {
    child: Child,
    /// Commands to the child (`pause`, `resume`).
    stdin: ChildStdin,
    acks: mpsc::UnboundedReceiver<(String, String)>,
    /// One `()` per `paused` answer.
    paused: mpsc::UnboundedReceiver<()>,
    connects: Arc<AtomicU64>,
    /// The task reading the child's stdout; it ends when the child does.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl NodeWriters {
    pub(super) fn spawn(
        node: &str,
        script: &Path,
        url: &str,
        docs: &[String],
        clients: usize,
        seed: u64,
        log: &Path,
    ) -> anyhow::Result<NodeWriters> {
        anyhow::ensure!(
            script.exists(),
            "{} not found (run from the repository root, or pass --node-script)",
            script.display()
        );
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(node)
            .arg(script)
            .args(["--url", url, "--docs", &docs.join(",")])
            .args(["--clients", &clients.to_string()])
            .args(["--seed", &(seed % 2_147_483_647).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {node} {}", script.display()))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, acks) = mpsc::unbounded_channel();
        let (paused_tx, paused) = mpsc::unbounded_channel();
        let connects = Arc::new(AtomicU64::new(0));
        let seen = connects.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut parts = line.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("ack"), Some(doc), Some(marker)) => {
                        if tx.send((doc.to_string(), marker.to_string())).is_err() {
                            break;
                        }
                    }
                    (Some("connected"), _, _) => {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some("paused"), None, None) => {
                        let _ = paused_tx.send(());
                    }
                    _ => eprintln!("crash: node client: {line}"),
                }
            }
        });
        Ok(NodeWriters {
            child,
            stdin,
            acks,
            paused,
            connects,
            reader: Some(reader),
        })
    }

    /// Disconnects every provider; returns once the child says so, with
    /// every ack it printed before already in the channel.
    pub(super) async fn pause(&mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"pause\n").await?;
        self.stdin.flush().await?;
        tokio::time::timeout(std::time::Duration::from_secs(10), self.paused.recv())
            .await
            .context("the node Yjs client did not pause within 10 s")?
            .context("the node Yjs client stopped")
    }

    /// Connects every provider again.
    pub(super) async fn resume(&mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"resume\n").await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Acknowledged edits received since the last call.
    pub(super) fn drain(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(a) = self.acks.try_recv() {
            out.push(a);
        }
        out
    }

    /// How many times the providers have connected (reconnections included).
    pub(super) fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// An error if the child has exited (it should run until the end).
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("the node Yjs client exited ({status})");
        }
        Ok(())
    }

    /// Kills the child and reads what it printed before it died.
    pub(super) async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(r) = self.reader.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), r).await;
        }
    }
}
