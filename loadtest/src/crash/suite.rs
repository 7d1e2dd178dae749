//! One crash-suite run in progress: setting up (data directory, port,
//! server, follow-up room, Node Yjs writers), then the cycles of traffic,
//! `kill -9`, restart and check, then shutting everything down.
//!
//! The accounting invariant: an acknowledged write is never lost. Every
//! cycle's writers are collected into the ledger *before* the restart (they
//! stop only after the kill, so nothing is acknowledged afterwards), and
//! the Yjs providers are paused across the restart, so the check after it
//! reads what the server kept, not what a provider re-sent. The ledger
//! keeps every acknowledgement since the run began, so each check covers
//! all earlier cycles too.
//!
//! The loop is bounded: at most `--cycles` cycles, none started after
//! `--max-duration`, and none after the first loss.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::watch;

use super::crew::{self, Names};
use super::ledger::Ledger;
use super::server::RoostProcess;
use super::settings::server_args;
use super::summary::ServerStats;
use super::yjs_node::NodeWriters;
use super::{CrashArgs, Rng, ADMIN_TOKEN};
use crate::args::Common;
use crate::http1::HttpConn;
use crate::target::Target;

pub(super) struct Suite {
    pub args: CrashArgs,
    pub seed: u64,
    /// Run times, start delays and each writer's own stream.
    rng: Rng,
    /// Holds `data/`, `server.log` and `node.log`.
    pub dir: PathBuf,
    pub target: Target,
    pub names: Names,
    /// Every acknowledged write since the run began.
    pub ledger: Ledger,
    server: RoostProcess,
    /// The y-websocket writers (a Node child process), unless `--no-yjs`.
    node: Option<NodeWriters>,
    /// When the first cycle began.
    pub started: Instant,
    pub stats: ServerStats,
    pub restart_total: Duration,
    pub restart_max: Duration,
    pub cycles_done: u64,
}

