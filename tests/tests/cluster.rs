//! Cluster mode's ground: a real three-process NATS JetStream cluster
//! (pinned server, `sync_interval: always`) that the cluster tests run on.

use roost_tests::nats::NatsCluster;

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
