//! Resource faults against the real binary: an object that reaches its size
//! cap keeps every acknowledged write, answers 413 for the write that does
//! not fit, and goes on serving reads and writes without a restart.

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