impl Suite {
    /// Makes the data directory, starts the server on a free loopback port,
    /// turns on the follow-up room and spawns the Node Yjs writers.
    pub(super) async fn start(
        args: CrashArgs,
        common: &Common,
        seed: u64,
    ) -> anyhow::Result<Suite> {
        let rng = Rng::new(seed);
        let dir = match &args.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                d.clone()
            }
            None => temp_dir(seed)?,
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let target = Target::parse(&format!("http://127.0.0.1:{port}"), common.allow_remote)?;
        eprintln!(
            "crash: seed {seed}, {} cycles, server {} on port {port}, data and logs in {}",
            args.cycles,
            args.bin.display(),
            dir.display()
        );
        let names = Names::new(&args);
        let ledger = Ledger::new(&names.rooms, names.followup_room, &names.ydocs);
        let mut server = RoostProcess::new(
            &args.bin,
            server_args(&args, port, &dir.join("data")),
            dir.join("server.log"),
            target.clone(),
        );
        server.start().await?;
        if let Some(i) = names.followup_room {
            set_followup(&target, &names.rooms[i], args.followup_after).await?;
        }
        let node = if names.ydocs.is_empty() {
            None
        } else {
            Some(NodeWriters::spawn(
                &args.node,
                &args.node_script,
                &format!("ws://127.0.0.1:{port}/v1/yjs"),
                &names.ydocs,
                args.yjs_clients,
                seed,
                &dir.join("node.log"),
            )?)
        };
        Ok(Suite {
            args,
            seed,
            rng,
            dir,
            target,
            names,
            ledger,
            server,
            node,
            started: Instant::now(),
            stats: ServerStats::default(),
            restart_total: Duration::ZERO,
            restart_max: Duration::ZERO,
            cycles_done: 0,
        })
    }

    /// Runs the cycles until `--cycles`, `--max-duration` or the first
    /// loss; then stops the Node writers (every ack they got arrived before
    /// the last pause, so the last check saw them all).
    pub(super) async fn run_cycles(&mut self) -> anyhow::Result<()> {
        for cycle in 0..self.args.cycles {
            if self
                .args
                .max_duration
                .is_some_and(|m| self.started.elapsed() >= m)
            {
                break;
            }
            self.traffic_then_kill(cycle).await?;
            self.restart(cycle).await?;
            self.check(cycle).await?;
            self.cycles_done = cycle + 1;
            if !self.ledger.problems.is_empty() {
                break;
            }
            if let Some(n) = self.node.as_mut() {
                n.resume().await?;
            }
            self.progress();
        }
        if let Some(mut n) = self.node.take() {
            n.stop().await;
            eprintln!(
                "crash: y-websocket providers connected {} times",
                n.connects()
            );
        }
        Ok(())
    }

    /// Steps 1 and 2 of a cycle: writers at work for a random
    /// `--min-run..--max-run`, then `kill -9` in the middle of their
    /// traffic; the Yjs providers are paused, the writers told to stop, and
    /// their tallies go into the ledger.
    async fn traffic_then_kill(&mut self, cycle: u64) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let writers = crew::spawn_writers(
            &self.args,
            &self.names,
            &self.target,
            cycle,
            &mut self.rng,
            &stop_rx,
        );
        let run_for = self.rng.range(
            self.args.min_run.as_millis() as u64,
            self.args.max_run.as_millis() as u64,
        );
        tokio::time::sleep(Duration::from_millis(run_for)).await;
        if let Some(status) = self.server.exited() {
            anyhow::bail!(
                "roost exited by itself ({status}) in cycle {cycle}:\n{}",
                self.server.log_tail(20)
            );
        }
        self.stats.add_scrape(&self.target).await;
        self.server.kill9().await?;
        if let Some(n) = self.node.as_mut() {
            n.pause().await?;
        }
        let _ = stop_tx.send(true);
        crew::collect(writers, &mut self.ledger).await
    }

    /// Step 3: a restart on the same data directory (after deleting it, in
    /// the `--self-test-wipe` cycle), timed; then the Yjs markers the Node
    /// writers saw acknowledged go into the ledger.
    async fn restart(&mut self, cycle: u64) -> anyhow::Result<()> {
        if self.args.self_test_wipe == Some(cycle + 1) {
            eprintln!("crash: self-test: deleting the data directory before the restart");
            std::fs::remove_dir_all(self.dir.join("data"))?;
        }
        let took = self.server.start().await?;
        self.restart_total += took;
        self.restart_max = self.restart_max.max(took);
        if let Some(n) = self.node.as_mut() {
            n.check_alive()?;
            for (doc, marker) in n.drain() {
                self.ledger.add_yjs(&doc, marker);
            }
        }
        Ok(())
    }

    /// Step 4: checks every write acknowledged since the run began. A read
    /// that failed recorded nothing, so it is tried once more, after 1 s.
    async fn check(&mut self, cycle: u64) -> anyhow::Result<()> {
        if let Err(e) = self.ledger.verify(&self.target, ADMIN_TOKEN).await {
            anyhow::ensure!(self.ledger.problems.is_empty(), e);
            eprintln!(
                "crash: cycle {}: the check could not read the server ({e:#}); again in 1 s",
                cycle + 1
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.ledger.verify(&self.target, ADMIN_TOKEN).await?;
        }
        Ok(())
    }

    /// Every `--progress-every` cycles: what has been acknowledged so far.
    fn progress(&self) {
        let every = self.args.progress_every;
        if every == 0 || !self.cycles_done.is_multiple_of(every) {
            return;
        }
        let t: Vec<String> = self
            .ledger
            .totals()
            .iter()
            .map(|(k, t)| format!("{k} {}", t.acked))
            .collect();
        eprintln!(
            "crash: cycle {}/{}: acknowledged {}; lost 0; {:.0} s",
            self.cycles_done,
            self.args.cycles,
            t.join(", "),
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Stops the Node writers (if a failed cycle left them running) and
    /// kills the server.
    pub(super) async fn shut_down(&mut self) {
        if let Some(mut n) = self.node.take() {
            n.stop().await;
        }
        let _ = self.server.kill9().await;
    }
}

fn temp_dir(seed: u64) -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "roost-crash-{}-{seed:x}-{nanos:x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Turns on the follow-up room's alarm-driven message.
async fn set_followup(target: &Target, room: &str, after: Duration) -> anyhow::Result<()> {
    let mut conn = HttpConn::connect(target).await?;
    let path = format!("/v1/objects/room/{room}/call/followup");
    let body = serde_json::json!({ "after_ms": after.as_millis() as u64, "text": "followup" });
    let (status, reply) = conn.post_json(&path, Bytes::from(body.to_string())).await?;
    anyhow::ensure!(
        status.is_success(),
        "{path}: HTTP {status}: {}",
        String::from_utf8_lossy(&reply)
    );
    Ok(())
}
