//! Resource faults against the real binary: an object that reaches its size
//! cap keeps every acknowledged write, answers 413 for the write that does
//! not fit, and goes on serving reads and writes without a restart; a full
//! disk and a full file-descriptor table are refused with their own codes
//! (507, 503) and pass without a restart; a commit log whose write failed
//! fails the probes until a restart, which loses nothing acknowledged.

use roost_tests::{call, http, ServerProcess};
use serde_json::{json, Value};

fn texts(history: &Value) -> Vec<String> {
    history
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_at_its_size_cap_keeps_its_writes_and_serves_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let flags = ["--max-db-bytes", "300000"];
    let server = ServerProcess::start(dir.path(), &flags).await?;
    let client = http();
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..400 {
        let text = format!("m{i}-{}", "x".repeat(4000));
        let (status, body) = call(
            &client,
            &server,
            "room",
            "big",
            "send",
            json!({ "text": text }),
        )
        .await?;
        if status == 200 {
            acked.push(text);
        } else {
            refusal = Some((status, body));
            break;
        }
    }
    let (status, body) = refusal.ok_or_else(|| anyhow::anyhow!("the cap never bit"))?;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("too_large")),
        "{body}"
    );
    // Reads go on, with every acknowledged write.
    let (status, history) = call(
        &client,
        &server,
        "room",
        "big",
        "history",
        json!({"limit": 1000}),
    )
    .await?;
    assert_eq!(status, 200, "{history}");
    assert_eq!(texts(&history), acked, "acknowledged writes went missing");
    // So do writes that fit.
    let (status, body) = call(
        &client,
        &server,
        "room",
        "big",
        "send",
        json!({"text": "small"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    acked.push("small".into());
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &flags).await?;
    let (_, history) = call(
        &client,
        &server,
        "room",
        "big",
        "history",
        json!({"limit": 1000}),
    )
    .await?;
    assert_eq!(texts(&history), acked);
    server.terminate().await?;
    Ok(())
}

async fn increment(
    client: &reqwest::Client,
    server: &ServerProcess,
    name: &str,
) -> anyhow::Result<(u16, Value)> {
    call(
        client,
        server,
        "counter",
        name,
        "increment",
        json!({"by": 1}),
    )
    .await
}

/// Sends a 4 KB message to the room `bulk` (fills the log's room fast);
/// returns the status.
async fn bulk(
    client: &reqwest::Client,
    server: &ServerProcess,
    i: usize,
    fill: char,
) -> anyhow::Result<u16> {
    let text = format!("{i}{}", fill.to_string().repeat(4000));
    Ok(call(
        client,
        server,
        "room",
        "bulk",
        "send",
        json!({ "text": text }),
    )
    .await?
    .0)
}

/// A small filesystem of our own (tmpfs), or `None` where this machine
/// does not let the test mount one (not root, no capability).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    /// A mounted disk and the data folder on it, or `None` (saying that
    /// `test` did not run) where none can be mounted.
    fn for_test(megabytes: u32, test: &str) -> Option<(SmallDisk, std::path::PathBuf)> {
        let Some(disk) = SmallDisk::mount(megabytes) else {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); {test} did not run");
            return None;
        };
        let data = disk.dir.path().join("data");
        Some((disk, data))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the disk holding `dir` to the last byte; returns the filler file.
fn fill(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![7u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).and_then(|()| f.flush()).is_err() {
            break;
        }
    }
    let small = vec![7u8; 512];
    while f.write_all(&small).is_ok() {}
    Ok(path)
}

