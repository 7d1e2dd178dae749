//! Cluster mode against real processes: a three-server NATS JetStream
//! cluster (pinned server, `sync_interval: always`) and three `roost serve
//! --cluster` nodes on loopback. Every operation's outcome is recorded and
//! checked: every acknowledged increment is in the final state, and the
//! values acknowledged are distinct (one acknowledging writer at a time).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use roost_tests::cluster::{final_value, load, RoostCluster};
use roost_tests::nats::NatsCluster;
use roost_tests::{call, http};
use serde_json::json;

/// One cluster at a time: each test runs six processes with second-scale
/// timeouts on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The harness itself: three servers agree on a JetStream meta leader, and
/// after a kill -9 of one the other two still do; the killed one rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_cluster_of_three_keeps_a_leader_through_a_kill() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = NatsCluster::start(3).await?;
    assert_eq!(cluster.urls().split(',').count(), 3);
    cluster.kill9(0).await?;
    cluster
        .wait_ready(std::time::Duration::from_secs(30))
        .await?;
    cluster.spawn(0)?;
    cluster
        .wait_ready(std::time::Duration::from_secs(30))
        .await?;
    Ok(())
}

/// N concurrent increments of one counter, spread over all three nodes,
/// return 1..=N exactly once each; every node then reads N; all nodes name
/// the same owner, and the others forwarded to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_through_every_node_are_linearizable() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = RoostCluster::start(3, &[]).await?;
    let client = http();
    const N: i64 = 90;
    let mut tasks = Vec::new();
    for k in 0..N {
        let node = cluster.node((k % 3) as usize);
        let (client, base) = (client.clone(), node.url(""));
        tasks.push(tokio::spawn(async move {
            let url = format!("{base}/v1/objects/counter/lin/call/increment");
            let resp = client.post(url).json(&json!({})).send().await?;
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await?;
            anyhow::Ok((status, body))
        }));
    }
    let mut values = BTreeSet::new();
    for t in tasks {
        let (status, body) = t.await??;
        assert_eq!(status, 200, "{body}");
        assert!(
            values.insert(body.as_i64().expect("a number")),
            "value {body} acknowledged twice"
        );
    }
    assert_eq!(values, (1..=N).collect::<BTreeSet<_>>());
    for i in 0..3 {
        let (status, v) =
            call(&client, cluster.node(i), "counter", "lin", "get", json!({})).await?;
        assert_eq!((status, v), (200, json!(N)), "node {i}");
    }
    let owner = cluster.owner(0, "counter", "lin").await?;
    for i in 1..3 {
        assert_eq!(cluster.owner(i, "counter", "lin").await?, owner);
    }
    let nodes: serde_json::Value = client
        .get(cluster.node(0).url("/v1/admin/cluster"))
        .bearer_auth(roost_tests::cluster::ADMIN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(3), "{nodes}");
    let owner_index = RoostCluster::index_of(&owner)?;
    let others: Vec<usize> = (0..3).filter(|i| *i != owner_index).collect();
    let forwarded = cluster
        .metric_sum(&others, "roost_cluster_forwarded_total")
        .await?;
    assert!(forwarded >= 1.0, "the non-owners forwarded nothing");
    Ok(())
}

/// kill -9 of the node that owns a counter under load: another node takes
/// it over within the target (≤ 10 s), nothing acknowledged is lost, no
/// value is acknowledged twice; the killed node restarts (its stale local
/// state is not trusted) and serves the counter again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_owner_fails_over_and_loses_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    // The first request through a node makes that node the owner.
    cluster
        .increment_until_ok(0, "fo", Duration::from_secs(10))
        .await?;
    assert_eq!(cluster.owner(1, "counter", "fo").await?, "r1");
    let bases: Vec<String> = (0..3).map(|i| cluster.node(i).url("")).collect();
    let until = Instant::now() + Duration::from_secs(14);
    let load = tokio::spawn(load(bases, "fo", 6, until));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    cluster.kill9(0).await?;
    let history = load.await?;
    let failover = history.first_ack_after(killed_at + Duration::from_millis(50));
    println!(
        "failover after kill -9 of the owner: {failover:?}; {} acknowledged, {} failed",
        history.acked.len(),
        history.failed.len()
    );
    let failover =
        failover.ok_or_else(|| anyhow::anyhow!("no increment succeeded after the kill"))?;
    assert!(
        failover <= Duration::from_secs(10),
        "failover took {failover:?}"
    );
    let value = final_value(cluster.node(1), "fo").await?;
    history.check(value)?;
    let new_owner = cluster.owner(2, "counter", "fo").await?;
    assert_ne!(new_owner, "r1");
    // The killed node comes back with its old data directory.
    cluster.spawn(0).await?;
    let (v, _) = cluster
        .increment_until_ok(0, "fo", Duration::from_secs(15))
        .await?;
    assert_eq!(v, value + 1, "the restarted node continues from the log");
    Ok(())
}

