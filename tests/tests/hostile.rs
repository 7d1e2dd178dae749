//! Hostile Yjs input against the real binary: updates nested deep enough to
//! overflow a recursive decoder, updates that decode but cannot be applied,
//! truncated frames, and read paths that must never fail a batch. Each test
//! is named after the invariant it defends.

use std::time::Duration;

use roost_tests::yclient::YClient;
use roost_tests::{http, metric, roost_bin, ServerProcess};
use yrs::sync::protocol::{Message as YMessage, SyncMessage};
use yrs::updates::encoder::Encode;

/// The y-websocket frame carrying one update.
fn update_frame(update: &[u8]) -> Vec<u8> {
    YMessage::Sync(SyncMessage::Update(update.to_vec())).encode_v1()
}

/// A v1 update: client 1 puts one Any value into the root array `n`
/// whose content is `depth` nested one-element arrays around a string
/// (`0x75 0x01` repeated, then `0x77 0x01 'x'`).
fn nested_any_update(depth: usize) -> Vec<u8> {
    let mut u = vec![1, 1, 1, 0, 8, 1, 1, b'n', 1];
    for _ in 0..depth {
        u.extend_from_slice(&[0x75, 0x01]);
    }
    u.extend_from_slice(&[0x77, 0x01, b'x', 0]);
    u
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Client 1 inserts "abc" into the root text `t`.
const ABC: &str = "01010100040101740361626300";
/// Client 2 inserts "x" into a parent given by id 1:0 — the string item
/// above, which is not a type: it decodes, but cannot be applied.
const CHILD_OF_A_STRING: &str = "0101020004000100017800";

async fn healthy(server: &ServerProcess) -> bool {
    matches!(
        http().get(server.url("/healthz")).send().await,
        Ok(r) if r.status() == 200
    )
}

async fn starts(server: &ServerProcess) -> anyhow::Result<f64> {
    metric(&http(), server, "roost_object_starts_total").await
}

/// Invariant: client bytes are bounded in depth before anything recursive
/// decodes them; an update nested too deep is refused (400 / close 1008)
/// and the process stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_any_update_is_refused_not_fatal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    let mut writer = YClient::new();
    writer.connect(&server.ws_url("/v1/yjs/deep")).await?;
    writer.insert(0, "kept").await?;
    roost_tests::wait_stored_text(&server, "deep", "kept").await?;

    let deep = nested_any_update(5000);
    assert!(deep.len() < 11_000);
    let resp = client
        .post(server.url("/v1/yjs/deep/update"))
        .body(deep.clone())
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => panic!("the server died on a 10 KB update: {e}"),
    };
    assert_eq!(resp.status(), 400, "HTTP refuses the deep update");
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(healthy(&server).await, "the server is up");

    let mut evil = YClient::new();
    evil.connect(&server.ws_url("/v1/yjs/deep")).await?;
    evil.send_raw(update_frame(&deep)).await?;
    assert_eq!(evil.drain(Duration::from_secs(5)).await?, Some(1008));
    assert!(healthy(&server).await, "the server is up");

    // Nesting within the bound is accepted: the bound is not a ban.
    let ok = nested_any_update(16);
    let resp = client
        .post(server.url("/v1/yjs/deep/update"))
        .body(ok)
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);

    // The honest writer never noticed.
    assert_eq!(writer.drain(Duration::from_millis(200)).await?, None);
    writer.insert(4, "!").await?;
    roost_tests::wait_stored_text(&server, "deep", "kept!").await?;
    server.terminate().await?;
    Ok(())
}

