//! Objects that were never written leave nothing behind: a read of an
//! unused name answers as an empty object, and once the object is evicted
//! it has no file under `<data>/objects`, no catalog row and no place
//! under `--max-objects`. An object written even once is kept, through
//! kill -9. Unwritten objects live at a kill -9 stay as they are and go at
//! their next use (`server/src/runtime/unwritten.rs`).

use std::path::Path;
use std::time::Duration;

use roost_tests::ws::{Client, Frame};
use roost_tests::yclient::YClient;
use roost_tests::{call, http, metric, roost_bin, segment, walk, ServerProcess};
use serde_json::{json, Value};

const SECRET: &str = "unwritten-secret-0123456789";
const ADMIN: &str = "unwritten-admin";

/// Object files (`*.sqlite`) under `<data>/objects`.
fn object_files(data: &Path) -> usize {
    walk(&data.join("objects"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .count()
}

/// Polls until `<data>/objects` holds `want` object files (up to 30 s).
async fn wait_files(data: &Path, want: usize) -> anyhow::Result<()> {
    for _ in 0..1500 {
        if object_files(data) == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = walk(&data.join("objects")).into_iter().take(3).collect();
    anyhow::bail!(
        "{} object files, never {want} (e.g. {left:?})",
        object_files(data)
    )
}

/// `class/name` of every object the admin list shows.
async fn listed(server: &ServerProcess) -> anyhow::Result<Vec<String>> {
    let body: Value = http()
        .get(server.url("/v1/admin/objects?limit=1000"))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .json()
        .await?;
    let objects = body["objects"].as_array().cloned().unwrap_or_default();
    Ok(objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["class"].as_str().unwrap_or("?"),
                o["name"].as_str().unwrap_or("?")
            )
        })
        .collect())
}