/// SIGSTOP of the owner past its TTL: another node takes the counter over;
/// after SIGCONT the paused node (a zombie that still believes it owns the
/// counter) never acknowledges a write: whatever it answers is either a
/// retryable 503 or a value the new owner made, never one twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_and_acknowledges_nothing_stale() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = RoostCluster::start(3, &[]).await?;
    let client = http();
    cluster
        .increment_until_ok(0, "z", Duration::from_secs(10))
        .await?;
    cluster.signal(0, "STOP")?;
    let stopped_at = Instant::now();
    let (_, took) = cluster
        .increment_until_ok(1, "z", Duration::from_secs(15))
        .await?;
    println!(
        "takeover from a paused owner after {:?}",
        stopped_at.elapsed()
    );
    assert!(took <= Duration::from_secs(10));
    let bases: Vec<String> = (1..3).map(|i| cluster.node(i).url("")).collect();
    let until = Instant::now() + Duration::from_secs(4);
    let others = tokio::spawn(load(bases, "z", 3, until));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.signal(0, "CONT")?;
    // Straight at the zombie while the others write.
    let zombie = load(vec![cluster.node(0).url("")], "z", 2, until).await;
    let mut history = others.await?;
    for (status, body) in zombie.failed.iter().map(|(_, s, b)| (s, b)) {
        assert!(
            *status == 503 || *status == 0,
            "the zombie answered {status}: {body}"
        );
    }
    history.acked.extend(zombie.acked.iter().copied());
    let value = final_value(cluster.node(2), "z").await?;
    history.check(value)?;
    let (status, _) = call(&client, cluster.node(0), "counter", "z", "get", json!({})).await?;
    assert_eq!(status, 200, "the woken node serves again (forwarding)");
    Ok(())
}

/// SIGTERM of the owner hands its objects over: another node serves the
/// counter within a second or so, and every failed call meanwhile is a
/// retryable 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_objects_over_quickly_with_only_retryable_errors() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    cluster
        .increment_until_ok(0, "t", Duration::from_secs(10))
        .await?;
    let bases: Vec<String> = (1..3).map(|i| cluster.node(i).url("")).collect();
    let until = Instant::now() + Duration::from_secs(6);
    let load = tokio::spawn(load(bases, "t", 4, until));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let term_at = Instant::now();
    let code = cluster.terminate(0).await?;
    let exited = term_at.elapsed();
    let history = load.await?;
    assert_eq!(code, Some(0));
    for (at, status, body) in &history.failed {
        assert_eq!(
            *status,
            503,
            "a call failed with {status} {body} at {:?}",
            at.duration_since(term_at)
        );
    }
    // The longest gap between acknowledgements around the handover.
    let mut times: Vec<Instant> = history.acked.iter().map(|(t, _)| *t).collect();
    times.sort();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!("SIGTERM: node exited after {exited:?}; longest pause between acknowledgements {gap:?}; {} failed", history.failed.len());
    assert!(
        gap <= Duration::from_secs(3),
        "the handover paused writes for {gap:?}"
    );
    history.check(final_value(cluster.node(1), "t").await?)?;
    Ok(())
}

