//! `durable`: `counter.increment` RPCs over HTTP/1.1 keep-alive. C clients,
//! each with its own connection and one call in flight, call objects
//! `{prefix}-{i % K}` until the duration or the call budget runs out. The
//! counters are read before and after, so lost or duplicated increments show.
//!
//! Each client's loop is bounded by the deadline and by a shared call
//! budget (`--requests`): a call is made only after taking a number below
//! the budget, so no more than that many are ever issued.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::args::{parse_duration, Common};
use crate::http1::HttpConn;
use crate::probe::Probes;
use crate::progress::Progress;
use crate::report::{latency_histogram, Latency, Report, Unit};
use crate::target::{encode_segment, Target};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DurableArgs {
    /// Server base URL; several (comma-separated, e.g. every node of a
    /// cluster) spread the clients over them: client i uses URL i % n.
    #[arg(long, default_value = "http://127.0.0.1:8787", value_delimiter = ',')]
    pub url: Vec<String>,
    /// Number of counter objects; client i calls object `{prefix}-{i % objects}`.
    #[arg(long, default_value_t = 1)]
    pub objects: usize,
    /// Concurrent clients, each with its own keep-alive connection and one call in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to run (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many calls in total (whichever of this and --duration comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Give up on one call after this long (counted as an error).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Object name prefix.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Skip reading the counters before and after the run.
    #[arg(long)]
    pub no_verify: bool,
}

/// What one client task measured (and, added up, the whole run).
struct ClientResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

fn object_path(target: &Target, prefix: &str, i: usize, method: &str) -> String {
    let name = encode_segment(&format!("{prefix}-{i}"));
    target.path(&format!("/v1/objects/counter/{name}/call/{method}"))
}

/// Reads every counter's value (None if any read failed or was not a number).
async fn read_counters(target: &Target, args: &DurableArgs) -> Option<Vec<i64>> {
    let mut conn = HttpConn::connect(target).await.ok()?;
    let mut out = Vec::with_capacity(args.objects);
    for i in 0..args.objects {
        let (status, body) = conn
            .post_json(
                &object_path(target, &args.prefix, i, "get"),
                Bytes::from_static(b"{}"),
            )
            .await
            .ok()?;
        if !status.is_success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        out.push(
            v.as_i64()
                .or_else(|| v.get("value").and_then(serde_json::Value::as_i64))?,
        );
    }
    Some(out)
}

