//! The catalog (`GET /v1/admin/objects`) lists every object file, through
//! kill -9 in the middle of a burst of creations: a new object's row is
//! durable before its file exists. Rounds of creations, each cut by a
//! kill -9, then every file on disk must be in the listing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use roost_tests::{call, http, walk, ServerProcess};
use serde_json::{json, Value};

const ADMIN: &str = "catalog-test-admin-token";
const ROUNDS: usize = 3;
const CLIENTS: usize = 32;

/// Ids of the object files on disk.
fn files(data: &std::path::Path) -> BTreeSet<String> {
    walk(&data.join("objects"))
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .strip_suffix(".sqlite")
                .map(str::to_owned)
        })
        .collect()
}

/// Ids of every object the admin API lists, page after page.
async fn listed(server: &ServerProcess) -> anyhow::Result<BTreeSet<String>> {
    let client = http();
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut request = client
            .get(server.url("/v1/admin/objects"))
            .bearer_auth(ADMIN)
            .query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        }
        let page: Value = request.send().await?.json().await?;
        for o in page["objects"].as_array().into_iter().flatten() {
            ids.insert(o["id"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(ids),
        }
    }
    anyhow::bail!("the listing never ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_file_is_listed_after_kill9_during_creations() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let args = ["--admin-token", ADMIN];
    for round in 0..ROUNDS {
        let server = ServerProcess::start(dir.path(), &args).await?;
        let base = server.url("");
        let until = Instant::now() + Duration::from_millis(700);
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let base = base.clone();
            clients.push(tokio::spawn(async move {
                let client = http();
                for i in 0..100_000 {
                    if Instant::now() >= until {
                        break;
                    }
                    let url = format!("{base}/v1/objects/counter/r{round}-c{c}-{i}/call/increment");
                    if client.post(url).json(&json!({})).send().await.is_err() {
                        break;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.kill9().await?;
        for c in clients {
            let _ = c.await;
        }
    }
    let server = ServerProcess::start(dir.path(), &args).await?;
    let on_disk = files(dir.path());
    let before = listed(&server).await?;
    let missing: Vec<_> = on_disk.difference(&before).collect();
    assert!(
        missing.is_empty(),
        "{} of {} object files are not in the catalog: {missing:?}",
        missing.len(),
        on_disk.len()
    );
    // Objects keep working, and a new one is listed.
    let (status, _) = call(&http(), &server, "counter", "after", "increment", json!({})).await?;
    assert_eq!(status, 200);
    assert_eq!(listed(&server).await?.len(), before.len() + 1);
    server.terminate().await?;
    Ok(())
}