/// Invariant: an update that decodes but cannot be applied is refused for
/// its sender alone (HTTP 400, socket close 1008): the document does not
/// restart, co-batched writers keep their sockets and their edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_cannot_apply_is_refused_for_its_sender_alone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    let url = server.ws_url("/v1/yjs/apply");
    let resp = client
        .post(server.url("/v1/yjs/apply/update"))
        .body(hex(ABC))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let mut writer = YClient::new();
    writer.connect(&url).await?;
    let mut evil = YClient::new();
    evil.connect(&url).await?;
    let before = starts(&server).await?;

    // Over HTTP: a 400 with a JSON error.
    let resp = client
        .post(server.url("/v1/yjs/apply/update"))
        .body(hex(CHILD_OF_A_STRING))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");

    // Over the socket, in the middle of another writer's burst.
    for i in 0..60u32 {
        writer
            .insert(writer.text_len(), &(i % 10).to_string())
            .await?;
        if i == 30 {
            evil.send_raw(update_frame(&hex(CHILD_OF_A_STRING))).await?;
        }
        if i % 5 == 0 {
            assert_eq!(
                writer.drain(Duration::from_millis(1)).await?,
                None,
                "the honest writer's socket was closed"
            );
        }
    }
    let closed = evil.drain(Duration::from_secs(5)).await?;
    assert_eq!(closed, Some(1008), "the sender's socket closes with 1008");
    let want = writer.text();
    roost_tests::wait_stored_text(&server, "apply", &want).await?;
    assert_eq!(
        writer.drain(Duration::from_millis(200)).await?,
        None,
        "the honest writer's socket was closed"
    );
    assert_eq!(
        starts(&server).await?,
        before,
        "the document restarted over a bad update"
    );
    assert!(healthy(&server).await);
    server.terminate().await?;
    Ok(())
}

const SECRET: &str = "hostile-secret-0123456789";

fn mint(obj: &str, perm: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(roost_bin())
        .args(["token", "--perm", perm, "--ttl", "1h", "--secret", SECRET])
        .args(["--obj", obj])
        .output()?;
    anyhow::ensure!(out.status.success(), "roost token failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Invariant: read paths never write, so a history read (`state?at=`) or a
/// read token's `compact` cannot fail a batch: writers batched with them
/// keep their sockets and the document does not restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_never_fail_a_batch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        dir.path(),
        &["--auth-secret", SECRET, "--admin-token", "hostile-admin"],
    )
    .await?;
    let write = mint("ydoc/hist", "write")?;
    let read = mint("ydoc/hist", "read")?;
    let client = http();
    let mut writer = YClient::new();
    writer
        .connect(&server.ws_url(&format!("/v1/yjs/hist?token={write}")))
        .await?;
    writer.insert(0, "start").await?;
    writer.drain(Duration::from_millis(100)).await?;
    let before = starts(&server).await?;

    // A read token's compact is refused without touching the document.
    let resp = client
        .post(server.url("/v1/objects/ydoc/hist/call/compact"))
        .bearer_auth(&read)
        .json(&serde_json::json!({}))
        .send()
        .await?;
    assert_eq!(resp.status(), 403, "{}", resp.text().await?);

    let mut reads = 0;
    let mut writer_closed = None;
    let history = async {
        let url = server.url("/v1/yjs/hist/state?at=2999-01-01T00:00:00Z");
        for _ in 0..150 {
            let r = client.get(&url).bearer_auth(&read).send().await?;
            anyhow::ensure!(r.status() == 200, "history read: {}", r.status());
            reads += 1;
            let r = client
                .post(server.url("/v1/objects/ydoc/hist/call/compact"))
                .bearer_auth(&read)
                .json(&serde_json::json!({}))
                .send()
                .await?;
            anyhow::ensure!(r.status() == 403, "read-token compact: {}", r.status());
        }
        anyhow::Ok(())
    };
    let writes = async {
        for i in 0..300u32 {
            writer
                .insert(writer.text_len(), &(i % 10).to_string())
                .await?;
            if let Some(code) = writer.drain(Duration::from_millis(1)).await? {
                writer_closed = Some(code);
                break;
            }
        }
        anyhow::Ok(())
    };
    let (h, w) = tokio::join!(history, writes);
    h?;
    w?;
    assert_eq!(writer_closed, None, "the writer's socket was closed");
    assert!(reads > 0);
    let want = writer.text();
    let mut got = String::new();
    for _ in 0..200 {
        let state = client
            .get(server.url("/v1/yjs/hist/state"))
            .bearer_auth(&read)
            .send()
            .await?
            .bytes()
            .await?;
        got = roost_tests::yclient::text_of_update(&state)?;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, want, "every write was stored");
    assert_eq!(
        starts(&server).await?,
        before,
        "the document restarted over a read"
    );
    server.terminate().await?;
    Ok(())
}

