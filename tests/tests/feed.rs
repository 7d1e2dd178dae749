//! The change feed (`--feed`, `GET /v1/feed`) against the real binary (the
//! `roost-workload` build, whose `workload` class emits with `Ctx::emit`):
//! every acknowledged event is there after a kill -9, per object in commit
//! order with no gap; an event whose call failed never is; Yjs updates
//! rebuild the document; reading is by cursor, filtered by class, admin
//! only, and bad input is refused.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use base64::Engine;
use roost_tests::yclient::YClient;
use roost_tests::{call, http, wait_stored_text, workload_bin, ServerProcess};
use serde_json::{json, Value};
use yrs::updates::decoder::Decode;
use yrs::{GetString, Transact};

const ADMIN: &str = "feed-admin-token";

async fn start(data: &str) -> anyhow::Result<ServerProcess> {
    start_with(data, "workload,room,ydoc", &[]).await
}

/// The workload binary on `data` with the admin token, `--feed <feed>` and
/// `extra` flags.
async fn start_with(data: &str, feed: &str, extra: &[&str]) -> anyhow::Result<ServerProcess> {
    let mut args = vec!["--data", data, "--admin-token", ADMIN, "--feed", feed];
    args.extend_from_slice(extra);
    ServerProcess::start_bin(&workload_bin(), None, &args).await
}

async fn feed(server: &ServerProcess, query: &str) -> anyhow::Result<(u16, Value)> {
    let resp = http()
        .get(server.url(&format!("/v1/feed?{query}")))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// Every event from the start, following `next` (bounded).
async fn read_all(server: &ServerProcess, class: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut after = 0;
    for _ in 0..1000 {
        let (status, body) = feed(server, &format!("after={after}&limit=50&class={class}")).await?;
        anyhow::ensure!(status == 200, "feed: {status} {body}");
        let events = body["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return Ok(out);
        }
        after = body["next"].as_i64().unwrap_or(after);
        out.extend(events);
    }
    anyhow::bail!("the feed never ended")
}

/// A fresh data directory (kept while the first value lives) and its path.
fn data_dir() -> anyhow::Result<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data").to_str().expect("utf-8").to_owned();
    Ok((dir, data))
}

/// Emits step `n` (a `test.step` event) from `workload/<object>`; the
/// call's status.
async fn emit_step(
    client: &reqwest::Client,
    server: &ServerProcess,
    object: &str,
    n: i64,
) -> anyhow::Result<u16> {
    let event = json!({ "kind": "test.step", "data": { "n": n } });
    Ok(call(client, server, "workload", object, "emit", event)
        .await?
        .0)
}

/// The `n` of every `workload` event in the feed, in feed order.
async fn steps(server: &ServerProcess) -> anyhow::Result<Vec<i64>> {
    Ok(read_all(server, "workload")
        .await?
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap_or(-1))
        .collect())
}

/// Per object, the `object_seq`s in feed order.
fn by_object(events: &[Value]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in events {
        let key = format!(
            "{}/{}",
            e["class"].as_str().unwrap_or(""),
            e["object"].as_str().unwrap_or("")
        );
        out.entry(key)
            .or_default()
            .push(e["object_seq"].as_i64().unwrap_or(-1));
    }
    out
}

