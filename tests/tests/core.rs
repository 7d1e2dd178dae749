//! End-to-end tests of the core runtime against the real binary: serial
//! execution, durability across restarts and `kill -9`, hostile input,
//! eviction, metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roost_tests::{call, http, metric, walk, ServerProcess};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_serial() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = client.clone();
        let url = server.url("/v1/objects/counter/serial/call/increment");
        tasks.push(tokio::spawn(async move {
            let resp = client.post(url).json(&json!({"by": 1})).send().await?;
            anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
            Ok::<i64, anyhow::Error>(resp.json::<Value>().await?.as_i64().unwrap_or(-1))
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await??);
    }
    values.sort_unstable();
    assert_eq!(values, (1..=64).collect::<Vec<i64>>());
    let (status, body) = call(&client, &server, "counter", "serial", "get", Value::Null).await?;
    assert_eq!((status, body), (200, json!(64)));
    // Batching happened or not, every event was counted and committed.
    assert!(metric(&client, &server, "roost_committed_events_total").await? >= 64.0);
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_survive_graceful_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    for _ in 0..5 {
        call(
            &client,
            &server,
            "counter",
            "persist",
            "increment",
            json!({"by": 3}),
        )
        .await?;
    }
    let code = server.terminate().await?;
    assert_eq!(code, Some(0), "SIGTERM must exit 0");
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (status, body) = call(&client, &server, "counter", "persist", "get", Value::Null).await?;
    assert_eq!((status, body), (200, json!(15)));
    server.terminate().await?;
    Ok(())
}

/// Many clients increment many objects; the server is SIGKILLed mid-load and
/// restarted, three times. Every object always holds at least every
/// acknowledged increment and never more than were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_never_loses_an_acknowledged_increment() -> anyhow::Result<()> {
    kill9_under_load(&[]).await
}

/// The same with the commit log sealing a segment every 100 ms: each seal
/// switches to the (zero-filled) segment made ahead of time while the
/// checkpointer syncs and deletes the old ones, so kills land around every
/// step of that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_across_log_segment_switches_loses_nothing_acknowledged() -> anyhow::Result<()> {
    kill9_under_load(&["--checkpoint-interval", "100ms"]).await
}

/// The same with objects checkpointing their WALs in the background every
/// 64–128 KiB, so kills land while a second connection copies the WAL into
/// the database file and while the object folds in the remainder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_background_wal_checkpoints_loses_nothing_acknowledged() -> anyhow::Result<()>
{
    kill9_under_load(&["--wal-checkpoint-bytes", "65536"]).await
}

/// The same with batches held for up to 400 ms in an open transaction
/// before they reach the object files, while segments are sealed every
/// 100 ms: kills land while acknowledged batches are only in the log and
/// while the checkpointer waits for objects to commit them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_batches_wait_for_their_file_commit_loses_nothing_acknowledged(
) -> anyhow::Result<()> {
    kill9_under_load(&[
        "--file-commit-interval",
        "400ms",
        "--checkpoint-interval",
        "100ms",
    ])
    .await
}

/// The same with `--log-group-delay` (a busy log sleeps to gather more
/// records per fsync): kills land while records wait in the sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_the_log_gathers_a_group_loses_nothing_acknowledged() -> anyhow::Result<()> {
    kill9_under_load(&["--log-group-delay", "2ms"]).await
}