/// A Yjs client connected to a node that does not own its document keeps
/// its socket through a kill -9 of the owner: the relay finds the new owner
/// and re-syncs both ways, so edits before and after the kill reach a
/// client that connects later anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yjs_socket_on_a_surviving_node_stays_open_when_the_owner_dies() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    use roost_tests::yclient::YClient;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    // r1 owns the document: its first socket went there.
    let mut first = YClient::new();
    first
        .connect(&cluster.node(0).ws_url("/v1/yjs/story"))
        .await?;
    first.insert(0, "once ").await?;
    first.drain(Duration::from_millis(300)).await?;
    let mut relayed = YClient::new();
    relayed
        .connect(&cluster.node(1).ws_url("/v1/yjs/story"))
        .await?;
    relayed
        .wait_for_text("once ", Duration::from_secs(10))
        .await?;
    assert_eq!(cluster.owner(2, "ydoc", "story").await?, "r1");
    relayed.insert(5, "upon ").await?;
    first
        .wait_for_text("once upon ", Duration::from_secs(10))
        .await?;
    drop(first);
    cluster.kill9(0).await?;
    // Typed while the owner is dead: kept by the client, re-synced later.
    relayed.insert(10, "a time").await?;
    let closed = relayed.drain(Duration::from_secs(6)).await?;
    assert_eq!(closed, None, "the relayed socket was closed");
    assert!(relayed.is_connected());
    let mut late = YClient::new();
    late.connect(&cluster.node(2).ws_url("/v1/yjs/story"))
        .await?;
    late.wait_for_text("once upon a time", Duration::from_secs(20))
        .await?;
    relayed.insert(16, "!").await?;
    late.wait_for_text("once upon a time!", Duration::from_secs(10))
        .await?;
    assert_ne!(cluster.owner(2, "ydoc", "story").await?, "r1");
    Ok(())
}

/// Every Roost node killed at once while writes are in flight, and one NATS
/// server killed too: after the restart nothing acknowledged is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_killed_at_once_lose_nothing_acknowledged() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    let bases: Vec<String> = (0..3).map(|i| cluster.node(i).url("")).collect();
    let until = Instant::now() + Duration::from_secs(3);
    let mut loads = Vec::new();
    for name in ["a", "b", "c"] {
        loads.push((name, tokio::spawn(load(bases.clone(), name, 3, until))));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nats.kill9(2).await?;
    for i in 0..3 {
        cluster.kill9(i).await?;
    }
    let mut histories = Vec::new();
    for (name, l) in loads {
        histories.push((name, l.await?));
    }
    for i in 0..3 {
        cluster.spawn(i).await?;
    }
    for (name, history) in histories {
        assert!(
            !history.acked.is_empty(),
            "{name}: nothing was acknowledged"
        );
        let value = final_value(cluster.node((name.as_bytes()[0] % 3) as usize), name).await?;
        history.check(value)?;
    }
    Ok(())
}

/// A NATS server that does not fsync every write is refused, with a
/// message that says what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_without_sync_is_refused() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let monitor = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.path().join("lazy.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\njetstream {{ store_dir: \"{}\" }}\n",
            dir.path().join("js").display()
        ),
    )?;
    let mut nats = tokio::process::Command::new(roost_tests::nats::server_bin())
        .arg("-c")
        .arg(&conf)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = tokio::process::Command::new(roost_tests::roost_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .args(["--cluster", &format!("nats://127.0.0.1:{port}")])
        .args(["--cluster-monitor", &format!("http://127.0.0.1:{monitor}")])
        .args(["--cluster-replicas", "1", "--node-id", "lonely"])
        .output()
        .await?;
    nats.kill().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("sync_interval: always"), "{stderr}");
    // Without the monitoring URLs it is refused too, saying why.
    let out = tokio::process::Command::new(roost_tests::roost_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            "nats://127.0.0.1:1",
        ])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--cluster-monitor"), "{stderr}");
    Ok(())
}

