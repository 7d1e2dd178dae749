//! In-process tests of the runtime through the library API: fault injection,
//! eviction on paused time, replay of the commit log after a lost file tail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roost::{Config, ObjectKey, Server};
use serde_json::{json, Value};

fn config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    }
}

/// A server with the built-in classes on a free loopback port.
async fn start(cfg: Config) -> anyhow::Result<roost::RunningServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Server::builder()
        .with_builtins()
        .config(cfg)
        .start(listener)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_answers_errors_and_is_never_visible() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fail = Arc::new(AtomicBool::new(false));
    let hook_flag = fail.clone();
    let mut cfg = config(dir.path());
    cfg.fault = Some(Arc::new(move |_class: &str, name: &str| {
        name == "victim" && hook_flag.load(Ordering::SeqCst)
    }));
    let server = start(cfg).await?;
    let rt = server.runtime().clone();
    let victim = ObjectKey::new("counter", "victim")?;
    let bystander = ObjectKey::new("counter", "bystander")?;
    for _ in 0..3 {
        rt.call(&victim, "increment", Value::Null, false)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    fail.store(true, Ordering::SeqCst);
    let err = rt
        .call(&victim, "increment", Value::Null, false)
        .await
        .expect_err("commit must fail");
    assert_eq!(err.code, roost_protocol::ErrorCode::ObjectBroken);
    // Other objects are unaffected.
    assert_eq!(
        rt.call(&bystander, "increment", Value::Null, false)
            .await
            .ok(),
        Some(json!(1))
    );
    fail.store(false, Ordering::SeqCst);
    // The value the failed call would have returned (4) is never visible.
    assert_eq!(
        rt.call(&victim, "get", Value::Null, false).await.ok(),
        Some(json!(3))
    );
    assert_eq!(
        rt.call(&victim, "increment", Value::Null, false).await.ok(),
        Some(json!(4))
    );
    assert_eq!(rt.metrics().error_count("commit_failed"), 1);
    server.shutdown().await?;
    // And not after a restart either.
    let server = start(config(dir.path())).await?;
    assert_eq!(
        server
            .runtime()
            .call(&victim, "get", Value::Null, false)
            .await
            .ok(),
        Some(json!(4))
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_calls_cannot_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let rt = server.runtime().clone();
    let key = ObjectKey::new("counter", "ro")?;
    rt.call(&key, "increment", Value::Null, false)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let err = rt
        .call(&key, "increment", Value::Null, true)
        .await
        .expect_err("read-only write fails");
    assert_eq!(err.code, roost_protocol::ErrorCode::Forbidden);
    assert_eq!(
        rt.call(&key, "get", Value::Null, true).await.ok(),
        Some(json!(1))
    );
    server.shutdown().await?;
    Ok(())
}

/// Idle eviction on tokio's paused clock: nothing is evicted before the idle
/// timeout, everything after, and the next call re-creates the object.
#[tokio::test(start_paused = true)]
async fn eviction_on_paused_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.idle_timeout = Duration::from_secs(10);
    let server = start(cfg).await?;
    let rt = server.runtime().clone();
    let key = ObjectKey::new("counter", "sleepy")?;
    rt.call(&key, "increment", Value::Null, false)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(rt.live_objects(), 1);
    // The reply leaves from the log's thread before the actor hears of the
    // fsync. Let the actor take that news in real time before the paused
    // clock jumps ahead (else its idle wait starts late and the test races).
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(5));
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(rt.live_objects(), 1, "evicted before the idle timeout");
    assert_eq!(rt.metrics().evictions.load(Ordering::Relaxed), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Let the actor finish closing: its file work runs on blocking-pool
    // threads, in real time, so wait by the wall clock (a fixed number of
    // yields was not always enough on a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rt.live_objects() != 0 && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rt.live_objects(), 0, "not evicted after the idle timeout");
    assert_eq!(rt.metrics().evictions.load(Ordering::Relaxed), 1);
    assert_eq!(
        rt.call(&key, "increment", Value::Null, false).await.ok(),
        Some(json!(2))
    );
    assert_eq!(rt.metrics().constructions.load(Ordering::Relaxed), 2);
    server.shutdown().await?;
    Ok(())
}

