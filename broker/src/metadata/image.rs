//! The metadata state machine: the current topics and settings, built by applying records.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{BrokerEndpoint, MetadataRecord};
use crate::security::{ScramCredential, ScramMechanism};

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
    /// Replicas, leader and ISR of each partition that has them, by partition index.
    pub partition_states: BTreeMap<i32, PartitionImage>,
}

impl TopicImage {
    /// The state of one partition.
    pub fn partition(&self, partition: i32) -> Option<&PartitionImage> {
        self.partition_states.get(&partition)
    }
}

/// Where a partition's replicas are and who leads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Leader, or -1 when offline.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Partition epoch (bumped on every change).
    pub partition_epoch: i32,
    /// Replicas being added by a reassignment.
    pub adding_replicas: Vec<i32>,
    /// Replicas being removed by a reassignment.
    pub removing_replicas: Vec<i32>,
}

/// A registered broker as the metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// `node.id`.
    pub broker_id: i32,
    /// Identifies the process that registered.
    pub incarnation_id: Uuid,
    /// The registration's epoch.
    pub epoch: i64,
    /// Its listeners.
    pub listeners: Vec<BrokerEndpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Fenced brokers get no leaderships and are not shown to clients.
    pub fenced: bool,
}

impl BrokerRegistration {
    /// The endpoint of one listener, by name.
    pub fn endpoint(&self, listener: &str) -> Option<&BrokerEndpoint> {
        self.listeners.iter().find(|l| l.name == listener)
    }
}

/// The state the metadata records describe. Serializable because the metadata quorum's
/// snapshots are this image.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    cluster_id: Option<String>,
    topics: BTreeMap<String, TopicImage>,
    names_by_id: HashMap<Uuid, String>,
    next_producer_id_block: i64,
    brokers: BTreeMap<i32, BrokerRegistration>,
    /// Highest broker epoch ever given, so that a new registration always gets a larger one.
    max_broker_epoch: i64,
    /// SCRAM credentials per user and mechanism.
    #[serde(default)]
    scram_credentials: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// Client quotas per entity (serialized as a list: the entity is not a string key).
    #[serde(default, with = "quota_list")]
    client_quotas: super::client_quotas::ClientQuotas,
    /// The ACLs.
    #[serde(default)]
    acls: crate::security::authorizer::AclIndex,
}

