//! A real NATS JetStream cluster for cluster-mode tests: three `nats-server`
//! processes on free loopback ports, routed to each other, JetStream with
//! `sync_interval: always` (an acknowledgement waits for fsync), each with
//! its own store directory. The binary is the pinned one that
//! `scripts/install-nats.sh` puts in `.tools/nats/bin` (or `$NATS_SERVER`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// The oldest server cluster mode runs against (per-key TTL, markers, sync).
pub const MIN_VERSION: (u32, u32) = (2, 11);

/// The `nats-server` to run: `$NATS_SERVER`, else the pinned install.
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/nats/bin/nats-server")
}

/// `(major, minor)` of a `nats-server --version` line (`nats-server: v2.15.1`).
pub fn parse_version(line: &str) -> Option<(u32, u32)> {
    let v = line.trim().rsplit('v').next()?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// One node of the cluster.
pub struct Node {
    pub name: String,
    /// `nats://127.0.0.1:port`.
    pub url: String,
    /// The monitoring endpoint, `http://127.0.0.1:port`.
    pub monitor: String,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

pub struct NatsCluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl NatsCluster {
    /// Starts `n` routed JetStream servers and waits until JetStream has a
    /// meta leader that every node knows.
    pub async fn start(n: usize) -> Result<NatsCluster> {
        // On a loaded machine a cluster occasionally fails to form in time
        // (or a free port was taken meanwhile): one more try, fresh ports.
        match Self::start_once(n).await {
            Ok(c) => Ok(c),
            Err(e) => {
                eprintln!("NATS cluster did not form ({e}); trying once more");
                Self::start_once(n).await
            }
        }
    }

    async fn start_once(n: usize) -> Result<NatsCluster> {
        let bin = server_bin();
        let out = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .with_context(|| {
                format!("cannot run {} (run scripts/install-nats.sh)", bin.display())
            })?;
        let line = String::from_utf8_lossy(&out.stdout);
        match parse_version(&line) {
            Some(v) if v >= MIN_VERSION => {}
            _ => bail!("{} is `{}`: need >= 2.11", bin.display(), line.trim()),
        }
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let mut nodes = Vec::new();
        for (i, (client, route, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r, _))| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
                     cluster {{\n  name: roost-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )?;
            nodes.push(Node {
                name,
                url: format!("nats://127.0.0.1:{client}"),
                monitor: format!("http://127.0.0.1:{monitor}"),
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster { nodes, _dir: dir };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(45)).await?;
        Ok(cluster)
    }

    /// Starts node `i` (again) with its configuration and store.
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let child = Command::new(server_bin())
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nats-server")?;
        node.child = Some(child);
        Ok(())
    }

    /// `kill -9` of node `i`.
    pub async fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Every client URL, comma-separated (what `--cluster` takes).
    pub fn urls(&self) -> String {
        let urls: Vec<&str> = self.nodes.iter().map(|n| n.url.as_str()).collect();
        urls.join(",")
    }

    /// The server (by index) that leads the most of the streams whose name
    /// starts with `prefix`, as a running server's `/jsz` reports them.
    pub async fn busiest_leader(&self, prefix: &str) -> Result<usize> {
        let client = reqwest::Client::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("{}/jsz?streams=true", node.monitor);
            let Ok(resp) = client.get(url).send().await else {
                continue;
            };
            let body: serde_json::Value = resp.json().await?;
            let mut count = std::collections::HashMap::<String, usize>::new();
            for account in body["account_details"].as_array().into_iter().flatten() {
                for stream in account["stream_detail"].as_array().into_iter().flatten() {
                    if stream["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(prefix))
                    {
                        if let Some(leader) = stream["cluster"]["leader"].as_str() {
                            *count.entry(leader.to_owned()).or_default() += 1;
                        }
                    }
                }
            }
            if let Some((leader, _)) = count.into_iter().max_by_key(|(_, c)| *c) {
                if let Some(i) = self.nodes.iter().position(|n| n.name == leader) {
                    return Ok(i);
                }
            }
        }
        bail!("no server reported a leader for streams {prefix}*")
    }

    /// Waits until every running node reports JetStream healthy and the
    /// same meta leader.
    pub async fn wait_ready(&self, patience: Duration) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let mut leaders = Vec::new();
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let jsz = async {
                    let healthy = client
                        .get(format!("{}/healthz?js-enabled-only=true", node.monitor))
                        .send()
                        .await?
                        .status()
                        .is_success();
                    let body: serde_json::Value = client
                        .get(format!("{}/jsz", node.monitor))
                        .send()
                        .await?
                        .json()
                        .await?;
                    anyhow::Ok((
                        healthy,
                        body["meta_cluster"]["leader"].as_str().map(str::to_owned),
                    ))
                };
                match jsz.await {
                    Ok((true, Some(leader))) if !leader.is_empty() => leaders.push(leader),
                    _ => leaders.push(String::new()),
                }
            }
            if leaders.iter().all(|l| !l.is_empty() && *l == leaders[0]) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("JetStream did not elect a meta leader in {patience:?}: {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert!(parse_version("nats-server: v2.9.10").is_some_and(|v| v < MIN_VERSION));
        assert_eq!(parse_version("garbage"), None);
    }
}