/// Invariant: a y-websocket frame is decoded whole before anything of it
/// is applied; a truncated one closes the socket with 1008 and stores
/// nothing, not even a valid update in front of the truncation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_closes_1008() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let url = server.ws_url("/v1/yjs/trunc");
    let mut writer = YClient::new();
    writer.connect(&url).await?;
    writer.insert(0, "intact").await?;
    roost_tests::wait_stored_text(&server, "trunc", "intact").await?;

    let mut author = YClient::new();
    let valid = update_frame(&author.edit(0, "sneaked in"));
    let truncated_frames: Vec<Vec<u8>> = vec![
        // A valid update, then an update message whose length runs past the end.
        [valid.clone(), vec![0, 2, 50, 1, 2, 3]].concat(),
        // A valid update, then a lone message type.
        [valid.clone(), vec![0]].concat(),
        // The valid update cut short.
        valid[..valid.len() - 3].to_vec(),
        // A sync message without its type.
        vec![0],
    ];
    for (i, frame) in truncated_frames.into_iter().enumerate() {
        let mut evil = YClient::new();
        evil.connect(&url).await?;
        evil.send_raw(frame).await?;
        assert_eq!(
            evil.drain(Duration::from_secs(5)).await?,
            Some(1008),
            "truncated frame {i}"
        );
    }
    assert_eq!(
        roost_tests::stored_text(&server, "trunc").await?,
        "intact",
        "part of a truncated frame was stored"
    );
    assert_eq!(writer.drain(Duration::from_millis(100)).await?, None);
    server.terminate().await?;
    Ok(())
}