/// Client quotas as a list of (entity, quotas) in the serialized image.
mod quota_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::super::client_quotas::{ClientQuotas, QuotaEntity};

    pub fn serialize<S: Serializer>(quotas: &ClientQuotas, s: S) -> Result<S::Ok, S::Error> {
        quotas.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ClientQuotas, D::Error> {
        let list: Vec<(QuotaEntity, std::collections::BTreeMap<String, f64>)> =
            Vec::deserialize(d)?;
        Ok(list.into_iter().collect())
    }
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
                        partition_states: BTreeMap::new(),
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
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                broker_epoch,
                listeners,
                rack,
                fenced,
            } => {
                self.max_broker_epoch = self.max_broker_epoch.max(*broker_epoch);
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        incarnation_id: *incarnation_id,
                        epoch: *broker_epoch,
                        listeners: listeners.clone(),
                        rack: rack.clone(),
                        fenced: *fenced,
                    },
                );
            }
            MetadataRecord::BrokerFencing {
                broker_id,
                broker_epoch,
                fenced,
            } => {
                if let Some(broker) = self.brokers.get_mut(broker_id) {
                    if broker.epoch == *broker_epoch {
                        broker.fenced = *fenced;
                    }
                }
            }
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch,
            } => {
                if self
                    .brokers
                    .get(broker_id)
                    .is_some_and(|b| b.epoch == *broker_epoch)
                {
                    self.brokers.remove(broker_id);
                }
            }
            MetadataRecord::UserScramCredential {
                name,
                mechanism,
                credential,
            } => {
                self.scram_credentials
                    .entry(name.clone())
                    .or_default()
                    .insert(*mechanism, credential.clone());
            }
            MetadataRecord::ClientQuota { entity, key, value } => match value {
                Some(value) => {
                    self.client_quotas
                        .entry(entity.clone())
                        .or_default()
                        .insert(key.clone(), *value);
                }
                None => {
                    if let Some(quotas) = self.client_quotas.get_mut(entity) {
                        quotas.remove(key);
                        if quotas.is_empty() {
                            self.client_quotas.remove(entity);
                        }
                    }
                }
            },
            MetadataRecord::AccessControlEntry { id, acl } => {
                self.acls.insert(*id, acl.clone());
            }
            MetadataRecord::RemoveAccessControlEntry { id } => {
                self.acls.remove(id);
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                if let Some(credentials) = self.scram_credentials.get_mut(name) {
                    credentials.remove(mechanism);
                    if credentials.is_empty() {
                        self.scram_credentials.remove(name);
                    }
                }
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding_replicas,
                removing_replicas,
            } => {
                if let Some(topic) = self.topic_by_id_mut(topic_id) {
                    if (0..topic.partitions).contains(partition) {
                        topic.partition_states.insert(
                            *partition,
                            PartitionImage {
                                replicas: replicas.clone(),
                                isr: isr.clone(),
                                leader: *leader,
                                leader_epoch: *leader_epoch,
                                partition_epoch: *partition_epoch,
                                adding_replicas: adding_replicas.clone(),
                                removing_replicas: removing_replicas.clone(),
                            },
                        );
                    }
                }
            }
        }
    }

    fn topic_by_id_mut(&mut self, topic_id: &Uuid) -> Option<&mut TopicImage> {
        let name = self.names_by_id.get(topic_id)?;
        self.topics.get_mut(name)
    }

    /// A user's SCRAM credential for one mechanism.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<&ScramCredential> {
        self.scram_credentials.get(user)?.get(&mechanism)
    }

    /// The ACLs.
    pub fn acls(&self) -> &crate::security::authorizer::AclIndex {
        &self.acls
    }

    /// Every entity's client quotas.
    pub fn client_quotas(&self) -> &super::client_quotas::ClientQuotas {
        &self.client_quotas
    }

    /// Every user with SCRAM credentials, and the mechanisms they have.
    pub fn scram_users(
        &self,
    ) -> impl Iterator<Item = (&String, &BTreeMap<ScramMechanism, ScramCredential>)> {
        self.scram_credentials.iter()
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

    /// Every registered broker, fenced or not, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    /// One registered broker.
    pub fn broker(&self, broker_id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    /// Registered brokers that are not fenced: the ones that may lead and be shown to clients.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The epoch the next broker registration gets: larger than every earlier one.
    pub fn next_broker_epoch(&self) -> i64 {
        self.max_broker_epoch + 1
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

    fn register(broker_id: i32, broker_epoch: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id,
            incarnation_id: Uuid::new_v4(),
            broker_epoch,
            listeners: vec![],
            rack: None,
            fenced: true,
        }
    }

    #[test]
    fn fencing_applies_only_to_the_registration_it_names() {
        let mut image = MetadataImage::default();
        image.apply(&register(1, 5));
        image.apply(&MetadataRecord::BrokerFencing {
            broker_id: 1,
            broker_epoch: 5,
            fenced: false,
        });
        assert_eq!(image.unfenced_brokers().count(), 1);
        // A restart registers again, fenced, with a larger epoch; a late record about the
        // previous registration changes nothing.
        image.apply(&register(1, image.next_broker_epoch()));
        image.apply(&MetadataRecord::BrokerFencing {
            broker_id: 1,
            broker_epoch: 5,
            fenced: false,
        });
        assert_eq!(image.unfenced_brokers().count(), 0);
        assert_eq!(image.broker(1).map(|b| b.epoch), Some(6));
        image.apply(&MetadataRecord::UnregisterBroker {
            broker_id: 1,
            broker_epoch: 5,
        });
        assert!(image.broker(1).is_some());
        image.apply(&MetadataRecord::UnregisterBroker {
            broker_id: 1,
            broker_epoch: 6,
        });
        assert!(image.broker(1).is_none());
    }

    #[test]
    fn partition_records_outside_the_topic_are_ignored() {
        let id = Uuid::new_v4();
        let mut image = MetadataImage::default();
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id: id,
            partitions: 1,
            configs: BTreeMap::new(),
        });
        for partition in [0, 1] {
            image.apply(&MetadataRecord::Partition {
                topic_id: id,
                partition,
                replicas: vec![1, 2],
                isr: vec![1],
                leader: 1,
                leader_epoch: 3,
                partition_epoch: 4,
                adding_replicas: vec![],
                removing_replicas: vec![],
            });
        }
        let topic = image.topic("t").cloned().unwrap_or_else(|| panic!("topic"));
        assert_eq!(topic.partition_states.len(), 1);
        assert_eq!(topic.partition(0).map(|p| p.leader_epoch), Some(3));
    }
}
