//! The README's first command as a newcomer runs it: from an empty folder,
//! with the default `--data` (`./roost-data`) or a relative one, no
//! environment of ours. Store something, `kill -9`, start again, read it back.
//! Then the README's "Five-minute tour" as written, and start-up mistakes.

use roost_tests::{call, http, roost_bin, ServerProcess};
use serde_json::json;
use std::time::Duration;

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

/// `roost serve <args>` in `folder`, expected to fail at start: its stderr,
/// which must be one line `error: …` (with `RUST_BACKTRACE=1` set, no
/// backtrace) and exit status 1. A server that starts instead is killed
/// after 15 s.
async fn refused_start(folder: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let child = tokio::process::Command::new(roost_tests::roost_bin())
        .current_dir(folder)
        .arg("serve")
        .args(args)
        .env_remove("ROOST_DATA")
        .env("RUST_BACKTRACE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{args:?}: roost started instead of refusing"))??;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.lines().count() == 1,
        "{args:?}: not one error line: {stderr}"
    );
    Ok(stderr)
}

/// A second server on a data directory another one serves is refused, saying
/// so, and the first one keeps serving; once it stopped (even by kill -9)
/// the directory starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let client = http();
    let server = ServerProcess::start_in(Some(folder.path()), &[]).await?;
    let stderr = refused_start(folder.path(), &["--listen", "127.0.0.1:0"]).await?;
    assert!(stderr.contains("another Roost is serving"), "{stderr}");
    let nested = refused_start(
        folder.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data",
            "./roost-data/../roost-data",
        ],
    )
    .await?;
    assert!(nested.contains("another Roost is serving"), "{nested}");
    let (status, body) = call(&client, &server, "counter", "c", "increment", json!({})).await?;
    assert_eq!((status, body), (200, json!(1)));
    server.kill9().await?;
    let server = ServerProcess::start_in(Some(folder.path()), &[]).await?;
    let (status, body) = call(&client, &server, "counter", "c", "get", json!(null)).await?;
    assert_eq!((status, body), (200, json!(1)));
    server.terminate().await?;
    ServerProcess::start_in(Some(folder.path()), &[])
        .await?
        .terminate()
        .await?;
    Ok(())
}

/// Start-up mistakes a newcomer makes end with one line naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_start_says_why_in_one_line() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    std::fs::write(folder.path().join("a-file"), "")?;
    let stderr = refused_start(
        folder.path(),
        &["--listen", "127.0.0.1:0", "--data", "a-file"],
    )
    .await?;
    assert!(stderr.contains("a-file is not a directory"), "{stderr}");
    let server = ServerProcess::start_in(Some(folder.path()), &[]).await?;
    let port = server
        .base
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let taken = format!("127.0.0.1:{port}");
    let stderr = refused_start(folder.path(), &["--listen", &taken, "--data", "other"]).await?;
    assert!(
        stderr.contains(&format!("cannot listen on {taken}")) && stderr.contains("in use"),
        "{stderr}"
    );
    server.terminate().await?;
    Ok(())
}

/// A `ROOST_LOG` that does not parse is said at start-up (the server still
/// starts, logging at info), not silently replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_roost_log_is_reported() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let folder = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(roost_bin())
        .current_dir(folder.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ROOST_LOG", "garbage===")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            let listening = line.contains("listening on http://");
            seen.push(line);
            if listening {
                break;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    child.kill().await?;
    assert!(
        seen.iter()
            .any(|l| l.contains("ROOST_LOG is not a valid filter") && l.contains("garbage===")),
        "{seen:#?}"
    );
    // It still logs at info: the line that says where it listens.
    assert!(
        seen.iter().any(|l| l.contains("listening on http://")),
        "{seen:#?}"
    );
    Ok(())
}

/// The README's "Five-minute tour" block, run by bash in an empty folder as
/// a newcomer does: first against the server the README's first command
/// started, then from the line that stops it, with `./target/release/roost`
/// standing for the built binary. The port is a free one instead of 8787.
/// What curl prints, run together, is what the `# →` lines say, in order,
/// then the metrics; the script's last line stops the server it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_runs_as_written() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let block = readme
        .split_once("## Five-minute tour")
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block.to_owned())
        .ok_or_else(|| anyhow::anyhow!("README has no tour sh block"))?;
    let restart = block
        .find("# Kill the server hard")
        .ok_or_else(|| anyhow::anyhow!("the tour no longer restarts the server"))?;
    let (first, second) = block.split_at(restart);
    let expected: String = block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# → "))
        .collect();
    let folder = tempfile::tempdir()?;
    let bin_dir = folder.path().join("target/release");
    std::fs::create_dir_all(&bin_dir)?;
    std::os::unix::fs::symlink(roost_tests::roost_bin(), bin_dir.join("roost"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let at_port = |script: &str| {
        script
            .replace("localhost:8787", &format!("localhost:{port}"))
            .replace("/roost serve", &format!("/roost serve --listen {listen}"))
    };
    // The README's first command, from this empty folder.
    let server = ServerProcess::start_exact(
        &roost_tests::roost_bin(),
        folder.path(),
        &["serve", "--listen", &listen],
        &[],
    )
    .await?;
    let mut out = run_script(folder.path(), &at_port(first)).await?;
    server.terminate().await?;
    out.push_str(&run_script(folder.path(), &at_port(second)).await?);
    assert!(
        out.starts_with(&expected) && out.contains("roost_commits_total"),
        "the tour printed {out:?}, not {expected:?} then the metrics"
    );
    Ok(())
}

/// Runs `script` with bash in `cwd` (its own process group, killed after
/// 60 s with everything it started); its stdout, once it exited 0.
async fn run_script(cwd: &std::path::Path, script: &str) -> anyhow::Result<String> {
    // Beside the folder, not in it: the script runs from an empty folder.
    let said = cwd.with_extension("stderr");
    let child = tokio::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(cwd)
        .env_remove("ROOST_DATA")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&said)?)
        .kill_on_drop(true)
        .process_group(0)
        .spawn()?;
    let pgid = child.id().unwrap_or(0);
    let result = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await;
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
    let stderr = std::fs::read_to_string(&said).unwrap_or_default();
    let _ = std::fs::remove_file(&said);
    let out = result
        .map_err(|_| anyhow::anyhow!("the script did not end in 60 s; its stderr:\n{stderr}"))??;
    anyhow::ensure!(
        out.status.success(),
        "the script failed: {out:?}; its stderr:\n{stderr}"
    );
    Ok(String::from_utf8(out.stdout)?)
}
