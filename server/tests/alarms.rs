//! Alarm semantics on tokio's paused clock, in process: on time and never
//! early, delete cancels, set replaces, retries with backoff, give-up, and
//! transactional set (a failed event or commit never leaves an alarm).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use roost::{AlarmInfo, Config, Ctx, DurableObject, ObjectError, ObjectKey, Server};
use serde_json::{json, Value};

/// (virtual ms when fired, info) per object name.
type Attempts = HashMap<String, Vec<(i64, AlarmInfo)>>;

fn attempts() -> &'static Mutex<Attempts> {
    static A: OnceLock<Mutex<Attempts>> = OnceLock::new();
    A.get_or_init(|| Mutex::new(HashMap::new()))
}

fn attempts_of(name: &str) -> Vec<(i64, AlarmInfo)> {
    attempts()
        .lock()
        .expect("lock")
        .get(name)
        .cloned()
        .unwrap_or_default()
}

/// A test class: sets alarms on request; its handler fails `fail` times,
/// and sets the alarm to the time it fired for `again` times.
struct Probe {
    fail: u32,
    again: u32,
}

impl DurableObject for Probe {
    fn new(_ctx: &mut Ctx) -> Result<Self, ObjectError> {
        Ok(Probe { fail: 0, again: 0 })
    }

    async fn call(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        args: Value,
    ) -> Result<Value, ObjectError> {
        let delay = args.get("delay_ms").and_then(Value::as_i64).unwrap_or(0);
        match method {
            "set_in" => {
                let at = ctx.now_ms() + delay;
                ctx.set_alarm(at)?;
                Ok(json!(at))
            }
            "set_then_fail" => {
                ctx.set_alarm(ctx.now_ms() + delay)?;
                Err(ObjectError::app("failing on purpose after set_alarm"))
            }
            "delete" => {
                ctx.delete_alarm()?;
                Ok(Value::Null)
            }
            "get" => Ok(json!(ctx.get_alarm()?)),
            "fail" => {
                self.fail = args.get("times").and_then(Value::as_u64).unwrap_or(0) as u32;
                Ok(Value::Null)
            }
            "again" => {
                self.again = args.get("times").and_then(Value::as_u64).unwrap_or(0) as u32;
                Ok(Value::Null)
            }
            other => Err(ObjectError::UnknownMethod(other.into())),
        }
    }

    async fn alarm(&mut self, ctx: &mut Ctx, info: AlarmInfo) -> Result<(), ObjectError> {
        attempts()
            .lock()
            .expect("lock")
            .entry(ctx.name().to_owned())
            .or_default()
            .push((ctx.now_ms(), info));
        if self.fail > 0 {
            self.fail -= 1;
            return Err(ObjectError::app("alarm handler fails on purpose"));
        }
        if self.again > 0 {
            self.again -= 1;
            ctx.set_alarm(info.scheduled_ms)?;
        }
        Ok(())
    }
}

/// With real I/O (fsyncs on other threads) under a paused clock, tokio would
/// jump straight to the next timer whenever the runtime waits on that I/O.
/// A 1 ms ticker bounds each jump, so virtual time moves in small steps
/// (still faster than real time while a thread fsyncs: margins below are wide).
fn tick() {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

async fn start(
    dir: &std::path::Path,
    fault: Option<Arc<AtomicBool>>,
) -> anyhow::Result<roost::RunningServer> {
    tick();
    let mut config = Config {
        data_dir: dir.to_owned(),
        idle_timeout: Duration::from_secs(3600),
        ..Config::default()
    };
    if let Some(flag) = fault {
        config.fault = Some(Arc::new(move |_c: &str, _n: &str| {
            flag.load(Ordering::SeqCst)
        }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Server::builder()
        .class::<Probe>("probe")
        .config(config)
        .start(listener)
        .await
}

async fn call(
    server: &roost::RunningServer,
    name: &str,
    method: &str,
    args: Value,
) -> Result<Value, String> {
    let key = ObjectKey::new("probe", name).map_err(|e| e.to_string())?;
    server
        .runtime()
        .call(&key, method, args, false)
        .await
        .map_err(|e| e.message)
}

async fn sleep_s(s: u64) {
    tokio::time::sleep(Duration::from_secs(s)).await;
}

#[tokio::test(start_paused = true)]
async fn fires_once_on_time_never_early() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), None).await?;
    let at = call(&server, "ontime", "set_in", json!({"delay_ms": 5000}))
        .await
        .map_err(anyhow::Error::msg)?;
    let at = at.as_i64().unwrap_or_default();
    sleep_s(30).await;
    let a = attempts_of("ontime");
    assert_eq!(a.len(), 1, "fired exactly once: {a:?}");
    assert!(a[0].0 >= at, "fired early: at {} < scheduled {at}", a[0].0);
    assert!(a[0].0 - at < 1000, "fired late: {} vs {at}", a[0].0);
    assert_eq!(a[0].1.retry_count, 0);
    assert!(!a[0].1.is_retry);
    assert_eq!(
        call(&server, "ontime", "get", Value::Null).await,
        Ok(Value::Null),
        "consumed"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn delete_cancels_and_set_replaces() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), None).await?;
    call(&server, "cancelled", "set_in", json!({"delay_ms": 5000}))
        .await
        .map_err(anyhow::Error::msg)?;
    call(&server, "cancelled", "delete", Value::Null)
        .await
        .map_err(anyhow::Error::msg)?;
    call(&server, "replaced", "set_in", json!({"delay_ms": 60_000}))
        .await
        .map_err(anyhow::Error::msg)?;
    let later = call(&server, "replaced", "set_in", json!({"delay_ms": 120_000}))
        .await
        .map_err(anyhow::Error::msg)?;
    sleep_s(200).await;
    assert!(attempts_of("cancelled").is_empty(), "a deleted alarm fired");
    let a = attempts_of("replaced");
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(
        a[0].0 >= later.as_i64().unwrap_or_default(),
        "fired at the replaced time"
    );
    server.shutdown().await?;
    Ok(())
}