/// Simulates a power loss that dropped the newest commits of an object file
/// (but not the fsynced commit log): start-up replays them from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_replays_commits_missing_from_the_object_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    // Never checkpoint during the test, so every batch stays in the log.
    cfg.log.checkpoint_interval = Duration::from_secs(3600);
    let key = ObjectKey::new("counter", "phoenix")?;
    let path = roost::testing::object_path(dir.path(), &key.class, key.id);
    let server = start(cfg.clone()).await?;
    let rt = server.runtime().clone();
    rt.call(&key, "increment", json!({"by": 10}), false)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // Snapshot the object's files as of value 10.
    let wal_path = {
        let mut p = path.as_os_str().to_owned();
        p.push("-wal");
        std::path::PathBuf::from(p)
    };
    let snapshot = std::fs::read(&path)?;
    let wal_snapshot = std::fs::read(&wal_path).unwrap_or_default();
    for _ in 0..5 {
        rt.call(&key, "increment", json!({"by": 1}), false)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    // Keep the fsynced log as a crash would leave it, stop the server, then
    // lose the file's tail: the object file goes back to value 10.
    let log_dir = dir.path().join("log");
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&log_dir)?
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default()))
        .collect();
    assert!(!saved.is_empty());
    drop(rt);
    server.shutdown().await?;
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(&p);
    }
    std::fs::write(&path, &snapshot)?;
    std::fs::write(&wal_path, &wal_snapshot)?;
    for entry in std::fs::read_dir(&log_dir)?.flatten() {
        std::fs::remove_file(entry.path())?;
    }
    for (p, bytes) in &saved {
        std::fs::write(p, bytes)?;
    }
    // A second server in the same process stands in for the restarted one.
    let mut cfg2 = cfg.clone();
    cfg2.data_dir = dir.path().to_owned();
    let server = start(cfg2).await?;
    assert_eq!(
        server
            .runtime()
            .call(&key, "get", Value::Null, false)
            .await
            .ok(),
        Some(json!(15))
    );
    server.shutdown().await?;
    Ok(())
}

/// A class whose `sabotage` method ends the open SQLite transaction behind
/// the runtime's back (user SQL may do anything), after `put` calls that
/// were acknowledged but, with a long file commit interval, are only in the
/// commit log.
struct Saboteur;

impl roost::DurableObject for Saboteur {
    fn new(_ctx: &mut roost::Ctx) -> Result<Self, roost::ObjectError> {
        Ok(Saboteur)
    }

    async fn call(
        &mut self,
        ctx: &mut roost::Ctx,
        method: &str,
        args: Value,
    ) -> Result<Value, roost::ObjectError> {
        match method {
            "put" => {
                let n = args.as_i64().unwrap_or(0);
                ctx.storage().put(&format!("k{n}"), &n)?;
                Ok(json!(n))
            }
            "count" => {
                let n = ctx.storage().list(&roost::ListOptions::default())?.len();
                Ok(json!(n))
            }
            "sabotage" => {
                let _ = ctx.storage().sql().execute_batch("ROLLBACK");
                Ok(Value::Null)
            }
            _ => Err(roost::ObjectError::app("no such method")),
        }
    }
}

/// Batches wait in open transactions (30 s file commits) until the object
/// idles after `idle_ms`; the log seals every 100 ms and the checkpointer
/// waits `patience_ms` for an object still committing.
fn slow_commits(dir: &std::path::Path, idle_ms: u64, patience_ms: u64) -> Config {
    let mut cfg = config(dir);
    cfg.file_commit_interval = Duration::from_secs(30);
    cfg.idle_timeout = Duration::from_millis(idle_ms);
    cfg.log.checkpoint_interval = Duration::from_millis(100);
    cfg.log.unflushed_patience = Duration::from_millis(patience_ms);
    cfg
}

/// Starts a server with the `saboteur` class.
async fn start_with_saboteur(cfg: Config) -> anyhow::Result<roost::RunningServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Server::builder()
        .with_builtins()
        .class::<Saboteur>("saboteur")
        .config(cfg)
        .start(listener)
        .await
}

/// How many keys a saboteur object holds (`None` if the call failed).
async fn keys_of(server: &roost::RunningServer, key: &ObjectKey) -> Option<Value> {
    server
        .runtime()
        .call(key, "count", Value::Null, false)
        .await
        .ok()
}

/// Three acknowledged `put`s, then the transaction holding them (a long
/// file commit interval keeps them there) is ended behind the runtime's
/// back: they are only in the commit log.
async fn lose_three_puts(rt: &roost::Runtime, key: &ObjectKey) {
    for n in 1..=3 {
        let got = rt.call(key, "put", json!(n), false).await;
        assert_eq!(got.ok(), Some(json!(n)));
    }
    assert!(rt.call(key, "sabotage", Value::Null, false).await.is_err());
}

