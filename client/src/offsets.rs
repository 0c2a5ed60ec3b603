//! Offset look-ups and commits shared by the consumer and the admin client: ListOffsets,
//! OffsetFetch and OffsetCommit.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, GroupId, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::coordinator::find_group_coordinator;
use crate::error::{ClientError, Result};
use crate::network::cluster::Cluster;
use crate::retry::with_retries;
use crate::types::{IsolationLevel, ListedOffset, OffsetSpec, TopicPartition};

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

/// Looks up offsets with ListOffsets, one request per partition leader, retrying partitions
/// whose leader moved.
pub(crate) async fn list_offsets(
    cluster: &Cluster,
    specs: &[(TopicPartition, OffsetSpec)],
    isolation: IsolationLevel,
) -> Result<HashMap<TopicPartition, ListedOffset>> {
    cluster.add_interest(specs.iter().map(|(tp, _)| tp.topic.as_str()));
    let mut found = HashMap::with_capacity(specs.len());
    let mut pending: Vec<(TopicPartition, OffsetSpec)> = specs.to_vec();
    let deadline = Instant::now() + cluster.config.request_timeout;
    loop {
        let mut retry_error = None;
        let metadata = cluster.fresh_metadata().await?;
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, OffsetSpec)>> = BTreeMap::new();
        for (tp, spec) in std::mem::take(&mut pending) {
            match metadata.leader(&tp.topic, tp.partition) {
                Some(leader) => by_leader.entry(leader).or_default().push((tp, spec)),
                None => {
                    let code = match metadata.topics.get(&tp.topic) {
                        Some(topic) if topic.error_code != 0 => topic.error_code,
                        Some(topic) if !topic.partitions.iter().any(|p| p.id == tp.partition) => 3,
                        _ => 5,
                    };
                    retry_error.get_or_insert_with(|| {
                        ClientError::kafka("ListOffsets", tp.to_string(), code, None)
                    });
                    pending.push((tp, spec));
                }
            }
        }
        let requests = by_leader
            .into_iter()
            .map(|(leader, partitions)| async move {
                let result = list_offsets_from(cluster, leader, &partitions, isolation).await;
                (partitions, result)
            });
        for (partitions, result) in futures_util::future::join_all(requests).await {
            match result {
                Ok(results) => {
                    for ((tp, spec), outcome) in partitions.into_iter().zip(results) {
                        match outcome {
                            Ok(offset) => {
                                found.insert(tp, offset);
                            }
                            Err(error) if error.is_retriable() => {
                                retry_error.get_or_insert(error);
                                pending.push((tp, spec));
                            }
                            Err(error) => return Err(error),
                        }
                    }
                }
                Err(error) if error.is_retriable() => {
                    retry_error.get_or_insert(error);
                    pending.extend(partitions);
                }
                Err(error) => return Err(error),
            }
        }
        match retry_error {
            None => return Ok(found),
            Some(error) if Instant::now() >= deadline => return Err(error),
            Some(error) => {
                tracing::debug!(%error, "retrying ListOffsets");
                tokio::time::sleep(cluster.config.retry_backoff).await;
                cluster.refresh_interest().await?;
            }
        }
    }
}

/// One ListOffsets request to one leader; results in the order of `partitions`.
async fn list_offsets_from(
    cluster: &Cluster,
    leader: i32,
    partitions: &[(TopicPartition, OffsetSpec)],
    isolation: IsolationLevel,
) -> Result<Vec<Result<ListedOffset>>> {
    let connection = cluster.connection(leader).await?;
    let version = connection.version(ApiKey::ListOffsets)?;
    let metadata = cluster.metadata();
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for (tp, spec) in partitions {
        // From v4 the leader checks the epoch the client believes in, so a deposed leader
        // answers FENCED_LEADER_EPOCH (retried after a metadata refresh) instead of offsets.
        let current_leader_epoch = if version >= 4 {
            metadata.leader_epoch(&tp.topic, tp.partition)
        } else {
            -1
        };
        topics.entry(tp.topic.as_str()).or_default().push(
            ListOffsetsPartition::default()
                .with_partition_index(tp.partition)
                .with_current_leader_epoch(current_leader_epoch)
                .with_timestamp(spec.wire_timestamp()),
        );
    }
    let mut request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    ListOffsetsTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    if version >= 2 {
        request = request.with_isolation_level(isolation.wire());
    }
    let response = connection
        .send_at(&request, version, cluster.config.request_timeout)
        .await?;
    let mut answers: HashMap<(String, i32), Result<ListedOffset>> = HashMap::new();
    for topic in response.topics {
        for partition in topic.partitions {
            let tp = TopicPartition::new(topic.name.0.as_str(), partition.partition_index);
            let answer = if partition.error_code != 0 {
                Err(ClientError::kafka(
                    "ListOffsets",
                    tp.to_string(),
                    partition.error_code,
                    None,
                ))
            } else {
                Ok(ListedOffset {
                    offset: partition.offset,
                    timestamp: partition.timestamp,
                })
            };
            answers.insert((tp.topic, tp.partition), answer);
        }
    }
    Ok(partitions
        .iter()
        .map(|(tp, _)| {
            answers
                .remove(&(tp.topic.clone(), tp.partition))
                .unwrap_or_else(|| {
                    Err(ClientError::Protocol {
                        api: "ListOffsets",
                        reason: format!("the broker did not answer for {tp}"),
                    })
                })
        })
        .collect())
}

