//! The controller: the one place the cluster metadata changes (topics, partitions, brokers,
//! ISRs, producer-id blocks).
//!
//! The active controller is the leader of the metadata quorum. It decides each change against
//! its image under one lock (`topics.rs`, `partitions.rs`, `brokers.rs`: pure functions from
//! the image to records), proposes the records, and answers once they are committed. Every
//! other node forwards such requests to it (`rpc.rs`), then waits until its own image has
//! applied the change, so a client reads its own writes on whichever broker it asked. On a
//! single node the same path runs with a quorum of one.
//!
//! The active controller also watches broker heartbeats and fences brokers that go silent for
//! `broker.session.timeout.ms`, moving their leaderships to other in-sync replicas.

pub mod acls;
pub mod brokers;
pub mod partitions;
pub mod quotas;
pub mod rpc;
pub mod topics;
pub mod users;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::brokers::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerRegistrationRequest, BrokerRequestError,
    Liveness,
};
use self::partitions::{ElectionOutcome, ReassignmentError};
use self::rpc::{ControllerRequest, ControllerResponse};
pub use self::topics::validate_topic_name;
use super::quorum::{BoxFuture, ControllerRpcHandler, MetadataQuorum, QuorumError};
use super::records::BrokerEndpoint;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata::{MetadataImage, MetadataRecord, TopicImage};
use crate::replica::{AlterPartition, ReplicaManager};

/// Why a topic operation was refused; each converts into the Kafka error clients expect
/// (`ResponseError::from(&error)`, in `crate::error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
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
    /// No active controller could take the change now (NOT_CONTROLLER: clients retry).
    #[error("no active controller: {0}")]
    NotController(String),
}

/// Why an AlterPartition was refused (each is one of Kafka's AlterPartition error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
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
    /// STALE_BROKER_EPOCH: the proposal comes from an earlier incarnation of the leader.
    #[error("broker epoch {sent} is not the leader's current one ({current})")]
    StaleBrokerEpoch {
        /// The epoch the proposal carried.
        sent: i64,
        /// The leader's registered epoch.
        current: i64,
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
    /// NOT_CONTROLLER: no active controller could take the change now.
    #[error("no active controller: {0}")]
    NotController(String),
}

/// A CreateTopics entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// How long a forwarded request or a proposal may take before the caller gives up (the
/// client then retries, as for any request timeout).
const CONTROLLER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the active controller looks for brokers whose session expired.
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The controller role of this node, and the way to the active controller from any node.
pub struct Controller {
    config: Arc<BrokerConfig>,
    quorum: Arc<MetadataQuorum>,
    replicas: Arc<ReplicaManager>,
    /// Serializes decisions on the active controller: each is judged against the image that
    /// includes the previous one.
    deciding: tokio::sync::Mutex<()>,
    liveness: Mutex<Liveness>,
    cluster_id: String,
}

impl Controller {
    /// Takes the controller role over `quorum`: waits for a leader, has the active controller
    /// write the cluster id on first start, and (on a node upgraded from the single-node
    /// format) records the replicas of partitions that had none.
    pub async fn start(
        config: Arc<BrokerConfig>,
        quorum: Arc<MetadataQuorum>,
        replicas: Arc<ReplicaManager>,
    ) -> Result<Arc<Controller>, BrokerError> {
        let liveness = Liveness::new(Duration::from_millis(config.broker_session_timeout_ms));
        let mut controller = Controller {
            config,
            quorum,
            replicas,
            deciding: tokio::sync::Mutex::new(()),
            liveness: Mutex::new(liveness),
            cluster_id: String::new(),
        };
        controller.cluster_id = controller.ensure_cluster_id().await?;
        Ok(Arc::new(controller))
    }

