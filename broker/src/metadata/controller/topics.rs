//! The controller's topic decisions: what records create, grow, reconfigure or delete a topic,
//! judged against the current image. Pure functions: the active controller runs them under
//! its decision lock and proposes the records they return.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{ConfigOp, NewTopic, TopicError};
use crate::config::BrokerConfig;
use crate::metadata::placement::{assign_replicas, PlacementBroker, PlacementError};
use crate::metadata::{topic_config, MetadataImage, MetadataRecord, TopicImage};

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

/// The records of a new topic and the topic they make.
pub(super) fn create_topic(
    config: &BrokerConfig,
    image: &MetadataImage,
    new: &NewTopic,
) -> Result<(Vec<MetadataRecord>, TopicImage), TopicError> {
    validate_topic_name(&new.name)?;
    let partitions = match new.partitions {
        None => {
            if new.assignments.is_empty() {
                config.num_partitions
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
        .unwrap_or(config.default_replication_factor);
    if new.assignments.is_empty() && replication_factor <= 0 {
        return Err(TopicError::InvalidReplicationFactor(format!(
            "replication factor must be positive, got {replication_factor}"
        )));
    }
    for (name, value) in &new.configs {
        topic_config::validate(name, value).map_err(TopicError::InvalidConfig)?;
    }
    if image.topic(&new.name).is_some() {
        return Err(TopicError::AlreadyExists(new.name.clone()));
    }
    let collides = image
        .topics()
        .find(|t| t.name.replace('.', "_") == new.name.replace('.', "_"));
    if let Some(other) = collides {
        return Err(TopicError::InvalidTopic(format!(
            "topic `{}` collides with existing topic `{}` (`.` and `_` are interchangeable in metric names)",
            new.name, other.name
        )));
    }
    let assignments = if new.assignments.is_empty() {
        place(image, 0, partitions, replication_factor)?
    } else {
        check_assignments(image, &new.assignments, partitions, 0, None)?;
        new.assignments.clone()
    };
    let topic_id = Uuid::new_v4();
    let mut records = vec![MetadataRecord::Topic {
        name: new.name.clone(),
        topic_id,
        partitions,
        configs: new.configs.clone(),
    }];
    records.extend(new_partition_records(topic_id, &assignments));
    // The topic as the records make it, without touching the real image.
    let mut preview = MetadataImage::default();
    for record in &records {
        preview.apply(record);
    }
    let topic = preview
        .topic(&new.name)
        .cloned()
        .ok_or_else(|| TopicError::Storage("building the new topic failed".into()))?;
    Ok((records, topic))
}

/// The record deleting a topic, and its id.
pub(super) fn delete_topic(
    config: &BrokerConfig,
    image: &MetadataImage,
    name: &str,
) -> Result<(Vec<MetadataRecord>, Uuid), TopicError> {
    if !config.delete_topic_enable {
        return Err(TopicError::DeletionDisabled);
    }
    let Some(topic) = image.topic(name) else {
        return Err(TopicError::UnknownTopic(name.to_string()));
    };
    Ok((
        vec![MetadataRecord::RemoveTopic {
            topic_id: topic.topic_id,
        }],
        topic.topic_id,
    ))
}

/// The records growing a topic to `count` partitions.
pub(super) fn create_partitions(
    image: &MetadataImage,
    name: &str,
    count: i32,
    assignments: &[(i32, Vec<i32>)],
) -> Result<Vec<MetadataRecord>, TopicError> {
    let Some(topic) = image.topic(name) else {
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
        place(image, topic.partitions, added, replication_factor)?
    } else {
        check_assignments(
            image,
            assignments,
            added,
            topic.partitions,
            Some(replication_factor),
        )?;
        assignments.to_vec()
    };
    let mut records = vec![MetadataRecord::PartitionCount {
        topic_id: topic.topic_id,
        count,
    }];
    records.extend(new_partition_records(topic.topic_id, &assignments));
    Ok(records)
}

/// The record changing topic settings (IncrementalAlterConfigs); none when nothing changes.
pub(super) fn alter_topic_configs(
    config: &BrokerConfig,
    image: &MetadataImage,
    name: &str,
    ops: &[(String, ConfigOp)],
) -> Result<Vec<MetadataRecord>, TopicError> {
    let Some(topic) = image.topic(name) else {
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
        let current = || topic_config::effective(def, &config.log_defaults, &configs).0;
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
        return Ok(Vec::new());
    }
    Ok(vec![MetadataRecord::TopicConfig {
        topic_id: topic.topic_id,
        set,
        removed,
    }])
}

/// The record reserving `size` producer ids, and the first of them. Ids are never reused, even
/// across restarts and controller changes, because the reservation is in the metadata.
pub(super) fn allocate_producer_ids(
    image: &MetadataImage,
    size: i64,
) -> (Vec<MetadataRecord>, i64) {
    let start = image.next_producer_id_block();
    (
        vec![MetadataRecord::ProducerIds {
            next_block_start: start + size,
        }],
        start,
    )
}

/// Partition records for partitions that a single-node broker created before the metadata
/// recorded replicas: their one replica and leader is this broker.
pub(super) fn legacy_partition_records(node_id: i32, image: &MetadataImage) -> Vec<MetadataRecord> {
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
pub(super) fn new_cluster_id() -> String {
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