/// If acknowledged batches cannot reach the object's file, the object is
/// never started again from the stale file and never busy-loops: it
/// catches its file up from the commit log while the server runs, then
/// serves every acknowledged write and takes new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_file_commit_is_caught_up_from_the_log_without_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.file_commit_interval = Duration::from_secs(30);
    cfg.idle_timeout = Duration::from_millis(200);
    let server = start_with_saboteur(cfg.clone()).await?;
    let rt = server.runtime().clone();
    let key = ObjectKey::new("saboteur", "s")?;
    lose_three_puts(&rt, &key).await;
    // (The object counts the lost commit right after it answered the call.)
    let mut failed = 0;
    for _ in 0..200 {
        failed = rt.metrics().error_count("file_commit_failed");
        if failed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(failed >= 1, "the lost commit is counted");
    // Past the idle timeout: caught up once, not trying to commit again and again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        rt.metrics().error_count("file_commit_failed"),
        failed,
        "the object kept trying to commit"
    );
    assert_eq!(
        rt.call(&key, "count", Value::Null, false).await.ok(),
        Some(json!(3))
    );
    assert_eq!(
        rt.call(&key, "put", json!(4), false).await.ok(),
        Some(json!(4))
    );
    drop(rt);
    server.shutdown().await?;
    let server = start_with_saboteur(cfg).await?;
    assert_eq!(
        keys_of(&server, &key).await,
        Some(json!(4)),
        "every acknowledged batch is in the file"
    );
    server.shutdown().await?;
    Ok(())
}

