//! Group membership through the classic protocol: JoinGroup (with the KIP-394 member-id
//! handshake), SyncGroup (the leader computes the assignment), Heartbeat from a background task,
//! and LeaveGroup.
//!
//! The consumer drives joins from `poll`; the heartbeat task only keeps the session alive and
//! raises flags (rejoin needed, partitions lost, fatal error) that the next `poll` acts on, so
//! every change of assignment happens on the caller's task, between two polls.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;

use crate::coordinator::find_group_coordinator;
use crate::error::{ClientError, Result};
use crate::network::cluster::Cluster;
use crate::offsets::group_id;
use crate::types::TopicPartition;

use super::assignor::{assign, AssignmentStrategy, GroupMember};
use super::config::ConsumerConfig;
use super::protocol::{decode_assignment, decode_subscription, encode_assignment};
use super::protocol::{encode_subscription, Subscription};

/// Who this member is in the group right now.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// Assigned by the coordinator; empty before the first join.
    pub(crate) member_id: String,
    /// -1 when not in a generation.
    pub(crate) generation: i32,
    /// The assignment protocol the coordinator chose.
    pub(crate) protocol: Option<String>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            member_id: String::new(),
            generation: -1,
            protocol: None,
        }
    }
}

/// State shared between the consumer and its heartbeat task.
#[derive(Debug)]
pub(crate) struct MemberState {
    pub(crate) identity: Mutex<Identity>,
    /// Set when the coordinator asks for a rejoin (or the member must rejoin for its own
    /// reasons, such as a changed subscription).
    pub(crate) rejoin_needed: AtomicBool,
    /// Set when the member was removed from its generation: its partitions may already be
    /// someone else's, so they are dropped without a commit.
    pub(crate) lost: AtomicBool,
    /// While a join is under way the heartbeat task stays quiet.
    joining: AtomicBool,
    /// An error the consumer cannot recover from (a fenced static member).
    fatal: Mutex<Option<ClientError>>,
    /// Why the last attempt to join failed, until a join succeeds (see [`GroupWatch`]).
    last_join_error: Mutex<Option<ClientError>>,
    /// When the application last called `poll`.
    last_poll: Mutex<Instant>,
    /// Wakes a waiting `poll` when one of the flags changes.
    pub(crate) changed: Notify,
    /// Stops the heartbeat task.
    stop: Notify,
    stopped: AtomicBool,
}

