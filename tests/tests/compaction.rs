//! A Yjs document's storage over its life, against the real binary:
//! compaction gives the deleted rows' pages back to the filesystem, a clean
//! stop leaves no empty log segment and no WAL behind, and a document that
//! was never compacted (kill -9 right after its last acknowledged update)
//! is compacted after the restart and loads whole; the history window is
//! kept per second (merged rows) and reads the same. Every step that changes
//! storage is followed by a kill -9 and a check that nothing acknowledged
//! was lost.

use std::path::Path;
use std::time::Duration;

use roost_tests::yclient::YClient;
use roost_tests::{call, doc_sql_int, http, stored_text, wait_stored_text, ServerProcess};
use serde_json::json;

/// Appends `n` one-letter updates (each its own Yjs update, as an editor
/// sends keystrokes) to `want` and the document, and waits until the server
/// has acknowledged every one as durable (`?saved=1`).
async fn type_acked(client: &mut YClient, want: &mut String, n: u32) -> anyhow::Result<()> {
    let target = client.saved + u64::from(n);
    for i in 0..n {
        let letter = char::from(b'a' + (i % 26) as u8).to_string();
        client.insert(want.chars().count() as u32, &letter).await?;
        want.push_str(&letter);
    }
    for _ in 0..1000 {
        if client.saved >= target {
            return Ok(());
        }
        client.drain(Duration::from_millis(10)).await?;
    }
    anyhow::bail!("only {} of {target} updates acknowledged", client.saved)
}

async fn connect(server: &ServerProcess, doc: &str) -> anyhow::Result<YClient> {
    let mut client = YClient::new();
    client
        .connect(&server.ws_url(&format!("/v1/yjs/{doc}?saved=1")))
        .await?;
    // The handshake's (empty) step 2 is acknowledged too.
    for _ in 0..200 {
        if client.saved >= 1 {
            return Ok(client);
        }
        client.drain(Duration::from_millis(10)).await?;
    }
    anyhow::bail!("the handshake was never acknowledged")
}

/// Polls `sql` on the document until `done` holds for its value (up to 20 s).
async fn wait_sql(
    server: &ServerProcess,
    admin: &str,
    doc: &str,
    sql: &str,
    done: impl Fn(i64) -> bool,
) -> anyhow::Result<i64> {
    let mut last = 0;
    for _ in 0..800 {
        last = doc_sql_int(server, admin, doc, sql).await?;
        if done(last) {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("{sql} on {doc} stayed at {last}")
}

/// Days of a document's life in seconds, three times: edits, kill -9 right
/// after the last acknowledgement, restart; the history window passes and
/// compaction deletes the log and gives its pages back (the file shrinks to
/// well under half its peak); kill -9 again. Every acknowledged letter is
/// in the document after each restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_gives_the_pages_back_and_kill9_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let admin = "pages-admin";
    // Every update its own row (no merging inside the window), so the peak
    // is the log's whole size whatever pauses the typing had.
    let flags = [
        "--admin-token",
        admin,
        "--history-granularity",
        "0",
        "--history-retention",
        "1s",
        "--ydoc-compact-after",
        "300ms",
    ];
    let mut server = ServerProcess::start(dir.path(), &flags).await?;
    let mut want = String::new();
    for round in 0..3 {
        let mut client = connect(&server, "pages").await?;
        type_acked(&mut client, &mut want, 1500).await?;
        let peak = doc_sql_int(&server, admin, "pages", "PRAGMA page_count").await?;
        server.kill9().await?;
        server = ServerProcess::start(dir.path(), &flags).await?;
        assert_eq!(stored_text(&server, "pages").await?, want, "round {round}");
        // The restart's overdue alarm, then the window: the log empties.
        wait_sql(
            &server,
            admin,
            "pages",
            "SELECT count(*) FROM updates",
            |n| n == 0,
        )
        .await?;
        let pages = wait_sql(&server, admin, "pages", "PRAGMA page_count", |n| {
            n * 2 < peak
        })
        .await?;
        let free = doc_sql_int(&server, admin, "pages", "PRAGMA freelist_count").await?;
        assert!(
            free * 4 < pages.max(4),
            "round {round}: {free} of {pages} pages free"
        );
        assert_eq!(stored_text(&server, "pages").await?, want, "round {round}");
        server.kill9().await?;
        server = ServerProcess::start(dir.path(), &flags).await?;
        assert_eq!(
            stored_text(&server, "pages").await?,
            want,
            "round {round}, compacted"
        );
    }
    server.terminate().await?;
    Ok(())
}

/// Files a stopped server should not keep: a log segment (all were
/// checkpointed; the one made ahead holds only zeros) and a WAL or WAL index.
fn leftovers(data: &Path) -> Vec<String> {
    roost_tests::walk(data)
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".log") || name.ends_with("-wal") || name.ends_with("-shm")
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// A clean stop checkpoints everything and leaves the folder small: no log
/// segment, no WAL beside the document or the catalog. The next start, a
/// kill -9 after more edits and the start after it lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_no_segment_and_no_wal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let mut want = String::new();
    let mut client = connect(&server, "tidy").await?;
    type_acked(&mut client, &mut want, 300).await?;
    drop(client);
    server.terminate().await?;
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    let server = ServerProcess::start(dir.path(), &[]).await?;
    assert_eq!(stored_text(&server, "tidy").await?, want);
    let mut client = connect(&server, "tidy").await?;
    type_acked(&mut client, &mut want, 300).await?;
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    assert_eq!(stored_text(&server, "tidy").await?, want);
    server.terminate().await?;
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    Ok(())
}

