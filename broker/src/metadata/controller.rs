//! The controller: the one place topics are created, grown, reconfigured and deleted.
//!
//! Every change is first committed as metadata records, then applied to the hosted
//! partitions. On start-up the records are replayed and the partitions they describe are
//! opened, so what the metadata says and what is on disk always agree.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use super::placement::{assign_replicas, PlacementBroker, PlacementError};
use super::records::BrokerEndpoint;
use super::topic_config;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata::{MetadataImage, MetadataRecord, MetadataStore, TopicImage};
use crate::replica::{AlterPartition, ReplicaManager};

/// Why a topic operation was refused; each converts into the Kafka error clients expect
/// (`ResponseError::from(&error)`, in `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// Illegal topic name (INVALID_TOPIC_EXCEPTION).
    #[error("{0}")]
    InvalidTopic(String),
    /// The topic exists (TOPIC_ALREADY_EXISTS).
    #[error("topic `{0}` already exists")]
    AlreadyExists(String),
    /// No such topic (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// No topic with this id (UNKNOWN_TOPIC_ID).
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    /// Bad partition count (INVALID_PARTITIONS).
    #[error("{0}")]
    InvalidPartitions(String),
    /// Bad replication factor (INVALID_REPLICATION_FACTOR).
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// Bad replica assignment (INVALID_REPLICA_ASSIGNMENT).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// Bad topic setting (INVALID_CONFIG).
    #[error("{0}")]
    InvalidConfig(String),
    /// DeleteTopics while `delete.topic.enable=false` (TOPIC_DELETION_DISABLED).
    #[error("topic deletion is disabled on this broker (delete.topic.enable=false)")]
    DeletionDisabled,
    /// Disk trouble (KAFKA_STORAGE_ERROR).
    #[error("storage error: {0}")]
    Storage(String),
}

/// Why an AlterPartition was refused (each is one of Kafka's AlterPartition error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterPartitionError {
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// NOT_LEADER_OR_FOLLOWER: the proposer does not lead the partition.
    #[error("not the leader (the leader is {leader})")]
    NotLeader {
        /// The current leader.
        leader: i32,
    },
    /// FENCED_LEADER_EPOCH: the proposal is from an older leader epoch.
    #[error("leader epoch is stale (current {current})")]
    FencedLeaderEpoch {
        /// The current leader epoch.
        current: i32,
    },
    /// INVALID_UPDATE_VERSION: the partition changed since the proposal was made.
    #[error("partition epoch is stale (current {current})")]
    InvalidUpdateVersion {
        /// The current partition epoch.
        current: i32,
    },
    /// INELIGIBLE_REPLICA: a fenced or unregistered broker may not join the ISR.
    #[error("broker {0} is fenced or not registered and may not join the ISR")]
    IneligibleReplica(i32),
    /// INVALID_REQUEST.
    #[error("{0}")]
    InvalidRequest(String),
    /// KAFKA_STORAGE_ERROR.
    #[error("storage error: {0}")]
    Storage(String),
}

/// A CreateTopics entry.
#[derive(Clone, Debug, Default)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count; `None` for the broker default.
    pub partitions: Option<i32>,
    /// Replication factor; `None` for the broker default.
    pub replication_factor: Option<i16>,
    /// Explicit replica assignment: partition -> broker ids.
    pub assignments: Vec<(i32, Vec<i32>)>,
    /// Topic-level overrides.
    pub configs: BTreeMap<String, String>,
}

/// How IncrementalAlterConfigs changes one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    /// Set to a value (0).
    Set(String),
    /// Revert to the default (1).
    Delete,
    /// Add items to a list setting (2).
    Append(String),
    /// Remove items from a list setting (3).
    Subtract(String),
}

