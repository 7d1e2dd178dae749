//! The admin SQL console (`POST /v1/admin/objects/{class}/{name}/sql`)
//! against the real binary: whatever it is sent, it never changes an object,
//! never stops one, never holds up the rest of the server or its shutdown,
//! and its answers are bounded in time and bytes.

use std::time::{Duration, Instant};

use roost_tests::{call, http, side_files, side_files_gone, ServerProcess};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-abcdef";

async fn start(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<ServerProcess> {
    let mut args = vec!["--admin-token", ADMIN];
    args.extend_from_slice(extra);
    ServerProcess::start(dir, &args).await
}

/// Runs `sql` on counter `name` through the console; (status, JSON body).
async fn console(server: &ServerProcess, name: &str, sql: &str) -> anyhow::Result<(u16, Value)> {
    let resp = http()
        .post(server.url(&format!("/v1/admin/objects/counter/{name}/sql")))
        .bearer_auth(ADMIN)
        .json(&json!({ "sql": sql }))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

async fn increment(server: &ServerProcess, name: &str) -> anyhow::Result<i64> {
    let (status, body) = call(&http(), server, "counter", name, "increment", json!({})).await?;
    anyhow::ensure!(status == 200, "increment failed: {status} {body}");
    body.as_i64()
        .ok_or_else(|| anyhow::anyhow!("not a number: {body}"))
}

/// The counter's value as its file holds it, read through the console.
async fn stored_value(server: &ServerProcess, name: &str) -> anyhow::Result<i64> {
    let (status, body) = console(
        server,
        name,
        "SELECT CAST(value AS TEXT) FROM _roost_kv WHERE key = CAST('value' AS BLOB)",
    )
    .await?;
    anyhow::ensure!(status == 200, "console read failed: {status} {body}");
    body["rows"][0][0]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no value in {body}"))
}

/// An endless query: SQLite would count forever.
const ENDLESS: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_never_changes_or_stops_an_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let outside = tempfile::tempdir()?;
    // A long file-commit interval: acknowledged writes sit in the actor's
    // open transaction, so the console sees them only if it flushes first.
    let server = start(dir.path(), &["--file-commit-interval", "10s"]).await?;
    let mut value = 0;
    for _ in 0..3 {
        value = increment(&server, "c").await?;
    }
    assert_eq!(
        stored_value(&server, "c").await?,
        value,
        "sees acknowledged writes"
    );

    let evil = outside.path().join("evil.sqlite");
    let copy = outside.path().join("copy.sqlite");
    let catalog = dir.path().join("catalog.sqlite");
    let refused = [
        "COMMIT".to_owned(),
        "ROLLBACK".to_owned(),
        "END".to_owned(),
        "RELEASE roost_batch".to_owned(),
        "BEGIN".to_owned(),
        "SAVEPOINT s".to_owned(),
        format!("/**/ATTACH DATABASE '{}' AS evil", evil.display()),
        format!("-- hi\nATTACH DATABASE '{}' AS cat", catalog.display()),
        "DETACH DATABASE main".to_owned(),
        format!("VACUUM INTO '{}'", copy.display()),
        "PRAGMA max_page_count = 1".to_owned(),
        "PRAGMA query_only = 0".to_owned(),
        "PRAGMA journal_mode = DELETE".to_owned(),
        "PRAGMA user_version = 7".to_owned(),
        "PRAGMA writable_schema = 1".to_owned(),
        "INSERT INTO _roost_kv VALUES (x'00', x'00')".to_owned(),
        "UPDATE _roost_kv SET value = x'00'".to_owned(),
        "DELETE FROM _roost_kv".to_owned(),
        "WITH x AS (SELECT 1) DELETE FROM _roost_kv".to_owned(),
        "CREATE TABLE t(x)".to_owned(),
        "CREATE TEMP TABLE t(x)".to_owned(),
        "SELECT 1; DELETE FROM _roost_kv".to_owned(),
        "SELECT 1; COMMIT".to_owned(),
    ];
    for sql in &refused {
        let (status, body) = console(&server, "c", sql).await?;
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            (status == 403 && code == "forbidden") || (status == 400 && code == "bad_request"),
            "{sql:?} was not refused: {status} {body}"
        );
        // The object still serves, its data intact, and the next write lands.
        value += 1;
        assert_eq!(increment(&server, "c").await?, value, "after {sql:?}");
        assert_eq!(stored_value(&server, "c").await?, value, "after {sql:?}");
    }
    assert!(!evil.exists(), "ATTACH created a file");
    assert!(!copy.exists(), "VACUUM INTO wrote a file");

    // What the console is for still works.
    for sql in [
        "SELECT key, value FROM _roost_kv",
        "select count(*) from _roost_kv;",
        "/* why */ WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3) SELECT x FROM c",
        "VALUES (1, 'a')",
        "EXPLAIN QUERY PLAN SELECT * FROM _roost_kv WHERE key = x'00'",
        "PRAGMA table_info(_roost_kv)",
        "SELECT * FROM pragma_index_list('_roost_kv')",
        "PRAGMA page_count",
        "PRAGMA user_version",
        "PRAGMA max_page_count",
    ] {
        let (status, body) = console(&server, "c", sql).await?;
        assert_eq!(status, 200, "{sql:?}: {body}");
        assert!(body["rows"].is_array(), "{sql:?}: {body}");
    }

    // After a restart the log and the file agree on every write.
    assert_eq!(server.terminate().await?, Some(0));
    let server = start(dir.path(), &[]).await?;
    assert_eq!(stored_value(&server, "c").await?, value);
    assert_eq!(increment(&server, "c").await?, value + 1);
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_console_queries_end_at_their_time_budget_and_never_hold_up_the_server(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[]).await?;
    let before = increment(&server, "c").await?;
    let started = Instant::now();
    let endless = |name: &'static str| {
        let url = server.url(&format!("/v1/admin/objects/counter/{name}/sql"));
        tokio::spawn(async move {
            let resp = http()
                .post(url)
                .bearer_auth(ADMIN)
                .json(&json!({ "sql": ENDLESS }))
                .send()
                .await?;
            let status = resp.status().as_u16();
            anyhow::Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
        })
    };
    // Two of them: one per core of the test machine.
    let queries = [endless("c"), endless("c")];
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile the object and the rest of the server answer promptly.
    for name in ["c", "other"] {
        let t = Instant::now();
        let (status, body) = call(&http(), &server, "counter", name, "get", json!({})).await?;
        assert_eq!(status, 200, "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a call to {name} took {:?} while console queries ran",
            t.elapsed()
        );
    }
    assert_eq!(increment(&server, "c").await?, before + 1);
    // Two run at once; a third is turned away rather than queued.
    let (status, body) = console(&server, "other", "SELECT 1").await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    for q in queries {
        let (status, body) = tokio::time::timeout(Duration::from_secs(20), q).await???;
        assert_eq!(status, 504, "{body}");
        assert_eq!(body["error"]["code"], "timed_out", "{body}");
    }
    // The default budget is 5 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "{took:?}"
    );

    // SIGTERM while two endless queries run: the server stops them and exits
    // well before their budget would.
    let queries = [endless("c"), endless("c")];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(4), server.terminate())
        .await
        .map_err(|_| anyhow::anyhow!("SIGTERM did not complete within 4 s"))??;
    assert_eq!(exit, Some(0), "exited after {:?}", t.elapsed());
    for q in queries {
        if let Ok((status, body)) = q.await? {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "shutting_down", "{body}");
        }
    }

    let server = start(dir.path(), &[]).await?;
    assert_eq!(stored_value(&server, "c").await?, before + 1);
    assert_eq!(increment(&server, "c").await?, before + 2);
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_results_are_bounded_in_bytes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[]).await?;
    let value = increment(&server, "c").await?;
    let baseline = server.rss_kib()?;
    // 200 rows of 1 MB each: 400 MB as hex, far over the 16 MiB default.
    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) \
                SELECT x, randomblob(1000000) FROM c";
    // One value larger than the budget on its own.
    let one = "SELECT zeroblob(100000000)";
    for sql in [many, one] {
        let (status, body) = console(&server, "c", sql).await?;
        assert_eq!(status, 413, "{sql}: {body}");
        assert_eq!(body["error"]["code"], "too_large", "{body}");
        let grown = server.rss_kib()?.saturating_sub(baseline);
        assert!(grown < 128 * 1024, "RSS grew by {grown} KiB for {sql}");
    }
    // The row limit stays: a long, small result is cut at 1000 rows.
    let (status, body) = console(
        &server,
        "c",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) SELECT x FROM c",
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(1000));
    assert_eq!(body["truncated"], true);

    assert_eq!(increment(&server, "c").await?, value + 1);
    assert_eq!(stored_value(&server, "c").await?, value + 1);
    server.terminate().await?;
    Ok(())
}

/// The console's connection makes a WAL and WAL index beside an idle,
/// tidied object's file: they are tidied afterwards, not left for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_read_leaves_no_wal_beside_an_idle_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tidy = ["--idle-timeout", "300ms", "--tidy-idle-after", "300ms"];
    let server = start(dir.path(), &tidy).await?;
    increment(&server, "quiet").await?;
    let data = dir.path();
    assert!(side_files_gone(data).await, "tidied before the read");
    assert_eq!(stored_value(&server, "quiet").await?, 1);
    assert!(
        side_files_gone(data).await,
        "{} files left after the read",
        side_files(data)
    );
    assert_eq!(stored_value(&server, "quiet").await?, 1);
    server.terminate().await?;
    Ok(())
}