/// Invariant: a full disk changes nothing it did not acknowledge, takes the
/// server down for no one, and once space is freed the same objects accept
/// writes again — no restart — with every acknowledged write in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_recovers_once_space_is_freed() -> anyhow::Result<()> {
    let Some((disk, data)) = SmallDisk::for_test(48, "the full-disk test") else {
        return Ok(());
    };
    let server = ServerProcess::start(&data, &[]).await?;
    let client = http();
    let objects = ["a", "b", "c"];
    let mut acked = std::collections::HashMap::new();
    for o in objects {
        let (status, _) = increment(&client, &server, o).await?;
        assert_eq!(status, 200);
        acked.insert(o, 1i64);
    }
    let filler = fill(disk.dir.path())?;
    // Writes while the disk is full: each is answered, clearly.
    let mut refused = 0;
    for round in 0..60 {
        let o = objects[round % objects.len()];
        let (status, body) = increment(&client, &server, o).await?;
        if status == 200 {
            *acked.get_mut(o).expect("listed") += 1;
        } else {
            refused += 1;
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                [
                    "insufficient_storage",
                    "too_large",
                    "object_broken",
                    "storage"
                ]
                .contains(&code.as_str()),
                "unclear answer {status} {body}"
            );
        }
        // Bulk to fill the log's preallocated room too.
        bulk(&client, &server, round, 'z').await?;
    }
    assert!(refused > 0, "nothing was refused on a full disk");
    let health = client.get(server.url("/healthz")).send().await?;
    assert_eq!(health.status(), 200, "the server stopped serving");
    std::fs::remove_file(&filler)?;
    // Space is back: the same objects take writes again, without a restart.
    for o in objects {
        let mut ok = false;
        for _ in 0..100 {
            let (status, _) = increment(&client, &server, o).await?;
            if status == 200 {
                *acked.get_mut(o).expect("listed") += 1;
                ok = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(ok, "{o} never accepted writes again");
        let (status, body) = call(&client, &server, "counter", o, "get", Value::Null).await?;
        assert_eq!((status, body), (200, json!(acked[o])), "{o} after recovery");
    }
    // Many more writes: the log keeps sealing and recycling segments.
    for i in 0..300 {
        assert_eq!(
            bulk(&client, &server, i, 'y').await?,
            200,
            "write {i} after recovery"
        );
    }
    server.kill9().await?;
    let server = ServerProcess::start(&data, &[]).await?;
    for o in objects {
        let (status, body) = call(&client, &server, "counter", o, "get", Value::Null).await?;
        assert_eq!((status, body), (200, json!(acked[o])), "{o} after kill -9");
    }
    server.terminate().await?;
    drop(disk);
    Ok(())
}

/// A SIGTERM while the disk is full (writes refused, a Yjs socket and a
/// room open) still stops the server within its drain timeout; once space
/// is back, a restart serves every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_on_a_full_disk_stops_within_the_drain_timeout() -> anyhow::Result<()> {
    let Some((disk, data)) = SmallDisk::for_test(32, "the full-disk stop test") else {
        return Ok(());
    };
    let flags = ["--drain-timeout", "3s"];
    let server = ServerProcess::start(&data, &flags).await?;
    let client = http();
    let mut acked = 0i64;
    for _ in 0..5 {
        assert_eq!(increment(&client, &server, "c").await?.0, 200);
        acked += 1;
    }
    let mut doc = roost_tests::yclient::YClient::new();
    doc.connect(&server.ws_url("/v1/yjs/full")).await?;
    let filler = fill(disk.dir.path())?;
    let mut refused = 0;
    for i in 0..40 {
        if increment(&client, &server, "c").await?.0 == 200 {
            acked += 1;
        } else {
            refused += 1;
        }
        doc.insert(0, "x").await?;
        bulk(&client, &server, i, 'z').await?;
    }
    assert!(refused > 0, "nothing was refused on a full disk");
    let stopping = std::time::Instant::now();
    server.terminate().await?;
    let took = stopping.elapsed();
    eprintln!("stopped {took:?} after SIGTERM on a full disk");
    assert!(
        took < std::time::Duration::from_secs(5),
        "a full disk held the stop for {took:?} (drain timeout 3 s)"
    );
    std::fs::remove_file(&filler)?;
    let server = ServerProcess::start(&data, &flags).await?;
    let (status, body) = call(&client, &server, "counter", "c", "get", Value::Null).await?;
    assert_eq!((status, body), (200, json!(acked)), "after the restart");
    server.terminate().await?;
    drop(disk);
    Ok(())
}

