//! The admin client: topics, configs, groups, offsets and lag, cluster and log dirs.

mod acls;
mod quotas;
mod transactions;

pub use acls::{
    AclBinding, AclBindingFilter, AclOperation, AclPatternType, AclPermissionType, AclResourceType,
};
pub use quotas::{QuotaAlteration, QuotaEntityPart, QuotaMatch};
pub use transactions::{
    ProducerState, TransactionDescription, TransactionFilter, TransactionListing,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, DescribeLogDirsRequest, IncrementalAlterConfigsRequest,
    ListGroupsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::config::ClientConfig;
use crate::consumer::protocol::decode_assignment;
use crate::coordinator::find_group_coordinator;
use crate::error::{check, ClientError, Result};
use crate::network::cluster::Cluster;
use crate::network::metadata::{BrokerInfo, PartitionInfo};
use crate::offsets::{self, group_id, topic_name};
use crate::retry::with_retries;
use crate::types::{IsolationLevel, ListedOffset, OffsetSpec, TopicPartition};

/// Config resource type of a topic in DescribeConfigs and IncrementalAlterConfigs.
const RESOURCE_TOPIC: i8 = 2;
/// Config resource type of a broker.
const RESOURCE_BROKER: i8 = 4;
/// How long the broker may take to create or delete topics before answering.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Number of partitions (-1: the broker's default).
    pub partitions: i32,
    /// Replication factor (-1: the broker's default).
    pub replication_factor: i16,
    /// Topic configs such as `cleanup.policy=compact`.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and the broker's default replication factor.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, factor: i16) -> Self {
        self.replication_factor = factor;
        self
    }

    /// Adds a topic config.
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((name.into(), value.into()));
        self
    }
}

/// A topic as listed: name, id, whether internal, partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicListing {
    /// Topic name.
    pub name: String,
    /// Topic id as 16 bytes (all zero when the broker predates topic ids).
    pub id: [u8; 16],
    /// Internal topics such as `__consumer_offsets`.
    pub internal: bool,
    /// Number of partitions.
    pub partitions: usize,
}

/// A topic with its partitions' placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Topic id as 16 bytes.
    pub id: [u8; 16],
    /// Internal topics such as `__consumer_offsets`.
    pub internal: bool,
    /// Partitions, by index: leader, replicas, in-sync replicas.
    pub partitions: Vec<PartitionInfo>,
}

/// Where a config value comes from (DescribeConfigs' `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on this topic.
    Topic,
    /// Set dynamically for this broker.
    DynamicBroker,
    /// Set dynamically as the cluster-wide broker default.
    DynamicDefaultBroker,
    /// Set in the broker's static configuration file.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    /// Anything else the broker reported.
    Unknown,
}

impl From<i8> for ConfigSource {
    fn from(source: i8) -> Self {
        match source {
            1 => ConfigSource::Topic,
            2 | 3 => ConfigSource::DynamicBroker,
            4 => ConfigSource::DynamicDefaultBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::StaticBroker,
            _ => ConfigSource::Unknown,
        }
    }
}

/// One config entry of a topic or broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name, e.g. `retention.ms`.
    pub name: String,
    /// Value (`None` for sensitive configs).
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether it can be changed.
    pub read_only: bool,
    /// Whether the value is hidden.
    pub sensitive: bool,
}

/// One change of IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    /// Sets a config to a value.
    Set(String, String),
    /// Removes a config (back to its default).
    Delete(String),
    /// Appends to a list config.
    Append(String, String),
    /// Removes from a list config.
    Subtract(String, String),
}

/// A consumer group as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// State, when the broker reports it (ListGroups v4+): `Stable`, `Empty`, ...
    pub state: Option<String>,
}

/// A consumer group member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id given by the coordinator.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// The member's `client.id`.
    pub client_id: String,
    /// The member's host as the coordinator saw it.
    pub client_host: String,
    /// Its assigned partitions (decoded for `consumer` groups; empty otherwise).
    pub assignment: Vec<TopicPartition>,
}

/// A consumer group in detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty` or `Dead`.
    pub state: String,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// The chosen assignor, e.g. `range`.
    pub protocol: String,
    /// Current members.
    pub members: Vec<MemberDescription>,
}

/// A group's progress on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset.
    pub committed: i64,
    /// The partition's log end offset.
    pub log_end: i64,
    /// `log_end - committed` (never negative).
    pub lag: i64,
}