/// One round: 20 acknowledged events over four objects (and a failed call
/// every fifth, whose event must never show), a room message; then kill -9
/// right after the last acknowledgement, so what was not indexed yet must
/// come back from the objects' own rows.
async fn round(
    data: &str,
    round: i64,
    acknowledged: &mut HashSet<i64>,
    graceful: bool,
) -> anyhow::Result<()> {
    let client = http();
    let server = start(data).await?;
    for i in 0..20 {
        let name = format!("w{}", i % 4);
        let n = round * 100 + i;
        let args = json!({ "kind": "test.step", "data": { "n": n } });
        let (status, body) = call(&client, &server, "workload", &name, "emit", args).await?;
        assert_eq!(status, 200, "{body}");
        acknowledged.insert(n);
        if i % 5 == 0 {
            let bad = json!({ "kind": "test.failed", "data": { "n": n }, "fail": true });
            let (status, _) = call(&client, &server, "workload", &name, "emit", bad).await?;
            assert_eq!(status, 422);
        }
    }
    let text = format!("round {round}");
    let args = json!({ "text": text, "name": "ann" });
    let (status, body) = call(&client, &server, "room", "lobby", "send", args).await?;
    assert_eq!(status, 200, "{body}");
    if graceful {
        server.terminate().await?;
        return Ok(());
    }
    server.kill9().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_in_the_feed_after_kill9_in_order() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let mut acknowledged = HashSet::new();
    for r in 0..4 {
        // Round 2 ends with SIGTERM: a clean shutdown, nothing to recover.
        round(data, r, &mut acknowledged, r == 2).await?;
        if r == 1 {
            // The index itself lost (with the clean mark): start-up must
            // rebuild it from the objects' own rows, each event once.
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{data}/feed.sqlite{suffix}"));
            }
        }
    }
    let server = start(data).await?;
    let events = read_all(&server, "workload").await?;
    let seen: HashSet<i64> = events
        .iter()
        .filter(|e| e["kind"] == "test.step")
        .filter_map(|e| e["data"]["n"].as_i64())
        .collect();
    let missing: Vec<_> = acknowledged.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "acknowledged events missing from the feed: {missing:?}"
    );
    assert!(
        events.iter().all(|e| e["kind"] != "test.failed"),
        "an event of a failed call is in the feed"
    );
    // Per object: 1, 2, 3... in feed order, no gap, no repeat.
    for (object, seqs) in by_object(&events) {
        let want: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, want, "{object}: object_seq out of order");
    }
    // Cursors: `seq` grows; a class filter keeps to its class.
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq not increasing");
    let rooms = read_all(&server, "room").await?;
    let texts: Vec<&str> = rooms
        .iter()
        .filter_map(|e| e["data"]["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["round 0", "round 1", "round 2", "round 3"]);
    assert!(rooms
        .iter()
        .all(|e| e["class"] == "room" && e["kind"] == "room.message"));
    server.kill9().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yjs_updates_in_the_feed_rebuild_the_document() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = start(data.to_str().expect("utf-8")).await?;
    let mut alice = YClient::new();
    alice.connect(&server.ws_url("/v1/yjs/story")).await?;
    for word in ["Once ", "upon ", "a time."] {
        let len = alice.text_len();
        alice.insert(len, word).await?;
    }
    wait_stored_text(&server, "story", "Once upon a time.").await?;
    // Long-poll: an answer as soon as there is something.
    let (status, body) = feed(&server, "class=ydoc&wait=5").await?;
    assert_eq!(status, 200);
    assert!(!body["events"].as_array().expect("events").is_empty());
    let doc = yrs::Doc::new();
    for e in read_all(&server, "ydoc").await? {
        assert_eq!(e["kind"], "yjs.update");
        assert_eq!(e["object"], "story");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(e["data"]["update"].as_str().expect("update"))?;
        doc.transact_mut()
            .apply_update(yrs::Update::decode_v1(&bytes)?)?;
    }
    let text = doc.get_or_insert_text("t");
    assert_eq!(text.get_string(&doc.transact()), "Once upon a time.");

    // Admin only; bad cursors refused; a long-poll with nothing new ends.
    let anon = http().get(server.url("/v1/feed")).send().await?.status();
    assert!(anon == 401 || anon == 403 || anon == 404, "{anon}");
    for bad in ["after=-1", "after=x", "limit=0", "limit=5000", "wait=99"] {
        assert_eq!(feed(&server, bad).await?.0, 400, "{bad}");
    }
    let started = std::time::Instant::now();
    let (status, body) = feed(&server, "after=1000000&wait=1").await?;
    assert_eq!(status, 200);
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["next"], 1000000);
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.kill9().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_feed_the_route_says_how_to_turn_it_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--admin-token", ADMIN]).await?;
    let (status, body) = feed(&server, "").await?;
    assert_eq!(status, 404);
    assert!(body.to_string().contains("--feed"), "{body}");
    server.kill9().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_and_recreated_object_feeds_again_under_a_new_incarnation() -> anyhow::Result<()>
{
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let server = start(data).await?;
    let client = http();
    for n in 0..3 {
        assert_eq!(emit_step(&client, &server, "again", n).await?, 200);
    }
    let deleted = client
        .delete(server.url("/v1/admin/objects/workload/again"))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    assert_eq!(deleted.status(), 200);
    for n in 10..12 {
        assert_eq!(emit_step(&client, &server, "again", n).await?, 200);
    }
    server.kill9().await?;
    let server = start(data).await?;
    let events = read_all(&server, "workload").await?;
    let got: Vec<(i64, i64)> = events
        .iter()
        .map(|e| {
            (
                e["object_seq"].as_i64().unwrap_or(-1),
                e["data"]["n"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(got, vec![(1, 0), (2, 1), (3, 2), (1, 10), (2, 11)]);
    assert_ne!(events[0]["incarnation"], events[3]["incarnation"]);
    assert_eq!(events[3]["incarnation"], events[4]["incarnation"]);
    server.kill9().await?;
    Ok(())
}

/// An append the index cannot make (here an operator's `sqlite3` holds the
/// write lock past the index's 10 s busy timeout) must not lose its events:
/// they are retried, and a later event of the same object must not move
/// the object's mark past them (which would hide them from recovery too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_index_could_not_write_are_not_lost() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let server = start(data).await?;
    let client = http();
    assert_eq!(emit_step(&client, &server, "locked", 1).await?, 200);
    let lock = rusqlite::Connection::open(format!("{data}/feed.sqlite"))?;
    lock.execute_batch("BEGIN IMMEDIATE")?;
    assert_eq!(emit_step(&client, &server, "locked", 2).await?, 200);
    // Past the index's busy timeout: that append fails.
    tokio::time::sleep(Duration::from_secs(11)).await;
    lock.execute_batch("COMMIT")?;
    drop(lock);
    assert_eq!(emit_step(&client, &server, "locked", 3).await?, 200);
    let want = vec![1, 2, 3];
    let mut got = Vec::new();
    for _ in 0..100 {
        got = steps(&server).await?;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, want, "the live feed lost an event");
    // And after a kill -9 and recovery, still each exactly once, in order.
    server.kill9().await?;
    let server = start(data).await?;
    let events = read_all(&server, "workload").await?;
    let got: Vec<(i64, i64)> = events
        .iter()
        .map(|e| {
            (
                e["object_seq"].as_i64().unwrap_or(-1),
                e["data"]["n"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(got, vec![(1, 1), (2, 2), (3, 3)]);
    server.kill9().await?;
    Ok(())
}

/// Rounds of retention expiry (`--feed-retention 1s`) with kill -9 between
/// them: a cursor whose next events were dropped gets 410
/// `cursor_expired` naming where to go on, never a silent skip; `after=0`
/// reads from the oldest event kept; a class none of whose events were
/// dropped reads on. And a running server prunes on a short retention's
/// scale, not every ten minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_before_the_retained_events_is_told_so() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let start = || start_with(data, "workload,room", &["--feed-retention", "1s"]);
    let client = http();
    let seqs = |body: &Value| -> Vec<i64> {
        body["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["seq"].as_i64()).collect())
            .unwrap_or_default()
    };
    // Round 1: seq 1 to 3; a reader gets as far as 1.
    let server = start().await?;
    for n in 1..=3 {
        assert_eq!(emit_step(&client, &server, "old", n).await?, 200);
    }
    let (status, body) = feed(&server, "after=0&limit=1&wait=5").await?;
    assert_eq!((status, seqs(&body)), (200, vec![1]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9().await?;
    // Round 2: one event (numbered above the ceiling the index reserved
    // before the kill -9, see `feed/index.rs`); 1 to 3 are past retention
    // and go.
    let server = start().await?;
    assert_eq!(emit_step(&client, &server, "new", 4).await?, 200);
    let mut answer = (0, Value::Null);
    for _ in 0..50 {
        answer = feed(&server, "after=1").await?;
        if answer.0 != 200 || !seqs(&answer.1).contains(&2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = answer;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "cursor_expired", "{body}");
    assert!(body.to_string().contains("after=3"), "{body}");
    let (status, body) = feed(&server, "after=3").await?;
    let fourth = seqs(&body);
    assert_eq!((status, fourth.len()), (200, 1), "{body}");
    assert!(fourth[0] > 3, "{body}");
    let (status, body) = feed(&server, "after=0").await?;
    assert_eq!((status, seqs(&body)), (200, fourth.clone()));
    let (status, body) = feed(&server, "after=1&class=room").await?;
    assert_eq!((status, seqs(&body)), (200, vec![]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9().await?;
    // Round 3: the fifth event drops the fourth; then, live, the sixth
    // drops the fifth.
    let server = start().await?;
    assert_eq!(emit_step(&client, &server, "new", 5).await?, 200);
    let (status, _) = feed(&server, "after=3").await?;
    assert_eq!(status, 410);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(emit_step(&client, &server, "new", 6).await?, 200);
    let mut status = 0;
    for _ in 0..50 {
        status = feed(&server, &format!("after={}", fourth[0])).await?.0;
        if status != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 410, "a running server never pruned");
    let (status, body) = feed(&server, "after=0").await?;
    assert_eq!(status, 200);
    let kept: Vec<&Value> = body["events"].as_array().into_iter().flatten().collect();
    assert_eq!(kept.len(), 1, "{body}");
    assert_eq!(kept[0]["data"]["n"], 6, "{body}");
    server.kill9().await?;
    Ok(())
}

/// The per-object window (`--feed-object-rows`) must not drop rows the
/// index has not taken yet: here the index cannot write (its file locked)
/// while one object emits twice the window, then the server is killed.
/// Recovery must still find every event in the object's own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_window_keeps_events_the_index_has_not_taken() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let rows = ["--feed-object-rows", "64"];
    let server = start_with(data, "workload", &rows).await?;
    let client = http();
    assert_eq!(emit_step(&client, &server, "busy", 1).await?, 200);
    let lock = rusqlite::Connection::open(format!("{data}/feed.sqlite"))?;
    lock.execute_batch("BEGIN IMMEDIATE")?;
    for n in 2..=140 {
        assert_eq!(emit_step(&client, &server, "busy", n).await?, 200);
    }
    server.kill9().await?;
    lock.execute_batch("COMMIT")?;
    drop(lock);
    let server = start_with(data, "workload", &rows).await?;
    let got: Vec<i64> = steps(&server).await?;
    assert_eq!(got, (1..=140).collect::<Vec<_>>());
    // With the index keeping up, the window is pruned as before.
    for n in 141..=270 {
        assert_eq!(emit_step(&client, &server, "busy", n).await?, 200);
    }
    let rows: Value = client
        .post(server.url("/v1/admin/objects/workload/busy/sql"))
        .bearer_auth(ADMIN)
        .json(&json!({ "sql": "SELECT count(*) FROM _roost_feed" }))
        .send()
        .await?
        .json()
        .await?;
    let kept = rows["rows"][0][0].as_i64().unwrap_or(-1);
    assert!((64..=128).contains(&kept), "{rows}");
    server.kill9().await?;
    Ok(())
}

/// A zero `--feed-retention` (every event dropped at once) or
/// `--webhook-timeout` (every delivery timed out: nothing ever delivered)
/// stops the start with a clear error; a retention too long to count in
/// milliseconds keeps events (it used to wrap around and drop them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_durations_are_checked() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    for (flag, value) in [("--feed-retention", "0s"), ("--webhook-timeout", "0s")] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(roost_tests::roost_bin())
                .args(["serve", "--listen", "127.0.0.1:0", "--data", data])
                .args(["--webhook", "http://127.0.0.1:9/hook"])
                .args(["--webhook-secret", "s", flag, value])
                .kill_on_drop(true)
                .output(),
        )
        .await??;
        assert!(!out.status.success(), "{flag} {value} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    let server = start_with(data, "workload", &["--feed-retention", "999999999999d"]).await?;
    let emit = json!({ "kind": "test.step", "data": { "n": 1 } });
    let (status, _) = call(&http(), &server, "workload", "kept", "emit", emit).await?;
    assert_eq!(status, 200);
    let (status, body) = feed(&server, "after=0&wait=5").await?;
    assert_eq!(status, 200);
    assert_eq!(body["events"][0]["data"]["n"], 1, "{body}");
    server.kill9().await?;
    Ok(())
}

/// Recovery after a kill -9 reads every fed object's file: one that is not
/// a database (a damaged disk) must not keep the whole server from
/// starting (a clean start does not read it either); the others' events
/// are still recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_goes_on_past_an_unreadable_object_file() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let server = start(data).await?;
    let client = http();
    assert_eq!(emit_step(&client, &server, "damaged", 1).await?, 200);
    let (_, body) = feed(&server, "after=0&wait=5").await?;
    let damaged = body["events"][0]["id"].as_str().expect("id").to_owned();
    // The index cannot write: this event is left for recovery.
    let lock = rusqlite::Connection::open(format!("{data}/feed.sqlite"))?;
    lock.execute_batch("BEGIN IMMEDIATE")?;
    assert_eq!(emit_step(&client, &server, "fine", 2).await?, 200);
    server.kill9().await?;
    lock.execute_batch("COMMIT")?;
    drop(lock);
    let file = roost_tests::walk(std::path::Path::new(data))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&format!("{damaged}.sqlite")))
        .expect("the damaged object's file");
    std::fs::write(&file, vec![0x5a; 4096])?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    let server = start(data).await?;
    let got: Vec<i64> = steps(&server).await?;
    assert_eq!(got, vec![1, 2]);
    server.kill9().await?;
    Ok(())
}

/// Deleting an object removes its file, the only copy of events the index
/// has not taken yet: the deletion must wait for the index (here held back
/// by a lock for 3 s) so that a kill -9 right after it loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_object_waits_for_the_index_to_take_its_events() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let server = start(data).await?;
    let client = http();
    assert_eq!(emit_step(&client, &server, "gone", 1).await?, 200);
    let lock = rusqlite::Connection::open(format!("{data}/feed.sqlite"))?;
    lock.execute_batch("BEGIN IMMEDIATE")?;
    for n in 2..=3 {
        assert_eq!(emit_step(&client, &server, "gone", n).await?, 200);
    }
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        lock.execute_batch("COMMIT")
    });
    let deleted = client
        .delete(server.url("/v1/admin/objects/workload/gone"))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    assert_eq!(deleted.status(), 200);
    server.kill9().await?;
    release.await??;
    let server = start(data).await?;
    let got: Vec<i64> = steps(&server).await?;
    assert_eq!(got, vec![1, 2, 3], "events of the deleted object were lost");
    server.kill9().await?;
    Ok(())
}

/// The index file lost (deleted, or a restore without it): start-up
/// rebuilds it from the objects' rows, which hold fewer events than the
/// old index handed out (`--feed-object-rows`). A consumer's cursor from
/// before must not skip the events that come after: `seq` is never reused,
/// so at worst it reads rebuilt events again (deduplicate on `id`,
/// `incarnation`, `object_seq`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_before_a_lost_index_misses_nothing_after() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let rows = ["--feed-object-rows", "64"];
    let server = start_with(data, "workload", &rows).await?;
    let client = http();
    for n in 1..=200 {
        assert_eq!(emit_step(&client, &server, "many", n).await?, 200);
    }
    let mut cursor = 0;
    for _ in 0..50 {
        let events = read_all(&server, "workload").await?;
        if events.len() == 200 {
            cursor = events[199]["seq"].as_i64().expect("seq");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cursor > 0, "the feed never held the 200 events");
    server.kill9().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{data}/feed.sqlite{suffix}"));
    }
    let server = start_with(data, "workload", &rows).await?;
    assert_eq!(emit_step(&client, &server, "many", 201).await?, 200);
    // The rebuilt events answer at once; 201 is indexed after its call
    // was answered, so read on from the old cursor until it comes.
    let mut got = Vec::new();
    let mut after = cursor;
    for _ in 0..20 {
        let (status, body) = feed(&server, &format!("after={after}&limit=1000&wait=1")).await?;
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().cloned().unwrap_or_default();
        got.extend(events.iter().map(|e| e["data"]["n"].as_i64().unwrap_or(-1)));
        after = body["next"].as_i64().unwrap_or(after);
        if got.contains(&201) {
            break;
        }
    }
    assert!(
        got.contains(&201),
        "the event after the rebuild was skipped: {got:?}"
    );
    server.kill9().await?;
    Ok(())
}

/// A long-poll (`wait`) open when the server is asked to stop ends at once
/// with an ordinary empty answer: it must neither hold the shutdown for the
/// whole drain timeout nor end in a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_does_not_hold_up_shutdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = start(data.to_str().expect("utf-8")).await?;
    let url = server.url("/v1/feed?after=0&wait=30");
    let poll = tokio::spawn(async move {
        let resp = http().get(url).bearer_auth(ADMIN).send().await?;
        anyhow::Ok(resp.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    server.terminate().await?;
    let took = started.elapsed();
    let status = poll.await??;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    Ok(())
}

/// The index keeps a mark per life of an object; a deleted object's go
/// with it, or a server whose objects come and go (a room per meeting)
/// grows `feed.sqlite` by a row for every object it ever had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_objects_marks_leave_the_index() -> anyhow::Result<()> {
    let (_dir, data) = data_dir()?;
    let data = data.as_str();
    let server = start(data).await?;
    let client = http();
    let emit = json!({ "kind": "test.step", "data": {} });
    for i in 0..5 {
        let (status, _) = call(
            &client,
            &server,
            "workload",
            &format!("m{i}"),
            "emit",
            emit.clone(),
        )
        .await?;
        assert_eq!(status, 200);
    }
    let marks = || -> anyhow::Result<i64> {
        let conn = rusqlite::Connection::open(format!("{data}/feed.sqlite"))?;
        Ok(conn.query_row("SELECT count(*) FROM marks", [], |r| r.get(0))?)
    };
    for i in 0..4 {
        let deleted = client
            .delete(server.url(&format!("/v1/admin/objects/workload/m{i}")))
            .bearer_auth(ADMIN)
            .send()
            .await?;
        assert_eq!(deleted.status(), 200);
    }
    let mut left = marks()?;
    for _ in 0..50 {
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = marks()?;
    }
    assert_eq!(left, 1, "the deleted objects' marks are still in the index");
    // Their events stay readable until retention drops them.
    assert_eq!(read_all(&server, "workload").await?.len(), 5);
    server.kill9().await?;
    Ok(())
}