/// An object that cannot get its file because the disk is full is refused
/// as the full disk it is — 507 `insufficient_storage`, not 500
/// `object_broken` — and is created once there is room, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_object_on_a_full_disk_answers_507_and_starts_once_there_is_room(
) -> anyhow::Result<()> {
    let Some((disk, data)) = SmallDisk::for_test(16, "the new-object full-disk test") else {
        return Ok(());
    };
    let server = ServerProcess::start(&data, &[]).await?;
    let client = http();
    assert_eq!(increment(&client, &server, "old").await?.0, 200);
    let filler = fill(disk.dir.path())?;
    for name in ["fresh-1", "fresh-2"] {
        let (status, body) = increment(&client, &server, name).await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (507, Some("insufficient_storage")),
            "a new object on a full disk: {body}"
        );
    }
    std::fs::remove_file(&filler)?;
    let (status, body) = increment(&client, &server, "fresh-1").await?;
    assert_eq!((status, body), (200, json!(1)), "once there is room");
    server.terminate().await?;
    drop(disk);
    Ok(())
}

/// Out of file descriptors (a low `ulimit -n`), an object that cannot open
/// its file answers 503 `overloaded` (try again), not 500 `object_broken`;
/// once descriptors are free again the same objects serve, each write
/// applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_objects_answer_503_and_serve_once_some_are_free(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &[]).await?;
    let client = http();
    assert_eq!(increment(&client, &server, "warm").await?.0, 200);
    let open_fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid))?.count();
    // The soft limit only, a little above what is open: raised back below.
    let limit = |soft: usize| {
        std::process::Command::new("prlimit")
            .arg(format!("--pid={}", server.pid))
            .arg(format!("--nofile={soft}:"))
            .status()
            .is_ok_and(|s| s.success())
    };
    if !limit(open_fds + 12) {
        eprintln!("SKIPPED: prlimit cannot lower the server's open-file limit here");
        server.terminate().await?;
        return Ok(());
    }
    let mut refused = Vec::new();
    let mut acked = std::collections::HashMap::new();
    for i in 0..40 {
        let name = format!("o{i}");
        let (status, body) = increment(&client, &server, &name).await?;
        match status {
            200 => {
                acked.insert(name, 1i64);
            }
            _ => {
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (503, Some("overloaded")),
                    "{name} without a file descriptor: {body}"
                );
                refused.push(name);
            }
        }
    }
    assert!(!refused.is_empty(), "the limit refused no object");
    assert!(limit(4096), "cannot raise the limit back");
    for name in &refused {
        let (status, body) = increment(&client, &server, name).await?;
        assert_eq!(
            (status, body),
            (200, json!(1)),
            "{name} once descriptors are free"
        );
        acked.insert(name.clone(), 1);
    }
    for (name, n) in &acked {
        let (status, body) = call(&client, &server, "counter", name, "get", Value::Null).await?;
        assert_eq!((status, body), (200, json!(n)), "{name}");
    }
    server.terminate().await?;
    Ok(())
}

