//! The client's picture of the cluster: brokers, topics, partitions and their leaders.

use std::collections::HashMap;
use std::time::Instant;

use kafka_protocol::messages::MetadataResponse;

/// A broker as metadata names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The broker's node id.
    pub id: i32,
    /// Host name or address clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// Whether the controller fenced the broker (it stopped heartbeating, or is shutting
    /// down): it leads nothing until it is unfenced. Only DescribeCluster v2 with
    /// `include_fenced_brokers` reports fenced brokers; Metadata lists only live ones, so
    /// this is `false` there.
    pub fenced: bool,
}

impl BrokerInfo {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl PartitionInfo {
    /// Fewer in-sync replicas than replicas: some follower is behind (Kafka's
    /// under-replicated partition).
    pub fn under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }

    /// No leader: nobody can read or write the partition until one is elected.
    pub fn offline(&self) -> bool {
        self.leader < 0
    }
}

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub id: i32,
    /// Node id of the leader, or -1 while there is none.
    pub leader: i32,
    /// The leader's epoch (-1 if the broker did not say).
    pub leader_epoch: i32,
    /// Node ids of all replicas.
    pub replicas: Vec<i32>,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// Node ids of replicas whose log directory is offline (Metadata v5+).
    pub offline_replicas: Vec<i32>,
    /// Kafka error code for this partition (0 when fine).
    pub error_code: i16,
}

/// One topic's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (nil when the broker predates topic ids).
    pub id: [u8; 16],
    /// Whether this is an internal topic such as `__consumer_offsets`.
    pub internal: bool,
    /// Partitions sorted by index.
    pub partitions: Vec<PartitionInfo>,
    /// Kafka error code for this topic (0 when fine).
    pub error_code: i16,
}

/// A snapshot of cluster metadata. Replaced whole on refresh, so readers hold an `Arc` to a
/// consistent picture without locks.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub(crate) cluster_id: Option<String>,
    pub(crate) controller_id: i32,
    pub(crate) brokers: HashMap<i32, BrokerInfo>,
    pub(crate) topics: HashMap<String, TopicInfo>,
    /// When each topic was last refreshed, for `metadata_max_age`.
    pub(crate) refreshed_at: Option<Instant>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            cluster_id: None,
            controller_id: -1,
            brokers: HashMap::new(),
            topics: HashMap::new(),
            refreshed_at: None,
        }
    }
}