    /// The cluster id from the metadata; the first active controller writes it.
    async fn ensure_cluster_id(&self) -> Result<String, BrokerError> {
        let mut applied = self.quorum.subscribe();
        let deadline = tokio::time::Instant::now() + CONTROLLER_REQUEST_TIMEOUT;
        loop {
            if let Some(id) = self.quorum.image().cluster_id() {
                let id = id.to_string();
                if self.quorum.is_leader() {
                    let _deciding = self.deciding.lock().await;
                    let migrated =
                        topics::legacy_partition_records(self.config.node_id, &self.quorum.image());
                    if !migrated.is_empty() {
                        tracing::info!(
                            partitions = migrated.len(),
                            "recording replicas of partitions written before the metadata had them"
                        );
                        self.quorum
                            .propose(migrated)
                            .await
                            .map_err(|e| BrokerError::Storage(e.to_string()))?;
                    }
                }
                return Ok(id);
            }
            if self.quorum.is_leader() {
                let _deciding = self.deciding.lock().await;
                if self.quorum.image().cluster_id().is_none() {
                    let id = topics::new_cluster_id();
                    match self
                        .quorum
                        .propose(vec![MetadataRecord::Cluster {
                            cluster_id: id.clone(),
                        }])
                        .await
                    {
                        Ok(_) => continue,
                        Err(QuorumError::NotLeader { .. }) => {}
                        Err(error) => return Err(BrokerError::Storage(error.to_string())),
                    }
                }
                continue;
            }
            let mut leader = self.quorum.leader_changes();
            tokio::select! {
                _ = applied.changed() => {}
                _ = leader.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(BrokerError::Storage(format!(
                        "no metadata quorum leader within {}s: are a majority of controller.quorum.voters ({}) running and reachable?",
                        CONTROLLER_REQUEST_TIMEOUT.as_secs(),
                        self.config
                            .quorum_voters
                            .iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    )));
                }
            }
        }
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The metadata quorum.
    pub fn quorum(&self) -> &Arc<MetadataQuorum> {
        &self.quorum
    }

    /// The node id of the active controller, or -1 when there is none right now.
    pub fn active_controller_id(&self) -> i32 {
        self.quorum
            .leader()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(-1)
    }

    /// The controller id clients are told (Metadata, DescribeCluster): the active controller
    /// when it is also a broker; otherwise this broker, which forwards what clients send it
    /// (clients cannot reach dedicated controllers, so KRaft brokers answer the same way).
    pub fn controller_id_for_clients(&self) -> i32 {
        let id = self.active_controller_id();
        if id < 0 || self.quorum.image().broker(id).is_some() {
            id
        } else {
            self.config.node_id
        }
    }

    /// The current metadata.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    /// Runs `f` on the current metadata.
    pub fn with_image<T>(&self, f: impl FnOnce(&MetadataImage) -> T) -> T {
        f(&self.quorum.image())
    }

    /// Waits (briefly) until this broker's replicas match the metadata it has applied.
    pub async fn wait_replicas_caught_up(&self) {
        if let Some(applied) = self.quorum.status().last_applied {
            self.replicas
                .wait_applied(applied, Duration::from_secs(5))
                .await;
        }
    }

    /// A topic's metadata.
    pub fn topic(&self, name: &str) -> Option<TopicImage> {
        self.quorum.image().topic(name).cloned()
    }