/// An object file that cannot take its logged writes at start-up (damaged
/// while the server was down, WAL and all) is set aside alone: the server
/// starts, the other objects serve, that one answers `object_broken`
/// naming the way out, and its writes wait in `<data>/quarantine`; once a
/// good copy of its file is back, a restart replays them into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_object_file_at_start_up_is_set_aside_alone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let flags = [
        "--checkpoint-interval",
        "1h",
        "--admin-token",
        "faults-admin",
    ];
    let client = http();
    let Damaged {
        file,
        wal,
        saved,
        saved_wal,
    } = damage_counter_c(dir.path(), &flags).await?;
    let server = ServerProcess::start(dir.path(), &flags).await?;
    let (status, body) = call(&client, &server, "counter", "d", "get", json!({})).await?;
    assert_eq!((status, &body), (200, &json!(3)), "{body}");
    let (status, body) = call(&client, &server, "counter", "c", "increment", json!({})).await?;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "object_broken", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("quarantine") && message.contains("restart"),
        "{body}"
    );
    let aside = dir.path().join("quarantine");
    assert_eq!(std::fs::read_dir(&aside)?.count(), 1);
    // A backup still works: it leaves the set-aside object out.
    let backup = client
        .post(server.url("/v1/admin/backup"))
        .bearer_auth("faults-admin")
        .send()
        .await?;
    assert_eq!(backup.status(), 200);
    let tar = backup.bytes().await?;
    let holds = |name: &str| {
        // Its file's name in the archive (the catalog holds every id).
        let file = format!("{}.sqlite", roost_object_id(name));
        tar.windows(file.len()).any(|w| w == file.as_bytes())
    };
    assert!(holds("d") && !holds("c"));
    // Survives another crash the same way.
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &flags).await?;
    let (status, _) = call(&client, &server, "counter", "c", "get", json!({})).await?;
    assert_eq!(status, 500);
    server.terminate().await?;
    // The good copy back in place: the kept writes replay into it.
    std::fs::copy(&saved, &file)?;
    match saved_wal {
        Some(bytes) => std::fs::write(&wal, bytes)?,
        None => {
            let _ = std::fs::remove_file(&wal);
        }
    }
    let server = ServerProcess::start(dir.path(), &flags).await?;
    let (status, body) = call(&client, &server, "counter", "c", "get", json!({})).await?;
    assert_eq!((status, &body), (200, &json!(5)), "{body}");
    assert_eq!(
        std::fs::read_dir(&aside)?.count(),
        0,
        "quarantine file left behind"
    );
    server.terminate().await?;
    Ok(())
}

/// Counter `c` (5 increments) and `d` (3), then a kill -9 and `c`'s file
/// and WAL overwritten with garbage, as damage while the server was down.
async fn damage_counter_c(dir: &std::path::Path, flags: &[&str]) -> anyhow::Result<Damaged> {
    let server = ServerProcess::start(dir, flags).await?;
    let client = http();
    for (name, n) in [("c", 5), ("d", 3)] {
        for _ in 0..n {
            let (status, body) =
                call(&client, &server, "counter", name, "increment", json!({})).await?;
            assert_eq!(status, 200, "{body}");
        }
    }
    server.kill9().await?;
    let file = roost_tests::walk(&dir.join("objects"))
        .into_iter()
        .find(|p| {
            p.extension().is_some_and(|e| e == "sqlite")
                && p.to_string_lossy().contains(&roost_object_id("c"))
        })
        .ok_or_else(|| anyhow::anyhow!("no object file for c"))?;
    let wal = std::path::PathBuf::from(format!("{}-wal", file.display()));
    // A good copy, as a backup would hold (its writes up to the kill, or
    // fewer: the log replays what it lacks).
    let saved = dir.join("saved.sqlite");
    std::fs::copy(&file, &saved)?;
    let saved_wal = wal.exists().then(|| std::fs::read(&wal)).transpose()?;
    std::fs::write(&file, vec![0x5a; 8192])?;
    if wal.exists() {
        std::fs::write(&wal, vec![0x5a; 8192])?;
    }
    Ok(Damaged {
        file,
        wal,
        saved,
        saved_wal,
    })
}

/// `c`'s damaged file and WAL, and good copies of both from before.
struct Damaged {
    file: std::path::PathBuf,
    wal: std::path::PathBuf,
    saved: std::path::PathBuf,
    saved_wal: Option<Vec<u8>>,
}