impl MemberState {
    pub(crate) fn identity(&self) -> Identity {
        self.identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_identity(&self, identity: Identity) {
        *self.identity.lock().unwrap_or_else(|p| p.into_inner()) = identity;
    }

    fn flag(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    pub(crate) fn take_fatal(&self) -> Option<ClientError> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_fatal(&self, error: ClientError) {
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.changed.notify_one();
    }

    pub(crate) fn polled(&self) {
        *self.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn since_last_poll(&self) -> Duration {
        self.last_poll
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// Forgets the generation (keeping the member id, which stays valid for a rejoin unless
    /// the coordinator said otherwise).
    fn leave_generation(&self, forget_member_id: bool) {
        let mut identity = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        identity.generation = -1;
        identity.protocol = None;
        if forget_member_id {
            identity.member_id.clear();
        }
    }
}

/// The outcome of a completed join: this member's partitions in the new generation.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) assignment: Vec<TopicPartition>,
    pub(crate) cooperative: bool,
}

/// Membership of one consumer in one group.
#[derive(Debug)]
pub(crate) struct GroupMembership {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    group: String,
    pub(crate) state: Arc<MemberState>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for GroupMembership {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
        self.state.stop.notify_one();
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

/// A read-only view of a consumer's group membership that another task can hold while the
/// consumer polls: whether it is in a generation, and why joining keeps failing if it does
/// (for tools that explain a wait instead of hanging silently).
#[derive(Clone)]
pub struct GroupWatch {
    state: Arc<MemberState>,
}

impl std::fmt::Debug for GroupWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWatch")
            .field("joined", &self.joined())
            .finish()
    }
}

impl GroupWatch {
    /// Whether the consumer is in a generation of its group.
    pub fn joined(&self) -> bool {
        self.state.identity().generation >= 0
    }

    /// Why the latest attempt to join failed (`None` once one succeeds, or before any
    /// failed). The consumer goes on retrying retriable errors.
    pub fn last_join_error(&self) -> Option<ClientError> {
        self.state
            .last_join_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl GroupMembership {
    /// A watch on this membership.
    pub(crate) fn watch(&self) -> GroupWatch {
        GroupWatch {
            state: self.state.clone(),
        }
    }

    pub(crate) fn new(cluster: Arc<Cluster>, config: ConsumerConfig, group: String) -> Self {
        let state = Arc::new(MemberState {
            identity: Mutex::new(Identity::default()),
            rejoin_needed: AtomicBool::new(true),
            lost: AtomicBool::new(false),
            joining: AtomicBool::new(false),
            fatal: Mutex::new(None),
            last_join_error: Mutex::new(None),
            last_poll: Mutex::new(Instant::now()),
            changed: Notify::new(),
            stop: Notify::new(),
            stopped: AtomicBool::new(false),
        });
        let heartbeat = tokio::spawn(heartbeat_loop(
            cluster.clone(),
            config.clone(),
            group.clone(),
            state.clone(),
        ));
        GroupMembership {
            cluster,
            config,
            group,
            state,
            heartbeat: Some(heartbeat),
        }
    }

    /// Whether every configured strategy supports the cooperative protocol.
    pub(crate) fn cooperative(&self) -> bool {
        self.config
            .assignment_strategies
            .iter()
            .all(|s| s.is_cooperative())
    }

    /// Asks for a rejoin on the next poll.
    pub(crate) fn request_rejoin(&self) {
        self.state.flag(&self.state.rejoin_needed);
    }

    /// Joins (or rejoins) the group with `topics`, announcing `owned` partitions, and returns
    /// this member's assignment. Retries retriable failures until `deadline`.
    pub(crate) async fn join(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
        deadline: Instant,
    ) -> Result<Joined> {
        self.state.joining.store(true, Ordering::Release);
        self.state.rejoin_needed.store(false, Ordering::Release);
        self.state.lost.store(false, Ordering::Release);
        let result = self.join_until(topics, owned, deadline).await;
        self.state.joining.store(false, Ordering::Release);
        if result.is_err() {
            self.state.rejoin_needed.store(true, Ordering::Release);
        }
        result
    }

    async fn join_until(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
        deadline: Instant,
    ) -> Result<Joined> {
        loop {
            let result = self.join_once(topics, owned).await;
            *self
                .state
                .last_join_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = result.as_ref().err().cloned();
            match result {
                Ok(joined) => return Ok(joined),
                Err(error) if error.is_retriable() && Instant::now() < deadline => {
                    tracing::debug!(group = %self.group, %error, "join failed; retrying");
                    if error.invalidates_metadata() {
                        self.cluster.invalidate_metadata();
                    }
                    tokio::time::sleep(self.cluster.config.retry_backoff).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One JoinGroup + SyncGroup round, following MEMBER_ID_REQUIRED within it.
    async fn join_once(&self, topics: &[String], owned: &[TopicPartition]) -> Result<Joined> {
        let identity = self.state.identity();
        let coordinator = find_group_coordinator(&self.cluster, &self.group).await?;
        let connection = self.cluster.connection(coordinator).await?;
        let version = connection.version(ApiKey::JoinGroup)?;
        let metadata = encode_subscription(&Subscription {
            topics: topics.to_vec(),
            owned_partitions: owned.to_vec(),
            generation: identity.generation,
        })?;
        let protocols: Vec<JoinGroupRequestProtocol> = self
            .config
            .assignment_strategies
            .iter()
            .map(|s| {
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(s.name()))
                    .with_metadata(metadata.clone())
            })
            .collect();
        let mut member_id = identity.member_id.clone();
        let response = loop {
            let mut request = JoinGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_session_timeout_ms(self.config.session_timeout.as_millis() as i32)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(protocols.clone());
            if version >= 1 {
                request = request
                    .with_rebalance_timeout_ms(self.config.max_poll_interval.as_millis() as i32);
            }
            if version >= 5 {
                request = request.with_group_instance_id(self.instance_id());
            }
            // The coordinator may hold the request for the whole rebalance timeout.
            let timeout = self.config.max_poll_interval + self.cluster.config.request_timeout;
            let response = connection.send_at(&request, version, timeout).await?;
            match ResponseError::try_from_code(response.error_code) {
                None => break response,
                Some(ResponseError::MemberIdRequired) => {
                    // KIP-394: join again with the id the coordinator just gave us.
                    member_id = response.member_id.as_str().to_string();
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.state.leave_generation(true);
                    member_id.clear();
                }
                Some(error) => {
                    return Err(self.group_error("JoinGroup", response.error_code, error))
                }
            }
        };
        let member_id = response.member_id.as_str().to_string();
        let generation = response.generation_id;
        let protocol = response
            .protocol_name
            .as_ref()
            .map(|p| p.as_str().to_string())
            .or_else(|| {
                // Before v7 the protocol name is not optional.
                self.config
                    .assignment_strategies
                    .first()
                    .map(|s| s.name().to_string())
            });
        let strategy = protocol
            .as_deref()
            .and_then(AssignmentStrategy::from_name)
            .ok_or_else(|| ClientError::Protocol {
                api: "JoinGroup",
                reason: format!("coordinator chose unknown protocol {protocol:?}"),
            })?;
        self.state.set_identity(Identity {
            member_id: member_id.clone(),
            generation,
            protocol: protocol.clone(),
        });
        let is_leader = response.leader.as_str() == member_id && !response.skip_assignment;
        let assignments = if is_leader {
            self.leader_assignments(strategy, &response.members).await?
        } else {
            Vec::new()
        };
        tracing::debug!(group = %self.group, %member_id, generation, leader = is_leader, protocol = ?protocol, "joined");

        let sync_version = connection.version(ApiKey::SyncGroup)?;
        let mut request = SyncGroupRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_assignments(assignments);
        if sync_version >= 3 {
            request = request.with_group_instance_id(self.instance_id());
        }
        if sync_version >= 5 {
            request = request
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(protocol.clone().map(StrBytes::from_string));
        }
        let timeout = self.config.max_poll_interval + self.cluster.config.request_timeout;
        let response = connection.send_at(&request, sync_version, timeout).await?;
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            if matches!(
                error,
                ResponseError::UnknownMemberId | ResponseError::IllegalGeneration
            ) {
                self.state
                    .leave_generation(error == ResponseError::UnknownMemberId);
            }
            return Err(self.group_error("SyncGroup", response.error_code, error));
        }
        let assignment = decode_assignment(&response.assignment)?;
        Ok(Joined {
            assignment,
            cooperative: strategy.is_cooperative() && self.cooperative(),
        })
    }

    /// The leader's job: decode every member's subscription, look up partition counts, run
    /// the chosen strategy.
    async fn leader_assignments(
        &self,
        strategy: AssignmentStrategy,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let mut decoded = Vec::with_capacity(members.len());
        for member in members {
            let subscription = decode_subscription(&member.metadata)?;
            decoded.push(GroupMember {
                member_id: member.member_id.as_str().to_string(),
                group_instance_id: member
                    .group_instance_id
                    .as_ref()
                    .map(|id| id.as_str().to_string()),
                subscription,
            });
        }
        let topics: BTreeSet<String> = decoded
            .iter()
            .flat_map(|m| m.subscription.topics.iter().cloned())
            .collect();
        let topics: Vec<String> = topics.into_iter().collect();
        self.cluster.add_interest(topics.iter().map(String::as_str));
        let metadata = self.cluster.refresh_metadata(Some(&topics)).await?;
        let counts: HashMap<String, i32> = topics
            .iter()
            .filter_map(|t| {
                metadata
                    .topics
                    .get(t)
                    .filter(|info| info.error_code == 0)
                    .map(|info| (t.clone(), info.partitions.len() as i32))
            })
            .collect();
        let assignment = assign(strategy, &decoded, &counts);
        let mut out = Vec::with_capacity(assignment.len());
        for (member_id, partitions) in assignment {
            out.push(
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_assignment(encode_assignment(&partitions)?),
            );
        }
        Ok(out)
    }

    /// Leaves the group (LeaveGroup), unless this is a static member: those keep their place
    /// for a restart within the session timeout, as in Kafka.
    pub(crate) async fn leave(&self) {
        self.state.stopped.store(true, Ordering::Release);
        self.state.stop.notify_one();
        let identity = self.state.identity();
        if identity.member_id.is_empty() || self.config.group_instance_id.is_some() {
            return;
        }
        if let Err(error) = send_leave(&self.cluster, &self.group, &identity.member_id).await {
            tracing::debug!(group = %self.group, %error, "LeaveGroup failed");
        }
        self.state.leave_generation(true);
    }

    fn instance_id(&self) -> Option<StrBytes> {
        self.config
            .group_instance_id
            .as_ref()
            .map(|id| StrBytes::from_string(id.clone()))
    }

    fn group_error(&self, api: &'static str, code: i16, error: ResponseError) -> ClientError {
        if matches!(
            error,
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        ) {
            self.cluster.invalidate_metadata();
        }
        let error = ClientError::kafka(api, format!("group {}", self.group), code, None);
        if code == ResponseError::FencedInstanceId.code() {
            self.state.set_fatal(error.clone());
        }
        error
    }
}

async fn send_leave(cluster: &Cluster, group: &str, member_id: &str) -> Result<()> {
    let coordinator = find_group_coordinator(cluster, group).await?;
    let connection = cluster.connection(coordinator).await?;
    let version = connection.version(ApiKey::LeaveGroup)?;
    let mut request = LeaveGroupRequest::default().with_group_id(group_id(group));
    if version >= 3 {
        request = request
            .with_members(vec![MemberIdentity::default()
                .with_member_id(StrBytes::from_string(member_id.to_string()))]);
    } else {
        request = request.with_member_id(StrBytes::from_string(member_id.to_string()));
    }
    let response = connection
        .send_at(&request, version, cluster.config.request_timeout)
        .await?;
    crate::error::check(
        "LeaveGroup",
        || format!("group {group}"),
        response.error_code,
        None,
    )
}

/// Sends heartbeats while the member is in a generation, and raises the member's flags on
/// what the coordinator answers. Also enforces `max_poll_interval`: a member whose application
/// stopped polling leaves, so its partitions go to members that make progress.
async fn heartbeat_loop(
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    group: String,
    state: Arc<MemberState>,
) {
    let mut last_success = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.heartbeat_interval) => {}
            _ = state.stop.notified() => {}
        }
        if state.stopped.load(Ordering::Acquire) {
            return;
        }
        let identity = state.identity();
        if state.joining.load(Ordering::Acquire) || identity.generation < 0 {
            last_success = Instant::now();
            continue;
        }
        if state.since_last_poll() > config.max_poll_interval {
            tracing::warn!(
                %group,
                "no poll for longer than max_poll_interval ({:?}); leaving the group",
                config.max_poll_interval
            );
            if config.group_instance_id.is_none() {
                if let Err(error) = send_leave(&cluster, &group, &identity.member_id).await {
                    tracing::debug!(%group, %error, "LeaveGroup failed");
                }
            }
            state.leave_generation(config.group_instance_id.is_none());
            state.flag(&state.lost);
            state.flag(&state.rejoin_needed);
            continue;
        }
        match send_heartbeat(&cluster, &config, &group, &identity).await {
            Ok(()) => last_success = Instant::now(),
            Err(error) => match error.kafka_error() {
                Some(ResponseError::RebalanceInProgress) => {
                    last_success = Instant::now();
                    state.flag(&state.rejoin_needed);
                }
                Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration) => {
                    tracing::info!(%group, %error, "removed from the generation; rejoining");
                    state.leave_generation(
                        error.kafka_error() == Some(ResponseError::UnknownMemberId),
                    );
                    state.flag(&state.lost);
                    state.flag(&state.rejoin_needed);
                }
                Some(ResponseError::FencedInstanceId) => {
                    state.set_fatal(error);
                    return;
                }
                _ => {
                    tracing::debug!(%group, %error, "heartbeat failed");
                    if error.invalidates_metadata() {
                        cluster.invalidate_metadata();
                    }
                    if last_success.elapsed() > config.session_timeout {
                        // The coordinator has surely expired us by now.
                        state.leave_generation(false);
                        state.flag(&state.lost);
                        state.flag(&state.rejoin_needed);
                    }
                }
            },
        }
    }
}

async fn send_heartbeat(
    cluster: &Cluster,
    config: &ConsumerConfig,
    group: &str,
    identity: &Identity,
) -> Result<()> {
    let coordinator = find_group_coordinator(cluster, group).await?;
    let connection = cluster.connection(coordinator).await?;
    let version = connection.version(ApiKey::Heartbeat)?;
    let mut request = HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(identity.generation)
        .with_member_id(StrBytes::from_string(identity.member_id.clone()));
    if version >= 3 {
        request = request.with_group_instance_id(
            config
                .group_instance_id
                .as_ref()
                .map(|id| StrBytes::from_string(id.clone())),
        );
    }
    let response = connection
        .send_at(&request, version, cluster.config.request_timeout)
        .await?;
    crate::error::check(
        "Heartbeat",
        || format!("group {group}"),
        response.error_code,
        None,
    )
}
