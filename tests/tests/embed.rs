//! A user's class, in a binary that embeds Roost (`roost-workload`), reached
//! over plain HTTP through `/v1/objects/{class}/{name}/fetch/{*path}`; and
//! JSON errors for methods a route does not take.

use roost_tests::{http, workload_bin, ServerProcess};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_a_user_class_fetch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().unwrap_or_default().to_owned();
    let server = ServerProcess::start_bin(&workload_bin(), None, &["--data", &data]).await?;
    let client = http();
    let resp = client
        .get(server.url("/v1/objects/workload/w1/fetch/echo/a%20b?x=1"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "echo/a b");
    assert_eq!(body["query"], json!({"x": "1"}));
    assert_eq!(body["last_step"], 0);
    let body: Value = client
        .put(server.url("/v1/objects/workload/w1/fetch"))
        .body("hello")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (&body["method"], &body["path"], &body["body"]),
        (&json!("PUT"), &json!(""), &json!("hello"))
    );
    // A class without `fetch` answers 404 in JSON.
    let resp = client
        .get(server.url("/v1/objects/counter/c/fetch/x"))
        .send()
        .await?;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "not_found");
    // A route that does not take the method: 405, in JSON too.
    let resp = client
        .get(server.url("/v1/objects/counter/c/call/get"))
        .send()
        .await?;
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "method_not_allowed");
    server.terminate().await?;
    Ok(())
}