/// Longest legal topic name (Kafka's limit).
const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name the way Kafka does: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or
/// `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::InvalidTopic("topic name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(TopicError::InvalidTopic(format!(
            "topic name cannot be `{name}`"
        )));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicError::InvalidTopic(format!(
            "topic name is {} characters long; the limit is {MAX_TOPIC_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicError::InvalidTopic(format!(
            "topic name `{name}` contains `{bad}`; legal characters are ASCII letters, digits, `.`, `_` and `-`"
        )));
    }
    Ok(())
}

/// Owns the metadata store and applies its changes to the hosted partitions.
pub struct Controller {
    config: Arc<BrokerConfig>,
    store: Mutex<MetadataStore>,
    replicas: Arc<ReplicaManager>,
    cluster_id: String,
}

impl Controller {
    /// Replays the metadata log, writes the cluster id on first use, opens every partition the
    /// metadata names, and removes directories of deleted topics.
    pub fn open(
        config: Arc<BrokerConfig>,
        replicas: Arc<ReplicaManager>,
    ) -> Result<Self, BrokerError> {
        let meta_dir = config.data_dir.join("__cluster_metadata-0");
        let mut store = MetadataStore::open(&meta_dir)?;
        let cluster_id = match store.image().cluster_id() {
            Some(id) => id.to_string(),
            None => {
                let id = new_cluster_id();
                store.commit(&[MetadataRecord::Cluster {
                    cluster_id: id.clone(),
                }])?;
                id
            }
        };
        let registration = register_local_broker(&config, store.image());
        store.commit(&[registration])?;
        let migrated = legacy_partition_records(config.node_id, store.image());
        if !migrated.is_empty() {
            tracing::info!(
                partitions = migrated.len(),
                "recording replicas of partitions written before the cluster metadata had them"
            );
            store.commit(&migrated)?;
        }
        let topics: Vec<TopicImage> = store.image().topics().cloned().collect();
        {
            let image = store.image();
            let node_id = config.node_id;
            replicas.remove_stray_dirs(|topic, partition| {
                image
                    .topic(topic)
                    .and_then(|t| t.partition(partition))
                    .is_some_and(|p| p.replicas.contains(&node_id))
            });
        }
        replicas
            .apply_image(store.image(), &config.log_defaults)
            .map_err(|e| BrokerError::Storage(format!("opening partitions: {e}")))?;
        tracing::info!(%cluster_id, topics = topics.len(), "metadata replayed");
        Ok(Controller {
            config,
            store: Mutex::new(store),
            replicas,
            cluster_id,
        })
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The node id of the active controller (this node, until the metadata quorum elects one).
    pub fn active_controller_id(&self) -> i32 {
        self.config.node_id
    }

    fn lock(&self) -> MutexGuard<'_, MetadataStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the current metadata.
    pub fn with_image<T>(&self, f: impl FnOnce(&MetadataImage) -> T) -> T {
        f(self.lock().image())
    }

    /// A topic's metadata.
    pub fn topic(&self, name: &str) -> Option<TopicImage> {
        self.lock().image().topic(name).cloned()
    }

    /// Creates a topic (or, with `validate_only`, only checks that it could be created).
    pub fn create_topic(
        &self,
        new: NewTopic,
        validate_only: bool,
    ) -> Result<TopicImage, TopicError> {
        validate_topic_name(&new.name)?;
        let partitions = match new.partitions {
            None => {
                if new.assignments.is_empty() {
                    self.config.num_partitions
                } else {
                    i32::try_from(new.assignments.len()).unwrap_or(i32::MAX)
                }
            }
            Some(n) if n <= 0 => {
                return Err(TopicError::InvalidPartitions(format!(
                    "number of partitions must be positive, got {n}"
                )))
            }
            Some(n) => n,
        };
        let replication_factor = new
            .replication_factor
            .unwrap_or(self.config.default_replication_factor);
        if new.assignments.is_empty() && replication_factor <= 0 {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "replication factor must be positive, got {replication_factor}"
            )));
        }
        for (name, value) in &new.configs {
            topic_config::validate(name, value).map_err(TopicError::InvalidConfig)?;
        }

        let mut store = self.lock();
        let assignments = if new.assignments.is_empty() {
            place(store.image(), 0, partitions, replication_factor)?
        } else {
            check_assignments(store.image(), &new.assignments, partitions, 0, None)?;
            new.assignments.clone()
        };
        if store.image().topic(&new.name).is_some() {
            return Err(TopicError::AlreadyExists(new.name));
        }
        let collides = store
            .image()
            .topics()
            .find(|t| t.name.replace('.', "_") == new.name.replace('.', "_"));
        if let Some(other) = collides {
            return Err(TopicError::InvalidTopic(format!(
                "topic `{}` collides with existing topic `{}` (`.` and `_` are interchangeable in metric names)",
                new.name, other.name
            )));
        }
        let topic_id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic {
            name: new.name.clone(),
            topic_id,
            partitions,
            configs: new.configs.clone(),
        }];
        records.extend(new_partition_records(topic_id, &assignments));
        if validate_only {
            let mut image = MetadataImage::default();
            for record in &records {
                image.apply(record);
            }
            return image
                .topic(&new.name)
                .cloned()
                .ok_or_else(|| TopicError::Storage("validating the new topic failed".into()));
        }
        store
            .commit(&records)
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        let topic =
            store.image().topic(&new.name).cloned().ok_or_else(|| {
                TopicError::Storage("the new topic is missing after commit".into())
            })?;
        self.replicas
            .apply_image(store.image(), &self.config.log_defaults)
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        tracing::info!(topic = %topic.name, partitions, replication_factor = assignments.first().map_or(0, |(_, r)| r.len()), "created topic");
        Ok(topic)
    }

    /// Creates a topic with broker defaults because a client asked for it
    /// (`auto.create.topics.enable`). Returns the existing topic if another request won the race.
    pub fn auto_create(&self, name: &str) -> Result<TopicImage, TopicError> {
        let new = NewTopic {
            name: name.to_string(),
            ..NewTopic::default()
        };
        match self.create_topic(new, false) {
            Err(TopicError::AlreadyExists(_)) => self
                .topic(name)
                .ok_or_else(|| TopicError::UnknownTopic(name.to_string())),
            other => other,
        }
    }

    /// Reserves `size` producer ids durably; returns the first. Ids are never reused, even
    /// across restarts, because the reservation is in the metadata log.
    pub fn allocate_producer_ids(&self, size: i64) -> Result<i64, TopicError> {
        let mut store = self.lock();
        let start = store.image().next_producer_id_block();
        store
            .commit(&[MetadataRecord::ProducerIds {
                next_block_start: start + size,
            }])
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        Ok(start)
    }

    /// Decides an ISR change a partition leader proposes (AlterPartition): only the current
    /// leader, in its current leader epoch and partition epoch, may change the ISR; the new
    /// ISR holds the leader, only assigned replicas, and no fenced broker among the members it
    /// adds (KIP-841). On success the partition epoch is bumped.
    pub fn alter_partition(&self, change: &AlterPartition) -> Result<(), AlterPartitionError> {
        let mut store = self.lock();
        let image = store.image();
        let Some(topic) = image.topic_by_id(&change.topic_id) else {
            return Err(AlterPartitionError::UnknownTopicOrPartition);
        };
        let Some(state) = topic.partition(change.partition) else {
            return Err(AlterPartitionError::UnknownTopicOrPartition);
        };
        if state.leader != change.leader {
            return Err(AlterPartitionError::NotLeader {
                leader: state.leader,
            });
        }
        if state.leader_epoch != change.leader_epoch {
            return Err(AlterPartitionError::FencedLeaderEpoch {
                current: state.leader_epoch,
            });
        }
        if state.partition_epoch != change.partition_epoch {
            return Err(AlterPartitionError::InvalidUpdateVersion {
                current: state.partition_epoch,
            });
        }
        if !change.isr.contains(&change.leader)
            || change.isr.iter().any(|r| !state.replicas.contains(r))
        {
            return Err(AlterPartitionError::InvalidRequest(format!(
                "ISR {:?} must hold the leader {} and only replicas {:?}",
                change.isr, change.leader, state.replicas
            )));
        }
        if let Some(ineligible) = change
            .isr
            .iter()
            .filter(|r| !state.isr.contains(r))
            .find(|r| image.broker(**r).is_none_or(|b| b.fenced))
        {
            return Err(AlterPartitionError::IneligibleReplica(*ineligible));
        }
        let mut isr = change.isr.clone();
        isr.sort_unstable();
        isr.dedup();
        let record = MetadataRecord::Partition {
            topic_id: change.topic_id,
            partition: change.partition,
            replicas: state.replicas.clone(),
            isr,
            leader: state.leader,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch + 1,
            adding_replicas: state.adding_replicas.clone(),
            removing_replicas: state.removing_replicas.clone(),
        };
        store
            .commit(&[record])
            .map_err(|e| AlterPartitionError::Storage(e.to_string()))?;
        if let Err(error) = self
            .replicas
            .apply_image(store.image(), &self.config.log_defaults)
        {
            tracing::warn!(%error, "applying an ISR change failed");
        }
        Ok(())
    }

    /// Deletes a topic by name; returns its id.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        if !self.config.delete_topic_enable {
            return Err(TopicError::DeletionDisabled);
        }
        let mut store = self.lock();
        let Some(topic) = store.image().topic(name).cloned() else {
            return Err(TopicError::UnknownTopic(name.to_string()));
        };
        store
            .commit(&[MetadataRecord::RemoveTopic {
                topic_id: topic.topic_id,
            }])
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        if let Err(error) = self
            .replicas
            .apply_image(store.image(), &self.config.log_defaults)
        {
            tracing::warn!(topic = %name, %error, "applying the deletion failed");
        }
        tracing::info!(topic = %name, "deleted topic");
        Ok(topic.topic_id)
    }

    /// Deletes a topic by id; returns its name.
    pub fn delete_topic_by_id(&self, topic_id: Uuid) -> Result<String, TopicError> {
        let name = self
            .lock()
            .image()
            .topic_by_id(&topic_id)
            .map(|t| t.name.clone())
            .ok_or(TopicError::UnknownTopicId(topic_id))?;
        self.delete_topic(&name)?;
        Ok(name)
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: &[(i32, Vec<i32>)],
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut store = self.lock();
        let Some(topic) = store.image().topic(name).cloned() else {
            return Err(TopicError::UnknownTopic(name.to_string()));
        };
        if count <= topic.partitions {
            return Err(TopicError::InvalidPartitions(format!(
                "topic `{name}` has {} partitions; the new count must be larger, got {count}",
                topic.partitions
            )));
        }
        let replication_factor = topic
            .partition(0)
            .map_or(1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX));
        let added = count - topic.partitions;
        let assignments = if assignments.is_empty() {
            place(store.image(), topic.partitions, added, replication_factor)?
        } else {
            check_assignments(
                store.image(),
                assignments,
                added,
                topic.partitions,
                Some(replication_factor),
            )?;
            assignments.to_vec()
        };
        if validate_only {
            return Ok(());
        }
        let mut records = vec![MetadataRecord::PartitionCount {
            topic_id: topic.topic_id,
            count,
        }];
        records.extend(new_partition_records(topic.topic_id, &assignments));
        store
            .commit(&records)
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        self.replicas
            .apply_image(store.image(), &self.config.log_defaults)
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        tracing::info!(topic = %name, from = topic.partitions, to = count, "added partitions");
        Ok(())
    }

    /// Changes topic settings (IncrementalAlterConfigs).
    pub fn alter_topic_configs(
        &self,
        name: &str,
        ops: &[(String, ConfigOp)],
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut store = self.lock();
        let Some(topic) = store.image().topic(name).cloned() else {
            return Err(TopicError::UnknownTopic(name.to_string()));
        };
        let mut configs = topic.configs.clone();
        for (key, op) in ops {
            let Some(def) = topic_config::def(key) else {
                return Err(TopicError::InvalidConfig(format!(
                    "unknown topic config `{key}`"
                )));
            };
            let is_list = matches!(def.kind, topic_config::ConfigKind::List(_));
            let current = || topic_config::effective(def, &self.config.log_defaults, &configs).0;
            let new_value = match op {
                ConfigOp::Set(value) => Some(value.clone()),
                ConfigOp::Delete => None,
                ConfigOp::Append(value) | ConfigOp::Subtract(value) if !is_list => {
                    return Err(TopicError::InvalidConfig(format!(
                        "`{key}` is not a list; APPEND and SUBTRACT apply to list settings only (value `{value}`)"
                    )))
                }
                ConfigOp::Append(value) => {
                    let mut items: Vec<String> =
                        current().split(',').map(|s| s.trim().to_string()).collect();
                    for item in value.split(',').map(str::trim) {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    }
                    Some(items.join(","))
                }
                ConfigOp::Subtract(value) => {
                    let remove: Vec<&str> = value.split(',').map(str::trim).collect();
                    let items: Vec<String> = current()
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|i| !remove.contains(&i.as_str()))
                        .collect();
                    Some(items.join(","))
                }
            };
            match new_value {
                Some(value) => {
                    topic_config::validate(key, &value).map_err(TopicError::InvalidConfig)?;
                    configs.insert(key.clone(), value);
                }
                None => {
                    configs.remove(key);
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let set: BTreeMap<String, String> = configs
            .iter()
            .filter(|(k, v)| topic.configs.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let removed: Vec<String> = topic
            .configs
            .keys()
            .filter(|k| !configs.contains_key(*k))
            .cloned()
            .collect();
        if set.is_empty() && removed.is_empty() {
            return Ok(());
        }
        store
            .commit(&[MetadataRecord::TopicConfig {
                topic_id: topic.topic_id,
                set,
                removed,
            }])
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        self.replicas
            .apply_image(store.image(), &self.config.log_defaults)
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        tracing::info!(topic = %name, "altered topic configs");
        Ok(())
    }
}

/// The registration of this broker at start-up: a new epoch, its client listener, its rack.
/// A single node is caught up with its own metadata at once, so it registers unfenced.
fn register_local_broker(config: &BrokerConfig, image: &MetadataImage) -> MetadataRecord {
    MetadataRecord::RegisterBroker {
        broker_id: config.node_id,
        incarnation_id: Uuid::new_v4(),
        broker_epoch: image.next_broker_epoch(),
        listeners: broker_endpoints(config),
        rack: config.broker_rack.clone(),
        fenced: false,
    }
}

/// The advertised listeners of this broker that clients and brokers use (not the
/// controller's), with their security protocols.
pub fn broker_endpoints(config: &BrokerConfig) -> Vec<BrokerEndpoint> {
    config
        .listeners
        .iter()
        .filter(|l| !config.controller_listener_names.contains(&l.name))
        .map(|listener| {
            let advertised = config.advertised(listener);
            BrokerEndpoint {
                name: listener.name.clone(),
                host: advertised.host.clone(),
                port: advertised.port,
                security_protocol: config
                    .listener_security_protocol_map
                    .get(&listener.name)
                    .map_or("PLAINTEXT", |p| p.name())
                    .to_string(),
            }
        })
        .collect()
}

/// Partition records for partitions that a single-node broker created before the metadata
/// recorded replicas: their one replica and leader is this broker.
fn legacy_partition_records(node_id: i32, image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for partition in 0..topic.partitions {
            if topic.partition(partition).is_none() {
                records.push(MetadataRecord::Partition {
                    topic_id: topic.topic_id,
                    partition,
                    replicas: vec![node_id],
                    isr: vec![node_id],
                    leader: node_id,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                });
            }
        }
    }
    records
}

/// Records for new partitions: every assigned replica in sync, the first one leading.
fn new_partition_records(topic_id: Uuid, assignments: &[(i32, Vec<i32>)]) -> Vec<MetadataRecord> {
    assignments
        .iter()
        .map(|(partition, replicas)| MetadataRecord::Partition {
            topic_id,
            partition: *partition,
            replicas: replicas.clone(),
            isr: replicas.clone(),
            leader: replicas.first().copied().unwrap_or(-1),
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        })
        .collect()
}

/// Places `count` new partitions from `first` over the unfenced brokers.
fn place(
    image: &MetadataImage,
    first: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<(i32, Vec<i32>)>, TopicError> {
    let brokers: Vec<PlacementBroker> = image
        .unfenced_brokers()
        .map(|b| PlacementBroker {
            id: b.broker_id,
            rack: b.rack.clone(),
        })
        .collect();
    let start = usize::from(Uuid::new_v4().as_bytes()[0]);
    assign_replicas(&brokers, first, count, replication_factor, start).map_err(|e| match e {
        PlacementError::NotEnoughBrokers { .. } | PlacementError::InvalidReplicationFactor(_) => {
            TopicError::InvalidReplicationFactor(e.to_string())
        }
    })
}

/// Checks explicit assignments (CreateTopics, CreatePartitions): one per new partition, in
/// order, each a non-empty list of distinct registered brokers, all of one length (`expected_rf`
/// when the topic has one already).
fn check_assignments(
    image: &MetadataImage,
    assignments: &[(i32, Vec<i32>)],
    expected: i32,
    first_partition: i32,
    expected_rf: Option<i16>,
) -> Result<(), TopicError> {
    let bad = |m: String| Err(TopicError::InvalidReplicaAssignment(m));
    if i32::try_from(assignments.len()).ok() != Some(expected) {
        return bad(format!(
            "{} assignments for {expected} partitions",
            assignments.len()
        ));
    }
    let mut length = expected_rf.and_then(|rf| usize::try_from(rf).ok());
    for (offset, (partition, brokers)) in assignments.iter().enumerate() {
        let wanted = first_partition + i32::try_from(offset).unwrap_or(i32::MAX);
        if *partition != wanted {
            return bad(format!(
                "assignments must cover partitions in order; expected {wanted}, got {partition}"
            ));
        }
        if brokers.is_empty() {
            return bad(format!("partition {partition}: no replicas"));
        }
        if let Some(dup) = brokers
            .iter()
            .enumerate()
            .find(|(i, b)| brokers[..*i].contains(b))
        {
            return bad(format!(
                "partition {partition}: broker {} appears twice in {brokers:?}",
                dup.1
            ));
        }
        if let Some(unknown) = brokers.iter().find(|b| image.broker(**b).is_none()) {
            return bad(format!(
                "partition {partition}: broker {unknown} is not registered in the cluster"
            ));
        }
        match length {
            Some(n) if n != brokers.len() => {
                return bad(format!(
                    "partition {partition}: {} replicas; every partition of the topic needs {n}",
                    brokers.len()
                ))
            }
            _ => length = Some(brokers.len()),
        }
    }
    Ok(())
}

/// A Kafka-style cluster id: a random UUID in URL-safe base64 without padding (22 chars).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = Uuid::new_v4().into_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("page-views_v1.2").is_ok());
        for bad in ["", ".", "..", "bad topic", "naïve", &"x".repeat(250)] {
            assert!(
                matches!(validate_topic_name(bad), Err(TopicError::InvalidTopic(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, new_cluster_id());
    }
}