/// Every name is an object, so anyone can create them (a read of a new
/// counter makes its file, until it is evicted unwritten: `unwritten.rs`;
/// here they stay live): `--max-objects` bounds how many the data
/// directory holds. Past it a new object gets 507, existing ones serve on,
/// a deletion makes room, and the count survives a kill -9 (the objects
/// live then are still there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_creation_stops_at_max_objects() -> anyhow::Result<()> {
    use roost_tests::call;
    use serde_json::json;
    const ADMIN: &str = "max-objects-admin";
    let dir = tempfile::tempdir()?;
    let args = ["--max-objects", "3", "--admin-token", ADMIN];
    let client = http();
    let server = ServerProcess::start(dir.path(), &args).await?;
    for name in ["a", "b", "c"] {
        let (status, _) = call(&client, &server, "counter", name, "get", json!(null)).await?;
        assert_eq!(status, 200, "{name}");
    }
    let (status, body) = call(&client, &server, "counter", "d", "get", json!(null)).await?;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("--max-objects"));
    let (status, body) = call(
        &client,
        &server,
        "counter",
        "a",
        "increment",
        json!({"by": 5}),
    )
    .await?;
    assert_eq!(
        (status, body),
        (200, json!(5)),
        "an existing object serves on"
    );
    let resp = client
        .delete(server.url("/v1/admin/objects/counter/b"))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let (status, _) = call(&client, &server, "counter", "d", "get", json!(null)).await?;
    assert_eq!(status, 200, "a deletion makes room");
    server.kill9().await?;

    let server = ServerProcess::start(dir.path(), &args).await?;
    let (status, _) = call(&client, &server, "counter", "e", "get", json!(null)).await?;
    assert_eq!(
        status, 507,
        "the count is read back from the data directory"
    );
    let (status, body) = call(&client, &server, "counter", "a", "get", json!(null)).await?;
    assert_eq!((status, body), (200, json!(5)));
    let files = roost_tests::walk(&dir.path().join("objects"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .count();
    assert_eq!(files, 3);
    server.terminate().await?;
    Ok(())
}

/// A v1 update: client `client` builds a chain of `depth` nested Y.Maps
/// under the root map `m`, each map the value of key `a` in the one above
/// it (item `k` names item `k - 1` as its parent by id).
fn nested_maps_update(client: u8, depth: u32) -> Vec<u8> {
    fn var(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let mut u = vec![1];
    var(u64::from(depth), &mut u);
    u.extend_from_slice(&[client, 0]);
    for k in 0..depth {
        // Type content (7) with a parent sub-key (0x20), no origins.
        u.push(0x27);
        if k == 0 {
            u.extend_from_slice(&[1, 1, b'm']);
        } else {
            u.extend_from_slice(&[0, client]);
            var(u64::from(k - 1), &mut u);
        }
        u.extend_from_slice(&[1, b'a', 1]);
    }
    u.push(0);
    u
}

/// A v1 update that deletes nothing but `client`'s first struct.
fn delete_first_of(client: u8) -> Vec<u8> {
    vec![0, 1, client, 1, 0, 1]
}

/// Invariant: shared types nest at most `--yjs-max-type-nesting` deep. A
/// deeper chain — in one update or grown across many — is refused (400 /
/// close 1008) before it meets the document, because yrs deletes and
/// garbage-collects nested types by recursion: deleting the top of a chain
/// of 20,000 maps overflowed the stack and aborted the whole process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_nested_too_deep_are_refused_not_fatal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--admin-token", "T"]).await?;
    let client = http();
    let mut writer = YClient::new();
    writer.connect(&server.ws_url("/v1/yjs/maps")).await?;
    writer.insert(0, "kept").await?;
    roost_tests::wait_stored_text(&server, "maps", "kept").await?;

    // One update, 30,000 levels: refused over HTTP and over a socket.
    let deep = nested_maps_update(9, 30_000);
    let resp = match client
        .post(server.url("/v1/yjs/maps/update"))
        .body(deep.clone())
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("the server died on a deep update: {e}"),
    };
    assert_eq!(resp.status(), 400, "HTTP refuses the deep chain");
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let mut evil = YClient::new();
    evil.connect(&server.ws_url("/v1/yjs/maps")).await?;
    evil.send_raw(update_frame(&deep)).await?;
    assert_eq!(evil.drain(Duration::from_secs(5)).await?, Some(1008));
    // Had it been stored, deleting its top would recurse 30,000 deep.
    let resp = client
        .post(server.url("/v1/yjs/maps/update"))
        .body(delete_first_of(9))
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    assert!(healthy(&server).await, "the server is up");

    // Grown across updates: each within the bound, the last one too deep.
    // Client 10's chain of 200 hangs off the root; client 11 continues it
    // from its deepest map.
    let base = nested_maps_update(10, 200);
    let resp = client
        .post(server.url("/v1/yjs/maps/update"))
        .body(base)
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    let mut more = vec![1, 0x64, 11, 0];
    for k in 0..100u8 {
        more.push(0x27);
        if k == 0 {
            more.extend_from_slice(&[0, 10, 0xc7, 0x01]); // 10:199
        } else {
            more.extend_from_slice(&[0, 11, k - 1]);
        }
        more.extend_from_slice(&[1, b'a', 1]);
    }
    more.push(0);
    let resp = client
        .post(server.url("/v1/yjs/maps/update"))
        .body(more.clone())
        .send()
        .await?;
    assert_eq!(
        resp.status(),
        400,
        "300 levels in all pass the bound of 256"
    );
    let body: serde_json::Value = resp.json().await?;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nested deeper")),
        "{body}"
    );
    let mut evil = YClient::new();
    evil.connect(&server.ws_url("/v1/yjs/maps")).await?;
    evil.send_raw(update_frame(&more)).await?;
    assert_eq!(evil.drain(Duration::from_secs(5)).await?, Some(1008));

    // What the bound lets in can be deleted, read and shown.
    let resp = client
        .post(server.url("/v1/yjs/maps/update"))
        .body(delete_first_of(10))
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    let resp = client
        .get(server.url("/v1/admin/yjs/maps"))
        .bearer_auth("T")
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    assert!(healthy(&server).await, "the server is up");

    // The honest writer never noticed.
    assert_eq!(writer.drain(Duration::from_millis(200)).await?, None);
    writer.insert(4, "!").await?;
    roost_tests::wait_stored_text(&server, "maps", "kept!").await?;
    server.terminate().await?;
    Ok(())
}
