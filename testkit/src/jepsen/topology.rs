//! What a fault test asks the cluster: who leads a partition (the broker to kill), when a new
//! leader has taken over, which replicas are in sync (for the divergence check), and where each
//! broker listens (for the per-broker final reads). All through `millrace-client`'s admin
//! client, with fresh metadata on every call.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use millrace_client::{Admin, ClientConfig};

use super::history::{BrokerId, Partition, Recorder};
use super::replica_read::fetch_partition;

/// One partition as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// The partition.
    pub partition: Partition,
    /// Its leader, if it has one.
    pub leader: Option<BrokerId>,
    /// The leader's epoch (-1 if the broker did not say).
    pub leader_epoch: i32,
    /// Every replica.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
}

async fn admin(bootstrap: &str) -> anyhow::Result<Admin> {
    let config = ClientConfig::builder(bootstrap.split(',').map(str::to_string))
        .client_id("jepsen-topology")
        .request_timeout(Duration::from_secs(5))
        .build()
        .context("a client configuration")?;
    Admin::connect(config)
        .await
        .with_context(|| format!("an admin client for {bootstrap}"))
}

/// The partitions of `topic`, by index.
pub async fn describe_partitions(
    bootstrap: &str,
    topic: &str,
) -> anyhow::Result<Vec<PartitionView>> {
    let admin = admin(bootstrap).await?;
    let topics = admin
        .describe_topics(&[topic])
        .await
        .with_context(|| format!("describing {topic}"))?;
    let mut views: Vec<PartitionView> = topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .map(|p| PartitionView {
            partition: p.id,
            leader: (p.leader >= 0).then_some(p.leader),
            leader_epoch: p.leader_epoch,
            replicas: p.replicas,
            isr: p.isr,
        })
        .collect();
    views.sort_by_key(|v| v.partition);
    Ok(views)
}

/// The leader of `partition` of `topic`, if it has one.
pub async fn leader_of(
    bootstrap: &str,
    topic: &str,
    partition: Partition,
) -> anyhow::Result<Option<BrokerId>> {
    let views = describe_partitions(bootstrap, topic).await?;
    Ok(views
        .into_iter()
        .find(|v| v.partition == partition)
        .and_then(|v| v.leader))
}

/// Waits until `partition` of `topic` has a leader other than `not` (the broker just killed or
/// cut off; `None`: any leader), polling the metadata every 100 ms (an election has no event a
/// test could await from outside). Errors met meanwhile (the killed broker in the bootstrap
/// list, a cluster electing) count as "not yet".
pub async fn wait_for_leader(
    bootstrap: &str,
    topic: &str,
    partition: Partition,
    not: Option<BrokerId>,
    within: Duration,
) -> anyhow::Result<BrokerId> {
    let deadline = Instant::now() + within;
    loop {
        let last = match leader_of(bootstrap, topic, partition).await {
            Ok(Some(leader)) if Some(leader) != not => return Ok(leader),
            Ok(leader) => format!("leader {leader:?}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{topic}-{partition} has no new leader after {within:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records the in-sync replicas of every partition of `topic` in the history (for the
/// divergence check: only in-sync replicas must agree).
pub async fn record_isr(recorder: &Recorder, bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let views = describe_partitions(bootstrap, topic).await?;
    recorder.with(|h| {
        for view in views {
            h.set_isr(view.partition, view.isr);
        }
    });
    Ok(())
}

/// Every broker's id and client address, from the cluster's description.
pub async fn brokers(bootstrap: &str) -> anyhow::Result<Vec<(BrokerId, SocketAddr)>> {
    let admin = admin(bootstrap).await?;
    let cluster = admin
        .describe_cluster()
        .await
        .context("describing the cluster")?;
    cluster
        .brokers
        .iter()
        .map(|b| {
            let addr = b
                .addr()
                .to_socket_addrs()
                .with_context(|| format!("resolving broker {} at {}", b.id, b.addr()))?
                .next()
                .with_context(|| format!("no address for broker {} at {}", b.id, b.addr()))?;
            Ok((b.id, addr))
        })
        .collect()
}

/// The active controller's broker id as DescribeCluster reports it (-1 while there is none),
/// for tests that kill the controller.
pub async fn controller(bootstrap: &str) -> anyhow::Result<BrokerId> {
    let admin = admin(bootstrap).await?;
    let cluster = admin
        .describe_cluster()
        .await
        .context("describing the cluster")?;
    Ok(cluster.controller_id)
}

/// Reads every partition of `topic` from every broker holding a replica of it
/// ([`fetch_partition`], as a debugging consumer) and records the in-sync replicas
/// ([`record_isr`]). A topic with fewer replicas than brokers is read where it lives.
pub async fn record_every_broker(
    recorder: &Recorder,
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let views = describe_partitions(bootstrap, topic).await?;
    recorder.with(|h| {
        for view in &views {
            h.set_isr(view.partition, view.isr.clone());
        }
    });
    let brokers = brokers(bootstrap).await?;
    for partition in 0..partitions {
        let view = views
            .iter()
            .find(|v| v.partition == partition)
            .with_context(|| format!("no {topic}-{partition} in the metadata"))?;
        for (id, addr) in &brokers {
            if !view.replicas.contains(id) {
                continue;
            }
            let read = fetch_partition(*addr, topic, partition, Duration::from_secs(30))
                .await
                .with_context(|| format!("reading {topic}-{partition} from broker {id}"))?;
            recorder.with(|h| {
                h.record_replica_read(*id, partition, read.records, Some(read.high_watermark))
            });
        }
    }
    Ok(())
}