/// `roost token` for these objects with this permission.
fn mint(obj: &[&str], perm: &str) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new(roost_bin());
    cmd.args(["token", "--perm", perm, "--ttl", "1h", "--secret", SECRET]);
    for o in obj {
        cmd.args(["--obj", o]);
    }
    let out = cmd.output()?;
    anyhow::ensure!(out.status.success(), "roost token failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// `POST …/call/{method}` with a bearer token; (status, body).
async fn call_with(
    server: &ServerProcess,
    token: &str,
    class: &str,
    name: &str,
    method: &str,
    args: Value,
) -> anyhow::Result<(u16, Value)> {
    let url = server.url(&format!(
        "/v1/objects/{class}/{}/call/{method}",
        segment(name)
    ));
    let resp = http()
        .post(url)
        .bearer_auth(token)
        .json(&args)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// Reads unused names in every way a client can — an HTTP call, a Yjs
/// state read, an object socket (a call on it, then a close), a room
/// socket (its constructor migrates), a read-only Yjs sync — and waits for
/// eviction: no file, no catalog row is left. A write is kept, and after a
/// kill -9 it is the only object there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_unused_names_leave_nothing_and_a_write_survives_kill9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path();
    let args = [
        "--idle-timeout",
        "200ms",
        "--auth-secret",
        SECRET,
        "--admin-token",
        ADMIN,
    ];
    let read = mint(&["counter/*", "ydoc/*", "room/*"], "read")?;
    let write = mint(&["counter/kept"], "write")?;
    let server = ServerProcess::start(data, &args).await?;
    let mut reads = 0;
    for i in 0..4 {
        let (status, body) = call_with(
            &server,
            &read,
            "counter",
            &format!("r{i}"),
            "get",
            json!(null),
        )
        .await?;
        assert_eq!(
            (status, body),
            (200, json!(0)),
            "an unused counter reads as 0"
        );
        let state = http()
            .get(server.url(&format!("/v1/yjs/d{i}/state")))
            .bearer_auth(&read)
            .send()
            .await?;
        assert_eq!(state.status(), 200);
        let text = roost_tests::yclient::text_of_update(&state.bytes().await?)?;
        assert_eq!(text, "", "an unused document is empty");
        reads += 2;
    }
    for i in 0..3 {
        let url = server.ws_url(&format!("/v1/objects/counter/s{i}/ws?token={read}"));
        let mut socket = Client::connect(&url).await?;
        assert_eq!(socket.call("get", json!(null)).await?["ok"], json!(0));
        socket.ws.close(None).await?;
        while !matches!(
            socket.next(Duration::from_secs(5)).await?,
            Frame::Closed(..)
        ) {}
        let url = server.ws_url(&format!("/v1/objects/room/w{i}/ws?token={read}"));
        let mut socket = Client::connect(&url).await?;
        assert_eq!(socket.event("history").await?["messages"], json!([]));
        socket.ws.close(None).await?;
        while !matches!(
            socket.next(Duration::from_secs(5)).await?,
            Frame::Closed(..)
        ) {}
        let mut doc = YClient::new();
        doc.connect(&server.ws_url(&format!("/v1/yjs/y{i}?token={read}")))
            .await?;
        assert_eq!(doc.text(), "");
        doc.disconnect();
        reads += 3;
    }
    wait_files(data, 0).await?;
    let client = http();
    let mut removed = 0.0;
    for _ in 0..500 {
        removed = metric(&client, &server, "roost_unwritten_objects_removed_total").await?;
        if removed == f64::from(reads) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        removed,
        f64::from(reads),
        "each read made an object, then removed it"
    );
    assert_eq!(listed(&server).await?, Vec::<String>::new());
    assert_eq!(metric(&client, &server, "roost_objects").await?, 0.0);
    let gone = client
        .get(server.url("/v1/admin/objects/counter/r0"))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    assert_eq!(gone.status(), 404, "the admin API finds no object");

    let (status, body) = call_with(
        &server,
        &write,
        "counter",
        "kept",
        "increment",
        json!({"by": 7}),
    )
    .await?;
    assert_eq!((status, body), (200, json!(7)));
    roost_tests::wait_metric(&server, "roost_live_objects", 0.0).await?;
    assert_eq!(object_files(data), 1, "the written object is kept");
    assert_eq!(listed(&server).await?, vec!["counter/kept".to_owned()]);
    assert_eq!(metric(&client, &server, "roost_objects").await?, 1.0);
    server.kill9().await?;

    let server = ServerProcess::start(data, &args).await?;
    assert_eq!(object_files(data), 1);
    assert_eq!(metric(&client, &server, "roost_objects").await?, 1.0);
    assert_eq!(listed(&server).await?, vec!["counter/kept".to_owned()]);
    let (status, body) = call_with(&server, &read, "counter", "kept", "get", json!(null)).await?;
    assert_eq!((status, body), (200, json!(7)));
    let (status, body) = call_with(&server, &read, "counter", "r0", "get", json!(null)).await?;
    assert_eq!(
        (status, body),
        (200, json!(0)),
        "a removed name reads as before"
    );
    server.terminate().await?;
    assert_eq!(
        object_files(data),
        1,
        "a clean stop removes the unwritten ones too"
    );
    Ok(())
}

/// Reads of unused names, each evicted before the next, never use up
/// `--max-objects`: a later write to a new name succeeds. Written objects
/// still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_use_up_max_objects() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path();
    let args = ["--max-objects", "5", "--idle-timeout", "100ms"];
    let server = ServerProcess::start(data, &args).await?;
    let client = http();
    for i in 0..50 {
        let (status, body) = call(
            &client,
            &server,
            "counter",
            &format!("n{i}"),
            "get",
            json!(null),
        )
        .await?;
        assert_eq!((status, body), (200, json!(0)), "read {i}");
        wait_files(data, 0).await?;
    }
    for i in 0..5 {
        let (status, body) = call(
            &client,
            &server,
            "counter",
            &format!("w{i}"),
            "increment",
            json!({"by": 1}),
        )
        .await?;
        assert_eq!((status, body), (200, json!(1)), "write {i}");
    }
    let (status, body) = call(&client, &server, "counter", "n0", "get", json!(null)).await?;
    assert_eq!(status, 507, "five written objects fill the cap: {body}");
    server.terminate().await?;
    Ok(())
}

