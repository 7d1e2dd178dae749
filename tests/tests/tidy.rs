//! Idle objects' files shrink to their database: once an object has stayed
//! evicted for `--tidy-idle-after`, its WAL is folded into the database and
//! removed along with the WAL index (~55 KB → ~14 KB for a counter), without
//! losing anything, also across a kill -9.

use std::time::Duration;

use roost_tests::{call, http, metric, wait_metric, walk, ServerProcess};
use serde_json::json;

const OBJECTS: usize = 40;

fn object_bytes(data: &std::path::Path) -> (u64, usize) {
    let files = walk(&data.join("objects"));
    let wals = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("-wal"))
        .count();
    let bytes = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    (bytes, wals)
}

/// Counter `c{i}` incremented by `i`, for each of the `OBJECTS`.
async fn increment_all(client: &reqwest::Client, server: &ServerProcess) -> anyhow::Result<()> {
    for i in 0..OBJECTS {
        let by = json!({ "by": i });
        let (status, _) =
            call(client, server, "counter", &format!("c{i}"), "increment", by).await?;
        anyhow::ensure!(status == 200, "increment c{i}: {status}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_objects_shrink_to_their_database() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let args = ["--idle-timeout", "300ms", "--tidy-idle-after", "500ms"];
    let server = ServerProcess::start(dir.path(), &args).await?;
    let client = http();
    increment_all(&client, &server).await?;
    wait_metric(&server, "roost_tidied_files_total", OBJECTS as f64).await?;
    let (after, wals) = object_bytes(dir.path());
    assert_eq!(wals, 0, "every idle object's WAL is gone");
    // A used counter's files: ~55 KB untidied (2 KiB database, 14 KiB WAL,
    // 32 KiB index).
    let per_object = after / OBJECTS as u64;
    assert!(per_object < 20_000, "{per_object} bytes per idle object");
    // An object woken and written again keeps working, and is tidied again.
    let (status, body) = call(
        &client,
        &server,
        "counter",
        "c7",
        "increment",
        json!({"by": 100}),
    )
    .await?;
    assert_eq!((status, body), (200, json!(107)));
    wait_metric(&server, "roost_tidied_files_total", (OBJECTS + 1) as f64).await?;
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &args).await?;
    for i in 0..OBJECTS {
        let want = if i == 7 { 107 } else { i };
        let (status, body) = call(
            &client,
            &server,
            "counter",
            &format!("c{i}"),
            "get",
            json!(null),
        )
        .await?;
        assert_eq!((status, body), (200, json!(want)), "c{i}");
    }
    // With tidying off, idle files keep their WAL.
    server.terminate().await?;
    let off = tempfile::tempdir()?;
    let args = ["--idle-timeout", "300ms", "--tidy-idle-after", "0"];
    let server = ServerProcess::start(off.path(), &args).await?;
    let (status, _) = call(
        &client,
        &server,
        "counter",
        "x",
        "increment",
        json!({"by": 1}),
    )
    .await?;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        metric(&client, &server, "roost_tidied_files_total").await?,
        0.0
    );
    assert_eq!(object_bytes(off.path()).1, 1);
    server.terminate().await?;
    Ok(())
}

/// WALs beside idle objects that a kill -9 left (evicted, not yet tidied)
/// are tidied after the next start without any object running again, and
/// lose nothing, across a second kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wals_left_by_a_kill9_are_tidied_after_the_next_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Segments checkpointed soon, so the restart replays (and thereby
    // checkpoints) no object: its WAL is left for the tidier alone.
    let never = [
        "--idle-timeout",
        "300ms",
        "--tidy-idle-after",
        "1h",
        "--checkpoint-interval",
        "100ms",
    ];
    let server = ServerProcess::start(dir.path(), &never).await?;
    let client = http();
    increment_all(&client, &server).await?;
    wait_metric(&server, "roost_live_objects", 0.0).await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(object_bytes(dir.path()).1, OBJECTS, "evicted, not tidied");
    server.kill9().await?;
    let args = ["--idle-timeout", "300ms", "--tidy-idle-after", "500ms"];
    let server = ServerProcess::start(dir.path(), &args).await?;
    let mut wals = usize::MAX;
    for _ in 0..100 {
        wals = object_bytes(dir.path()).1;
        if wals == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(wals, 0, "WALs left by the kill -9 are tidied");
    assert_eq!(metric(&client, &server, "roost_live_objects").await?, 0.0);
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &args).await?;
    for i in 0..OBJECTS {
        let (status, body) = call(
            &client,
            &server,
            "counter",
            &format!("c{i}"),
            "get",
            json!(null),
        )
        .await?;
        assert_eq!((status, body), (200, json!(i)), "c{i}");
    }
    server.terminate().await?;
    Ok(())
}
