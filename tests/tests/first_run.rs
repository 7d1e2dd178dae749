//! The README's first command as a newcomer runs it: from an empty folder,
//! with the default `--data` (`./roost-data`) or a relative one, no
//! environment of ours. Store something, `kill -9`, start again, read it back.

use roost_tests::{call, http, ServerProcess};
use serde_json::json;

/// Two starts in the same folder (the second one recovers after a kill -9),
/// each storing one increment; the value read back is 2.
async fn survives_kill9_from(args: &[&str]) -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let client = http();
    for round in 1..=2 {
        let server = ServerProcess::start_in(Some(folder.path()), args).await?;
        let (status, body) = call(
            &client,
            &server,
            "counter",
            "c",
            "increment",
            json!({"by": 1}),
        )
        .await?;
        assert_eq!((status, body), (200, json!(round)), "round {round}");
        assert!(
            server.data.is_dir(),
            "{} was not created",
            server.data.display()
        );
        server.kill9().await?;
    }
    let server = ServerProcess::start_in(Some(folder.path()), args).await?;
    let (status, body) = call(&client, &server, "counter", "c", "get", json!(null)).await?;
    assert_eq!((status, body), (200, json!(2)));
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_data_dir_works_from_an_empty_folder() -> anyhow::Result<()> {
    survives_kill9_from(&[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_data_dir_works_from_an_empty_folder() -> anyhow::Result<()> {
    survives_kill9_from(&["--data", "nested/state"]).await
}
