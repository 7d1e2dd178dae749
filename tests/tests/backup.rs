//! Backup and restore while running: `POST /v1/admin/backup` under load,
//! `roost restore` into a new data directory, and every write acknowledged
//! before the backup began is there.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use roost_tests::{call, http, roost_bin, side_files, side_files_gone, ServerProcess};
use serde_json::json;

const ADMIN: &str = "backup-admin-token";
const WRITERS: usize = 4;
/// Objects that exist only to make the backup take a while.
const IDLE_OBJECTS: usize = 150;

async fn restore(from: &std::path::Path, data: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new(roost_bin())
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--data")
        .arg(data)
        .output()
        .await
        .expect("run roost restore")
}

/// `roost restore` that must succeed; what it printed.
async fn restore_ok(from: &std::path::Path, data: &std::path::Path) -> String {
    let out = restore(from, data).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn backup(server: &ServerProcess, token: &str) -> anyhow::Result<reqwest::Response> {
    Ok(http()
        .post(server.url("/v1/admin/backup"))
        .bearer_auth(token)
        .send()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_holds_every_write_acknowledged_before_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let live = dir.path().join("live");
    // Acknowledged batches wait in an open transaction (durable in the
    // commit log, not yet in the object's file) for up to 30 s: the backup
    // must have each object commit them before it copies the file.
    let args = ["--admin-token", ADMIN, "--file-commit-interval", "30s"];
    let server = ServerProcess::start(&live, &args).await?;
    let client = http();
    for i in 0..IDLE_OBJECTS {
        let (status, _) = call(
            &client,
            &server,
            "counter",
            &format!("idle-{i}"),
            "increment",
            json!({"by": 1}),
        )
        .await?;
        assert_eq!(status, 200);
    }
    // Writers increment their own counter as fast as they can and publish
    // the last value acknowledged to them.
    let acked: Arc<Vec<AtomicI64>> = Arc::new((0..WRITERS).map(|_| AtomicI64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (acked, stop, client) = (acked.clone(), stop.clone(), client.clone());
        let url = server.url(&format!("/v1/objects/counter/busy-{w}/call/increment"));
        writers.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let resp = client.post(&url).json(&json!({"by": 1})).send().await;
                if let Ok(resp) = resp {
                    if let Ok(v) = resp.json::<serde_json::Value>().await {
                        if let Some(v) = v.as_i64() {
                            acked[w].fetch_max(v, Ordering::SeqCst);
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    // A wrong token gets no backup.
    assert_eq!(backup(&server, "wrong").await?.status(), 401);
    let before: Vec<i64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let resp = backup(&server, ADMIN).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let archive = resp.bytes().await?;
    let during: Vec<i64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    assert!(
        before.iter().zip(&during).all(|(b, d)| d > b && *b > 0),
        "the writers kept writing during the backup: {before:?} → {during:?}"
    );
    server.kill9().await?;
    let file = dir.path().join("backup.tar");
    std::fs::write(&file, &archive)?;

    // Restore into a new directory (relative to where `roost restore` runs).
    let restored = dir.path().join("restored");
    let said = restore_ok(&file, &restored).await;
    let objects = IDLE_OBJECTS + WRITERS;
    assert!(
        said.contains(&format!("restored {objects} objects")),
        "{said}"
    );

    let server = ServerProcess::start(&restored, &[]).await?;
    for (w, (b, d)) in before.iter().zip(&during).enumerate() {
        let (status, v) = call(
            &client,
            &server,
            "counter",
            &format!("busy-{w}"),
            "get",
            json!(null),
        )
        .await?;
        assert_eq!(status, 200);
        let v = v.as_i64().unwrap_or(-1);
        assert!(
            v >= *b,
            "busy-{w}: {b} acknowledged before the backup, {v} restored"
        );
        assert!(
            v <= *d + 1,
            "busy-{w}: {v} restored, only {d} ever acknowledged"
        );
    }
    for i in [0, IDLE_OBJECTS / 2, IDLE_OBJECTS - 1] {
        let (_, v) = call(
            &client,
            &server,
            "counter",
            &format!("idle-{i}"),
            "get",
            json!(null),
        )
        .await?;
        assert_eq!(v, json!(1));
    }
    // The restored server takes writes.
    let (_, v) = call(
        &client,
        &server,
        "counter",
        "busy-0",
        "increment",
        json!({"by": 1}),
    )
    .await?;
    assert!(v.as_i64() > Some(before[0]));
    server.terminate().await?;

    // A restore never overwrites data and never half-restores.
    let out = restore(&file, &restored).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &archive[..archive.len() / 2])?;
    let half = dir.path().join("half");
    let out = restore(&cut, &half).await;
    assert!(!out.status.success(), "a truncated archive was restored");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("incomplete") || err.contains("not a readable backup"),
        "{err}"
    );
    assert!(!half.exists(), "a failed restore left {}", half.display());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    Ok(())
}

/// `<data>/objects/<class>/<xx>/<id>.sqlite` of an object (the id: the first
/// 128 bits of SHA-256(class, 0, name)).
fn object_file(data: &std::path::Path, class: &str, name: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(class.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    let hex: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    data.join("objects")
        .join(class)
        .join(&hex[..2])
        .join(format!("{hex}.sqlite"))
}

/// A kill -9 while an object's file was being created leaves a hot rollback
/// journal beside it (the file is not in WAL mode yet). Read-only
/// connections cannot open such a file, so every backup failed on it until
/// that object ran again; the next start rolls it back, and the backup and
/// its restore hold every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_creation_a_crash_cut_short_does_not_fail_backups() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let live = dir.path().join("live");
    let args = ["--admin-token", ADMIN];
    let server = ServerProcess::start(&live, &args).await?;
    let client = http();
    let (status, _) = call(
        &client,
        &server,
        "counter",
        "kept",
        "increment",
        json!({"by": 5}),
    )
    .await?;
    assert_eq!(status, 200);
    server.kill9().await?;
    // The half-made file: a write transaction in flight, its journal on
    // disk, copied as a kill -9 would leave them (no lock held).
    let half = object_file(&live, "counter", "half");
    std::fs::create_dir_all(half.parent().unwrap_or(&live))?;
    let scratch = dir.path().join("scratch.sqlite");
    let conn = rusqlite::Connection::open(&scratch)?;
    conn.execute_batch(
        "PRAGMA page_size=2048; PRAGMA journal_mode=DELETE; CREATE TABLE seed(x);
         BEGIN; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
    )?;
    let mut journal = scratch.clone().into_os_string();
    journal.push("-journal");
    let mut half_journal = half.clone().into_os_string();
    half_journal.push("-journal");
    std::fs::copy(&scratch, &half)?;
    std::fs::copy(&journal, &half_journal)?;
    drop(conn);
    // As at a commit's end, its one page synced: the header's magic and
    // record count, which SQLite writes last (zero until then).
    {
        use std::io::{Seek, Write};
        let mut j = std::fs::OpenOptions::new()
            .write(true)
            .open(&half_journal)?;
        j.seek(std::io::SeekFrom::Start(0))?;
        j.write_all(&[0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7, 0, 0, 0, 1])?;
    }

    let server = ServerProcess::start(&live, &args).await?;
    let response = backup(&server, ADMIN).await?;
    assert_eq!(response.status(), 200);
    let archive = response.bytes().await?;
    let file = dir.path().join("backup.tar");
    std::fs::write(&file, &archive)?;
    let (status, v) = call(
        &client,
        &server,
        "counter",
        "half",
        "increment",
        json!({"by": 2}),
    )
    .await?;
    assert_eq!(
        (status, v),
        (200, json!(2)),
        "the half-made object starts afresh"
    );
    server.terminate().await?;
    let restored = dir.path().join("restored");
    let said = restore_ok(&file, &restored).await;
    assert!(said.contains("restored 2 objects"), "{said}");
    let server = ServerProcess::start(&restored, &[]).await?;
    let (_, v) = call(&client, &server, "counter", "kept", "get", json!(null)).await?;
    assert_eq!(v, json!(5));
    server.terminate().await?;
    Ok(())
}

/// A backup copies each object on a read-only connection of its own, which
/// makes a WAL and a WAL index beside a file that had none: they are
/// tidied afterwards like an idle object's, not left beside every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_leaves_no_wal_beside_idle_objects() -> anyhow::Result<()> {
    const OBJECTS: usize = 30;
    let dir = tempfile::tempdir()?;
    let args = [
        "--admin-token",
        ADMIN,
        "--idle-timeout",
        "300ms",
        "--tidy-idle-after",
        "300ms",
    ];
    let server = ServerProcess::start(dir.path(), &args).await?;
    let client = http();
    for i in 0..OBJECTS {
        let name = format!("c{i}");
        let (status, _) = call(&client, &server, "counter", &name, "increment", json!({})).await?;
        assert_eq!(status, 200);
    }
    let data = dir.path();
    assert!(
        side_files_gone(data).await,
        "{} WAL files before the backup",
        side_files(data)
    );
    let response = backup(&server, ADMIN).await?;
    assert_eq!(response.status(), 200);
    assert!(!response.bytes().await?.is_empty());
    assert!(
        side_files_gone(data).await,
        "{} WAL and index files left beside {OBJECTS} idle objects after the backup",
        side_files(data)
    );
    server.terminate().await?;
    Ok(())
}