/// An alarm outlives the node that set it: after a kill -9 of the owner,
/// a surviving node takes the object over when the alarm is due — without
/// any request for it — and fires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_fires_after_its_owner_died() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    let client = http();
    let (status, body) = call(
        &client,
        cluster.node(0),
        "counter",
        "later",
        "increment_later",
        json!({"by": 5, "delay_ms": 2500}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    cluster.kill9(0).await?;
    let started = Instant::now();
    let fired = loop {
        let fired = cluster
            .metric_sum(&[1, 2], "roost_alarms_fired_total")
            .await?;
        if fired >= 1.0 || started.elapsed() > Duration::from_secs(20) {
            break fired;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(fired >= 1.0, "no surviving node fired the alarm");
    println!(
        "alarm fired on a survivor {:?} after the kill",
        started.elapsed()
    );
    assert_eq!(final_value(cluster.node(1), "later").await?, 5);
    Ok(())
}

/// Two nodes race to take the same fresh objects while a third forwards,
/// then one node dies: every object's log shows one owner at a time — after
/// each ownership record, only that owner appended until the next one (a
/// log trimmed at a snapshot starts with its appender as the owner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_takeovers_leave_one_owner_at_a_time_in_every_log() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    let client = http();
    let names: Vec<String> = (0..6).map(|i| format!("race-{i}")).collect();
    let until = Instant::now() + Duration::from_secs(3);
    let mut loads = Vec::new();
    for name in &names {
        let bases = vec![cluster.node(0).url(""), cluster.node(1).url("")];
        let name = name.clone();
        loads.push(tokio::spawn(async move {
            let history = load(bases, &name, 2, until).await;
            (name, history)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill9(1).await?;
    let mut histories = Vec::new();
    for l in loads {
        histories.push(l.await?);
    }
    for (name, history) in histories {
        let value = final_value(cluster.node(2), &name).await?;
        history.check(value)?;
        let log: serde_json::Value = client
            .get(
                cluster
                    .node(2)
                    .url(&format!("/v1/admin/objects/counter/{name}/log")),
            )
            .bearer_auth(roost_tests::cluster::ADMIN)
            .send()
            .await?
            .json()
            .await?;
        let records = log["records"].as_array().cloned().unwrap_or_default();
        assert!(!records.is_empty(), "{name}: empty log {log}");
        // A trimmed log starts at a snapshot: its appender owned the object then.
        let who_of = |r: &serde_json::Value| {
            (
                r["node"].as_str().unwrap_or("").to_owned(),
                r["incarnation"].as_str().unwrap_or("").to_owned(),
            )
        };
        let mut owner: Option<(String, String)> = Some(who_of(&records[0]));
        for r in &records {
            let who = who_of(r);
            match r["kind"].as_str() {
                Some("own") => owner = Some(who),
                Some("release") => owner = None,
                _ => assert_eq!(
                    owner.as_ref(),
                    Some(&who),
                    "{name}: {r} appended by a node that did not own it: {log}"
                ),
            }
        }
    }
    Ok(())
}

/// With a snapshot every 20 batches the owner keeps trimming the object's
/// log; after a kill -9 the new owner rebuilds from the newest snapshot and
/// the batches after it, and every acknowledged increment is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_trim_the_log_and_a_takeover_rebuilds_from_one() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &["--cluster-snapshot-every", "20"]).await?;
    let client = http();
    let mut acked = 0;
    for _ in 0..130 {
        let (status, v) = call(
            &client,
            cluster.node(0),
            "counter",
            "snap",
            "increment",
            json!({}),
        )
        .await?;
        assert_eq!(status, 200, "{v}");
        acked = v.as_i64().expect("a number");
    }
    let log: serde_json::Value = client
        .get(cluster.node(0).url("/v1/admin/objects/counter/snap/log"))
        .bearer_auth(roost_tests::cluster::ADMIN)
        .send()
        .await?
        .json()
        .await?;
    let records = log["records"].as_array().cloned().unwrap_or_default();
    assert!(
        records.len() <= 30,
        "the log was not trimmed: {} records",
        records.len()
    );
    assert!(records.iter().any(|r| r["kind"] == "snapshot"), "{log}");
    cluster.kill9(0).await?;
    assert_eq!(final_value(cluster.node(1), "snap").await?, acked);
    let (v, _) = cluster
        .increment_until_ok(2, "snap", Duration::from_secs(10))
        .await?;
    assert_eq!(v, acked + 1);
    Ok(())
}

/// kill -9 of the NATS server leading most log streams (not a Roost node)
/// under load: appends wait for the streams' new leaders, and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_stream_leader_loses_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    for name in ["l1", "l2", "l3", "l4"] {
        cluster
            .increment_until_ok(0, name, Duration::from_secs(10))
            .await?;
    }
    let leader = cluster.nats.busiest_leader("roost-log-").await?;
    let bases: Vec<String> = (0..3).map(|i| cluster.node(i).url("")).collect();
    let until = Instant::now() + Duration::from_secs(14);
    let mut loads = Vec::new();
    for name in ["l1", "l2", "l3", "l4"] {
        let bases = bases.clone();
        loads.push((
            name,
            tokio::spawn(async move { load(bases, name, 2, until).await }),
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    cluster.nats.kill9(leader).await?;
    for (name, l) in loads {
        let history = l.await?;
        let resumed = history.first_ack_after(killed_at + Duration::from_millis(20));
        println!("{name}: first acknowledgement after the stream leader's kill: {resumed:?}");
        assert!(
            resumed.is_some(),
            "{name}: no write after the leader's kill"
        );
        history.check(final_value(cluster.node(1), name).await?)?;
    }
    Ok(())
}

/// Rolling SIGTERM restarts of all three nodes under load: every failed
/// call is a retryable 503 (or a refused connection to the node that is
/// down), and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_under_load_lose_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    let mut history = roost_tests::cluster::History::default();
    for round in 0..3 {
        // Load through the two nodes that stay up this round.
        let bases: Vec<String> = (0..3)
            .filter(|i| *i != round)
            .map(|i| cluster.node(i).url(""))
            .collect();
        let until = Instant::now() + Duration::from_secs(4);
        let l = tokio::spawn(load(bases, "roll", 4, until));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(cluster.terminate(round).await?, Some(0));
        cluster.spawn(round).await?;
        let h = l.await?;
        for (_, status, body) in &h.failed {
            assert_eq!(
                *status, 503,
                "round {round}: a call failed with {status} {body}"
            );
        }
        history.acked.extend(h.acked);
    }
    history.check(final_value(cluster.node(0), "roll").await?)?;
    assert!(
        history.acked.len() > 30,
        "too few writes: {}",
        history.acked.len()
    );
    Ok(())
}

/// With tokens required, a request without a valid one is refused by the
/// node it reached and never makes that node take the object over; with a
/// token it is served (forwarded or taken over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_takes_nothing_over() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = RoostCluster::start(3, &["--auth-secret", "cluster-secret"]).await?;
    let client = http();
    for _ in 0..5 {
        let (status, _) = call(
            &client,
            cluster.node(1),
            "counter",
            "locked",
            "increment",
            json!({}),
        )
        .await?;
        assert_eq!(status, 401);
    }
    let takeovers = cluster
        .metric_sum(&[0, 1, 2], "roost_cluster_takeovers_total")
        .await?;
    assert_eq!(takeovers, 0.0, "a refused request took an object over");
    let token = std::process::Command::new(roost_tests::roost_bin())
        .args([
            "token",
            "--secret",
            "cluster-secret",
            "--obj",
            "counter/locked",
            "--perm",
            "write",
            "--ttl",
            "1h",
        ])
        .output()?;
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let resp = client
        .post(
            cluster
                .node(2)
                .url("/v1/objects/counter/locked/call/increment"),
        )
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        cluster
            .metric_sum(&[0, 1, 2], "roost_cluster_takeovers_total")
            .await?,
        1.0
    );
    Ok(())
}

/// README's "Run a cluster" commands, run as written in an empty folder
/// (the debug binary stands in for the release build, which is skipped):
/// three NATS servers and three nodes start, the two increments through two
/// nodes answer 1 and 2, and the cluster lists its nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_cluster_commands_run_as_written() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let section = readme
        .split("## Run a cluster")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .ok_or_else(|| anyhow::anyhow!("README has no 'Run a cluster' section"))?;
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .ok_or_else(|| anyhow::anyhow!("no sh block"))?;
    let root = root.canonicalize()?;
    let script: String = block
        .lines()
        .filter(|l| !l.starts_with("cargo build"))
        .map(|l| {
            l.replace("./scripts/", &format!("{}/scripts/", root.display()))
                .replace(
                    ".tools/nats/bin/nats-server",
                    &roost_tests::nats::server_bin().display().to_string(),
                )
                .replace(
                    "target/release/roost",
                    &roost_tests::roost_bin().display().to_string(),
                )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()?;
    let pgid = child.id().unwrap_or(0);
    // Background processes keep stdout open: read lines until the
    // cluster listing (the last command's answer) or a minute passed.
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout_at(deadline.into(), lines.next_line()).await
        {
            out.push_str(&line);
            out.push('\n');
            if line.contains("\"mode\"") {
                break;
            }
        }
    }
    // Stop everything the script started: its whole process group.
    let _ = std::process::Command::new("bash")
        .args(["-c", &format!("kill -KILL -- -{pgid}")])
        .status();
    let _ = child.wait().await;
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        lines.contains(&"1") && lines.contains(&"2"),
        "README cluster output: {out}"
    );
    let nodes = lines
        .iter()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["mode"] == "cluster")
        })
        .ok_or_else(|| anyhow::anyhow!("no cluster listing in: {out}"))?;
    assert!(
        nodes["nodes"].as_array().is_some_and(|n| !n.is_empty()),
        "{nodes}"
    );
    Ok(())
}

