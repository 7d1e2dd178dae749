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

/// The harness itself: three servers agree on a JetStream meta leader, and
/// after a kill -9 of one the other two still do; the killed one rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_cluster_of_three_keeps_a_leader_through_a_kill() -> anyhow::Result<()> {
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
        assert!(values.insert(body.as_i64().unwrap()), "value {body} acknowledged twice");
    }
    assert_eq!(values, (1..=N).collect::<BTreeSet<_>>());
    for i in 0..3 {
        let (status, v) = call(&client, cluster.node(i), "counter", "lin", "get", json!({})).await?;
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
    let mut forwarded = 0.0;
    for i in (0..3).filter(|i| *i != owner_index) {
        let node = cluster.node(i);
        let text = client.get(node.url("/metrics")).bearer_auth(roost_tests::cluster::ADMIN).send().await?.text().await?;
        forwarded += text
            .lines()
            .find_map(|l| l.strip_prefix("roost_cluster_forwarded_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert!(forwarded >= 1.0, "the non-owners forwarded nothing");
    Ok(())
}

/// kill -9 of the node that owns a counter under load: another node takes
/// it over within the target (≤ 10 s), nothing acknowledged is lost, no
/// value is acknowledged twice; the killed node restarts (its stale local
/// state is not trusted) and serves the counter again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_owner_fails_over_and_loses_nothing() -> anyhow::Result<()> {
    let mut cluster = RoostCluster::start(3, &[]).await?;
    // The first request through a node makes that node the owner.
    cluster.increment_until_ok(0, "fo", Duration::from_secs(10)).await?;
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
    let failover = failover.ok_or_else(|| anyhow::anyhow!("no increment succeeded after the kill"))?;
    assert!(failover <= Duration::from_secs(10), "failover took {failover:?}");
    let value = final_value(cluster.node(1), "fo").await?;
    history.check(value)?;
    let new_owner = cluster.owner(2, "counter", "fo").await?;
    assert_ne!(new_owner, "r1");
    // The killed node comes back with its old data directory.
    cluster.spawn(0).await?;
    let (v, _) = cluster.increment_until_ok(0, "fo", Duration::from_secs(15)).await?;
    assert_eq!(v, value + 1, "the restarted node continues from the log");
    Ok(())
}