/// A handler that sets its alarm to the very time it fired for gets it
/// again (the row is consumed only when the handler left it alone).
#[tokio::test(start_paused = true)]
async fn a_handler_that_sets_its_own_time_again_fires_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), None).await?;
    call(&server, "again", "again", json!({"times": 2}))
        .await
        .map_err(anyhow::Error::msg)?;
    let at = call(&server, "again", "set_in", json!({"delay_ms": 1000}))
        .await
        .map_err(anyhow::Error::msg)?;
    sleep_s(30).await;
    let a = attempts_of("again");
    assert_eq!(a.len(), 3, "fired, then twice more: {a:?}");
    assert!(a
        .iter()
        .all(|(_, info)| Some(info.scheduled_ms) == at.as_i64()));
    assert_eq!(
        call(&server, "again", "get", Value::Null).await,
        Ok(Value::Null),
        "consumed once left alone"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn failed_handlers_retry_with_backoff_then_succeed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), None).await?;
    call(&server, "flaky", "fail", json!({"times": 3}))
        .await
        .map_err(anyhow::Error::msg)?;
    call(&server, "flaky", "set_in", json!({"delay_ms": 1000}))
        .await
        .map_err(anyhow::Error::msg)?;
    sleep_s(120).await;
    let a = attempts_of("flaky");
    assert_eq!(a.len(), 4, "{a:?}");
    let retries: Vec<u32> = a.iter().map(|(_, i)| i.retry_count).collect();
    assert_eq!(retries, [0, 1, 2, 3]);
    let is_retry: Vec<bool> = a.iter().map(|(_, i)| i.is_retry).collect();
    assert_eq!(is_retry, [false, true, true, true]);
    let gaps: Vec<i64> = a.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for (gap, want) in gaps.iter().zip([2000, 4000, 8000]) {
        assert!(*gap >= want && *gap < want + 1000, "gaps {gaps:?}");
    }
    assert_eq!(
        call(&server, "flaky", "get", Value::Null).await,
        Ok(Value::Null)
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_the_retry_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), None).await?;
    call(&server, "doomed", "fail", json!({"times": 1000}))
        .await
        .map_err(anyhow::Error::msg)?;
    call(&server, "doomed", "set_in", json!({"delay_ms": 1000}))
        .await
        .map_err(anyhow::Error::msg)?;
    sleep_s(200).await;
    let a = attempts_of("doomed");
    assert_eq!(a.len(), 7, "1 attempt + 6 retries: {a:?}");
    assert_eq!(a.last().map(|(_, i)| i.retry_count), Some(6));
    assert_eq!(
        call(&server, "doomed", "get", Value::Null).await,
        Ok(Value::Null),
        "dropped"
    );
    sleep_s(100).await;
    assert_eq!(attempts_of("doomed").len(), 7, "no attempt after giving up");
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_alarm_set_by_a_failed_event_or_commit_never_fires() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fault = Arc::new(AtomicBool::new(false));
    let server = start(dir.path(), Some(fault.clone())).await?;
    let r = call(
        &server,
        "rolledback",
        "set_then_fail",
        json!({"delay_ms": 1000}),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(
        call(&server, "rolledback", "get", Value::Null).await,
        Ok(Value::Null)
    );
    fault.store(true, Ordering::SeqCst);
    let r = call(&server, "uncommitted", "set_in", json!({"delay_ms": 1000})).await;
    assert!(r.is_err(), "the commit was made to fail");
    fault.store(false, Ordering::SeqCst);
    assert_eq!(
        call(&server, "uncommitted", "get", Value::Null).await,
        Ok(Value::Null)
    );
    sleep_s(60).await;
    assert!(attempts_of("rolledback").is_empty());
    assert!(attempts_of("uncommitted").is_empty());
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn alarms_survive_a_restart_and_fire_for_evicted_objects() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), None).await?;
    call(&server, "sleeper", "set_in", json!({"delay_ms": 20_000}))
        .await
        .map_err(anyhow::Error::msg)?;
    server.shutdown().await?;
    // A fresh server loads the index; the object is not live until it fires.
    let server = start(dir.path(), None).await?;
    assert_eq!(server.runtime().live_objects(), 0);
    sleep_s(60).await;
    assert_eq!(attempts_of("sleeper").len(), 1);
    server.shutdown().await?;
    Ok(())
}