/// The cluster as DescribeCluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: String,
    /// Node id of the active controller.
    pub controller_id: i32,
    /// Brokers.
    pub brokers: Vec<BrokerInfo>,
}

/// One partition in a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirPartition {
    /// The partition.
    pub partition: TopicPartition,
    /// Bytes on disk.
    pub size: i64,
    /// How far this replica is behind the log end (0 on the leader).
    pub offset_lag: i64,
}

/// One log directory of one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirDescription {
    /// The broker's node id.
    pub broker: i32,
    /// The directory's path.
    pub path: String,
    /// Kafka error code for the directory (0 when fine).
    pub error_code: i16,
    /// Total bytes of the volume (-1 when unknown).
    pub total_bytes: i64,
    /// Usable bytes of the volume (-1 when unknown).
    pub usable_bytes: i64,
    /// Partitions stored in it.
    pub partitions: Vec<LogDirPartition>,
}

/// Administers topics, configs and groups.
///
/// Cheap to clone; clones share connections and metadata.
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    /// Connects to the cluster (fetches metadata from a bootstrap server).
    pub async fn connect(config: ClientConfig) -> Result<Admin> {
        Ok(Admin {
            cluster: Cluster::connect(config, false).await?,
        })
    }

    /// Creates one topic and waits until the broker has created it.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        self.create_topics(vec![topic]).await
    }

    /// Creates topics; fails with the first topic's error if any could not be created
    /// (`TopicAlreadyExists` for an existing one).
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Result<()> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = self.send_to_controller(&request).await?;
        for topic in &response.topics {
            check(
                "CreateTopics",
                || topic.name.0.as_str().to_string(),
                topic.error_code,
                topic.error_message.as_ref(),
            )?;
        }
        self.cluster.invalidate_metadata();
        Ok(())
    }

    /// Deletes topics by name.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<()> {
        let controller = self.controller().await?;
        let version = self
            .cluster
            .version(controller, ApiKey::DeleteTopics)
            .await?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
        // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
        if version >= 6 {
            request.topics = names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                .collect();
        } else {
            request.topic_names = names.iter().map(|n| topic_name(n)).collect();
        }
        let response = self.send_to_controller(&request).await?;
        for topic in &response.responses {
            check(
                "DeleteTopics",
                || {
                    topic
                        .name
                        .as_ref()
                        .map(|n| n.0.as_str().to_string())
                        .unwrap_or_default()
                },
                topic.error_code,
                topic.error_message.as_ref(),
            )?;
        }
        self.cluster.invalidate_metadata();
        Ok(())
    }

    /// Lists topics (internal ones too when `include_internal`), sorted by name.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<TopicListing>> {
        let metadata = self.cluster.refresh_metadata(None).await?;
        let mut topics: Vec<TopicListing> = metadata
            .topics
            .values()
            .filter(|t| include_internal || !t.internal)
            .filter(|t| t.error_code == 0)
            .map(|t| TopicListing {
                name: t.name.clone(),
                id: t.id,
                internal: t.internal,
                partitions: t.partitions.len(),
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// Describes topics: per partition the leader, its epoch, replicas, in-sync and offline
    /// replicas, and the topic id. Fails with
    /// `UnknownTopicOrPartition` for a topic that does not exist.
    pub async fn describe_topics(&self, names: &[&str]) -> Result<Vec<TopicDescription>> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let metadata = self.cluster.refresh_metadata(Some(&names)).await?;
        names
            .iter()
            .map(|name| {
                let topic = metadata
                    .topics
                    .get(name)
                    .ok_or_else(|| ClientError::kafka("Metadata", name.clone(), 3, None))?;
                check("Metadata", || name.clone(), topic.error_code, None)?;
                Ok(TopicDescription {
                    name: topic.name.clone(),
                    id: topic.id,
                    internal: topic.internal,
                    partitions: topic.partitions.clone(),
                })
            })
            .collect()
    }

    /// Grows a topic to `total_partitions` partitions.
    pub async fn create_partitions(&self, topic: &str, total_partitions: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total_partitions)]);
        let response = self.send_to_controller(&request).await?;
        for result in &response.results {
            check(
                "CreatePartitions",
                || topic.to_string(),
                result.error_code,
                result.error_message.as_ref(),
            )?;
        }
        self.cluster.invalidate_metadata();
        Ok(())
    }

    /// A topic's configs, including defaults.
    pub async fn describe_topic_config(&self, topic: &str) -> Result<Vec<ConfigEntry>> {
        self.describe_config(RESOURCE_TOPIC, topic, None).await
    }

    /// A broker's configs.
    pub async fn describe_broker_config(&self, broker: i32) -> Result<Vec<ConfigEntry>> {
        self.describe_config(RESOURCE_BROKER, &broker.to_string(), Some(broker))
            .await
    }

    async fn describe_config(
        &self,
        resource_type: i8,
        name: &str,
        node: Option<i32>,
    ) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ]);
        let response = match node {
            Some(node) => self.cluster.send_to(node, &request).await?.1,
            None => self.send_any(&request).await?,
        };
        let mut entries = Vec::new();
        for result in response.results {
            check(
                "DescribeConfigs",
                || name.to_string(),
                result.error_code,
                result.error_message.as_ref(),
            )?;
            entries.extend(result.configs.into_iter().map(|c| ConfigEntry {
                name: c.name.as_str().to_string(),
                value: c.value.map(|v| v.as_str().to_string()),
                source: ConfigSource::from(c.config_source),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            }));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Changes a topic's configs (IncrementalAlterConfigs: only the named configs change).
    pub async fn alter_topic_config(&self, topic: &str, changes: Vec<AlterConfigOp>) -> Result<()> {
        let configs = changes
            .into_iter()
            .map(|change| {
                let (name, op, value) = match change {
                    AlterConfigOp::Set(n, v) => (n, 0, Some(v)),
                    AlterConfigOp::Delete(n) => (n, 1, None),
                    AlterConfigOp::Append(n, v) => (n, 2, Some(v)),
                    AlterConfigOp::Subtract(n, v) => (n, 3, Some(v)),
                };
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(name))
                    .with_config_operation(op)
                    .with_value(value.map(StrBytes::from_string))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(configs),
        ]);
        let response = self.send_to_controller(&request).await?;
        for result in &response.responses {
            check(
                "IncrementalAlterConfigs",
                || topic.to_string(),
                result.error_code,
                result.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Lists consumer groups on every broker.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let metadata = self.cluster.refresh_metadata(Some(&[])).await?;
        let mut groups = Vec::new();
        let mut nodes: Vec<i32> = metadata.brokers.keys().copied().collect();
        nodes.sort_unstable();
        for node in nodes {
            let (version, response) = self
                .cluster
                .send_to(node, &ListGroupsRequest::default())
                .await?;
            check(
                "ListGroups",
                || format!("broker {node}"),
                response.error_code,
                None,
            )?;
            groups.extend(response.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id.0.as_str().to_string(),
                protocol_type: g.protocol_type.as_str().to_string(),
                state: (version >= 4).then(|| g.group_state.as_str().to_string()),
            }));
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// Describes groups: state, assignor, members and their assignments.
    pub async fn describe_groups(&self, group_ids: &[&str]) -> Result<Vec<GroupDescription>> {
        let mut descriptions = Vec::with_capacity(group_ids.len());
        for group in group_ids {
            let response = with_retries(&self.cluster, "DescribeGroups", || async {
                let coordinator = find_group_coordinator(&self.cluster, group).await?;
                let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
                let (_, response) = self.cluster.send_to(coordinator, &request).await?;
                for described in &response.groups {
                    check(
                        "DescribeGroups",
                        || group.to_string(),
                        described.error_code,
                        described.error_message.as_ref(),
                    )?;
                }
                Ok(response)
            })
            .await?;
            for described in response.groups {
                let consumer = described.protocol_type.as_str() == "consumer";
                descriptions.push(GroupDescription {
                    group_id: described.group_id.0.as_str().to_string(),
                    state: described.group_state.as_str().to_string(),
                    protocol_type: described.protocol_type.as_str().to_string(),
                    protocol: described.protocol_data.as_str().to_string(),
                    members: described
                        .members
                        .into_iter()
                        .map(|m| MemberDescription {
                            member_id: m.member_id.as_str().to_string(),
                            group_instance_id: m.group_instance_id.map(|i| i.as_str().to_string()),
                            client_id: m.client_id.as_str().to_string(),
                            client_host: m.client_host.as_str().to_string(),
                            assignment: if consumer {
                                decode_assignment(&m.member_assignment).unwrap_or_default()
                            } else {
                                Vec::new()
                            },
                        })
                        .collect(),
                });
            }
        }
        Ok(descriptions)
    }

    /// Deletes groups (they must have no members).
    pub async fn delete_groups(&self, group_ids: &[&str]) -> Result<()> {
        for group in group_ids {
            with_retries(&self.cluster, "DeleteGroups", || async {
                let coordinator = find_group_coordinator(&self.cluster, group).await?;
                let request =
                    DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
                let (_, response) = self.cluster.send_to(coordinator, &request).await?;
                for result in &response.results {
                    check(
                        "DeleteGroups",
                        || group.to_string(),
                        result.error_code,
                        None,
                    )?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Looks up offsets: earliest, latest, or the first at or after a timestamp.
    pub async fn list_offsets(
        &self,
        specs: &[(TopicPartition, OffsetSpec)],
    ) -> Result<HashMap<TopicPartition, ListedOffset>> {
        offsets::list_offsets(&self.cluster, specs, IsolationLevel::ReadUncommitted).await
    }

    /// [`Admin::list_offsets`] as a consumer with `isolation` sees them: with
    /// [`IsolationLevel::ReadCommitted`], latest is the last stable offset (the first offset of
    /// the oldest open transaction, or the high watermark).
    pub async fn list_offsets_with_isolation(
        &self,
        specs: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
    ) -> Result<HashMap<TopicPartition, ListedOffset>> {
        offsets::list_offsets(&self.cluster, specs, isolation).await
    }

    /// The offsets `group` has committed (every partition it has one for).
    pub async fn list_group_offsets(&self, group: &str) -> Result<HashMap<TopicPartition, i64>> {
        offsets::fetch_committed(&self.cluster, group, None, false).await
    }

    /// Sets a group's committed offsets (e.g. to reset them). The group must have no active
    /// members, or the coordinator refuses.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &HashMap<TopicPartition, i64>,
    ) -> Result<()> {
        offsets::commit_offsets(&self.cluster, group, -1, "", None, offsets, &HashMap::new()).await
    }

    /// Lag per partition of a group: committed offset against the log end offset, sorted by
    /// partition.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        let committed = self.list_group_offsets(group).await?;
        let specs: Vec<(TopicPartition, OffsetSpec)> = committed
            .keys()
            .map(|tp| (tp.clone(), OffsetSpec::Latest))
            .collect();
        let ends = self.list_offsets(&specs).await?;
        let mut lag: Vec<PartitionLag> = committed
            .into_iter()
            .filter_map(|(tp, committed)| {
                let log_end = ends.get(&tp)?.offset;
                Some(PartitionLag {
                    lag: (log_end - committed).max(0),
                    partition: tp,
                    committed,
                    log_end,
                })
            })
            .collect();
        lag.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(lag)
    }

    /// Deletes records before the given offsets (moves the log start offset); returns the new
    /// low watermarks.
    pub async fn delete_records(
        &self,
        before: &HashMap<TopicPartition, i64>,
    ) -> Result<HashMap<TopicPartition, i64>> {
        let by_leader = self
            .by_leader(
                "DeleteRecords",
                5, // LEADER_NOT_AVAILABLE
                before.iter().map(|(tp, offset)| {
                    (
                        tp,
                        DeleteRecordsPartition::default()
                            .with_partition_index(tp.partition)
                            .with_offset(*offset),
                    )
                }),
            )
            .await?;
        let mut low_watermarks = HashMap::new();
        for (leader, topics) in by_leader {
            let request = DeleteRecordsRequest::default()
                .with_timeout_ms(ADMIN_TIMEOUT_MS)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            DeleteRecordsTopic::default()
                                .with_name(topic_name(name))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            let (_, response) = self.cluster.send_to(leader, &request).await?;
            for topic in response.topics {
                for partition in topic.partitions {
                    let tp = TopicPartition::new(topic.name.0.as_str(), partition.partition_index);
                    check(
                        "DeleteRecords",
                        || tp.to_string(),
                        partition.error_code,
                        None,
                    )?;
                    low_watermarks.insert(tp, partition.low_watermark);
                }
            }
        }
        Ok(low_watermarks)
    }

    /// The cluster id, controller and brokers (DescribeCluster, or Metadata when the broker
    /// lacks DescribeCluster).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let connection = self.cluster.any_connection().await?;
        if connection.version(ApiKey::DescribeCluster).is_err() {
            let metadata = self.cluster.refresh_metadata(Some(&[])).await?;
            let mut brokers: Vec<BrokerInfo> = metadata.brokers.values().cloned().collect();
            brokers.sort_by_key(|b| b.id);
            return Ok(ClusterDescription {
                cluster_id: metadata.cluster_id.clone().unwrap_or_default(),
                controller_id: metadata.controller_id,
                brokers,
            });
        }
        // v2 lists fenced brokers too when asked (earlier versions cannot carry the flag), so a
        // broker the controller fenced shows up as fenced instead of missing.
        let version = connection.version(ApiKey::DescribeCluster)?;
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(version >= 2);
        let response = connection
            .send_at(&request, version, self.cluster.config.request_timeout)
            .await?;
        check(
            "DescribeCluster",
            || "cluster".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut brokers: Vec<BrokerInfo> = response
            .brokers
            .into_iter()
            .map(|b| BrokerInfo {
                id: b.broker_id.0,
                host: b.host.as_str().to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.as_str().to_string()),
                fenced: b.is_fenced,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.as_str().to_string(),
            controller_id: response.controller_id.0,
            brokers,
        })
    }

    /// Log directories of every broker and the size of each partition in them (`topics`:
    /// only these topics; `None`: all).
    pub async fn describe_log_dirs(
        &self,
        topics: Option<&[&str]>,
    ) -> Result<Vec<LogDirDescription>> {
        let metadata = match topics {
            Some(names) => {
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                self.cluster.refresh_metadata(Some(&names)).await?
            }
            None => self.cluster.refresh_metadata(Some(&[])).await?,
        };
        let request_topics = topics.map(|names| {
            names
                .iter()
                .filter_map(|name| metadata.topics.get(*name))
                .map(|topic| {
                    DescribableLogDirTopic::default()
                        .with_topic(topic_name(&topic.name))
                        .with_partitions(topic.partitions.iter().map(|p| p.id).collect())
                })
                .collect()
        });
        let request = DescribeLogDirsRequest::default().with_topics(request_topics);
        let mut nodes: Vec<i32> = metadata.brokers.keys().copied().collect();
        nodes.sort_unstable();
        let mut dirs = Vec::new();
        for node in nodes {
            let (_, response) = self.cluster.send_to(node, &request).await?;
            check(
                "DescribeLogDirs",
                || format!("broker {node}"),
                response.error_code,
                None,
            )?;
            for result in response.results {
                dirs.push(LogDirDescription {
                    broker: node,
                    path: result.log_dir.as_str().to_string(),
                    error_code: result.error_code,
                    total_bytes: result.total_bytes,
                    usable_bytes: result.usable_bytes,
                    partitions: result
                        .topics
                        .iter()
                        .flat_map(|t| {
                            t.partitions.iter().map(|p| LogDirPartition {
                                partition: TopicPartition::new(
                                    t.name.0.as_str(),
                                    p.partition_index,
                                ),
                                size: p.partition_size,
                                offset_lag: p.offset_lag,
                            })
                        })
                        .collect(),
                });
            }
        }
        Ok(dirs)
    }

    async fn controller(&self) -> Result<i32> {
        let metadata = self.cluster.fresh_metadata().await?;
        if metadata.controller_id >= 0 && metadata.brokers.contains_key(&metadata.controller_id) {
            return Ok(metadata.controller_id);
        }
        let metadata = self.cluster.refresh_metadata(Some(&[])).await?;
        if metadata.controller_id >= 0 {
            Ok(metadata.controller_id)
        } else {
            metadata.brokers.keys().min().copied().ok_or_else(|| {
                ClientError::NoBrokerAvailable("metadata names no broker".to_string())
            })
        }
    }

    /// Sends to the controller, retrying when the controller moved (NOT_CONTROLLER).
    /// Sets `user`'s SCRAM credential for `mechanism` (AlterUserScramCredentials). The
    /// password is salted and iterated here; only the salted password leaves the client.
    pub async fn upsert_scram_credential(
        &self,
        user: &str,
        mechanism: crate::network::SaslMechanism,
        password: &str,
        iterations: i32,
    ) -> Result<()> {
        use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
        let (hash, wire) = scram_hash(mechanism)?;
        let salt = crate::network::random_bytes(32);
        let salted = hash.salted_password(
            password.as_bytes(),
            &salt,
            u32::try_from(iterations).map_err(|_| {
                ClientError::InvalidArgument(format!("iterations {iterations} must be positive"))
            })?,
        );
        let request = kafka_protocol::messages::AlterUserScramCredentialsRequest::default()
            .with_upsertions(vec![ScramCredentialUpsertion::default()
                .with_name(StrBytes::from_string(user.to_string()))
                .with_mechanism(wire)
                .with_iterations(iterations)
                .with_salt(bytes::Bytes::from(salt))
                .with_salted_password(bytes::Bytes::from(salted))]);
        let response = self.send_to_controller(&request).await?;
        for result in &response.results {
            check(
                "AlterUserScramCredentials",
                || result.user.as_str().to_string(),
                result.error_code,
                result.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Deletes `user`'s SCRAM credential for `mechanism`.
    pub async fn delete_scram_credential(
        &self,
        user: &str,
        mechanism: crate::network::SaslMechanism,
    ) -> Result<()> {
        use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialDeletion;
        let (_, wire) = scram_hash(mechanism)?;
        let request = kafka_protocol::messages::AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![ScramCredentialDeletion::default()
                .with_name(StrBytes::from_string(user.to_string()))
                .with_mechanism(wire)]);
        let response = self.send_to_controller(&request).await?;
        for result in &response.results {
            check(
                "AlterUserScramCredentials",
                || result.user.as_str().to_string(),
                result.error_code,
                result.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Every SCRAM user with its mechanisms and iterations (DescribeUserScramCredentials).
    pub async fn describe_scram_users(&self) -> Result<Vec<(String, Vec<(String, i32)>)>> {
        let request = kafka_protocol::messages::DescribeUserScramCredentialsRequest::default()
            .with_users(None);
        let response = self.send_any(&request).await?;
        check(
            "DescribeUserScramCredentials",
            || "users".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        Ok(response
            .results
            .into_iter()
            .map(|user| {
                let mechanisms = user
                    .credential_infos
                    .iter()
                    .map(|c| {
                        let name = match c.mechanism {
                            1 => "SCRAM-SHA-256".to_string(),
                            2 => "SCRAM-SHA-512".to_string(),
                            other => format!("UNKNOWN({other})"),
                        };
                        (name, c.iterations)
                    })
                    .collect();
                (user.user.as_str().to_string(), mechanisms)
            })
            .collect())
    }

    async fn send_to_controller<R: kafka_protocol::protocol::Request>(
        &self,
        request: &R,
    ) -> Result<R::Response> {
        with_retries(&self.cluster, "controller request", || async {
            let controller = self.controller().await?;
            Ok(self.cluster.send_to(controller, request).await?.1)
        })
        .await
    }

    /// `items` grouped by the leader of each one's partition, then by topic (the shape of
    /// requests that must go to partition leaders); a partition without a leader fails `api`
    /// with the error code `no_leader`.
    async fn by_leader<'a, T>(
        &self,
        api: &'static str,
        no_leader: i16,
        items: impl Iterator<Item = (&'a TopicPartition, T)>,
    ) -> Result<BTreeMap<i32, BTreeMap<&'a str, Vec<T>>>> {
        let items: Vec<(&TopicPartition, T)> = items.collect();
        let topics: Vec<String> = items.iter().map(|(tp, _)| tp.topic.clone()).collect();
        let metadata = self.cluster.refresh_metadata(Some(&topics)).await?;
        let mut grouped: BTreeMap<i32, BTreeMap<&str, Vec<T>>> = BTreeMap::new();
        for (tp, item) in items {
            let leader = metadata
                .leader(&tp.topic, tp.partition)
                .ok_or_else(|| ClientError::kafka(api, tp.to_string(), no_leader, None))?;
            grouped
                .entry(leader)
                .or_default()
                .entry(tp.topic.as_str())
                .or_default()
                .push(item);
        }
        Ok(grouped)
    }

    async fn send_any<R: kafka_protocol::protocol::Request>(
        &self,
        request: &R,
    ) -> Result<R::Response> {
        Ok(self.cluster.send_any(request).await?.1)
    }
}

/// The hash and Kafka's wire number of a SCRAM mechanism.
fn scram_hash(mechanism: crate::network::SaslMechanism) -> Result<(crate::network::ScramHash, i8)> {
    match mechanism {
        crate::network::SaslMechanism::ScramSha256 => Ok((crate::network::ScramHash::Sha256, 1)),
        crate::network::SaslMechanism::ScramSha512 => Ok((crate::network::ScramHash::Sha512, 2)),
        crate::network::SaslMechanism::Plain => Err(ClientError::InvalidArgument(
            "PLAIN users live in the broker's JAAS setting, not in the cluster".into(),
        )),
    }
}
