//! `GET /openapi.json` against the real binary: every operation it
//! describes is routed (the router's fallbacks never answer one), and
//! schemathesis (pinned, installed by `scripts/install-schemathesis.sh`)
//! fuzzes every operation from it for a bounded number of examples without
//! a 5xx or a panic. (`server/src/http/openapi.rs` checks the other way:
//! every route of the router's source is described.)

use std::path::PathBuf;
use std::time::Duration;

use roost_tests::{http, ServerProcess};
use serde_json::Value;

const ADMIN: &str = "openapi-admin-token";

/// A request for one described operation, its path parameters filled with
/// their examples (else `x`).
fn concrete_path(path: &str, op: &Value) -> String {
    let mut out = path.to_owned();
    for param in op["parameters"].as_array().into_iter().flatten() {
        if param["in"] != "path" {
            continue;
        }
        let name = param["name"].as_str().unwrap_or_default();
        let value = param["example"].as_str().unwrap_or("x");
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_described_operation_is_routed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &["--admin-token", ADMIN]).await?;
    let resp = http().get(server.url("/openapi.json")).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let spec: Value = resp.json().await?;
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().expect("paths");
    let mut count = 0;
    // A client that follows no redirect: `/demos` answers one itself.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().expect("operations") {
            let url = server.url(&concrete_path(path, op));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
            let resp = client
                .request(method.clone(), &url)
                .bearer_auth(ADMIN)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert!(
                !(status == 404 && body.contains("no such route")),
                "{method} {url}: the router's fallback answered"
            );
            assert_ne!(status, 405, "{method} {url}: method not routed: {body}");
            assert!(status < 500, "{method} {url}: {status} {body}");
            count += 1;
        }
    }
    assert!(count >= 30, "only {count} operations described");
    server.kill9().await?;
    Ok(())
}

fn schemathesis() -> PathBuf {
    if let Ok(p) = std::env::var("SCHEMATHESIS_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/schemathesis/bin/st")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_panic() -> anyhow::Result<()> {
    let st = schemathesis();
    anyhow::ensure!(
        st.exists(),
        "{} is missing: run ./scripts/install-schemathesis.sh (./scripts/test-all.sh does)",
        st.display()
    );
    let dir = tempfile::tempdir()?;
    // No --feed: `GET /v1/feed` checks its parameters, then answers 404 at
    // once (with the feed on, its long-poll `wait` would outlast the
    // fuzzer's request timeout by design).
    let mut server = ServerProcess::start(dir.path(), &["--admin-token", ADMIN]).await?;
    let header = format!("Authorization: Bearer {ADMIN}");
    let spec = server.url("/openapi.json");
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(&st)
            .args([
                "run",
                &spec,
                "--checks",
                "not_a_server_error",
                "-H",
                &header,
            ])
            .args(["--max-examples", "15", "--seed", "24", "--workers", "1"])
            .args(["--phases", "examples,coverage,fuzzing", "--no-shrink"])
            .args(["--request-timeout", "20"])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "no test cases ran:\n{text}");
    let panics: Vec<String> = server
        .drain_logs()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:?}");
    // Still serving.
    assert_eq!(
        http().get(server.url("/healthz")).send().await?.status(),
        200
    );
    server.kill9().await?;
    Ok(())
}
