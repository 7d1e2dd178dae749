//! The Roost process under test: `roost serve` on a fixed loopback port and
//! data directory, killed with SIGKILL and started again on the same ones.
//! Its stdout and stderr are appended to one log file. Nothing here checks
//! data; that is `ledger.rs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

use crate::http1::HttpConn;
use crate::target::Target;

/// How long a start (recovery included) may take before the run fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) struct RoostProcess {
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    target: Target,
    /// The running server; `None` between a kill and the next start.
    child: Option<Child>,
}

impl RoostProcess {
    pub(super) fn new(bin: &Path, args: Vec<String>, log: PathBuf, target: Target) -> RoostProcess {
        RoostProcess {
            bin: bin.to_path_buf(),
            args,
            log,
            target,
            child: None,
        }
    }

    /// Starts the server and waits until `/healthz` answers. A start that
    /// exits at once (the port still held by the killed process) is retried.
    pub(super) async fn start(&mut self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        for attempt in 0..5u32 {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .with_context(|| format!("opening {}", self.log.display()))?;
            let child = Command::new(&self.bin)
                .arg("serve")
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?;
            self.child = Some(child);
            match self.wait_ready(t0 + START_TIMEOUT).await? {
                true => return Ok(t0.elapsed()),
                false => {
                    self.child = None;
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        bail!(
            "roost exited at every start; see {}:\n{}",
            self.log.display(),
            self.log_tail(10)
        )
    }

    /// `true` once ready, `false` if the process exited first.
    async fn wait_ready(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    eprintln!("crash: roost exited during start-up ({status}); retrying");
                    return Ok(false);
                }
            }
            if let Ok(mut c) = HttpConn::connect(&self.target).await {
                if let Ok(Ok((status, _))) =
                    tokio::time::timeout(Duration::from_secs(2), c.get("/healthz")).await
                {
                    if status.is_success() {
                        return Ok(true);
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "roost did not become ready within {START_TIMEOUT:?}; see {}:\n{}",
                    self.log.display(),
                    self.log_tail(10)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then reap the process.
    pub(super) async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("sending SIGKILL to roost")?;
            child.wait().await.context("reaping roost")?;
        }
        Ok(())
    }

    /// Whether the server died by itself (it should only ever be killed).
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of the server's log.
    pub(super) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}