/// A segment kept for recovery (its object's file lost the transaction that
/// held its batches) must not outlive the deletion mark of that object: a
/// new object of the same name would otherwise get the old one's batches
/// replayed into it at the next start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_segment_is_never_replayed_into_a_recreated_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = slow_commits(dir.path(), 200, 800);
    let server = start_with_saboteur(cfg.clone()).await?;
    let rt = server.runtime().clone();
    let key = ObjectKey::new("saboteur", "s")?;
    let other = ObjectKey::new("saboteur", "t")?;
    // Two objects' batches, interleaved, then both transactions are lost:
    // the segments holding them wait, give up and are kept, and whichever
    // seal fell between the puts, a segment holding `t`'s batches (kept
    // until the restart, since `t` never commits them) holds one of `s`'s
    // second or third as well.
    for n in 1..=3 {
        for k in [&key, &other] {
            assert_eq!(
                rt.call(k, "put", json!(n), false).await.ok(),
                Some(json!(n))
            );
        }
    }
    for k in [&key, &other] {
        assert!(rt.call(k, "sabotage", Value::Null, false).await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // `s` is deleted and created again; its new batch reaches its file when
    // it idles, so the segments after the kept ones (with the deletion
    // mark) are checkpointed.
    rt.delete(&key)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(
        rt.call(&key, "put", json!(7), false).await.ok(),
        Some(json!(7))
    );
    assert_eq!(
        rt.call(&key, "count", Value::Null, false).await.ok(),
        Some(json!(1))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(rt);
    server.shutdown().await?;
    let server = start_with_saboteur(cfg).await?;
    assert_eq!(
        keys_of(&server, &key).await,
        Some(json!(1)),
        "the deleted object's batches came back"
    );
    assert_eq!(
        keys_of(&server, &other).await,
        Some(json!(3)),
        "the lost object's batches are back"
    );
    server.shutdown().await?;
    Ok(())
}

/// The commit log segments in `log_dir` (named by their number in hex),
/// ascending.
fn log_segments(log_dir: &std::path::Path) -> anyhow::Result<Vec<u64>> {
    let mut names: Vec<u64> = std::fs::read_dir(log_dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            u64::from_str_radix(name.to_str()?.strip_suffix(".log")?, 16).ok()
        })
        .collect();
    names.sort();
    Ok(names)
}

/// A segment kept because its object had not committed its batches to its
/// file in time (a long open transaction) is checkpointed by a later round
/// once the object has: it does not stay until the next start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_kept_for_a_slow_object_goes_once_the_object_commits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with_saboteur(slow_commits(dir.path(), 1000, 300)).await?;
    let rt = server.runtime().clone();
    let key = ObjectKey::new("counter", "slow")?;
    let increment = || async {
        rt.call(&key, "increment", json!({"by": 1}), false)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    increment().await?;
    // Sealed within 100 ms; the round waits 300 ms for the open transaction
    // (it commits when the object idles, after 1 s) and keeps the segment.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let log_dir = dir.path().join("log");
    let kept = *log_segments(&log_dir)?
        .first()
        .ok_or_else(|| anyhow::anyhow!("no segment"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log_segments(&log_dir)?.first(), Some(&kept), "not kept");
    // After the idle commit, a new write means a new round, which tries the
    // kept segment again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    increment().await?;
    let mut gone = false;
    for _ in 0..100 {
        if !log_segments(&log_dir)?.contains(&kept) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gone,
        "segment {kept} is still kept: {:?}",
        log_segments(&log_dir)?
    );
    drop(rt);
    server.shutdown().await?;
    Ok(())
}

/// Gathers `add`ed numbers in memory and writes them in `before_commit`,
/// once per batch; a gathered negative number makes the hook fail.
struct Gatherer {
    gathered: Vec<i64>,
    hook_runs: i64,
}

impl roost::DurableObject for Gatherer {
    fn new(_ctx: &mut roost::Ctx) -> Result<Self, roost::ObjectError> {
        Ok(Gatherer {
            gathered: Vec::new(),
            hook_runs: 0,
        })
    }

    async fn call(
        &mut self,
        ctx: &mut roost::Ctx,
        method: &str,
        args: Value,
    ) -> Result<Value, roost::ObjectError> {
        match method {
            "add" => {
                self.gathered.push(args.as_i64().unwrap_or(0));
                Ok(Value::Null)
            }
            "stored" => {
                let mut all: Vec<i64> = ctx
                    .storage()
                    .list(&roost::ListOptions::default())?
                    .into_iter()
                    .filter_map(|(_, v)| v.as_i64())
                    .collect();
                all.sort();
                Ok(json!({ "stored": all, "hook_runs": self.hook_runs }))
            }
            _ => Err(roost::ObjectError::app("no such method")),
        }
    }

    fn before_commit(&mut self, ctx: &mut roost::Ctx) -> Result<(), roost::ObjectError> {
        self.hook_runs += 1;
        for n in std::mem::take(&mut self.gathered) {
            if n < 0 {
                return Err(roost::ObjectError::app("negative"));
            }
            ctx.storage().put(&format!("k{n}"), &n)?;
        }
        Ok(())
    }
}

/// `before_commit` runs once per batch, its writes commit with the batch,
/// and its failure fails the whole batch: every call in it gets an error,
/// nothing of it is stored, and the object restarts from storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_commit_writes_with_its_batch_and_its_failure_fails_the_batch() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::builder()
        .class::<Gatherer>("gatherer")
        .config(config(dir.path()))
        .start(listener)
        .await?;
    let rt = server.runtime().clone();
    let key = ObjectKey::new("gatherer", "g")?;
    let call = |method: &'static str, args: Value| {
        let (rt, key) = (rt.clone(), key.clone());
        async move { rt.call(&key, method, args, false).await }
    };
    // 50 concurrent adds: fewer hook runs than calls (they share batches).
    let adds: Vec<_> = (1..=50)
        .map(|n| tokio::spawn(call("add", json!(n))))
        .collect();
    for a in adds {
        a.await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let r = call("stored", Value::Null)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(r["stored"], json!((1..=50).collect::<Vec<i64>>()));
    assert!(r["hook_runs"].as_i64().is_some_and(|n| n < 51), "{r}");
    // A failing hook: the call is answered with an error, nothing stored.
    let err = call("add", json!(-1))
        .await
        .expect_err("the batch must fail");
    assert_eq!(err.code, roost_protocol::ErrorCode::ObjectBroken);
    let r = call("stored", Value::Null)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(r["stored"], json!((1..=50).collect::<Vec<i64>>()));
    // Restarted from storage: the hook count began again.
    assert!(r["hook_runs"].as_i64().is_some_and(|n| n <= 2), "{r}");
    server.shutdown().await?;
    Ok(())
}

/// A class's settings (`ServerBuilder::class_with`), as its objects see them.
struct Greeting(&'static str);

/// Answers `greet` with its class's `Greeting`, `null` without one.
struct Greeter;

impl roost::DurableObject for Greeter {
    fn new(_ctx: &mut roost::Ctx) -> Result<Self, roost::ObjectError> {
        Ok(Greeter)
    }

    async fn call(
        &mut self,
        ctx: &mut roost::Ctx,
        _method: &str,
        _args: Value,
    ) -> Result<Value, roost::ObjectError> {
        assert!(ctx.settings::<u32>().is_none(), "settings of another type");
        Ok(json!(ctx.settings::<Greeting>().map(|g| g.0)))
    }
}

/// Settings registered with a class reach its objects through
/// `Ctx::settings`; the built-in `ydoc` gets `Config::ydoc`, even when the
/// config is set after `with_builtins`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_settings_reach_their_objects() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.ydoc.max_update_bytes = 4;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::builder()
        .with_builtins()
        .class_with::<Greeter, _>("greeter", Greeting("hello"))
        .class::<Greeter>("plain")
        .config(cfg)
        .start(listener)
        .await?;
    let rt = server.runtime().clone();
    let greet = |class: &'static str| {
        let rt = rt.clone();
        async move {
            let key = ObjectKey::new(class, "g")?;
            rt.call(&key, "greet", Value::Null, false)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        }
    };
    assert_eq!(greet("greeter").await?, json!("hello"));
    assert_eq!(greet("plain").await?, Value::Null);
    let update = roost::FetchRequest {
        method: "POST".into(),
        path: "update".into(),
        body: vec![0; 5],
        ..Default::default()
    };
    let response = rt
        .fetch(&ObjectKey::new("ydoc", "d")?, update)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(response.status, 413, "the 4-byte limit of Config::ydoc");
    server.shutdown().await?;
    Ok(())
}