/// Where a leader epoch ends in a leader's log (OffsetForLeaderEpoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEnd {
    /// The largest epoch at or below the one asked for that the leader has (-1: none).
    pub(crate) leader_epoch: i32,
    /// The offset after that epoch's last record (-1: unknown).
    pub(crate) end_offset: i64,
}

/// Asks `leader` where each of `partitions`' epochs ends: (partition, current leader epoch,
/// epoch to look up). Results come in the order asked; a broker without the API fails the
/// whole call with [`ClientError::UnsupportedVersion`].
pub(crate) async fn offsets_for_leader_epochs(
    cluster: &Cluster,
    leader: i32,
    partitions: &[(TopicPartition, i32, i32)],
) -> Result<Vec<Result<EpochEnd>>> {
    let connection = cluster.connection(leader).await?;
    let version = connection.version(ApiKey::OffsetForLeaderEpoch)?;
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    for (tp, current_leader_epoch, leader_epoch) in partitions {
        topics.entry(tp.topic.as_str()).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(*current_leader_epoch)
                .with_leader_epoch(*leader_epoch),
        );
    }
    let request = OffsetForLeaderEpochRequest::default()
        // -1: a consumer, not a follower (v3+; v2 has no such field).
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(topic_name(name))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = connection
        .send_at(&request, version, cluster.config.request_timeout)
        .await?;
    let mut answers: HashMap<(String, i32), Result<EpochEnd>> = HashMap::new();
    for topic in response.topics {
        for partition in topic.partitions {
            let tp = TopicPartition::new(topic.topic.0.as_str(), partition.partition);
            let answer = if partition.error_code != 0 {
                Err(ClientError::kafka(
                    "OffsetForLeaderEpoch",
                    tp.to_string(),
                    partition.error_code,
                    None,
                ))
            } else {
                Ok(EpochEnd {
                    leader_epoch: partition.leader_epoch,
                    end_offset: partition.end_offset,
                })
            };
            answers.insert((tp.topic, tp.partition), answer);
        }
    }
    Ok(partitions
        .iter()
        .map(|(tp, _, _)| {
            answers
                .remove(&(tp.topic.clone(), tp.partition))
                .unwrap_or_else(|| {
                    Err(ClientError::Protocol {
                        api: "OffsetForLeaderEpoch",
                        reason: format!("the broker did not answer for {tp}"),
                    })
                })
        })
        .collect())
}

/// The committed offsets of `group` (all partitions it has offsets for when `partitions` is
/// `None`). Partitions without a committed offset are left out. `require_stable`: see
/// [`fetch_committed_with_epochs`].
pub(crate) async fn fetch_committed(
    cluster: &Cluster,
    group: &str,
    partitions: Option<&[TopicPartition]>,
    require_stable: bool,
) -> Result<HashMap<TopicPartition, i64>> {
    Ok(
        fetch_committed_with_epochs(cluster, group, partitions, require_stable)
            .await?
            .into_iter()
            .map(|(tp, (offset, _))| (tp, offset))
            .collect(),
    )
}

