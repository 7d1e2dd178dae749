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

/// The fenced block of `lang` that follows `heading` in README.md.
fn readme_block(heading: &str, lang: &str) -> anyhow::Result<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let after = readme
        .split_once(heading)
        .ok_or_else(|| anyhow::anyhow!("README has no {heading:?}"))?
        .1;
    let fence = format!("```{lang}\n");
    let start = after
        .find(&fence)
        .ok_or_else(|| anyhow::anyhow!("no {lang} block after {heading:?}"))?
        + fence.len();
    let len = after[start..]
        .find("```")
        .ok_or_else(|| anyhow::anyhow!("unclosed block"))?;
    Ok(after[start..start + len].to_owned())
}

/// README's "Writing your own class", as a user follows it: a new crate in a
/// directory outside the repository, its `Cargo.toml` and `main.rs` taken
/// from the README (with the path to Roost filled in), built with a plain
/// `cargo build` — no config copied from the repository — then run and
/// called. Linking used to fail there (SQLite's preupdate hook was enabled
/// only by the repository's own `.cargo/config.toml`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crate_outside_the_repository_embeds_roost() -> anyhow::Result<()> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no repository root"))?
        .canonicalize()?;
    let app = tempfile::tempdir()?;
    assert!(!app.path().starts_with(&repo), "the app must be outside");
    let manifest = readme_block("## Writing your own class", "toml")?.replace(
        "../roost/server",
        repo.join("server").to_str().unwrap_or_default(),
    );
    std::fs::write(app.path().join("Cargo.toml"), manifest)?;
    std::fs::create_dir(app.path().join("src"))?;
    let main = readme_block("## Writing your own class", "rust")?;
    std::fs::write(app.path().join("src/main.rs"), main)?;
    // The workspace's lock file pins the same versions, so the build reuses
    // the workspace's compiled dependencies and needs no network.
    std::fs::copy(repo.join("Cargo.lock"), app.path().join("Cargo.lock"))?;
    // The workspace's own target directory (a relative one is relative to
    // the repository, where the suite runs cargo).
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(|t| repo.join(t))
        .unwrap_or_else(|_| repo.join("target"));
    let out = tokio::process::Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet"])
        .current_dir(app.path())
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .await?;
    assert!(
        out.status.success(),
        "the README's app did not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = target.join("debug/my-app");
    let data = app.path().join("data");
    let data = data.to_str().unwrap_or_default();
    let server = ServerProcess::start_bin(&bin, Some(app.path()), &["--data", data]).await?;
    let client = http();
    for want in [1, 2] {
        let (status, body) =
            roost_tests::call(&client, &server, "visits", "home", "visit", json!({})).await?;
        assert_eq!((status, body), (200, json!(want)));
    }
    // Its class sits beside the built-in ones.
    let (status, body) = roost_tests::call(
        &client,
        &server,
        "counter",
        "c",
        "increment",
        json!({"by": 3}),
    )
    .await?;
    assert_eq!((status, body), (200, json!(3)));
    server.terminate().await?;
    Ok(())
}