/// The `stats` call's count of updates after the newest snapshot.
async fn since_snapshot(server: &ServerProcess, doc: &str) -> anyhow::Result<Option<u64>> {
    let (status, body) = call(&http(), server, "ydoc", doc, "stats", json!({})).await?;
    anyhow::ensure!(status == 200, "stats: {status} {body}");
    Ok(body["updates_since_snapshot"].as_u64())
}

/// Never compacted: 2,500 updates with the default snapshot settings (a
/// snapshot every 2,000), kill -9 right after the last acknowledgement, so
/// the quiet-time alarm never ran. After the restart the overdue alarm
/// snapshots the log; the document loads whole, and after another kill -9
/// it loads from that snapshot alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_compacted_document_is_compacted_after_kill9_and_loads_whole() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let admin = "never-admin";
    let flags = ["--admin-token", admin, "--ydoc-compact-after", "300ms"];
    let server = ServerProcess::start(dir.path(), &flags).await?;
    let mut want = String::new();
    let mut client = connect(&server, "never").await?;
    type_acked(&mut client, &mut want, 2500).await?;
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &flags).await?;
    wait_stored_text(&server, "never", &want).await?;
    // The quiet snapshot; the one taken at 2,000 updates is thinned away
    // (the merged rows before it are cheap to replay).
    let snapshots = wait_sql(
        &server,
        admin,
        "never",
        "SELECT count(*) FROM snapshots WHERE upto = (SELECT max(id) FROM updates)",
        |n| n == 1,
    )
    .await?;
    assert_eq!(snapshots, 1);
    let all = doc_sql_int(&server, admin, "never", "SELECT count(*) FROM snapshots").await?;
    assert_eq!(all, 1, "thinned");
    assert_eq!(since_snapshot(&server, "never").await?, Some(0));
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &flags).await?;
    assert_eq!(stored_text(&server, "never").await?, want);
    assert_eq!(
        since_snapshot(&server, "never").await?,
        Some(0),
        "loaded from the snapshot alone"
    );
    server.terminate().await?;
    Ok(())
}

/// `ms` since the Unix epoch as RFC 3339 (UTC, milliseconds).
fn rfc3339(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{milli:03}Z")
}