/// Like [`fetch_committed`], with the leader epoch committed with each offset (OffsetFetch
/// v5+; `None` when there is none): the consumer validates a committed position in that
/// epoch before fetching from it (KIP-320).
///
/// With `require_stable` (a read_committed consumer, KIP-447; OffsetFetch v7+), a partition
/// whose offset an open transaction is writing is answered UNSTABLE_OFFSET_COMMIT, and the
/// fetch is retried until the transaction ends: starting from the offset before it would
/// read again what the transaction's output already covers once it commits.
pub(crate) async fn fetch_committed_with_epochs(
    cluster: &Cluster,
    group: &str,
    partitions: Option<&[TopicPartition]>,
    require_stable: bool,
) -> Result<HashMap<TopicPartition, (i64, Option<i32>)>> {
    with_retries(cluster, "OffsetFetch", || async {
        let coordinator = find_group_coordinator(cluster, group).await?;
        let connection = cluster.connection(coordinator).await?;
        let version = connection.version(ApiKey::OffsetFetch)?;
        let topics = partitions.map(|partitions| {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in partitions {
                by_topic
                    .entry(tp.topic.as_str())
                    .or_default()
                    .push(tp.partition);
            }
            by_topic
                .into_iter()
                .map(|(name, indexes)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name(name))
                        .with_partition_indexes(indexes)
                })
                .collect()
        });
        if topics.is_none() && version < 2 {
            return Err(ClientError::UnsupportedVersion {
                api: "OffsetFetch",
                broker: connection.addr().to_string(),
                needed: "v2 (fetching all of a group's offsets)".to_string(),
                offered: format!("v{version}"),
            });
        }
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(topics)
            .with_require_stable(require_stable && version >= 7);
        let response = connection
            .send_at(&request, version, cluster.config.request_timeout)
            .await?;
        if response.error_code != 0 {
            return Err(ClientError::kafka(
                "OffsetFetch",
                format!("group {group}"),
                response.error_code,
                None,
            ));
        }
        let mut committed = HashMap::new();
        for topic in response.topics {
            for partition in topic.partitions {
                let tp = TopicPartition::new(topic.name.0.as_str(), partition.partition_index);
                if partition.error_code != 0 {
                    return Err(ClientError::kafka(
                        "OffsetFetch",
                        tp.to_string(),
                        partition.error_code,
                        None,
                    ));
                }
                if partition.committed_offset >= 0 {
                    let epoch = Some(partition.committed_leader_epoch).filter(|e| *e >= 0);
                    committed.insert(tp, (partition.committed_offset, epoch));
                }
            }
        }
        Ok(committed)
    })
    .await
}

/// Commits `offsets` for `group`. `generation` and `member_id` identify the member (-1 and ""
/// for a commit from outside the group, which the coordinator accepts only while the group has
/// no members).
pub(crate) async fn commit_offsets(
    cluster: &Cluster,
    group: &str,
    generation: i32,
    member_id: &str,
    group_instance_id: Option<&str>,
    offsets: &HashMap<TopicPartition, i64>,
    epochs: &HashMap<TopicPartition, i32>,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let coordinator = find_group_coordinator(cluster, group).await?;
    let connection = cluster.connection(coordinator).await?;
    let version = connection.version(ApiKey::OffsetCommit)?;
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, offset) in offsets {
        // The epoch of the last record consumed (v6+), so whoever resumes from this offset
        // can check it against the leader's log (KIP-320).
        let epoch = match epochs.get(tp) {
            Some(epoch) if version >= 6 => *epoch,
            _ => -1,
        };
        by_topic.entry(tp.topic.as_str()).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(epoch)
                .with_committed_metadata(Some(StrBytes::new())),
        );
    }
    let mut request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    if version >= 7 {
        request = request.with_group_instance_id(
            group_instance_id.map(|id| StrBytes::from_string(id.to_string())),
        );
    }
    let response = connection
        .send_at(&request, version, cluster.config.request_timeout)
        .await?;
    for topic in response.topics {
        for partition in topic.partitions {
            if partition.error_code != 0 {
                if matches!(partition.error_code, 14..=16) {
                    // The coordinator moved or is loading: look it up again next time.
                    cluster.invalidate_metadata();
                }
                return Err(ClientError::kafka(
                    "OffsetCommit",
                    format!(
                        "{}-{} (group {group})",
                        topic.name.0.as_str(),
                        partition.partition_index
                    ),
                    partition.error_code,
                    None,
                ));
            }
        }
    }
    Ok(())
}
