//! Transaction markers: the coordinator's WriteTxnMarkers to each partition leader (Kafka's
//! `TransactionMarkerChannelManager`), and the leader's side of it.
//!
//! Partitions this broker leads get their markers directly; other leaders get a
//! WriteTxnMarkers request over an inter-broker connection. A marker is written with acks=all
//! semantics: it counts once the partition's in-sync replicas have it, so a new partition
//! leader never lacks a marker the coordinator counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};

use crate::api::{now_ms, str_bytes};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::group::OFFSETS_TOPIC;
use crate::log::ControlRecordType;

/// How long a marker waits for the partition's in-sync replicas.
const MARKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes the markers of one transaction to all its partitions; `Err` names what failed (the
/// caller retries: markers already written are harmless to write again).
pub async fn write_markers(
    broker: &Arc<Broker>,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    partitions: &BTreeSet<(String, i32)>,
) -> Result<(), String> {
    // Group by leader; partitions of deleted topics need no marker.
    let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    broker.controller.with_image(|image| {
        for (topic, partition) in partitions {
            if let Some(p) = image.topic(topic).and_then(|t| t.partition(*partition)) {
                by_leader
                    .entry(p.leader)
                    .or_default()
                    .push((topic.clone(), *partition));
            }
        }
    });
    let local = broker.replicas.local_id();
    // All partitions at once: each local marker is appended when its future is first polled,
    // so their fsyncs and replication overlap (group commit), and remote leaders are asked
    // in parallel.
    let mut pending: Vec<futures_util::future::BoxFuture<'_, Result<(), String>>> = Vec::new();
    for (leader, partitions) in by_leader {
        if leader < 0 {
            let message = format!("{partitions:?} have no leader");
            pending.push(Box::pin(async move { Err(message) }));
        } else if leader == local {
            for (topic, partition) in partitions {
                pending.push(Box::pin(async move {
                    match write_local(
                        broker,
                        producer_id,
                        producer_epoch,
                        coordinator_epoch,
                        commit,
                        &topic,
                        partition,
                    )
                    .await
                    {
                        Some((error, message)) => {
                            Err(format!("{topic}-{partition}: {error}: {message}"))
                        }
                        None => Ok(()),
                    }
                }));
            }
        } else {
            pending.push(Box::pin(async move {
                write_remote(
                    broker,
                    leader,
                    producer_id,
                    producer_epoch,
                    coordinator_epoch,
                    commit,
                    &partitions,
                )
                .await
            }));
        }
    }
    let failures: Vec<String> = futures_util::future::join_all(pending)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Sends one WriteTxnMarkers request to another leader.
async fn write_remote(
    broker: &Broker,
    leader: i32,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    partitions: &[(String, i32)],
) -> Result<(), String> {
    let Some(address) = broker.replicas.broker_address(leader) else {
        return Err(format!("no address for broker {leader}"));
    };
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_transaction_result(commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            )]);
    let client_id = format!("txn-coordinator-{}", broker.replicas.local_id());
    let response = broker
        .transactions
        .channels
        .call(&address, &client_id, 1, &request, MARKER_TIMEOUT * 2)
        .await?;
    let failed: Vec<String> = response
        .markers
        .iter()
        .flat_map(|m| m.topics.iter())
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.error_code != NONE)
                .map(move |p| format!("{}-{}: error {}", t.name.0, p.partition_index, p.error_code))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join(", "))
    }
}

/// Writes one marker to a partition this broker leads and waits for its in-sync replicas;
/// the error, if any. A commit marker in `__consumer_offsets` also makes the transaction's
/// offsets visible to the group coordinator (an abort drops them).
pub async fn write_local(
    broker: &Broker,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    topic: &str,
    partition: i32,
) -> Option<(ResponseError, String)> {
    let Some(replica) = broker.replicas.replica(topic, partition) else {
        // A partition that no longer exists needs no marker (Kafka answers the same).
        broker.controller.topic(topic)?;
        return Some((
            ResponseError::NotLeaderOrFollower,
            format!("{topic}-{partition} is not hosted here"),
        ));
    };
    let kind = if commit {
        ControlRecordType::Commit
    } else {
        ControlRecordType::Abort
    };
    let (info, epoch) = match replica.append_txn_marker_as_leader(
        producer_id,
        producer_epoch,
        coordinator_epoch,
        kind,
        now_ms(),
    ) {
        Ok(written) => written,
        Err(refusal) => return Some(refusal),
    };
    if topic == OFFSETS_TOPIC {
        broker
            .offsets
            .txn_offsets
            .complete(&broker.groups, producer_id, partition, commit);
    }
    if let Err(error) = replica.log().wait_durable(info.last_offset).await {
        return Some((ResponseError::from(&error), error.to_string()));
    }
    replica
        .wait_for_isr(info.last_offset, epoch, MARKER_TIMEOUT)
        .await
        .err()
}