/// A document's history window kept per second (`--history-granularity
/// 1s`), over three rounds of edits with kill -9 before and after the
/// quiet document merged its rows: every acknowledged letter stays, every
/// update is counted in the merged rows, the log shrinks to a few rows per
/// second of editing, and `state?at=` the end of each earlier round's last
/// second reads exactly that round's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_kept_per_second_and_kill9_loses_nothing() -> anyhow::Result<()> {
    assert_eq!(rfc3339(1_796_306_695_731), "2026-12-03T14:04:55.731Z");
    let dir = tempfile::tempdir()?;
    let (admin, doc) = ("coarse-admin", "coarse");
    let flags = [
        "--admin-token",
        admin,
        "--history-granularity",
        "1s",
        "--ydoc-compact-after",
        "300ms",
        "--ydoc-snapshot-rows",
        "200",
    ];
    let mut server = ServerProcess::start(dir.path(), &flags).await?;
    let mut want = String::new();
    let mut ends: Vec<(i64, String)> = Vec::new();
    for round in 0..3i64 {
        let mut client = connect(&server, doc).await?;
        type_acked(&mut client, &mut want, 400).await?;
        let last = doc_sql_int(&server, admin, doc, "SELECT max(ts) FROM updates").await?;
        ends.push(((last / 1000 + 1) * 1000 - 1, want.clone()));
        // The next round's edits fall in a later second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        server.kill9().await?;
        server = ServerProcess::start(dir.path(), &flags).await?;
        assert_eq!(stored_text(&server, doc).await?, want, "round {round}");
        let bound = 10 * (round + 1);
        let rows = wait_sql(&server, admin, doc, "SELECT count(*) FROM updates", |n| {
            n <= bound
        })
        .await?;
        let sum = doc_sql_int(&server, admin, doc, "SELECT sum(n) FROM updates").await?;
        assert_eq!(sum, 400 * (round + 1), "round {round}: {rows} rows");
        let snapshots = doc_sql_int(&server, admin, doc, "SELECT count(*) FROM snapshots").await?;
        assert!(snapshots <= 2, "round {round}: {snapshots} snapshots kept");
        server.kill9().await?;
        server = ServerProcess::start(dir.path(), &flags).await?;
        assert_eq!(
            stored_text(&server, doc).await?,
            want,
            "round {round}, merged"
        );
        for (at, text) in &ends {
            let url = server.url(&format!("/v1/yjs/{doc}/state?at={}", rfc3339(*at)));
            let state = http().get(url).send().await?.bytes().await?;
            let got = roost_tests::yclient::text_of_update(&state)?;
            assert_eq!(&got, text, "round {round}: as of {}", rfc3339(*at));
        }
    }
    server.terminate().await?;
    Ok(())
}

/// How many of the server's open files are object databases or their WALs.
fn open_object_files(server: &ServerProcess) -> anyhow::Result<usize> {
    let objects = server.data.join("objects");
    let mut n = 0;
    for entry in std::fs::read_dir(format!("/proc/{}/fd", server.pid))? {
        if let Ok(target) = std::fs::read_link(entry?.path()) {
            n += usize::from(target.starts_with(&objects));
        }
    }
    Ok(n)
}

/// A document nobody edits for a few seconds stays loaded (its sockets, its
/// Yjs state, no eviction) but closes its database; the next edit opens it
/// again. Three rounds of: edits acknowledged, quiet until the file is
/// closed, an edit from the other client delivered and acknowledged, kill -9
/// and restart. Nothing acknowledged is lost, and the quiet document holds
/// no file open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_document_closes_its_file_stays_loaded_and_kill9_loses_nothing(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let flags = ["--idle-timeout", "600s", "--admin-token", "quiet-admin"];
    let mut server = ServerProcess::start(dir.path(), &flags).await?;
    let client = http();
    let mut want = String::new();
    for round in 0..3 {
        let mut a = connect(&server, "quiet").await?;
        let mut b = connect(&server, "quiet").await?;
        a.wait_for_text(&want, Duration::from_secs(5)).await?;
        type_acked(&mut a, &mut want, 40).await?;
        b.wait_for_text(&want, Duration::from_secs(5)).await?;
        // Quiet: the file closes (past the 2 s quiet time and the
        // document's own quiet alarm), the object stays loaded.
        let mut open = open_object_files(&server)?;
        for _ in 0..120 {
            if open == 0 {
                break;
            }
            a.drain(Duration::from_millis(50)).await?;
            b.drain(Duration::from_millis(50)).await?;
            open = open_object_files(&server)?;
        }
        assert_eq!(
            open, 0,
            "round {round}: the quiet document keeps its file open"
        );
        let m = |name| roost_tests::metric(&client, &server, name);
        assert_eq!(m("roost_live_objects").await?, 1.0, "round {round}");
        assert_eq!(m("roost_evictions_total").await?, 0.0, "round {round}");
        // The next edit opens it again; the other client gets it.
        type_acked(&mut b, &mut want, 5).await?;
        a.wait_for_text(&want, Duration::from_secs(5)).await?;
        assert!(open_object_files(&server)? > 0);
        server.kill9().await?;
        server = ServerProcess::start(dir.path(), &flags).await?;
        assert_eq!(stored_text(&server, "quiet").await?, want, "round {round}");
    }
    Ok(())
}