    /// Creates a topic (or, with `validate_only`, only checks that it could be created).
    pub async fn create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
    ) -> Result<TopicImage, TopicError> {
        match self
            .submit(ControllerRequest::CreateTopic {
                topic,
                validate_only,
            })
            .await
        {
            ControllerResponse::Topic { topic, .. } => Ok(topic),
            other => Err(topic_error(other)),
        }
    }

    /// Creates an internal topic (`__consumer_offsets`, `__transaction_state`) on first use, as
    /// Kafka does, and returns its partition count once this broker's replicas have opened it.
    /// Its replication factor is capped at the unfenced brokers there are, so that a
    /// single-node broker gets one too; `configs` are given that factor.
    pub async fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: impl FnOnce(i16) -> BTreeMap<String, String>,
    ) -> Result<i32, TopicError> {
        if let Some(topic) = self.topic(name) {
            // The image may be ahead of the replicas (another request just created the
            // topic): let them open its partitions first.
            self.wait_replicas_caught_up().await;
            return Ok(topic.partitions);
        }
        let brokers = self.with_image(|i| i.unfenced_brokers().count()).max(1);
        let replication_factor = replication_factor.min(i16::try_from(brokers).unwrap_or(i16::MAX));
        let new = NewTopic {
            name: name.to_string(),
            partitions: Some(partitions),
            replication_factor: Some(replication_factor),
            assignments: Vec::new(),
            configs: configs(replication_factor),
        };
        match self.create_topic(new, false).await {
            Ok(topic) => Ok(topic.partitions),
            Err(TopicError::AlreadyExists(_)) => {
                self.wait_replicas_caught_up().await;
                Ok(self.topic(name).map_or(partitions, |t| t.partitions))
            }
            Err(error) => Err(error),
        }
    }

    /// Creates a topic with broker defaults because a client asked for it
    /// (`auto.create.topics.enable`). Returns the existing topic if another request won the race.
    pub async fn auto_create(&self, name: &str) -> Result<TopicImage, TopicError> {
        let new = NewTopic {
            name: name.to_string(),
            ..NewTopic::default()
        };
        match self.create_topic(new, false).await {
            Err(TopicError::AlreadyExists(_)) => self
                .topic(name)
                .ok_or_else(|| TopicError::UnknownTopic(name.to_string())),
            other => other,
        }
    }

    /// Reserves `size` producer ids; returns the first.
    pub async fn allocate_producer_ids(&self, size: i64) -> Result<i64, TopicError> {
        match self
            .submit(ControllerRequest::AllocateProducerIds { size })
            .await
        {
            ControllerResponse::ProducerIds { start, .. } => Ok(start),
            other => Err(topic_error(other)),
        }
    }

    /// Asks for an ISR change (AlterPartition).
    pub async fn alter_partition(&self, change: AlterPartition) -> Result<(), AlterPartitionError> {
        match self.submit(ControllerRequest::AlterPartition(change)).await {
            ControllerResponse::Done { .. } => Ok(()),
            ControllerResponse::AlterPartitionError(error) => Err(error),
            ControllerResponse::NotController { .. } => Err(AlterPartitionError::NotController(
                "no active controller".into(),
            )),
            ControllerResponse::Unavailable(reason) => {
                Err(AlterPartitionError::NotController(reason))
            }
            other => Err(AlterPartitionError::InvalidRequest(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Deletes a topic by name; returns its id.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        match self
            .submit(ControllerRequest::DeleteTopic {
                name: name.to_string(),
            })
            .await
        {
            ControllerResponse::Deleted { topic_id, .. } => Ok(topic_id),
            other => Err(topic_error(other)),
        }
    }

    /// Deletes a topic by id; returns its name.
    pub async fn delete_topic_by_id(&self, topic_id: Uuid) -> Result<String, TopicError> {
        let name = self
            .quorum
            .image()
            .topic_by_id(&topic_id)
            .map(|t| t.name.clone())
            .ok_or(TopicError::UnknownTopicId(topic_id))?;
        self.delete_topic(&name).await?;
        Ok(name)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: &[(i32, Vec<i32>)],
        validate_only: bool,
    ) -> Result<(), TopicError> {
        match self
            .submit(ControllerRequest::CreatePartitions {
                name: name.to_string(),
                count,
                assignments: assignments.to_vec(),
                validate_only,
            })
            .await
        {
            ControllerResponse::Done { .. } => Ok(()),
            other => Err(topic_error(other)),
        }
    }

    /// Changes topic settings (IncrementalAlterConfigs).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        ops: &[(String, ConfigOp)],
        validate_only: bool,
    ) -> Result<(), TopicError> {
        match self
            .submit(ControllerRequest::AlterTopicConfigs {
                name: name.to_string(),
                ops: ops.to_vec(),
                validate_only,
            })
            .await
        {
            ControllerResponse::Done { .. } => Ok(()),
            other => Err(topic_error(other)),
        }
    }

    /// Starts or cancels replica moves (AlterPartitionReassignments).
    pub async fn reassign(
        &self,
        moves: Vec<(String, i32, Option<Vec<i32>>)>,
    ) -> Result<Vec<(String, i32, Option<ReassignmentError>)>, TopicError> {
        match self.submit(ControllerRequest::Reassign { moves }).await {
            ControllerResponse::Reassignments { results, .. } => Ok(results),
            other => Err(topic_error(other)),
        }
    }

    /// Preferred-leader elections (ElectLeaders): for the given (topic, partition)s, or all.
    pub async fn elect_preferred_leaders(
        &self,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<(String, i32, ElectionOutcome)>, TopicError> {
        match self
            .submit(ControllerRequest::ElectPreferredLeaders { partitions })
            .await
        {
            ControllerResponse::Elections { results, .. } => Ok(results),
            other => Err(topic_error(other)),
        }
    }

    /// Sets and removes client quotas (AlterClientQuotas); per entity, `None` if its changes
    /// were committed (or, with `validate_only`, would be), else Kafka's error code and
    /// message.
    pub async fn alter_client_quotas(
        &self,
        alterations: Vec<quotas::QuotaAlteration>,
        validate_only: bool,
    ) -> Result<quotas::QuotaResults, TopicError> {
        match self
            .submit(ControllerRequest::AlterClientQuotas {
                alterations,
                validate_only,
            })
            .await
        {
            ControllerResponse::QuotaResults { results, .. } => Ok(results),
            other => Err(topic_error(other)),
        }
    }

    /// Creates ACLs (CreateAcls), validated already; an ACL that exists is not duplicated.
    pub async fn create_acls(
        &self,
        acls: Vec<crate::security::authorizer::AclBinding>,
    ) -> Result<(), TopicError> {
        match self.submit(ControllerRequest::CreateAcls { acls }).await {
            ControllerResponse::Done { .. } => Ok(()),
            other => Err(topic_error(other)),
        }
    }

    /// Deletes the ACLs each filter selects (DeleteAcls); per filter, the ACLs it deleted.
    pub async fn delete_acls(
        &self,
        filters: Vec<crate::security::authorizer::AclBindingFilter>,
    ) -> Result<Vec<Vec<crate::security::authorizer::AclBinding>>, TopicError> {
        match self.submit(ControllerRequest::DeleteAcls { filters }).await {
            ControllerResponse::AclsDeleted { results, .. } => Ok(results),
            other => Err(topic_error(other)),
        }
    }

    /// Sets and deletes SCRAM credentials (AlterUserScramCredentials); per user, `None` if its
    /// changes were committed, else Kafka's error code and message.
    pub async fn alter_scram_credentials(
        &self,
        upsertions: Vec<users::ScramUpsertion>,
        deletions: Vec<users::ScramDeletion>,
    ) -> Result<users::UserResults, TopicError> {
        match self
            .submit(ControllerRequest::AlterScramCredentials {
                upsertions,
                deletions,
            })
            .await
        {
            ControllerResponse::ScramResults { results, .. } => Ok(results),
            other => Err(topic_error(other)),
        }
    }

    /// Registers this process as broker `node.id`; returns its broker epoch.
    pub async fn register_broker(
        &self,
        request: BrokerRegistrationRequest,
    ) -> Result<i64, ControllerCallError> {
        match self
            .submit(ControllerRequest::RegisterBroker(request))
            .await
        {
            ControllerResponse::Registered { broker_epoch, .. } => Ok(broker_epoch),
            other => Err(ControllerCallError::from_response(other)),
        }
    }

    /// Sends a heartbeat of this broker.
    pub async fn heartbeat(
        &self,
        request: BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatResponse, ControllerCallError> {
        match self.submit(ControllerRequest::Heartbeat(request)).await {
            ControllerResponse::Heartbeat { response, .. } => Ok(response),
            other => Err(ControllerCallError::from_response(other)),
        }
    }

    /// Runs `request` on the active controller (this node or another) and waits until this
    /// node's image and replicas have applied what it changed.
    async fn submit(&self, request: ControllerRequest) -> ControllerResponse {
        let response =
            match tokio::time::timeout(CONTROLLER_REQUEST_TIMEOUT, self.route(request)).await {
                Ok(response) => response,
                Err(_) => {
                    return ControllerResponse::Unavailable(
                        "the active controller did not answer in time".into(),
                    )
                }
            };
        if let Some(index) = response.index() {
            if let Err(error) = self
                .quorum
                .wait_applied(index, CONTROLLER_REQUEST_TIMEOUT)
                .await
            {
                return ControllerResponse::Unavailable(error.to_string());
            }
            self.replicas
                .wait_applied(index, CONTROLLER_REQUEST_TIMEOUT)
                .await;
        }
        response
    }

    /// Sends `request` to the active controller, following leadership changes.
    async fn route(&self, request: ControllerRequest) -> ControllerResponse {
        let mut leader_changes = self.quorum.leader_changes();
        loop {
            let leader = self.quorum.leader();
            let response = match leader {
                Some(leader) if leader == self.quorum.node_id() => {
                    self.execute(request.clone()).await
                }
                Some(leader) => match serde_json::to_vec(&request) {
                    Ok(payload) => {
                        // A controller cut off or paused answers nothing, and the call waits
                        // for the RPC timeout, longer than a broker session: a heartbeat stuck
                        // there would get its broker fenced by the new controller. Give up on
                        // the call as soon as the quorum names another leader, and ask that
                        // one (every request may be sent again, see `retriable`).
                        let replaced = async {
                            while leader_changes.changed().await.is_ok() {
                                if self.quorum.leader() != Some(leader) {
                                    return;
                                }
                            }
                            std::future::pending::<()>().await;
                        };
                        tokio::select! {
                            answer = self.quorum.call(leader, payload) => match answer {
                                Ok(answer) => {
                                    serde_json::from_slice(&answer).unwrap_or_else(|e| {
                                        ControllerResponse::Unavailable(format!(
                                            "unreadable answer from controller {leader}: {e}"
                                        ))
                                    })
                                }
                                Err(error) => ControllerResponse::Unavailable(error.to_string()),
                            },
                            () = replaced => ControllerResponse::Unavailable(format!(
                                "controller {leader} was replaced while the request was in flight"
                            )),
                        }
                    }
                    Err(e) => ControllerResponse::Unavailable(e.to_string()),
                },
                None => ControllerResponse::NotController { leader: None },
            };
            match response {
                // The leadership moved (or is being decided): wait for news and try again.
                ControllerResponse::NotController { .. } | ControllerResponse::Unavailable(_)
                    if retriable(&request) =>
                {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), leader_changes.changed())
                            .await;
                }
                other => return other,
            }
        }
    }

    /// Decides `request` as the active controller. Elsewhere: NotController.
    pub async fn execute(&self, request: ControllerRequest) -> ControllerResponse {
        let _deciding = self.deciding.lock().await;
        if !self.quorum.is_leader() {
            return ControllerResponse::NotController {
                leader: self.quorum.leader(),
            };
        }
        // Decide against everything committed so far (a new leader may still be applying).
        if let Some(last) = self.quorum.status().last_log_index {
            if let Err(error) = self
                .quorum
                .wait_applied(last, CONTROLLER_REQUEST_TIMEOUT)
                .await
            {
                return ControllerResponse::Unavailable(error.to_string());
            }
        }
        let image = self.quorum.image();
        let config = &self.config;
        match request {
            ControllerRequest::CreateTopic {
                topic,
                validate_only,
            } => match topics::create_topic(config, &image, &topic) {
                Ok((_, created)) if validate_only => ControllerResponse::Topic {
                    topic: created,
                    index: None,
                },
                Ok((records, created)) => match self.commit(records).await {
                    Ok(index) => {
                        tracing::info!(topic = %created.name, partitions = created.partitions, "created topic");
                        ControllerResponse::Topic {
                            topic: created,
                            index,
                        }
                    }
                    Err(answer) => answer,
                },
                Err(error) => ControllerResponse::TopicError(error),
            },
            ControllerRequest::DeleteTopic { name } => {
                match topics::delete_topic(config, &image, &name) {
                    Ok((records, topic_id)) => match self.commit(records).await {
                        Ok(index) => {
                            tracing::info!(topic = %name, "deleted topic");
                            ControllerResponse::Deleted { topic_id, index }
                        }
                        Err(answer) => answer,
                    },
                    Err(error) => ControllerResponse::TopicError(error),
                }
            }
            ControllerRequest::CreatePartitions {
                name,
                count,
                assignments,
                validate_only,
            } => match topics::create_partitions(&image, &name, count, &assignments) {
                Ok(_) if validate_only => ControllerResponse::Done { index: None },
                Ok(records) => self.commit_done(records).await,
                Err(error) => ControllerResponse::TopicError(error),
            },
            ControllerRequest::AlterTopicConfigs {
                name,
                ops,
                validate_only,
            } => match topics::alter_topic_configs(config, &image, &name, &ops) {
                Ok(_) if validate_only => ControllerResponse::Done { index: None },
                Ok(records) => self.commit_done(records).await,
                Err(error) => ControllerResponse::TopicError(error),
            },
            ControllerRequest::AllocateProducerIds { size } => {
                let (records, start) = topics::allocate_producer_ids(&image, size);
                match self.commit(records).await {
                    Ok(index) => ControllerResponse::ProducerIds { start, index },
                    Err(answer) => answer,
                }
            }
            ControllerRequest::AlterPartition(change) => {
                match partitions::alter_partition(&image, &change) {
                    Ok(mut records) => {
                        // An ISR that now holds every replica being added completes its move.
                        let preview = brokers::preview(&image, &records);
                        records.extend(partitions::complete_reassignments(&preview));
                        self.commit_done(records).await
                    }
                    Err(error) => ControllerResponse::AlterPartitionError(error),
                }
            }
            ControllerRequest::RegisterBroker(request) => {
                let decided = {
                    let mut liveness = self.lock_liveness();
                    let decided = brokers::register(&image, &request, &liveness);
                    if decided.is_ok() {
                        liveness.heard_from(request.broker_id);
                    }
                    decided
                };
                match decided {
                    Ok((records, broker_epoch)) => match self.commit(records).await {
                        Ok(index) => {
                            tracing::info!(
                                broker_id = request.broker_id,
                                broker_epoch,
                                "broker registered"
                            );
                            ControllerResponse::Registered {
                                broker_epoch,
                                index,
                            }
                        }
                        Err(answer) => answer,
                    },
                    Err(error) => ControllerResponse::BrokerError(error),
                }
            }
            ControllerRequest::Reassign { moves } => {
                let mut preview = (*image).clone();
                let mut records = Vec::new();
                let mut results = Vec::with_capacity(moves.len());
                for (topic, partition, target) in moves {
                    match partitions::reassign(&preview, &topic, partition, target.as_deref()) {
                        Ok(changes) => {
                            for record in &changes {
                                preview.apply(record);
                            }
                            records.extend(changes);
                            results.push((topic, partition, None));
                        }
                        Err(error) => results.push((topic, partition, Some(error))),
                    }
                }
                match self.commit(records).await {
                    Ok(index) => ControllerResponse::Reassignments { results, index },
                    Err(answer) => answer,
                }
            }
            ControllerRequest::ElectPreferredLeaders { partitions } => {
                let wanted: Vec<(String, i32)> = partitions.unwrap_or_else(|| {
                    image
                        .topics()
                        .flat_map(|t| t.partition_states.keys().map(|p| (t.name.clone(), *p)))
                        .collect()
                });
                let mut records = Vec::new();
                let mut results = Vec::with_capacity(wanted.len());
                for (topic, partition) in wanted {
                    let (outcome, record) = partitions::elect_preferred(&image, &topic, partition);
                    records.extend(record);
                    results.push((topic, partition, outcome));
                }
                match self.commit(records).await {
                    Ok(index) => ControllerResponse::Elections { results, index },
                    Err(answer) => answer,
                }
            }
            ControllerRequest::AlterClientQuotas {
                alterations,
                validate_only,
            } => {
                let (records, results) = quotas::alter_client_quotas(&image, &alterations);
                if validate_only || records.is_empty() {
                    return ControllerResponse::QuotaResults {
                        results,
                        index: None,
                    };
                }
                match self.commit(records).await {
                    Ok(index) => ControllerResponse::QuotaResults { results, index },
                    Err(answer) => answer,
                }
            }
            ControllerRequest::CreateAcls { acls } => {
                self.commit_done(acls::create_acls(&image, &acls)).await
            }
            ControllerRequest::DeleteAcls { filters } => {
                let (records, results) = acls::delete_acls(&image, &filters);
                match self.commit(records).await {
                    Ok(index) => ControllerResponse::AclsDeleted { results, index },
                    Err(answer) => answer,
                }
            }
            ControllerRequest::AlterScramCredentials {
                upsertions,
                deletions,
            } => {
                let (records, results) =
                    users::alter_scram_credentials(&image, &upsertions, &deletions);
                match self.commit(records).await {
                    Ok(index) => ControllerResponse::ScramResults { results, index },
                    Err(answer) => answer,
                }
            }
            ControllerRequest::Heartbeat(request) => match brokers::heartbeat(&image, &request) {
                Ok((records, response)) => {
                    self.lock_liveness().heard_from(request.broker_id);
                    match self.commit(records).await {
                        Ok(index) => ControllerResponse::Heartbeat { response, index },
                        Err(answer) => answer,
                    }
                }
                Err(error) => ControllerResponse::BrokerError(error),
            },
        }
    }

    fn lock_liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Proposes `records` (nothing to do for none); the committed index.
    async fn commit(
        &self,
        records: Vec<MetadataRecord>,
    ) -> Result<Option<u64>, ControllerResponse> {
        if records.is_empty() {
            return Ok(None);
        }
        match self.quorum.propose(records).await {
            Ok(index) => Ok(Some(index)),
            Err(QuorumError::NotLeader { leader }) => {
                Err(ControllerResponse::NotController { leader })
            }
            Err(error) => Err(ControllerResponse::Unavailable(error.to_string())),
        }
    }

    async fn commit_done(&self, records: Vec<MetadataRecord>) -> ControllerResponse {
        match self.commit(records).await {
            Ok(index) => ControllerResponse::Done { index },
            Err(answer) => answer,
        }
    }

    /// While this node is the active controller, fences brokers whose heartbeats stopped and,
    /// with `auto.leader.rebalance.enable`, every `leader.imbalance.check.interval.seconds`
    /// gives leadership back to preferred replicas that are in sync. Runs until `shutdown`.
    pub async fn run_liveness(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut was_leader = false;
        let balance_every =
            Duration::from_secs(self.config.leader_imbalance_check_interval_seconds.max(1));
        let mut last_balance = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LIVENESS_CHECK_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            let leader = self.quorum.is_leader();
            if leader && !was_leader {
                // A new active controller gives every broker a full session to reach it, but
                // the previous one's broker only what is left of its own.
                let previous = self.quorum.last_leader_contact().and_then(|contact| {
                    let broker_id = i32::try_from(contact.leader).ok()?;
                    Some((broker_id, contact.at))
                });
                let grace = Duration::from_millis(2 * self.config.broker_heartbeat_interval_ms);
                self.lock_liveness().take_over(previous, grace);
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            let _deciding = self.deciding.lock().await;
            let image = self.quorum.image();
            let mut records = brokers::fence_expired(&image, &self.lock_liveness());
            if records.is_empty()
                && self.config.auto_leader_rebalance_enable
                && last_balance.elapsed() >= balance_every
            {
                last_balance = tokio::time::Instant::now();
                records = partitions::rebalance_leaders(&image);
                if !records.is_empty() {
                    tracing::info!(
                        partitions = records.len(),
                        "moving leadership back to preferred replicas"
                    );
                }
            }
            if records.is_empty() {
                continue;
            }
            if let Err(error) = self.quorum.propose(records).await {
                tracing::warn!(%error, "fencing expired brokers failed");
            }
        }
    }
}

/// Whether a request may be sent again after an unknown outcome: every controller request is
/// judged against the current image, so a repeat of one that did commit is refused (topic
/// exists), a no-op (same ISR, same registration) or harmless (a second producer-id block).
fn retriable(_request: &ControllerRequest) -> bool {
    true
}

/// The topic error an answer means.
fn topic_error(response: ControllerResponse) -> TopicError {
    match response {
        ControllerResponse::TopicError(error) => error,
        ControllerResponse::NotController { .. } => {
            TopicError::NotController("no active controller right now".into())
        }
        ControllerResponse::Unavailable(reason) => TopicError::NotController(reason),
        other => TopicError::Storage(format!("unexpected controller answer {other:?}")),
    }
}

/// Why a broker lifecycle call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerCallError {
    /// The controller refused it.
    #[error(transparent)]
    Refused(#[from] BrokerRequestError),
    /// No active controller answered.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

impl ControllerCallError {
    fn from_response(response: ControllerResponse) -> Self {
        match response {
            ControllerResponse::BrokerError(error) => ControllerCallError::Refused(error),
            ControllerResponse::Unavailable(reason) => ControllerCallError::Unavailable(reason),
            other => ControllerCallError::Unavailable(format!("unexpected answer {other:?}")),
        }
    }
}

/// The quorum's application handler: requests forwarded by other nodes run here when this
/// node is the active controller. Bound after the controller exists (the quorum starts first).
#[derive(Default)]
pub struct ControllerHandler {
    controller: std::sync::OnceLock<std::sync::Weak<Controller>>,
}

impl ControllerHandler {
    /// Binds the controller.
    pub fn bind(&self, controller: &Arc<Controller>) {
        let _ = self.controller.set(Arc::downgrade(controller));
    }
}

impl ControllerRpcHandler for ControllerHandler {
    fn handle(&self, from: u64, request: Vec<u8>) -> BoxFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let controller = self.controller.get().and_then(std::sync::Weak::upgrade);
            let response = match (
                controller,
                serde_json::from_slice::<ControllerRequest>(&request),
            ) {
                (None, _) => ControllerResponse::Unavailable("controller starting".into()),
                (Some(_), Err(error)) => {
                    tracing::warn!(from, %error, "malformed controller request");
                    ControllerResponse::Unavailable(format!("malformed request: {error}"))
                }
                (Some(controller), Ok(request)) => controller.execute(request).await,
            };
            serde_json::to_vec(&response).unwrap_or_default()
        })
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