pub(crate) async fn run(args: DurableArgs, common: &Common) -> anyhow::Result<Report> {
    anyhow::ensure!(args.objects >= 1, "--objects must be at least 1");
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    let targets = args
        .url
        .iter()
        .map(|u| Target::parse(u, common.allow_remote))
        .collect::<anyhow::Result<Vec<Target>>>()?;
    let target = targets.first().context("--url is required")?.clone();
    let before = if args.no_verify {
        None
    } else {
        read_counters(&target, &args).await
    };

    // Connect everyone first so connection set-up is not measured.
    let mut conns = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let target = &targets[i % targets.len()];
        conns.push(
            HttpConn::connect(target)
                .await
                .with_context(|| format!("connecting to {}", target.addr))?,
        );
    }
    let paths: Arc<Vec<String>> = Arc::new(
        (0..args.objects)
            .map(|i| object_path(&target, &args.prefix, i, "increment"))
            .collect(),
    );
    let done = Arc::new(AtomicU64::new(0));

    let probes = Probes::start(common, Some(&target)).await?;
    let progress = Progress::timed("durable", args.duration, done.clone(), "calls");
    let start = Instant::now();
    let budget = Arc::new(Budget {
        deadline: start + args.duration,
        limit: args.requests.unwrap_or(u64::MAX),
        issued: AtomicU64::new(0),
        done,
    });
    let mut tasks = Vec::with_capacity(args.clients);
    for (i, conn) in conns.into_iter().enumerate() {
        let client = Client {
            conn,
            target: targets[i % targets.len()].clone(),
            path: paths[i % paths.len()].clone(),
            body: Bytes::from_static(br#"{"by":1}"#),
            timeout: args.timeout,
        };
        tasks.push(tokio::spawn(client.run(budget.clone())));
    }
    let mut total = ClientResult::new();
    for t in tasks {
        let r = t.await.context("client task panicked")?;
        total.hist.add(&r.hist).context("merging histograms")?;
        total.ok += r.ok;
        for (k, v) in r.errors {
            *total.errors.entry(k).or_insert(0) += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    progress.finish();

    let mut report = Report::new("durable");
    report.label = common.label.clone();
    add_figures(&args, common, &mut report, &total, elapsed);
    probes.finish(&mut report).await;
    if let Some(before) = before {
        check_counters(&target, &args, &mut report, &before, total.ok).await;
    }
    Ok(report)
}

impl ClientResult {
    fn new() -> ClientResult {
        ClientResult {
            hist: latency_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// When clients stop: at the deadline, or once `limit` calls were issued.
struct Budget {
    deadline: Instant,
    limit: u64,
    /// Calls issued so far (taken before each call).
    issued: AtomicU64,
    /// Calls finished so far (for the progress bar).
    done: Arc<AtomicU64>,
}

/// One client: its connection and the one call it repeats.
struct Client {
    conn: HttpConn,
    /// For reconnecting after a transport error.
    target: Target,
    path: String,
    body: Bytes,
    /// A call taking longer is an error (`timeout`).
    timeout: Duration,
}

impl Client {
    /// Calls until the budget says stop, one call in flight; errors are
    /// counted by kind (`HTTP nnn`, `transport: ...`, `timeout`).
    async fn run(mut self, budget: Arc<Budget>) -> ClientResult {
        let mut r = ClientResult::new();
        while Instant::now() < budget.deadline {
            if budget.issued.fetch_add(1, Ordering::Relaxed) >= budget.limit {
                break;
            }
            let err = self.call(&mut r).await;
            budget.done.fetch_add(1, Ordering::Relaxed);
            if let Some(kind) = err {
                let transport = !kind.starts_with("HTTP");
                *r.errors.entry(kind).or_insert(0) += 1;
                if transport {
                    // The connection may be broken: open a new one.
                    match HttpConn::connect(&self.target).await {
                        Ok(c) => self.conn = c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
        r
    }

    /// One timed call; a success is recorded in `r`, a failure returned.
    async fn call(&mut self, r: &mut ClientResult) -> Option<String> {
        let t0 = Instant::now();
        let res = tokio::time::timeout(
            self.timeout,
            self.conn.post_json(&self.path, self.body.clone()),
        )
        .await;
        let us = t0.elapsed().as_micros() as u64;
        match res {
            Ok(Ok((status, _))) if status.is_success() => {
                r.hist.saturating_record(us);
                r.ok += 1;
                None
            }
            Ok(Ok((status, _))) => Some(format!("HTTP {}", status.as_u16())),
            Ok(Err(e)) => Some(format!("transport: {e}")),
            Err(_) => Some("timeout".to_string()),
        }
    }
}

/// Parameters, throughput, latency and one note per kind of error.
fn add_figures(
    args: &DurableArgs,
    common: &Common,
    report: &mut Report,
    total: &ClientResult,
    elapsed: f64,
) {
    report
        .param("objects", args.objects)
        .param("clients", args.clients)
        .param("duration_s", args.duration.as_secs_f64())
        .param("threads", common.threads);
    if let Some(n) = args.requests {
        report.param("requests", n);
    }
    let error_total: u64 = total.errors.values().sum();
    let ok = total.ok;
    report
        .add("calls_ok", ok as f64, Unit::Count)
        .add("calls_per_s", ok as f64 / elapsed, Unit::PerSec)
        .add("errors", error_total as f64, Unit::Count)
        .add("elapsed_s", elapsed, Unit::Seconds);
    report.latency("latency", &Latency::from_histogram(&total.hist));
    for (k, v) in &total.errors {
        report.note(format!("{v} calls failed: {k}"));
    }
}

/// Reads the counters again: they must have moved by exactly the `ok`
/// calls (`counter_delta`, and a note if not).
async fn check_counters(
    target: &Target,
    args: &DurableArgs,
    report: &mut Report,
    before: &[i64],
    ok: u64,
) {
    match read_counters(target, args).await {
        Some(after) => {
            let delta: i64 = after.iter().zip(before).map(|(a, b)| a - b).sum();
            report.add("counter_delta", delta as f64, Unit::Count);
            if delta != ok as i64 {
                report.note(format!(
                    "counters moved by {delta} but {ok} calls succeeded (other writers, or lost/duplicated increments)"
                ));
            }
        }
        None => {
            report.note("counters could not be read after the run");
        }
    }
}
