//! Test harness: runs the real `roost` binary on a loopback port with a temp
//! data directory, and talks to it over real HTTP and WebSockets.
//!
//! The binary is `$ROOST_BIN`, or `target/debug/roost` of this workspace
//! (the README's test command builds it first).

// Test support, not an API: its handles need no Debug output.
#![allow(missing_debug_implementations)]

pub mod cluster;
pub mod dist;
pub mod fuzzgen;
pub mod nats;
pub mod ws;
pub mod yclient;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to say where it listens. A cluster node
/// waits for JetStream (each start-up step retries for up to 30 s), and
/// CI machines are shared.
const START_PATIENCE: Duration = Duration::from_secs(60);

pub fn roost_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ROOST_BIN") {
        return PathBuf::from(p);
    }
    debug_bin("roost")
}

/// A binary of this workspace's debug build (`$CARGO_TARGET_DIR` honoured).
pub fn debug_bin(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join(name)
}

/// `roost` with the test-only `workload` class (`src/bin/roost-workload.rs`).
pub fn workload_bin() -> PathBuf {
    debug_bin("roost-workload")
}

/// A running `roost serve` process.
pub struct ServerProcess {
    child: Child,
    pub base: String,
    pub data: PathBuf,
    pub pid: u32,
    /// The `--admin-token` it was started with (sent by `metric`).
    pub admin_token: Option<String>,
    logs: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ServerProcess {
    /// Starts `roost serve --listen 127.0.0.1:0 --data <data> <extra...>` and
    /// waits until it says where it listens.
    pub async fn start(data: &Path, extra: &[&str]) -> Result<ServerProcess> {
        let mut args = vec!["--data", data.to_str().context("data path is not UTF-8")?];
        args.extend_from_slice(extra);
        Self::start_in(None, &args).await
    }

    /// Starts `roost serve --listen 127.0.0.1:0 <args...>` in the working
    /// directory `cwd` (this process's own if `None`), as a user runs it: with
    /// no `--data` it uses its default `./roost-data`, and a relative one is
    /// resolved by the server, not by the test. `data` is where that lands.
    pub async fn start_in(cwd: Option<&Path>, args: &[&str]) -> Result<ServerProcess> {
        Self::start_bin(&roost_bin(), cwd, args).await
    }

    /// `start_in` with another server binary (one embedding Roost).
    pub async fn start_bin(bin: &Path, cwd: Option<&Path>, args: &[&str]) -> Result<ServerProcess> {
        let mut command = Command::new(bin);
        if let Some(d) = cwd {
            command.current_dir(d);
        }
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env_remove("ROOST_DATA");
        Self::launch(bin, cwd, command, args).await
    }

    /// `start`, but no file the server writes may grow past `max_file_bytes`
    /// (`prlimit --fsize`, with SIGXFSZ ignored): a write past it fails
    /// with EFBIG, as a failing disk would fail it.
    pub async fn start_with_file_limit(
        data: &Path,
        max_file_bytes: u64,
        extra: &[&str],
    ) -> Result<ServerProcess> {
        let bin = roost_bin();
        let mut args = vec!["--data", data.to_str().context("data path is not UTF-8")?];
        args.extend_from_slice(extra);
        let mut command = Command::new("sh");
        command
            .args(["-c", "trap '' XFSZ; exec \"$@\"", "sh", "prlimit"])
            .arg(format!("--fsize={max_file_bytes}"))
            .arg("--")
            .arg(&bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .env_remove("ROOST_DATA");
        Self::launch(&bin, None, command, &args).await
    }

    /// Runs `bin` with exactly `args` — no `serve --listen 127.0.0.1:0` in
    /// front, so they must make it listen on loopback themselves — in `cwd`,
    /// with no `ROOST_*` variable but `env`'s. For commands written down
    /// elsewhere (the Dockerfile's, the systemd unit's), run as they are.
    pub async fn start_exact(
        bin: &Path,
        cwd: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<ServerProcess> {
        let mut command = Command::new(bin);
        command.current_dir(cwd).args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ROOST_") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        Self::launch(bin, Some(cwd), command, args).await
    }

    /// Spawns `command` (which runs `bin` with `args`, in `cwd`) and waits
    /// until the server says where it listens.
    async fn launch(
        bin: &Path,
        cwd: Option<&Path>,
        mut command: Command,
        args: &[&str],
    ) -> Result<ServerProcess> {
        if !bin.exists() {
            bail!(
                "{} does not exist: run `cargo build --bins` first",
                bin.display()
            );
        }
        let here = match cwd {
            Some(d) => d.to_owned(),
            None => std::env::current_dir()?,
        };
        let data_arg = args
            .iter()
            .position(|a| *a == "--data")
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or("roost-data");
        let data = here.join(data_arg);
        let mut child = command
            .env("ROOST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (tx, mut logs) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if std::env::var_os("ROOST_TEST_LOGS").is_some() {
                    eprintln!("[roost {pid}] {line}");
                }
                let _ = tx.send(line);
            }
        });
        // What the server said before listening, for the error if it never does.
        let mut said: Vec<String> = Vec::new();
        let started = tokio::time::timeout(START_PATIENCE, async {
            while let Some(line) = logs.recv().await {
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on ".len()..];
                    let url = rest.split_whitespace().next().unwrap_or(rest);
                    return Some(url.to_owned());
                }
                said.push(line);
            }
            None
        })
        .await;
        let base = match started {
            Ok(Some(base)) => base,
            Ok(None) => bail!(
                "server exited before listening; it said:\n{}",
                said.join("\n")
            ),
            Err(_) => bail!(
                "server did not start in {START_PATIENCE:?}; it said:\n{}",
                said.join("\n")
            ),
        };
        let admin_token = args
            .iter()
            .position(|a| *a == "--admin-token")
            .and_then(|i| args.get(i + 1))
            .map(|t| (*t).to_owned());
        Ok(ServerProcess {
            child,
            base,
            data,
            admin_token,
            pid,
            logs,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{}", self.base.replacen("http://", "ws://", 1), path)
    }

    /// SIGKILL, then wait for the process to be gone.
    pub async fn kill9(mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM and wait; returns the exit code.
    pub async fn terminate(mut self) -> Result<Option<i32>> {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("server did not exit within 30 s of SIGTERM")??;
        Ok(status.code())
    }

    /// Log lines printed so far.
    pub fn drain_logs(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.logs.try_recv() {
            out.push(l);
        }
        out
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS"))
    }
}

/// An HTTP client with a short timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .expect("client builds")
}

/// Percent-encodes one path segment (every byte that is not unreserved).
pub fn segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `POST /v1/objects/{class}/{name}/call/{method}`; returns (status, JSON body).
pub async fn call(
    client: &reqwest::Client,
    server: &ServerProcess,
    class: &str,
    name: &str,
    method: &str,
    args: Value,
) -> Result<(u16, Value)> {
    let url = server.url(&format!(
        "/v1/objects/{}/{}/call/{}",
        segment(class),
        segment(name),
        segment(method)
    ));
    let resp = client.post(url).json(&args).send().await?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// WAL and WAL-index files beside object files under `<data>/objects`.
pub fn side_files(data: &Path) -> usize {
    walk(&data.join("objects"))
        .iter()
        .filter(|p| {
            let p = p.to_string_lossy();
            p.ends_with("-wal") || p.ends_with("-shm")
        })
        .count()
}

/// Polls until no object file has a WAL or WAL index beside it (up to
/// 10 s); false if some are still there.
pub async fn side_files_gone(data: &Path) -> bool {
    for _ in 0..100 {
        if side_files(data) == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The HTTP status of `GET path` (a probe, a read).
pub async fn status_of(server: &ServerProcess, path: &str) -> Result<u16> {
    Ok(http().get(server.url(path)).send().await?.status().as_u16())
}

/// The text of a Yjs document as the server stores it
/// (`GET /v1/yjs/{doc}/state`, anonymous).
pub async fn stored_text(server: &ServerProcess, doc: &str) -> Result<String> {
    let state = http()
        .get(server.url(&format!("/v1/yjs/{}/state", segment(doc))))
        .send()
        .await?
        .bytes()
        .await?;
    yclient::text_of_update(&state)
}

/// Runs read-only SQL in a Yjs document's database through the admin API
/// and returns the first row's first value as an integer.
pub async fn doc_sql_int(server: &ServerProcess, admin: &str, doc: &str, sql: &str) -> Result<i64> {
    let r: serde_json::Value = http()
        .post(server.url(&format!("/v1/admin/objects/ydoc/{}/sql", segment(doc))))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await?
        .json()
        .await?;
    r["rows"][0][0]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no integer in {r}"))
}

/// Reads one metric's value from `/metrics` (the first sample with that exact name).
pub async fn metric(client: &reqwest::Client, server: &ServerProcess, name: &str) -> Result<f64> {
    let mut request = client.get(server.url("/metrics"));
    if let Some(token) = &server.admin_token {
        request = request.bearer_auth(token);
    }
    let text = request.send().await?.text().await?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
        .ok_or_else(|| anyhow!("metric {name} not found"))
}

/// Polls `/metrics` until `name` equals `want` (up to 10 s).
pub async fn wait_metric(server: &ServerProcess, name: &str, want: f64) -> Result<()> {
    let client = http();
    for _ in 0..400 {
        if metric(&client, server, name).await? == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!(
        "{name} never reached {want} (now {})",
        metric(&client, server, name).await?
    )
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Polls the stored document (`stored_text`) until its text is `want` (up to 10 s).
pub async fn wait_stored_text(server: &ServerProcess, doc: &str, want: &str) -> Result<()> {
    let mut got = String::new();
    for _ in 0..500 {
        got = stored_text(server, doc).await?;
        if got == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("document {doc} is {got:?}, never became {want:?}")
}
