//! Named versions of Yjs documents against the real binary: create, list,
//! read, restore (a new update that connected clients converge to), delete;
//! they outlive the history window's compaction and a kill -9, and bad
//! requests change nothing.

use std::time::Duration;

use roost_tests::yclient::{text_of_update, YClient};
use roost_tests::{http, segment, stored_text, wait_stored_text, ServerProcess};
use serde_json::{json, Value};

fn versions_url(server: &ServerProcess, doc: &str) -> String {
    server.url(&format!("/v1/yjs/{}/versions", segment(doc)))
}

async fn create(server: &ServerProcess, doc: &str, name: &str) -> anyhow::Result<(u16, Value)> {
    let resp = http()
        .post(versions_url(server, doc))
        .json(&json!({ "name": name }))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

async fn names(server: &ServerProcess, doc: &str) -> anyhow::Result<Vec<String>> {
    let body: Value = http()
        .get(versions_url(server, doc))
        .send()
        .await?
        .json()
        .await?;
    Ok(body["versions"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no list in {body}"))?
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect())
}

async fn version_text(server: &ServerProcess, doc: &str, name: &str) -> anyhow::Result<String> {
    let url = format!("{}/{}", versions_url(server, doc), segment(name));
    let resp = http().get(url).send().await?;
    anyhow::ensure!(resp.status() == 200, "version read: {}", resp.status());
    text_of_update(&resp.bytes().await?)
}

async fn restore(server: &ServerProcess, doc: &str, name: &str) -> anyhow::Result<u16> {
    let url = format!("{}/{}/restore", versions_url(server, doc), segment(name));
    Ok(http().post(url).send().await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_named_listed_read_and_restored_for_every_client() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let doc = "contract";
    let url = server.ws_url(&format!("/v1/yjs/{doc}"));
    let mut alice = YClient::new();
    alice.connect(&url).await?;
    let mut bob = YClient::new();
    bob.connect(&url).await?;

    alice.insert(0, "The draft we sent.").await?;
    wait_stored_text(&server, doc, "The draft we sent.").await?;
    let (status, body) = create(&server, doc, "sent to client").await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "sent to client");

    // The same name again is refused, and changes nothing.
    let (status, _) = create(&server, doc, "sent to client").await?;
    assert_eq!(status, 409);
    // Bad names and bodies: 400, nothing stored.
    for bad in [
        json!({ "name": "" }),
        json!({ "name": "x".repeat(200) }),
        json!({}),
    ] {
        let resp = http()
            .post(versions_url(&server, doc))
            .json(&bad)
            .send()
            .await?;
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(names(&server, doc).await?, vec!["sent to client"]);

    // Edits after the version, from both clients.
    alice.insert(0, "Edited: ").await?;
    bob.wait_for_text("Edited: The draft we sent.", Duration::from_secs(10))
        .await?;
    let len = bob.text_len();
    bob.insert(len, " More terms.").await?;
    let edited = "Edited: The draft we sent. More terms.";
    alice.wait_for_text(edited, Duration::from_secs(10)).await?;
    assert_eq!(
        version_text(&server, doc, "sent to client").await?,
        "The draft we sent."
    );

    assert_eq!(restore(&server, doc, "sent to client").await?, 200);
    // Restoring is an update on top: both connected clients converge.
    alice
        .wait_for_text("The draft we sent.", Duration::from_secs(10))
        .await?;
    bob.wait_for_text("The draft we sent.", Duration::from_secs(10))
        .await?;
    assert_eq!(stored_text(&server, doc).await?, "The draft we sent.");
    // ...and can keep editing on top of it.
    alice.insert(0, "v2: ").await?;
    bob.wait_for_text("v2: The draft we sent.", Duration::from_secs(10))
        .await?;

    assert_eq!(restore(&server, doc, "no such version").await?, 404);
    let gone = format!(
        "{}/{}",
        versions_url(&server, doc),
        segment("sent to client")
    );
    assert_eq!(http().delete(&gone).send().await?.status(), 200);
    assert_eq!(http().delete(&gone).send().await?.status(), 404);
    assert!(names(&server, doc).await?.is_empty());
    server.kill9().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_outlive_the_history_window_and_kill9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A one-second history window, compacted as soon as editing stops.
    let args = [
        "--history-retention",
        "1s",
        "--ydoc-compact-after",
        "200ms",
        "--yjs-max-versions",
        "2",
    ];
    let server = ServerProcess::start(dir.path(), &args).await?;
    let doc = "old";
    let mut alice = YClient::new();
    alice
        .connect(&server.ws_url(&format!("/v1/yjs/{doc}")))
        .await?;
    alice.insert(0, "first").await?;
    wait_stored_text(&server, doc, "first").await?;
    assert_eq!(create(&server, doc, "v1").await?.0, 201);
    assert_eq!(create(&server, doc, "v2").await?.0, 201);
    // The limit: a third is refused.
    assert_eq!(create(&server, doc, "v3").await?.0, 507);
    alice.insert(5, " and second").await?;
    wait_stored_text(&server, doc, "first and second").await?;
    // Past the window: `state?at=` of the version's time is gone...
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let at = "2000-01-01T00:00:00Z";
    let resp = http()
        .get(server.url(&format!("/v1/yjs/{doc}/state?at={at}")))
        .send()
        .await?;
    assert_eq!(resp.status(), 404, "history before the window is gone");
    // ...the version is not, not even after kill -9.
    alice.disconnect();
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &args).await?;
    assert_eq!(version_text(&server, doc, "v1").await?, "first");
    assert_eq!(restore(&server, doc, "v1").await?, 200);
    assert_eq!(stored_text(&server, doc).await?, "first");
    server.kill9().await?;
    let server = ServerProcess::start(dir.path(), &args).await?;
    assert_eq!(
        stored_text(&server, doc).await?,
        "first",
        "the restore is durable"
    );
    assert_eq!(names(&server, doc).await?, vec!["v1", "v2"]);
    server.kill9().await?;
    Ok(())
}