/// A room's socket relayed to its owner (r1) through r2 outlives the
/// owner's kill -9 without reconnecting: a call made during the failover is
/// answered (never silently dropped), the new owner lists the socket with
/// its tag and the name set by its last acknowledged `join` (its
/// attachment), a broadcast from the new owner reaches it, and when it
/// closes the new owner runs `on_close` for the same socket id. A socket
/// connected to the killed node itself closes. A client that forges the
/// relay's headers gets an ordinary socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_object_socket_keeps_working_against_the_new_owner() -> anyhow::Result<()> {
    use roost_tests::ws::{Client, Frame};
    let _serial = SERIAL.lock().await;
    let mut cluster = RoostCluster::start(3, &[]).await?;
    let urls: Vec<String> = (0..3)
        .map(|i| cluster.node(i).ws_url("/v1/objects/room/lobby/ws?name="))
        .collect();
    let room = |i: usize, name: &str| format!("{}{name}", urls[i]);
    // r1 owns the room: its first socket went there.
    let mut dora = Client::connect(&room(0, "dora")).await?;
    dora.event("history").await?;
    assert_eq!(cluster.owner(2, "room", "lobby").await?, "r1");
    let mut alice = Client::connect(&room(1, "alice")).await?;
    alice.event("history").await?;
    let joined = dora.event("join").await?;
    assert_eq!(joined["name"], "alice", "{joined}");
    let socket = joined["socket"].clone();
    // A new name: the attachment changes after the socket was accepted.
    let v = alice.call("join", json!({"name": "alicia"})).await?;
    assert_eq!(v["ok"]["name"], "alicia", "{v}");
    assert_eq!(dora.event("join").await?["name"], "alicia");

    cluster.kill9(0).await?;
    let closed = loop {
        match dora.next(Duration::from_secs(10)).await? {
            Frame::Closed(code, _) => break code,
            _ => continue,
        }
    };
    assert_ne!(closed, Some(1000), "the killed node's socket closed");
    // Sent while no owner is reachable: answered once the socket resumed
    // (or, had it reached the dead owner, failed as retryable).
    let v = alice.call("send", json!({"text": "during"})).await?;
    assert!(
        v["ok"]["id"].is_number() || v["error"]["code"] == "object_moved",
        "{v}"
    );
    let who = alice.call("who", json!({})).await?;
    assert_eq!(who["ok"], json!(["alicia"]), "{who}");
    assert_ne!(cluster.owner(2, "room", "lobby").await?, "r1");
    let resumed = "roost_cluster_sockets_resumed_total";
    assert_eq!(cluster.metric_sum(&[1, 2], resumed).await?, 1.0);

    // A broadcast from the new owner reaches the resumed socket, and a
    // message from it goes out under its name.
    let mut bob = Client::connect(&room(2, "bob")).await?;
    bob.event("history").await?;
    assert_eq!(alice.event("join").await?["name"], "bob");
    bob.call("send", json!({"text": "hi alice"})).await?;
    let m = alice.event("message").await?;
    assert_eq!(
        (m["name"].as_str(), m["text"].as_str()),
        (Some("bob"), Some("hi alice"))
    );
    alice.call("send", json!({"text": "hi bob"})).await?;
    let m = loop {
        let m = bob.event("message").await?;
        if m["text"] == "hi bob" {
            break m;
        }
    };
    assert_eq!(m["name"], "alicia", "{m}");
    let who = bob.call("who", json!({})).await?;
    let mut names: Vec<String> = serde_json::from_value(who["ok"].clone())?;
    names.sort();
    assert_eq!(names, ["alicia", "bob"]);

    // Its close reaches the new owner: `on_close` sees the same socket.
    alice.ws.close(None).await?;
    let left = bob.event("leave").await?;
    assert_eq!(
        (&left["name"], &left["socket"]),
        (&json!("alicia"), &socket)
    );

    // A client cannot pose as a relay to the owner: forged relay headers
    // are ignored, and `on_connect` admits it as any other socket.
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, Message};
    let owner = RoostCluster::index_of(&cluster.owner(2, "room", "lobby").await?)?;
    let mut forged = room(owner, "mallory").into_client_request()?;
    forged.headers_mut().insert("roost-relay", "00".parse()?);
    forged.headers_mut().insert("roost-resume", "AAAA".parse()?);
    let (mut ws, response) = tokio_tungstenite::connect_async(forged).await?;
    assert!(!response.headers().contains_key("roost-relay"));
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await?;
    let Some(Ok(Message::Text(text))) = first else {
        anyhow::bail!("expected the history event, got {first:?}");
    };
    assert!(text.contains("\"history\""), "{text}");
    Ok(())
}
