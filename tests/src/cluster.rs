//! Three (or more) `roost serve --cluster` nodes on a [`NatsCluster`]:
//! each on a free loopback port with its own data directory, node ids
//! `r1`, `r2`, …, a short liveness TTL, and the admin token `admin`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::nats::NatsCluster;
use crate::{http, segment, ServerProcess};

pub const ADMIN: &str = "admin";
/// The nodes' liveness TTL (`--cluster-node-ttl`).
pub const TTL: &str = "2s";

pub struct RoostCluster {
    pub nats: NatsCluster,
    pub nodes: Vec<Option<ServerProcess>>,
    dirs: Vec<tempfile::TempDir>,
    extra: Vec<String>,
}

impl RoostCluster {
    /// Starts `n` nodes on a fresh three-server NATS cluster.
    pub async fn start(n: usize, extra: &[&str]) -> Result<RoostCluster> {
        let nats = NatsCluster::start(3).await?;
        let mut cluster = RoostCluster {
            nats,
            nodes: Vec::new(),
            dirs: Vec::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for _ in 0..n {
            cluster.dirs.push(tempfile::tempdir()?);
            cluster.nodes.push(None);
        }
        for i in 0..n {
            cluster.spawn(i).await?;
        }
        Ok(cluster)
    }

    /// The arguments node `i` runs with.
    pub fn args(&self, i: usize) -> Vec<String> {
        let monitors: Vec<String> = self.nats.nodes.iter().map(|n| n.monitor.clone()).collect();
        let mut args = vec![
            "--data".to_owned(),
            self.dirs[i].path().join("data").display().to_string(),
            "--cluster".to_owned(),
            self.nats.urls(),
            "--cluster-monitor".to_owned(),
            monitors.join(","),
            "--node-id".to_owned(),
            format!("r{}", i + 1),
            "--cluster-node-ttl".to_owned(),
            TTL.to_owned(),
            "--admin-token".to_owned(),
            ADMIN.to_owned(),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts node `i` (again), with the same data directory.
    pub async fn spawn(&mut self, i: usize) -> Result<()> {
        let args = self.args(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = ServerProcess::start_in(None, &args).await?;
        self.nodes[i] = Some(server);
        Ok(())
    }

    pub fn node(&self, i: usize) -> &ServerProcess {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Indices of running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    pub async fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(s) = self.nodes[i].take() {
            s.kill9().await?;
        }
        Ok(())
    }

    pub async fn terminate(&mut self, i: usize) -> Result<Option<i32>> {
        match self.nodes[i].take() {
            Some(s) => s.terminate().await,
            None => Ok(None),
        }
    }

    /// Sends SIGSTOP or SIGCONT to node `i`.
    pub fn signal(&self, i: usize, signal: &str) -> Result<()> {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.node(i).pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        Ok(())
    }

    /// The node an object's admin details name as owner, asked through node `via`.
    pub async fn owner(&self, via: usize, class: &str, name: &str) -> Result<String> {
        let url = self.node(via).url(&format!(
            "/v1/admin/objects/{}/{}",
            segment(class),
            segment(name)
        ));
        let resp = http().get(url).bearer_auth(ADMIN).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        body["owner"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no owner in {status} {body}"))
    }

    /// The sum of a metric over the nodes `which` (read with the admin token).
    pub async fn metric_sum(&self, which: &[usize], name: &str) -> Result<f64> {
        let mut sum = 0.0;
        for &i in which {
            let text = http()
                .get(self.node(i).url("/metrics"))
                .bearer_auth(ADMIN)
                .send()
                .await?
                .text()
                .await?;
            sum += text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        Ok(sum)
    }

    /// Index of the node named `rN`.
    pub fn index_of(name: &str) -> Result<usize> {
        let n: usize = name.trim_start_matches('r').parse().context("node name")?;
        Ok(n - 1)
    }

    /// Increments `counter/name` through node `via` until it answers 200 or
    /// `patience` passes; returns the value and how long it took.
    pub async fn increment_until_ok(
        &self,
        via: usize,
        name: &str,
        patience: Duration,
    ) -> Result<(i64, Duration)> {
        let started = Instant::now();
        let client = http();
        while started.elapsed() < patience {
            if let Ok((200, v)) = crate::call(
                &client,
                self.node(via),
                "counter",
                name,
                "increment",
                serde_json::json!({}),
            )
            .await
            {
                return Ok((v.as_i64().context("a number")?, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no increment succeeded through node {via} within {patience:?}")
    }
}

/// The outcome of every increment a load run sent.
#[derive(Debug, Default)]
pub struct History {
    /// Acknowledged increments: when, and the value returned.
    pub acked: Vec<(Instant, i64)>,
    /// Failed ones: when, the HTTP status (0: no answer) and the body.
    pub failed: Vec<(Instant, u16, String)>,
}

impl History {
    /// Checks the history against the counter's final value: every
    /// acknowledged value is distinct (one acknowledging writer at a time)
    /// and none is above the final value (every acknowledged write kept).
    pub fn check(&self, final_value: i64) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for (_, v) in &self.acked {
            if !seen.insert(*v) {
                bail!("value {v} was acknowledged twice");
            }
        }
        if let Some(max) = seen.iter().next_back() {
            if *max > final_value {
                bail!("acknowledged value {max} is lost: the counter ends at {final_value}");
            }
        }
        if (seen.len() as i64) > final_value {
            bail!(
                "{} increments acknowledged, the counter ends at {final_value}",
                seen.len()
            );
        }
        Ok(())
    }

    /// The first acknowledgement after `t`, as a delay from `t`.
    pub fn first_ack_after(&self, t: Instant) -> Option<Duration> {
        self.acked
            .iter()
            .filter(|(at, _)| *at > t)
            .map(|(at, _)| *at - t)
            .min()
    }
}

/// Increments `counter/name` from `workers` concurrent loops, round-robin
/// over `bases` (node URLs), until `until`.
pub async fn load(bases: Vec<String>, name: &str, workers: usize, until: Instant) -> History {
    let history = std::sync::Arc::new(std::sync::Mutex::new(History::default()));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (bases, history, name) = (bases.clone(), history.clone(), name.to_owned());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client builds");
            let mut k = w;
            while Instant::now() < until {
                let base = &bases[k % bases.len()];
                k += 1;
                let url = format!(
                    "{base}/v1/objects/counter/{}/call/increment",
                    segment(&name)
                );
                let sent = client.post(url).json(&serde_json::json!({})).send().await;
                let at = Instant::now();
                let outcome = match sent {
                    Ok(r) if r.status().is_success() => {
                        match r.json::<Value>().await.ok().and_then(|v| v.as_i64()) {
                            Some(v) => Ok(v),
                            None => Err((200, "unreadable body".to_owned())),
                        }
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        Err((status, r.text().await.unwrap_or_default()))
                    }
                    Err(e) => Err((0, e.to_string())),
                };
                let failed = outcome.is_err();
                {
                    let mut h = history.lock().expect("not poisoned");
                    match outcome {
                        Ok(v) => h.acked.push((at, v)),
                        Err((status, body)) => h.failed.push((at, status, body)),
                    }
                }
                if failed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    std::sync::Arc::try_unwrap(history)
        .map(|m| m.into_inner().expect("not poisoned"))
        .unwrap_or_default()
}

/// The counter's value read through node `via`, retried for up to 20 s.
pub async fn final_value(node: &ServerProcess, name: &str) -> Result<i64> {
    let client = http();
    for _ in 0..100 {
        if let Ok((200, v)) =
            crate::call(&client, node, "counter", name, "get", serde_json::json!({})).await
        {
            return v.as_i64().context("a number");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("could not read counter {name}")
}
