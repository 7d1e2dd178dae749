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

/// The data directory records its format; a binary refuses one newer than
/// it reads, saying why, and changes nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_a_newer_format_is_refused() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let server = ServerProcess::start_in(Some(folder.path()), &[]).await?;
    server.terminate().await?;
    let format = folder.path().join("roost-data/FORMAT");
    assert_eq!(std::fs::read_to_string(&format)?, "roost-data 1\n");
    std::fs::write(&format, "roost-data 99\n")?;
    let out = std::process::Command::new(roost_tests::roost_bin())
        .current_dir(folder.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data format 99") && stderr.contains("newer"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&format)?, "roost-data 99\n");
    Ok(())
}