/// A set-aside object can be given up: the admin API deletes it, its
/// quarantined writes with it, and a new object of that name starts from
/// nothing and stays so through a kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_aside_object_can_be_deleted_through_the_admin_api() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let flags = [
        "--checkpoint-interval",
        "1h",
        "--admin-token",
        "faults-admin",
    ];
    let client = http();
    damage_counter_c(dir.path(), &flags).await?;
    let server = ServerProcess::start(dir.path(), &flags).await?;
    let (status, _) = call(&client, &server, "counter", "c", "get", json!({})).await?;
    assert_eq!(status, 500);
    let deleted = client
        .delete(server.url("/v1/admin/objects/counter/c"))
        .bearer_auth("faults-admin")
        .send()
        .await?;
    assert_eq!(deleted.status(), 200, "{}", deleted.text().await?);
    assert_eq!(std::fs::read_dir(dir.path().join("quarantine"))?.count(), 0);
    let (status, body) = call(&client, &server, "counter", "c", "increment", json!({})).await?;
    assert_eq!((status, &body), (200, &json!(1)), "{body}");
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &flags).await?;
    let (status, body) = call(&client, &server, "counter", "c", "get", json!({})).await?;
    assert_eq!((status, &body), (200, &json!(1)), "{body}");
    let (status, body) = call(&client, &server, "counter", "d", "get", json!({})).await?;
    assert_eq!((status, &body), (200, &json!(3)), "{body}");
    server.terminate().await?;
    Ok(())
}

/// The hex id of `counter/{name}` (the first 16 bytes of SHA-256 of the
/// class, a zero byte and the name), as file names carry it.
fn roost_object_id(name: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"counter\0");
    h.update(name.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A commit log write that fails (here: past the process's file size
/// limit, EFBIG, as a failing disk would fail it) breaks the log: every
/// later write is refused, `/readyz` and `/healthz` answer 503 so the
/// orchestrator takes the node out and restarts it, and the restart keeps
/// every acknowledged update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_commit_log_fails_the_probes_and_a_restart_loses_nothing() -> anyhow::Result<()> {
    use roost_tests::yclient::YClient;
    let dir = tempfile::tempdir()?;
    // The first segment is 4 MiB of room: no seal until an hour passed.
    let flags = ["--checkpoint-interval", "1h"];
    let server = ServerProcess::start_with_file_limit(dir.path(), 5 << 20, &flags).await?;
    let client = http();
    assert_eq!(roost_tests::status_of(&server, "/readyz").await?, 200);
    let text = "y".repeat(200_000);
    let (mut acked, mut refused) = (Vec::new(), 0);
    for i in 0..40 {
        let doc = format!("big-{i}");
        let update = YClient::new().edit(0, &text);
        let status = client
            .post(server.url(&format!("/v1/yjs/{doc}/update")))
            .body(update)
            .send()
            .await?
            .status()
            .as_u16();
        match status {
            200 => acked.push(doc),
            500 => refused += 1,
            other => anyhow::bail!("update {i}: unexpected status {other}"),
        }
    }
    assert!(
        acked.len() >= 15 && refused >= 10,
        "{} acknowledged, {refused} refused",
        acked.len()
    );
    println!("{} acknowledged, {refused} refused", acked.len());
    assert_eq!(roost_tests::status_of(&server, "/readyz").await?, 503);
    assert_eq!(roost_tests::status_of(&server, "/healthz").await?, 503);
    let body: Value = client
        .get(server.url("/readyz"))
        .send()
        .await?
        .json()
        .await?;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("commit log is broken"), "{body}");
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    assert_eq!(roost_tests::status_of(&server, "/readyz").await?, 200);
    for doc in &acked {
        let stored = roost_tests::stored_text(&server, doc).await?;
        assert_eq!(
            stored.len(),
            text.len(),
            "{doc} lost its acknowledged update"
        );
    }
    server.terminate().await?;
    Ok(())
}
