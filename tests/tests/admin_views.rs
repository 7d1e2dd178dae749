//! The admin routes the console reads, against the real binary: KV as
//! JSON, an object's sockets (listed, one closed), a Yjs document's content
//! and versions; all behind the admin token, bad input refused.

use std::time::Duration;

use roost_tests::ws::{Client, Frame};
use roost_tests::yclient::YClient;
use roost_tests::{call, http, wait_stored_text, ServerProcess};
use serde_json::{json, Value};

const ADMIN: &str = "admin-views-token";

async fn get(server: &ServerProcess, path: &str) -> anyhow::Result<(u16, Value)> {
    let resp = http()
        .get(server.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_sockets_and_documents_are_shown_to_the_admin_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--admin-token", ADMIN]).await?;
    for _ in 0..3 {
        let (status, _) = call(&http(), &server, "counter", "c", "increment", json!({})).await?;
        assert_eq!(status, 200);
    }
    let (status, body) = get(&server, "/v1/admin/objects/counter/c/kv").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"], json!([{ "key": "value", "value": 3 }]));
    assert_eq!(body["truncated"], false);

    // Sockets: listed, then one closed by the admin.
    let mut ws = Client::connect(&server.ws_url("/v1/objects/counter/c/ws")).await?;
    assert_eq!(ws.call("get", json!({})).await?["ok"], json!(3));
    let (_, body) = get(&server, "/v1/admin/objects/counter/c/sockets").await?;
    let sockets = body["sockets"].as_array().expect("a list").clone();
    assert_eq!(sockets.len(), 1, "{body}");
    assert_eq!(sockets[0]["accepted"], true);
    let id = sockets[0]["id"].as_u64().expect("an id");
    let close = |socket: String| {
        http()
            .delete(server.url(&format!("/v1/admin/objects/counter/c/sockets/{socket}")))
            .bearer_auth(ADMIN)
            .send()
    };
    assert_eq!(close("nope".into()).await?.status(), 400);
    assert_eq!(close("999999".into()).await?.status(), 404);
    assert_eq!(close(id.to_string()).await?.status(), 200);
    let mut closed = None;
    for _ in 0..20 {
        if let Frame::Closed(code, reason) = ws.next(Duration::from_secs(5)).await? {
            closed = Some((code, reason));
            break;
        }
    }
    assert_eq!(
        closed,
        Some((Some(1000), "closed by an administrator".to_owned()))
    );

    // A Yjs document's content and versions.
    let mut y = YClient::new();
    y.connect(&server.ws_url("/v1/yjs/notes")).await?;
    y.insert(0, "meeting notes").await?;
    wait_stored_text(&server, "notes", "meeting notes").await?;
    let resp = http()
        .post(server.url("/v1/yjs/notes/versions"))
        .json(&json!({ "name": "monday" }))
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    let (status, body) = get(&server, "/v1/admin/yjs/notes").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"]["roots"]["t"], "meeting notes");
    assert_eq!(body["versions"][0]["name"], "monday");

    // Missing objects, and no token or a wrong one: refused.
    assert_eq!(
        get(&server, "/v1/admin/objects/counter/none/kv").await?.0,
        404
    );
    assert_eq!(get(&server, "/v1/admin/yjs/none").await?.0, 404);
    for path in [
        "/v1/admin/objects/counter/c/kv",
        "/v1/admin/objects/counter/c/sockets",
        "/v1/admin/yjs/notes",
    ] {
        let status = http().get(server.url(path)).send().await?.status();
        assert!(status == 401 || status == 403, "{path}: {status}");
        let status = http()
            .get(server.url(path))
            .bearer_auth("wrong")
            .send()
            .await?
            .status();
        assert!(status == 401 || status == 403, "{path}: {status}");
    }
    // The page is served, and names its script.
    let page = http().get(server.url("/admin")).send().await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("/admin/app.js"));
    server.kill9().await?;
    Ok(())
}