/// A kill -9 while objects of new names are live, then while they are
/// being read and removed by the hundred: each restart succeeds, every
/// acknowledged write is there, and the unwritten objects left behind go
/// at their next use. One left without its catalog row (a kill -9 between
/// a removal's two steps) is listed again when it starts, and so once
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill9_amid_reads_of_new_names_loses_no_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path();
    let client = http();
    let get = |server: &ServerProcess, name: String| {
        let client = client.clone();
        let url = server.url(&format!("/v1/objects/counter/{name}/call/get"));
        async move {
            let resp = client.post(url).json(&json!(null)).send().await?;
            Ok::<_, anyhow::Error>((resp.status().as_u16(), resp.json::<Value>().await?))
        }
    };
    // Unwritten objects live at a kill -9 stay as they were.
    let server =
        ServerProcess::start(data, &["--idle-timeout", "60s", "--admin-token", ADMIN]).await?;
    for i in 0..4 {
        let (status, _) = call(
            &client,
            &server,
            "counter",
            &format!("w{i}"),
            "increment",
            json!({"by": i + 1}),
        )
        .await?;
        assert_eq!(status, 200);
    }
    for i in 0..10 {
        assert_eq!(get(&server, format!("l{i}")).await?, (200, json!(0)));
    }
    server.kill9().await?;
    // As a kill -9 between a removal's two steps leaves one: the row
    // gone, the file still there.
    rusqlite::Connection::open(data.join("catalog.sqlite"))?
        .execute("DELETE FROM objects WHERE name = 'l0'", [])?;
    let args = ["--idle-timeout", "50ms", "--admin-token", ADMIN];
    let server = ServerProcess::start(data, &args).await?;
    assert_eq!(object_files(data), 14, "the leftovers are still there");
    let listed_now = listed(&server).await?;
    assert_eq!(listed_now.len(), 13, "{listed_now:?}");
    // Written now, the one without a row is listed again.
    let (status, body) = call(
        &client,
        &server,
        "counter",
        "l0",
        "increment",
        json!({"by": 5}),
    )
    .await?;
    assert_eq!((status, body), (200, json!(5)));
    for i in 1..10 {
        assert_eq!(get(&server, format!("l{i}")).await?, (200, json!(0)));
    }
    wait_files(data, 5).await?;
    let mut want: Vec<String> = (0..4).map(|i| format!("counter/w{i}")).collect();
    want.insert(0, "counter/l0".into());
    assert_eq!(listed(&server).await?, want);

    // Now a kill -9 amid reads of new names and their removals, and
    // increments of a written counter.
    let mut readers = Vec::new();
    for task in 0..3 {
        let client = client.clone();
        let base = server.base.clone();
        readers.push(tokio::spawn(async move {
            let mut names = Vec::new();
            for n in 0.. {
                let name = format!("b{task}-{n}");
                let url = format!("{base}/v1/objects/counter/{name}/call/get");
                names.push(name);
                if client.post(url).json(&json!(null)).send().await.is_err() {
                    break;
                }
            }
            names
        }));
    }
    let writer = {
        let client = client.clone();
        let url = server.url("/v1/objects/counter/w0/call/increment");
        tokio::spawn(async move {
            let (mut sent, mut acked) = (0u64, 0u64);
            loop {
                sent += 1;
                match client.post(&url).json(&json!({"by": 1})).send().await {
                    Ok(r) if r.status() == 200 => acked += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            (sent, acked)
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9().await?;
    let (sent, acked) = writer.await?;
    let mut names = Vec::new();
    for r in readers {
        names.extend(r.await?);
    }
    assert!(
        names.len() > 20,
        "only {} reads before the kill",
        names.len()
    );

    let server = ServerProcess::start(data, &args).await?;
    let (status, body) = get(&server, "w0".into()).await?;
    // w0 held 1 before; each acknowledged increment is kept, and at most
    // every one sent.
    let added = body.as_u64().unwrap_or(0).saturating_sub(1);
    assert_eq!(status, 200);
    assert!(
        acked <= added && added <= sent,
        "w0 gained {added}: {acked} increments acknowledged, {sent} sent"
    );
    for i in 1..4 {
        assert_eq!(get(&server, format!("w{i}")).await?, (200, json!(i + 1)));
    }
    assert_eq!(get(&server, "l0".into()).await?, (200, json!(5)));
    for name in names {
        assert_eq!(get(&server, name.clone()).await?, (200, json!(0)), "{name}");
    }
    wait_files(data, 5).await?;
    assert_eq!(listed(&server).await?, want);
    server.terminate().await?;
    Ok(())
}

/// A socket open on an unwritten object keeps it through its eviction
/// (hibernation): the file stays, the socket keeps working; once it
/// closes, the object goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_socket_keeps_its_unwritten_object_until_it_closes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path();
    let server = ServerProcess::start(data, &["--idle-timeout", "200ms"]).await?;
    let url = server.ws_url("/v1/objects/room/quiet/ws?name=ann");
    let mut socket = Client::connect(&url).await?;
    assert_eq!(socket.event("history").await?["messages"], json!([]));
    roost_tests::wait_metric(&server, "roost_evictions_total", 1.0).await?;
    roost_tests::wait_metric(&server, "roost_live_objects", 0.0).await?;
    assert_eq!(object_files(data), 1, "evicted with its socket open: kept");
    assert_eq!(socket.call("who", json!(null)).await?["ok"], json!(["ann"]));
    socket.ws.close(None).await?;
    while !matches!(
        socket.next(Duration::from_secs(5)).await?,
        Frame::Closed(..)
    ) {}
    wait_files(data, 0).await?;
    server.terminate().await?;
    Ok(())
}

/// A name deleted through the admin API (its deletion mark still in the
/// commit log) and used again, with a kill -9 while that use was creating
/// the new object's file (SQLite had made the file, not yet its tables):
/// the restart has nothing of the name to replay and must not set the
/// file aside as damaged; the name reads as new and its file goes once
/// evicted. (Found by churning reads, deletions and kill -9 on the same
/// names: the object answered `object_broken` for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill9_while_a_deleted_name_is_created_again_breaks_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path();
    let args = [
        "--admin-token",
        ADMIN,
        "--checkpoint-interval",
        "1h",
        "--idle-timeout",
        "200ms",
    ];
    let server = ServerProcess::start(data, &args).await?;
    let client = http();
    let (status, _) = call(
        &client,
        &server,
        "counter",
        "again",
        "increment",
        json!({"by": 3}),
    )
    .await?;
    assert_eq!(status, 200);
    let file = walk(&data.join("objects"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .ok_or_else(|| anyhow::anyhow!("no object file"))?;
    let deleted = client
        .delete(server.url("/v1/admin/objects/counter/again"))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    assert_eq!(deleted.status(), 200);
    server.kill9().await?;
    // What a kill -9 leaves right after SQLite created the new file.
    std::fs::File::create(&file)?;

    let server = ServerProcess::start(data, &args).await?;
    let (status, body) = call(&client, &server, "counter", "again", "get", json!(null)).await?;
    assert_eq!((status, body), (200, json!(0)), "the name reads as new");
    wait_files(data, 0).await?;
    let aside = walk(&data.join("quarantine"));
    assert!(aside.is_empty(), "nothing set aside: {aside:?}");
    server.terminate().await?;
    Ok(())
}