impl Metadata {
    /// Merges a Metadata response into a copy of this snapshot. A response for all topics
    /// (`all = true`) replaces the topic list; otherwise only the topics it names change.
    pub(crate) fn merged(&self, response: &MetadataResponse, all: bool) -> Metadata {
        let brokers = response
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerInfo {
                        id: b.node_id.0,
                        host: b.host.as_str().to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.as_str().to_string()),
                        fenced: false,
                    },
                )
            })
            .collect();
        let mut topics = if all {
            HashMap::new()
        } else {
            self.topics.clone()
        };
        for topic in &response.topics {
            let Some(name) = topic.name.as_ref().map(|n| n.0.as_str().to_string()) else {
                continue;
            };
            if topic.error_code != 0 && topic.partitions.is_empty() {
                // UNKNOWN_TOPIC_OR_PARTITION and friends: forget what we knew, keep the error.
                topics.insert(
                    name.clone(),
                    TopicInfo {
                        name,
                        id: *topic.topic_id.as_bytes(),
                        internal: topic.is_internal,
                        partitions: Vec::new(),
                        error_code: topic.error_code,
                    },
                );
                continue;
            }
            let known = self
                .topics
                .get(&name)
                .filter(|t| t.id == *topic.topic_id.as_bytes());
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions
                .iter()
                .map(|p| {
                    let fresh = PartitionInfo {
                        id: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                        isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                        offline_replicas: p.offline_replicas.iter().map(|r| r.0).collect(),
                        error_code: p.error_code,
                    };
                    // KIP-320: an answer with an older leader epoch than we know comes from a
                    // broker that has not heard of the newer leader (a cut-off or paused old
                    // leader); keep what we know instead of going back to it.
                    match known.and_then(|t| t.partitions.iter().find(|k| k.id == fresh.id)) {
                        Some(known)
                            if fresh.leader_epoch >= 0
                                && known.leader_epoch > fresh.leader_epoch =>
                        {
                            known.clone()
                        }
                        _ => fresh,
                    }
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            topics.insert(
                name.clone(),
                TopicInfo {
                    name,
                    id: *topic.topic_id.as_bytes(),
                    internal: topic.is_internal,
                    partitions,
                    error_code: topic.error_code,
                },
            );
        }
        Metadata {
            cluster_id: response.cluster_id.as_ref().map(|c| c.as_str().to_string()),
            controller_id: response.controller_id.0,
            brokers,
            topics,
            refreshed_at: Some(Instant::now()),
        }
    }

    /// The leader's node id of a partition, if known (and the leader is a broker metadata
    /// lists).
    pub(crate) fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.topics
            .get(topic)?
            .partitions
            .get(partition as usize)
            .filter(|p| p.id == partition)
            .or_else(|| {
                self.topics
                    .get(topic)?
                    .partitions
                    .iter()
                    .find(|p| p.id == partition)
            })
            .map(|p| p.leader)
            .filter(|leader| *leader >= 0 && self.brokers.contains_key(leader))
    }

    /// A partition's metadata, if known.
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        let partitions = &self.topics.get(topic)?.partitions;
        partitions
            .get(partition as usize)
            .filter(|p| p.id == partition)
            .or_else(|| partitions.iter().find(|p| p.id == partition))
    }

    /// The leader epoch of a partition, -1 when unknown (what the protocol sends for "no
    /// epoch": the broker then skips its epoch check).
    pub(crate) fn leader_epoch(&self, topic: &str, partition: i32) -> i32 {
        self.partition(topic, partition)
            .map_or(-1, |p| p.leader_epoch.max(-1))
    }

    /// The number of partitions of a topic, if known.
    pub(crate) fn partition_count(&self, topic: &str) -> Option<usize> {
        self.topics
            .get(topic)
            .map(|t| t.partitions.len())
            .filter(|n| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionInfo {
        PartitionInfo {
            id: 0,
            leader,
            leader_epoch: 1,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            offline_replicas: Vec::new(),
            error_code: 0,
        }
    }

    #[test]
    fn a_shrunken_isr_is_under_replicated_and_no_leader_is_offline() {
        assert!(!partition(1, &[1, 2, 3], &[1, 2, 3]).under_replicated());
        assert!(partition(1, &[1, 2, 3], &[1, 3]).under_replicated());
        assert!(partition(-1, &[1, 2], &[]).offline());
        assert!(!partition(2, &[1, 2], &[2]).offline());
    }

    #[test]
    fn an_answer_with_an_older_leader_epoch_does_not_replace_a_newer_one() {
        use kafka_protocol::messages::metadata_response::{
            MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
        };
        use kafka_protocol::messages::{BrokerId, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let answer = |leader: i32, epoch: i32| {
            MetadataResponse::default()
                .with_brokers(
                    [1, 2]
                        .iter()
                        .map(|id| {
                            MetadataResponseBroker::default()
                                .with_node_id(BrokerId(*id))
                                .with_host(StrBytes::from_static_str("127.0.0.1"))
                                .with_port(9092)
                        })
                        .collect(),
                )
                .with_topics(vec![MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                    .with_partitions(vec![MetadataResponsePartition::default()
                        .with_partition_index(0)
                        .with_leader_id(BrokerId(leader))
                        .with_leader_epoch(epoch)])])
        };
        let known = Metadata::default().merged(&answer(2, 5), true);
        // A stale broker (the old leader) still names itself, in epoch 4.
        let merged = known.merged(&answer(1, 4), true);
        assert_eq!(merged.leader("t", 0), Some(2));
        assert_eq!(merged.leader_epoch("t", 0), 5);
        let newer = merged.merged(&answer(1, 6), true);
        assert_eq!(newer.leader("t", 0), Some(1));
    }
}