async fn kill9_under_load(args: &[&str]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let objects = 20usize;
    let clients = 32usize;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..objects).map(|_| AtomicU64::new(0)).collect());
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..objects).map(|_| AtomicU64::new(0)).collect());
    for round in 0..3 {
        let server = ServerProcess::start(dir.path(), args).await?;
        let client = http();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (client, acked, sent, stop) =
                (client.clone(), acked.clone(), sent.clone(), stop.clone());
            let base = server.base.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                // Bounded: at most 2,000 calls per client per round.
                for _ in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let o = i % objects;
                    i += 7;
                    sent[o].fetch_add(1, Ordering::SeqCst);
                    let url = format!("{base}/v1/objects/counter/k{o}/call/increment");
                    match client.post(url).json(&json!({"by": 1})).send().await {
                        Ok(r) if r.status() == 200 => {
                            if r.json::<Value>().await.is_ok() {
                                acked[o].fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        _ => break,
                    }
                }
            }));
        }
        // Let the load run, and make sure some of it was acknowledged (the
        // machine may be busy), before pulling the plug.
        let acked_before: u64 = acked.iter().map(|a| a.load(Ordering::SeqCst)).sum();
        tokio::time::sleep(Duration::from_millis(400 + 300 * round)).await;
        for _ in 0..200 {
            let now: u64 = acked.iter().map(|a| a.load(Ordering::SeqCst)).sum();
            if now > acked_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.kill9().await?;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let server = ServerProcess::start(dir.path(), args).await?;
        let mut total_acked = 0;
        for o in 0..objects {
            let (status, body) = call(
                &client,
                &server,
                "counter",
                &format!("k{o}"),
                "get",
                Value::Null,
            )
            .await?;
            assert_eq!(status, 200);
            let value = body.as_u64().unwrap_or(0);
            let a = acked[o].load(Ordering::SeqCst);
            let s = sent[o].load(Ordering::SeqCst);
            assert!(
                value >= a,
                "round {round} object k{o}: value {value} < acknowledged {a}"
            );
            assert!(
                value <= s,
                "round {round} object k{o}: value {value} > sent {s}"
            );
            // What is stored now is the truth for the next round.
            acked[o].store(value, Ordering::SeqCst);
            sent[o].store(value, Ordering::SeqCst);
            total_acked += a;
        }
        assert!(
            total_acked > 0,
            "round {round}: no increment was acknowledged before the kill"
        );
        server.kill9().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_stay_inside_the_data_dir() -> anyhow::Result<()> {
    let outer = tempfile::tempdir()?;
    let data = outer.path().join("data");
    let server = ServerProcess::start(&data, &[]).await?;
    let client = http();
    let names = [
        "../../x".to_owned(),
        "/etc/passwd".to_owned(),
        "a\0b".to_owned(),
        ".../..".to_owned(),
        "ü/../../ÿ".to_owned(),
        "x".repeat(512),
    ];
    for name in &names {
        let (status, body) =
            call(&client, &server, "counter", name, "increment", json!({})).await?;
        assert_eq!((status, &body), (200, &json!(1)), "name {name:?}");
    }
    let (status, body) = call(
        &client,
        &server,
        "counter",
        &"x".repeat(600),
        "increment",
        json!({}),
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_name");
    let (status, body) = call(&client, &server, "Bad..Class", "x", "get", json!({})).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_name");
    // Nothing outside the data dir; every object file is named by its id.
    let outside: Vec<_> = std::fs::read_dir(outer.path())?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("data")]);
    let objects: Vec<_> = walk(&data.join("objects"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .collect();
    assert_eq!(objects.len(), names.len());
    for p in objects {
        let rel = p.strip_prefix(&data)?.to_string_lossy().into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 4, "{rel}");
        assert_eq!(parts[0], "objects");
        assert_eq!(parts[1], "counter");
        let stem = parts[3].trim_end_matches(".sqlite");
        assert!(
            stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit()),
            "{rel}"
        );
        assert_eq!(&stem[..2], parts[2]);
    }
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        dir.path(),
        &["--max-body-bytes", "1000", "--admin-token", "core-admin"],
    )
    .await?;
    let client = http();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client
                .post(server.url("/v1/objects/counter/a/call/increment"))
                .body("{not json"),
            400,
            "bad_request",
        ),
        (
            client
                .post(server.url("/v1/objects/counter/a/call/increment"))
                .body("[1,2]"),
            400,
            "bad_request",
        ),
        (
            client
                .post(server.url("/v1/objects/counter/a/call/increment"))
                .body(r#"{"by":"x"}"#),
            400,
            "bad_request",
        ),
        (
            client.post(server.url("/v1/objects/nosuch/a/call/get")),
            404,
            "unknown_class",
        ),
        (
            client.post(server.url("/v1/objects/counter/a/call/nosuch")),
            404,
            "unknown_method",
        ),
        (
            client
                .post(server.url("/v1/objects/counter/a/call/increment"))
                .body(format!("{{\"by\":1,\"pad\":\"{}\"}}", "x".repeat(2000))),
            413,
            "too_large",
        ),
        (client.get(server.url("/nowhere")), 404, "not_found"),
        (
            client.post(server.url("/v1/objects/counter/a%FF/call/get")),
            400,
            "bad_name",
        ),
        (
            client.post(server.url("/v1/objects/counter/*/call/increment")),
            400,
            "bad_name",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let body: Value = resp.json().await?;
        assert_eq!(body["error"]["code"], code, "case {i}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // None of that changed the object.
    let (status, body) = call(&client, &server, "counter", "a", "get", Value::Null).await?;
    assert_eq!((status, body), (200, json!(0)));
    // Admin bodies: past the limit 413 as well; malformed, what was expected.
    call(&client, &server, "counter", "sq", "increment", Value::Null).await?;
    let admin_post = |path: &str, body: String| {
        client
            .post(server.url(path))
            .bearer_auth("core-admin")
            .header("content-type", "application/json")
            .body(body)
    };
    let sql = "/v1/admin/objects/counter/sq/sql";
    let big = json!({ "sql": format!("SELECT '{}'", "x".repeat(2000)) }).to_string();
    for (req, status, code, message) in [
        (admin_post(sql, big), 413, "too_large", "--max-body-bytes"),
        (
            admin_post(sql, "{\"q\":1}".into()),
            400,
            "bad_request",
            r#"expected {"sql": "..."}"#,
        ),
        (
            admin_post("/v1/admin/revoke", "[]".into()),
            400,
            "bad_request",
            r#"expected {"jti""#,
        ),
    ] {
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), status, "{message}");
        let body: Value = resp.json().await?;
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{body}"
        );
    }
    assert_eq!(
        client.get(server.url("/healthz")).send().await?.status(),
        200
    );
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_objects_are_evicted_and_recreated() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "200ms"]).await?;
    let client = http();
    for name in ["e1", "e2", "e3"] {
        call(
            &client,
            &server,
            "counter",
            name,
            "increment",
            json!({"by": 5}),
        )
        .await?;
    }
    assert_eq!(
        metric(&client, &server, "roost_object_starts_total").await?,
        3.0
    );
    roost_tests::wait_metric(&server, "roost_live_objects", 0.0).await?;
    assert!(metric(&client, &server, "roost_evictions_total").await? >= 3.0);
    let (status, body) = call(
        &client,
        &server,
        "counter",
        "e2",
        "increment",
        json!({"by": 1}),
    )
    .await?;
    assert_eq!((status, body), (200, json!(6)));
    assert_eq!(
        metric(&client, &server, "roost_object_starts_total").await?,
        4.0
    );
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_help() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    for _ in 0..3 {
        call(&client, &server, "counter", "m", "increment", Value::Null).await?;
    }
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for name in [
        "roost_live_objects 1",
        "roost_events_total 3",
        "roost_commits_total",
        "roost_committed_events_total 3",
        "roost_evictions_total 0",
        "roost_commit_seconds_count",
        "roost_errors_total{kind=\"commit_failed\"} 0",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    server.terminate().await?;
    let out = std::process::Command::new(roost_tests::roost_bin())
        .args(["serve", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data",
        "--idle-timeout",
        "ROOST_LISTEN",
        "ROOST_DATA",
        "--max-body-bytes",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    Ok(())
}

/// Families in a scrape (name → type), checking that every line parses: a
/// sample is `name[{labels}] value` and follows its family's `# HELP` and
/// `# TYPE` (a histogram's `_bucket`, `_sum` and `_count` follow the family).
fn scrape_families(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut families = HashMap::new();
    let mut helped = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped = rest.split_once(' ').map(|(name, _)| name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            anyhow::ensure!(
                helped.as_deref() == Some(name),
                "{line}: no # HELP before it"
            );
            anyhow::ensure!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{line}: unknown type"
            );
            families.insert(name.to_owned(), kind.to_owned());
        } else {
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| anyhow::anyhow!("{line}: not a sample"))?;
            value
                .parse::<f64>()
                .map_err(|e| anyhow::anyhow!("{line}: {e}"))?;
            let name = series.split('{').next().unwrap_or(series);
            let family = ["", "_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| families.contains_key(*base));
            anyhow::ensure!(family.is_some(), "{line}: no # TYPE before it");
        }
    }
    Ok(families)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_parses_with_process_and_build_info() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    call(&client, &server, "counter", "p", "increment", Value::Null).await?;
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let families = scrape_families(&text)?;
    let mut expected = vec![
        ("roost_live_objects", "gauge"),
        ("roost_objects", "gauge"),
        ("roost_open_sockets", "gauge"),
        ("roost_errors_total", "counter"),
        ("roost_commit_seconds", "histogram"),
        ("roost_log_fsync_seconds", "histogram"),
        ("roost_build_info", "gauge"),
    ];
    if cfg!(target_os = "linux") {
        expected.extend([
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
            ("process_threads", "gauge"),
        ]);
    }
    for (name, kind) in expected {
        assert_eq!(
            families.get(name).map(String::as_str),
            Some(kind),
            "{name} in\n{text}"
        );
    }
    for (name, kind) in &families {
        if name.ends_with("_total") {
            assert_eq!(kind, "counter", "{name}");
        }
    }
    let version = format!(
        "roost_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&version), "no {version} in\n{text}");
    if cfg!(target_os = "linux") {
        assert!(metric(&client, &server, "process_resident_memory_bytes").await? > 1e6);
        assert!(metric(&client, &server, "process_open_fds").await? >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        let started = metric(&client, &server, "process_start_time_seconds").await?;
        assert!(
            started <= now + 1.0 && started > now - 600.0,
            "{started} vs {now}"
        );
    }
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_exits_zero_and_keeps_acknowledged_writes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, acked) = (client.clone(), acked.clone());
        let url = server.url("/v1/objects/counter/term/call/increment");
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                match client.post(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.terminate().await?, Some(0));
    for t in tasks {
        let _ = t.await;
    }
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let (_, body) = call(&client, &server, "counter", "term", "get", Value::Null).await?;
    assert!(body.as_u64().unwrap_or(0) >= acked.load(Ordering::SeqCst));
    let mut counts = HashMap::new();
    counts.insert("acked", acked.load(Ordering::SeqCst));
    assert!(counts["acked"] > 0);
    server.terminate().await?;
    Ok(())
}

/// Objects evicted (their WAL left in place, not checkpointed) and re-opened
/// keep every acknowledged write across `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_objects_survive_kill9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--idle-timeout", "100ms"]).await?;
    let client = http();
    for round in 1..=3 {
        for i in 0..10 {
            let (status, body) = call(
                &client,
                &server,
                "counter",
                &format!("ev{i}"),
                "increment",
                json!({"by": i}),
            )
            .await?;
            assert_eq!((status, body), (200, json!(i * round)));
        }
        // Let every object be evicted, then wake them again next round.
        let mut evicted = false;
        for _ in 0..100 {
            if metric(&client, &server, "roost_live_objects").await? == 0.0 {
                evicted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(evicted, "objects were not evicted");
    }
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    for i in 0..10 {
        let (_, body) = call(
            &client,
            &server,
            "counter",
            &format!("ev{i}"),
            "get",
            Value::Null,
        )
        .await?;
        assert_eq!(body, json!(i * 3), "object ev{i}");
    }
    server.terminate().await?;
    Ok(())
}

/// A deleted object that is created again under the same name, followed at
/// once by a kill -9 while its old batches are still in the commit log: the
/// restart must hold the new object's state only, never rows of the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_and_recreated_object_survives_kill9_without_its_past() -> anyhow::Result<()> {
    use yrs::{GetString, ReadTxn, Text, Transact};
    let dir = tempfile::tempdir()?;
    let admin = ["--admin-token", "del-admin", "--checkpoint-interval", "1h"];
    let server = ServerProcess::start(dir.path(), &admin).await?;
    let client = http();
    let post = |doc: &yrs::Doc, text: &str| {
        let t = doc.get_or_insert_text("t");
        let before = doc.transact().state_vector();
        let len = t.len(&doc.transact());
        t.insert(&mut doc.transact_mut(), len, text);
        let update = doc.transact().encode_state_as_update_v1(&before);
        client
            .post(server.url("/v1/yjs/reborn/update"))
            .body(update)
            .send()
    };
    let old = yrs::Doc::new();
    for i in 0..8 {
        let r = post(&old, &format!("old{i} ")).await?;
        assert_eq!(r.status(), 200, "{}", r.text().await?);
    }
    let deleted = client
        .delete(server.url("/v1/admin/objects/ydoc/reborn"))
        .bearer_auth("del-admin")
        .send()
        .await?;
    assert_eq!(deleted.status(), 200, "{}", deleted.text().await?);
    let new = yrs::Doc::new();
    for text in ["new0 ", "new1 "] {
        let r = post(&new, text).await?;
        assert_eq!(r.status(), 200, "{}", r.text().await?);
    }
    let want = new.get_or_insert_text("t").get_string(&new.transact());
    // Let the new object commit its batches to its file (lazy file commits).
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &admin).await?;
    assert_eq!(
        roost_tests::stored_text(&server, "reborn").await?,
        want,
        "only the new object's text"
    );
    // The old object's updates depend on each other, so stray ones would not
    // show in the text: count the stored updates instead.
    let stored =
        roost_tests::doc_sql_int(&server, "del-admin", "reborn", "SELECT sum(n) FROM updates")
            .await?;
    assert_eq!(stored, 2, "only the new object's updates");
    server.terminate().await?;
    Ok(())
}
