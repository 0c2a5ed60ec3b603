//! The metadata state machine: the current topics and settings, built by applying records.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::MetadataRecord;

/// A topic as the metadata describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicImage {
    /// Name.
    pub name: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition count.
    pub partitions: i32,
    /// Topic-level overrides.
    pub configs: BTreeMap<String, String>,
}

/// The state the metadata records describe. Serializable because the metadata quorum's
/// snapshots are this image.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    cluster_id: Option<String>,
    topics: BTreeMap<String, TopicImage>,
    names_by_id: HashMap<Uuid, String>,
    next_producer_id_block: i64,
}

impl MetadataImage {
    /// Applies one record. Records that refer to unknown topics are ignored: they can only
    /// come from a log written by a buggy version, and ignoring keeps replay total.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Cluster { cluster_id } => {
                self.cluster_id = Some(cluster_id.clone());
            }
            MetadataRecord::Topic {
                name,
                topic_id,
                partitions,
                configs,
            } => {
                self.names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: *partitions,
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::PartitionCount { topic_id, count } => {
                if let Some(topic) = self.topic_by_id_mut(topic_id) {
                    topic.partitions = *count;
                }
            }
            MetadataRecord::TopicConfig {
                topic_id,
                set,
                removed,
            } => {
                if let Some(topic) = self.topic_by_id_mut(topic_id) {
                    for name in removed {
                        topic.configs.remove(name);
                    }
                    for (name, value) in set {
                        topic.configs.insert(name.clone(), value.clone());
                    }
                }
            }
            MetadataRecord::ProducerIds { next_block_start } => {
                self.next_producer_id_block = self.next_producer_id_block.max(*next_block_start);
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(name) = self.names_by_id.remove(topic_id) {
                    self.topics.remove(&name);
                }
            }
        }
    }

    fn topic_by_id_mut(&mut self, topic_id: &Uuid) -> Option<&mut TopicImage> {
        let name = self.names_by_id.get(topic_id)?;
        self.topics.get_mut(name)
    }

    /// The cluster id, once written.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// First producer id not yet handed out in any block.
    pub fn next_producer_id_block(&self) -> i64 {
        self.next_producer_id_block
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// A topic by id.
    pub fn topic_by_id(&self, topic_id: &Uuid) -> Option<&TopicImage> {
        self.names_by_id
            .get(topic_id)
            .and_then(|n| self.topics.get(n))
    }

    /// All topics, by name.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_records_builds_the_current_topics() {
        let id = Uuid::new_v4();
        let mut image = MetadataImage::default();
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id: id,
            partitions: 1,
            configs: BTreeMap::new(),
        });
        image.apply(&MetadataRecord::PartitionCount {
            topic_id: id,
            count: 3,
        });
        image.apply(&MetadataRecord::TopicConfig {
            topic_id: id,
            set: [("retention.ms".to_string(), "5".to_string())].into(),
            removed: vec![],
        });
        let topic = image.topic("t").cloned();
        assert_eq!(topic.as_ref().map(|t| t.partitions), Some(3));
        assert_eq!(
            topic.and_then(|t| t.configs.get("retention.ms").cloned()),
            Some("5".to_string())
        );
        image.apply(&MetadataRecord::RemoveTopic { topic_id: id });
        assert!(image.topic("t").is_none());
        assert!(image.topic_by_id(&id).is_none());
    }
}
