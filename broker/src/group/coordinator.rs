//! The group coordinator for the classic consumer-group protocol.
//!
//! JoinGroup and SyncGroup answers are delayed: a member's request parks a oneshot sender in
//! the group, and the coordinator answers every parked member when the join phase completes
//! (everyone rejoined, or the rebalance timeout passed) or the leader sends the assignment.
//! Assignment strategies stay in the clients; the coordinator only picks a protocol all
//! members support and relays the leader's assignment.
//!
//! Timeouts (sessions, rebalance deadlines, unclaimed member ids) are enforced by
//! [`GroupCoordinator::tick`], which the broker calls a few times per second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use super::error::GroupError;
use super::records::GroupMetadataValue;
use super::state::{
    CommittedOffset, Group, GroupState, JoinOutcome, Member, SyncOutcome, TopicOffsets,
};
use crate::config::BrokerConfig;

/// A JoinGroup request, as the coordinator needs it.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// Group id.
    pub group_id: String,
    /// Member id, empty for a new member.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id from the header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (v0 has none: the session timeout is used).
    pub rebalance_timeout_ms: i32,
    /// Protocol type (`consumer`).
    pub protocol_type: String,
    /// Strategies and their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Whether the client speaks KIP-394 (JoinGroup v4+).
    pub requires_known_member_id: bool,
}

/// A SyncGroup request.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    /// Group id.
    pub group_id: String,
    /// Generation.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Protocol type the client expects (v5), if given.
    pub protocol_type: Option<String>,
    /// Protocol name the client expects (v5), if given.
    pub protocol_name: Option<String>,
    /// The leader's assignments per member.
    pub assignments: Vec<(String, Bytes)>,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    /// State name.
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen strategy (only while Stable, as Kafka does).
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Current assignment.
    pub assignment: Bytes,
}

/// Limits the coordinator enforces, from the broker settings.
#[derive(Clone, Debug)]
struct Limits {
    min_session: i32,
    max_session: i32,
    initial_delay: Duration,
}

/// Whether this broker coordinates a group (leads its `__consumer_offsets` partition and has
/// loaded it): `Ok`, or the error to answer (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS).
pub type Ownership = Arc<dyn Fn(&str) -> Result<(), GroupError> + Send + Sync>;

/// All consumer groups this broker coordinates.
pub struct GroupCoordinator {
    limits: Limits,
    groups: Mutex<HashMap<String, Group>>,
    /// Set once the broker can tell; until then (and on a single node) every group is ours.
    ownership: std::sync::OnceLock<Ownership>,
}

fn reply<T>(value: T) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(value);
    rx
}

fn join_error(error: GroupError, member_id: &str) -> JoinOutcome {
    JoinOutcome {
        error: Some(error),
        generation_id: -1,
        member_id: member_id.to_string(),
        ..JoinOutcome::default()
    }
}

fn sync_error(error: GroupError) -> SyncOutcome {
    SyncOutcome {
        error: Some(error),
        ..SyncOutcome::default()
    }
}

impl GroupCoordinator {
    /// A coordinator with the broker's group settings.
    pub fn new(config: &Arc<BrokerConfig>) -> Self {
        GroupCoordinator {
            limits: Limits {
                min_session: config.group_min_session_timeout_ms,
                max_session: config.group_max_session_timeout_ms,
                initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            },
            groups: Mutex::new(HashMap::new()),
            ownership: std::sync::OnceLock::new(),
        }
    }

    /// Tells the coordinator which groups are its own; requests for the others get
    /// NOT_COORDINATOR, so clients look the coordinator up again.
    pub fn set_ownership(&self, ownership: Ownership) {
        let _ = self.ownership.set(ownership);
    }

    /// NOT_COORDINATOR (or COORDINATOR_LOAD_IN_PROGRESS) unless this broker coordinates
    /// `group_id`.
    pub fn check_owned(&self, group_id: &str) -> Result<(), GroupError> {
        match self.ownership.get() {
            Some(owns) => owns(group_id),
            None => Ok(()),
        }
    }

    /// Forgets every group `keep` rejects (their offsets partition moved to another broker);
    /// their members rejoin at the new coordinator.
    pub fn unload(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|group_id, _| keep(group_id));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// JoinGroup. The receiver resolves when the join phase completes (or at once on error).
    pub fn join(&self, request: JoinRequest) -> oneshot::Receiver<JoinOutcome> {
        if request.group_id.is_empty() {
            return reply(join_error(GroupError::InvalidGroupId, &request.member_id));
        }
        if let Err(error) = self.check_owned(&request.group_id) {
            return reply(join_error(error, &request.member_id));
        }
        if request.session_timeout_ms < self.limits.min_session
            || request.session_timeout_ms > self.limits.max_session
        {
            return reply(join_error(
                GroupError::InvalidSessionTimeout,
                &request.member_id,
            ));
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return reply(join_error(
                GroupError::InconsistentGroupProtocol,
                &request.member_id,
            ));
        }
        let now = Instant::now();
        let mut groups = self.lock();
        let group = groups
            .entry(request.group_id.clone())
            .or_insert_with(|| Group::new(&request.group_id));
        if group.state == GroupState::Dead {
            *group = Group::new(&request.group_id);
        }
        if !group.accepts(&request.protocol_type, &request.protocols) {
            return reply(join_error(
                GroupError::InconsistentGroupProtocol,
                &request.member_id,
            ));
        }

        let mut member_id = request.member_id.clone();
        if member_id.is_empty() {
            if let Some(instance) = &request.group_instance_id {
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    // A static member restarting: it takes over its old membership under a new id.
                    member_id = new_member_id(instance);
                    if let Some(mut old) = group.members.remove(&old_id) {
                        if let Some(waiter) = old.join_waiter.take() {
                            let _ = waiter.send(join_error(GroupError::FencedInstanceId, &old_id));
                        }
                        if let Some(waiter) = old.sync_waiter.take() {
                            let _ = waiter.send(sync_error(GroupError::FencedInstanceId));
                        }
                        old.member_id = member_id.clone();
                        if group.leader.as_deref() == Some(old_id.as_str()) {
                            group.leader = Some(member_id.clone());
                        }
                        group.members.insert(member_id.clone(), old);
                    }
                    group
                        .static_members
                        .insert(instance.clone(), member_id.clone());
                } else {
                    member_id = new_member_id(instance);
                }
            } else if request.requires_known_member_id {
                let id = new_member_id(&request.client_id);
                group.pending_members.insert(id.clone(), now);
                return reply(JoinOutcome {
                    error: Some(GroupError::MemberIdRequired),
                    generation_id: -1,
                    member_id: id,
                    ..JoinOutcome::default()
                });
            } else {
                member_id = new_member_id(&request.client_id);
            }
        } else {
            let known = group.members.contains_key(&member_id)
                || group.pending_members.contains_key(&member_id);
            if !known {
                return reply(join_error(GroupError::UnknownMemberId, &member_id));
            }
            if let Some(instance) = &request.group_instance_id {
                if let Some(holder) = group.static_members.get(instance) {
                    if holder != &member_id {
                        return reply(join_error(GroupError::FencedInstanceId, &member_id));
                    }
                }
            }
        }
        group.pending_members.remove(&member_id);

        let (tx, rx) = oneshot::channel();
        let session_timeout =
            Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0));
        let rebalance_timeout = Duration::from_millis(
            u64::try_from(request.rebalance_timeout_ms.max(request.session_timeout_ms))
                .unwrap_or(0),
        );
        let seq = group.next_join_seq;
        group.next_join_seq += 1;
        let is_new = !group.members.contains_key(&member_id);
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                member_id: member_id.clone(),
                group_instance_id: request.group_instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout,
                rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
                joined_seq: seq,
            });
        member.session_timeout = session_timeout;
        member.rebalance_timeout = rebalance_timeout;
        member.protocols = request.protocols.clone();
        member.last_seen = now;
        member.group_instance_id = request.group_instance_id.clone();
        if let Some(old) = member.join_waiter.replace(tx) {
            // A duplicate join from the same member: the newer request wins.
            let _ = old.send(join_error(GroupError::RebalanceInProgress, &member_id));
        }
        if let Some(instance) = &request.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        group.protocol_type = Some(request.protocol_type.clone());
        tracing::debug!(group = %group.group_id, member = %member_id, is_new, "member joining");

        self.prepare_rebalance(group, now);
        self.maybe_complete_join(group, now);
        rx
    }

    /// Moves a group into PreparingRebalance (if it is not already there).
    fn prepare_rebalance(&self, group: &mut Group, now: Instant) {
        match group.state {
            GroupState::PreparingRebalance => {
                // A group that started empty keeps waiting a little for more members, up to
                // the rebalance timeout.
                if let (Some(until), Some(deadline)) =
                    (group.initial_join_until, group.rebalance_deadline)
                {
                    let extended = (now + self.limits.initial_delay).min(deadline);
                    if extended > until {
                        group.initial_join_until = Some(extended);
                    }
                }
                return;
            }
            GroupState::CompletingRebalance => {
                // Members waiting for an assignment of a generation that will not happen.
                for member in group.members.values_mut() {
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(sync_error(GroupError::RebalanceInProgress));
                    }
                }
            }
            _ => {}
        }
        let was_empty = group.state == GroupState::Empty;
        group.state = GroupState::PreparingRebalance;
        let deadline = now + group.max_rebalance_timeout();
        group.rebalance_deadline = Some(deadline);
        group.initial_join_until = if was_empty && !self.limits.initial_delay.is_zero() {
            Some((now + self.limits.initial_delay).min(deadline))
        } else {
            None
        };
        tracing::debug!(group = %group.group_id, generation = group.generation_id, "preparing rebalance");
    }

    /// Completes the join phase when everyone has rejoined (and any initial delay passed),
    /// or when the deadline passed (dropping those who did not rejoin).
    fn maybe_complete_join(&self, group: &mut Group, now: Instant) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = group.rebalance_deadline.is_some_and(|d| now >= d);
        let delay_over = group.initial_join_until.is_none_or(|u| now >= u);
        if !(deadline_passed || (group.all_joined() && delay_over)) {
            return;
        }
        let missing: Vec<String> = group
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in missing {
            tracing::info!(group = %group.group_id, member = %id, "member did not rejoin in time; removing");
            remove_member(group, &id);
        }
        group.generation_id += 1;
        group.rebalance_deadline = None;
        group.initial_join_until = None;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol_name = None;
            group.leader = None;
            tracing::info!(group = %group.group_id, generation = group.generation_id, "group is empty");
            return;
        }
        let protocol = group.select_protocol();
        group.protocol_name = protocol.clone();
        let leader_valid = group
            .leader
            .as_ref()
            .is_some_and(|l| group.members.contains_key(l));
        if !leader_valid {
            group.leader = group
                .members
                .values()
                .min_by_key(|m| m.joined_seq)
                .map(|m| m.member_id.clone());
        }
        let leader = group.leader.clone().unwrap_or_default();
        group.state = GroupState::CompletingRebalance;
        let protocol_name = protocol.unwrap_or_default();
        let mut roster: Vec<(u64, String, Option<String>, Bytes)> = group
            .members
            .values()
            .map(|m| {
                (
                    m.joined_seq,
                    m.member_id.clone(),
                    m.group_instance_id.clone(),
                    m.metadata_for(&protocol_name).cloned().unwrap_or_default(),
                )
            })
            .collect();
        roster.sort_by_key(|(seq, ..)| *seq);
        let roster: Vec<(String, Option<String>, Bytes)> = roster
            .into_iter()
            .map(|(_, id, inst, meta)| (id, inst, meta))
            .collect();
        let generation_id = group.generation_id;
        let protocol_type = group.protocol_type.clone();
        for member in group.members.values_mut() {
            member.last_seen = now;
            if let Some(waiter) = member.join_waiter.take() {
                let outcome = JoinOutcome {
                    error: None,
                    generation_id,
                    protocol_type: protocol_type.clone(),
                    protocol_name: Some(protocol_name.clone()),
                    leader: leader.clone(),
                    member_id: member.member_id.clone(),
                    members: if member.member_id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                };
                let _ = waiter.send(outcome);
            }
        }
        tracing::info!(
            group = %group.group_id,
            generation = generation_id,
            members = group.members.len(),
            protocol = %protocol_name,
            %leader,
            "rebalance: join phase complete"
        );
    }

    /// SyncGroup, with the group's metadata taken as written at once (for tests of the
    /// protocol alone). The receiver resolves when the leader's assignment arrives.
    pub fn sync(&self, request: SyncRequest) -> oneshot::Receiver<SyncOutcome> {
        let (outcome, write) = self.sync_and_store(request);
        if let Some(write) = write {
            self.stored(&write.group_id, write.generation, Ok(()));
        }
        outcome
    }

    /// SyncGroup. The receiver resolves when the leader's assignment arrives and the group's
    /// metadata with it is durable: the leader's sync returns that record, which the caller
    /// writes to `__consumer_offsets` and reports with [`GroupCoordinator::stored`].
    pub fn sync_and_store(
        &self,
        request: SyncRequest,
    ) -> (oneshot::Receiver<SyncOutcome>, Option<GroupWrite>) {
        let mut write = None;
        let outcome = self.sync_inner(request, &mut write);
        (outcome, write)
    }

    /// The group metadata write of the leader's sync has finished: with success, members get
    /// their assignments and the group is Stable; with an error, they get the error and the
    /// group rebalances (Kafka does the same). Ignored if the group moved on meanwhile.
    pub fn stored(&self, group_id: &str, generation: i32, result: Result<(), GroupError>) {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return;
        };
        if group.storing != Some(generation) {
            return;
        }
        group.storing = None;
        if group.generation_id != generation || group.state != GroupState::CompletingRebalance {
            // A member joined or left meanwhile: that rebalance answers the waiters.
            return;
        }
        match result {
            Ok(()) => {
                let protocol_type = group.protocol_type.clone();
                let protocol_name = group.protocol_name.clone();
                for member in group.members.values_mut() {
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(SyncOutcome {
                            error: None,
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                            assignment: member.assignment.clone(),
                        });
                    }
                }
                group.state = GroupState::Stable;
                tracing::info!(group = %group.group_id, generation, "rebalance complete: group stable");
            }
            Err(error) => {
                tracing::warn!(group = %group.group_id, generation, %error, "cannot store the group's metadata; rebalancing");
                for member in group.members.values_mut() {
                    member.assignment = Bytes::new();
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(sync_error(error));
                    }
                }
                self.prepare_rebalance(group, Instant::now());
            }
        }
    }

    /// Applies a group metadata record read back from `__consumer_offsets` (`None`: the
    /// group was deleted).
    pub fn restore(&self, group_id: &str, value: Option<GroupMetadataValue>) {
        let mut groups = self.lock();
        match value {
            Some(value) => groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id))
                .restore(value, Instant::now()),
            None => {
                if let Some(group) = groups.get_mut(group_id) {
                    group.restore_deleted();
                    if group.offsets.is_empty() {
                        groups.remove(group_id);
                    }
                }
            }
        }
    }

    fn sync_inner(
        &self,
        request: SyncRequest,
        write: &mut Option<GroupWrite>,
    ) -> oneshot::Receiver<SyncOutcome> {
        if let Err(error) = self.check_owned(&request.group_id) {
            return reply(sync_error(error));
        }
        let now = Instant::now();
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(&request.group_id) else {
            return reply(sync_error(GroupError::UnknownMemberId));
        };
        if let Err(error) = check_member(
            group,
            &request.member_id,
            request.group_instance_id.as_deref(),
        ) {
            return reply(sync_error(error));
        }
        if request.generation_id != group.generation_id {
            return reply(sync_error(GroupError::IllegalGeneration));
        }
        if request.protocol_type.is_some() && request.protocol_type != group.protocol_type {
            return reply(sync_error(GroupError::InconsistentGroupProtocol));
        }
        if request.protocol_name.is_some() && request.protocol_name != group.protocol_name {
            return reply(sync_error(GroupError::InconsistentGroupProtocol));
        }
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol_name.clone();
        let done = |assignment: Bytes| SyncOutcome {
            error: None,
            protocol_type: protocol_type.clone(),
            protocol_name: protocol_name.clone(),
            assignment,
        };
        match group.state {
            GroupState::PreparingRebalance => reply(sync_error(GroupError::RebalanceInProgress)),
            GroupState::Empty | GroupState::Dead => reply(sync_error(GroupError::UnknownMemberId)),
            GroupState::Stable => {
                let member = group.members.get_mut(&request.member_id);
                let assignment = member.map(|m| {
                    m.last_seen = now;
                    m.assignment.clone()
                });
                reply(done(assignment.unwrap_or_default()))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(member) = group.members.get_mut(&request.member_id) {
                    member.last_seen = now;
                    if let Some(old) = member.sync_waiter.replace(tx) {
                        let _ = old.send(sync_error(GroupError::RebalanceInProgress));
                    }
                }
                if group.leader.as_deref() == Some(request.member_id.as_str())
                    && group.storing != Some(group.generation_id)
                {
                    let assignments: HashMap<String, Bytes> =
                        request.assignments.into_iter().collect();
                    for member in group.members.values_mut() {
                        member.assignment = assignments
                            .get(&member.member_id)
                            .cloned()
                            .unwrap_or_default();
                    }
                    // Members are answered once this is durable (`stored`).
                    group.storing = Some(group.generation_id);
                    *write = Some(GroupWrite {
                        group_id: group.group_id.clone(),
                        generation: group.generation_id,
                        value: group.metadata(wall_clock_ms()),
                    });
                }
                rx
            }
        }
    }

    /// Heartbeat: keeps the member's session alive, or says why the member must rejoin.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        self.check_owned(group_id)?;
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        check_member(group, member_id, instance)?;
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_seen = Instant::now();
        }
        match group.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ if generation_id != group.generation_id => Err(GroupError::IllegalGeneration),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for several members; returns each member's outcome, in order.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.check_owned(group_id)?;
        let now = Instant::now();
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let mut outcomes = Vec::with_capacity(members.len());
        let mut removed_any = false;
        for (member_id, instance) in members {
            // A static member may leave by instance id alone.
            let id = match (member_id.is_empty(), instance) {
                (true, Some(instance)) => group
                    .static_members
                    .get(instance)
                    .cloned()
                    .unwrap_or_default(),
                _ => member_id.clone(),
            };
            if let Some(instance) = instance {
                if group
                    .static_members
                    .get(instance)
                    .is_some_and(|holder| holder != &id)
                {
                    outcomes.push(Err(GroupError::FencedInstanceId));
                    continue;
                }
            }
            if group.members.contains_key(&id) {
                remove_member(group, &id);
                removed_any = true;
                outcomes.push(Ok(()));
            } else if group.pending_members.remove(&id).is_some() {
                outcomes.push(Ok(()));
            } else {
                outcomes.push(Err(GroupError::UnknownMemberId));
            }
        }
        if removed_any {
            self.after_membership_change(group, now);
        }
        Ok(outcomes)
    }

    fn after_membership_change(&self, group: &mut Group, now: Instant) {
        if group.members.is_empty() {
            if group.state != GroupState::Empty {
                group.generation_id += 1;
                group.unsaved = true;
            }
            group.storing = None;
            group.state = GroupState::Empty;
            group.leader = None;
            group.protocol_name = None;
            group.rebalance_deadline = None;
            group.initial_join_until = None;
        } else {
            self.prepare_rebalance(group, now);
            self.maybe_complete_join(group, now);
        }
    }

    /// Checks that a commit may be made in the group's name. Simple commits (generation -1,
    /// no member) are allowed while the group has no members, as Kafka allows them.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.check_owned(group_id)?;
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return if generation_id < 0 {
                Ok(())
            } else {
                Err(GroupError::IllegalGeneration)
            };
        };
        if generation_id < 0 && member_id.is_empty() && group.members.is_empty() {
            return Ok(());
        }
        check_member(group, member_id, instance)?;
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_seen = Instant::now();
        }
        Ok(())
    }

    /// Records committed (or, with `None`, deleted) offsets once they are durable. An entry
    /// older (by log offset) than the one held is ignored.
    pub fn apply_offsets(
        &self,
        group_id: &str,
        entries: Vec<((String, i32), Option<CommittedOffset>)>,
    ) {
        let mut groups = self.lock();
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        for (key, value) in entries {
            match value {
                Some(value) => {
                    let newer = group
                        .offsets
                        .get(&key)
                        .is_none_or(|held| held.log_offset <= value.log_offset);
                    if newer {
                        group.offsets.insert(key, value);
                    }
                }
                None => {
                    group.offsets.remove(&key);
                }
            }
        }
        let forgotten = group.offsets.is_empty()
            && group.members.is_empty()
            && group.state == GroupState::Empty;
        if forgotten {
            groups.remove(group_id);
        }
    }

    /// Committed offsets of a group: for the given partitions, or all of them.
    pub fn committed(&self, group_id: &str, wanted: Option<&[(String, Vec<i32>)]>) -> TopicOffsets {
        let groups = self.lock();
        let offsets = groups.get(group_id).map(|g| &g.offsets);
        match wanted {
            Some(wanted) => wanted
                .iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .iter()
                        .map(|p| {
                            (
                                *p,
                                offsets.and_then(|o| o.get(&(topic.clone(), *p))).cloned(),
                            )
                        })
                        .collect();
                    (topic.clone(), found)
                })
                .collect(),
            None => {
                let mut by_topic: TopicOffsets = Vec::new();
                for ((topic, partition), value) in offsets.into_iter().flatten() {
                    match by_topic.last_mut() {
                        Some((t, list)) if t == topic => {
                            list.push((*partition, Some(value.clone())))
                        }
                        _ => {
                            by_topic.push((topic.clone(), vec![(*partition, Some(value.clone()))]))
                        }
                    }
                }
                by_topic
            }
        }
    }

    /// Every group: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.lock();
        let mut out: Vec<_> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| {
                (
                    g.group_id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// A group's description, or `None` if unknown.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let group = groups.get(group_id)?;
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let mut members: Vec<&Member> = group.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        Some(GroupDescription {
            state: group.state.name(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: if group.state == GroupState::Stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol).cloned().unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Checks a group can be deleted and returns its committed partitions (to tombstone).
    pub fn prepare_delete(&self, group_id: &str) -> Result<Vec<(String, i32)>, GroupError> {
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        if !group.members.is_empty() {
            return Err(GroupError::NonEmptyGroup);
        }
        Ok(group.offsets.keys().cloned().collect())
    }

    /// Forgets a deleted group (its offsets are already tombstoned).
    pub fn finish_delete(&self, group_id: &str) {
        let mut groups = self.lock();
        if groups.get(group_id).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group_id);
        }
    }

    /// Whether the group exists, and if some member's subscription metadata names `topic`.
    pub fn subscribed_to(&self, group_id: &str, topic: &str) -> Result<bool, GroupError> {
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        if group.protocol_type.as_deref() != Some("consumer") || group.members.is_empty() {
            return Ok(false);
        }
        let protocol = group.protocol_name.clone().unwrap_or_default();
        Ok(group.members.values().any(|m| {
            m.metadata_for(&protocol)
                .is_some_and(|meta| super::subscription::topics(meta).iter().any(|t| t == topic))
        }))
    }

    /// Enforces session timeouts, rebalance deadlines and unclaimed member ids. Returns the
    /// metadata records of groups that became empty since the last tick, to be written.
    pub fn tick(&self, now: Instant) -> Vec<GroupWrite> {
        let mut unsaved = Vec::new();
        let mut groups = self.lock();
        for group in groups.values_mut() {
            group
                .pending_members
                .retain(|_, issued| now.duration_since(*issued) < Duration::from_secs(300));
            let expired: Vec<String> = group
                .members
                .values()
                // A member parked in JoinGroup is alive: its request is the heartbeat.
                .filter(|m| {
                    m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|m| m.member_id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %group.group_id, member = %id, "session expired; removing member");
                remove_member(group, id);
            }
            if !expired.is_empty() {
                self.after_membership_change(group, now);
            }
            self.maybe_complete_join(group, now);
            if std::mem::take(&mut group.unsaved) {
                unsaved.push(GroupWrite {
                    group_id: group.group_id.clone(),
                    generation: group.generation_id,
                    value: group.metadata(wall_clock_ms()),
                });
            }
        }
        unsaved
    }
}

/// A group metadata record to write to the group's `__consumer_offsets` partition.
#[derive(Clone, Debug)]
pub struct GroupWrite {
    /// The group.
    pub group_id: String,
    /// Its generation in `value`.
    pub generation: i32,
    /// The record's value.
    pub value: GroupMetadataValue,
}

/// Now, in ms since the Unix epoch (the records' timestamps).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Removes a member, answering its parked requests so its client rejoins.
fn remove_member(group: &mut Group, member_id: &str) {
    if let Some(mut member) = group.members.remove(member_id) {
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(join_error(GroupError::UnknownMemberId, member_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(sync_error(GroupError::UnknownMemberId));
        }
        if let Some(instance) = member.group_instance_id {
            if group
                .static_members
                .get(&instance)
                .is_some_and(|id| id == member_id)
            {
                group.static_members.remove(&instance);
            }
        }
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
}

fn check_member(group: &Group, member_id: &str, instance: Option<&str>) -> Result<(), GroupError> {
    if let Some(instance) = instance {
        if let Some(holder) = group.static_members.get(instance) {
            if holder != member_id {
                return Err(GroupError::FencedInstanceId);
            }
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(GroupError::UnknownMemberId);
    }
    Ok(())
}

fn new_member_id(prefix: &str) -> String {
    let prefix = if prefix.is_empty() { "member" } else { prefix };
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    const SESSION_MS: i32 = 10_000;
    /// Long enough that a test's own steps never outlast it, short next to the session.
    const INITIAL_DELAY_MS: u64 = 100;

    fn coordinator() -> GroupCoordinator {
        let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), "unused".into());
        config.group_min_session_timeout_ms = 6_000;
        config.group_max_session_timeout_ms = 300_000;
        config.group_initial_rebalance_delay_ms = INITIAL_DELAY_MS;
        GroupCoordinator::new(&Arc::new(config))
    }

    fn join_request(group: &str, member_id: &str) -> JoinRequest {
        JoinRequest {
            group_id: group.into(),
            member_id: member_id.into(),
            group_instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: SESSION_MS,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"range-metadata"))],
            requires_known_member_id: false,
        }
    }

    fn static_join_request(group: &str, member_id: &str, instance: &str) -> JoinRequest {
        JoinRequest {
            group_instance_id: Some(instance.into()),
            ..join_request(group, member_id)
        }
    }

    fn sync_request(
        group: &str,
        joined: &JoinOutcome,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncRequest {
        SyncRequest {
            group_id: group.into(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments,
        }
    }

    /// The answer, if the coordinator has given it already.
    fn answered<T>(rx: &mut oneshot::Receiver<T>) -> Option<T> {
        rx.try_recv().ok()
    }

    /// A join the coordinator must answer at once (a refusal, or MEMBER_ID_REQUIRED).
    fn join_now(coordinator: &GroupCoordinator, request: JoinRequest) -> JoinOutcome {
        answered(&mut coordinator.join(request)).unwrap()
    }

    /// Lets the initial rebalance delay pass, well inside every session and rebalance timeout.
    fn settle(coordinator: &GroupCoordinator) {
        coordinator.tick(Instant::now() + Duration::from_millis(INITIAL_DELAY_MS * 5));
    }

    /// `n` new members join `group` together; returns their join answers in joining order
    /// (the first leads). The group is then CompletingRebalance in generation 1.
    fn form_group(coordinator: &GroupCoordinator, group: &str, n: usize) -> Vec<JoinOutcome> {
        let mut pending: Vec<_> = (0..n)
            .map(|_| coordinator.join(join_request(group, "")))
            .collect();
        settle(coordinator);
        pending.iter_mut().map(|rx| answered(rx).unwrap()).collect()
    }

    /// As [`form_group`], then every member syncs, the leader first: the group is Stable.
    fn stable_group(coordinator: &GroupCoordinator, group: &str, n: usize) -> Vec<JoinOutcome> {
        let joined = form_group(coordinator, group, n);
        let assignments = joined
            .iter()
            .map(|m| (m.member_id.clone(), Bytes::from(m.member_id.clone())))
            .collect();
        let _leader = coordinator.sync(sync_request(group, &joined[0], assignments));
        for member in &joined[1..] {
            let _follower = coordinator.sync(sync_request(group, member, Vec::new()));
        }
        joined
    }

    fn state(coordinator: &GroupCoordinator, group: &str) -> &'static str {
        coordinator.describe(group).unwrap().state
    }

    fn committed_offset(offset: i64, log_offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
            log_offset,
        }
    }

    fn committed_at(coordinator: &GroupCoordinator, group: &str, partition: i32) -> Option<i64> {
        let wanted = [("t".to_string(), vec![partition])];
        let found = coordinator.committed(group, Some(&wanted[..]));
        found[0].1[0].1.as_ref().map(|c| c.offset)
    }

    // JoinGroup

    #[test]
    fn join_with_an_empty_group_id_is_invalid_group_id() {
        let outcome = join_now(&coordinator(), join_request("", ""));
        assert_eq!(outcome.error, Some(GroupError::InvalidGroupId));
    }

    #[test]
    fn join_with_a_session_timeout_below_the_minimum_is_invalid_session_timeout() {
        let mut request = join_request("g", "");
        request.session_timeout_ms = 1_000;
        let outcome = join_now(&coordinator(), request);
        assert_eq!(outcome.error, Some(GroupError::InvalidSessionTimeout));
    }

    #[test]
    fn join_without_protocols_is_an_inconsistent_group_protocol() {
        let mut request = join_request("g", "");
        request.protocols.clear();
        let outcome = join_now(&coordinator(), request);
        assert_eq!(outcome.error, Some(GroupError::InconsistentGroupProtocol));
    }

    #[test]
    fn a_member_of_another_protocol_type_cannot_join() {
        let coordinator = coordinator();
        stable_group(&coordinator, "g", 1);
        let mut request = join_request("g", "");
        request.protocol_type = "connect".into();
        let outcome = join_now(&coordinator, request);
        assert_eq!(outcome.error, Some(GroupError::InconsistentGroupProtocol));
    }

    #[test]
    fn a_new_member_of_a_kip_394_client_must_rejoin_with_the_given_id() {
        let mut request = join_request("g", "");
        request.requires_known_member_id = true;
        let outcome = join_now(&coordinator(), request);
        assert_eq!(outcome.error, Some(GroupError::MemberIdRequired));
    }

    #[test]
    fn the_member_id_given_with_member_id_required_is_accepted() {
        let coordinator = coordinator();
        let mut first = join_request("g", "");
        first.requires_known_member_id = true;
        let issued = join_now(&coordinator, first).member_id;
        let mut again = join_request("g", &issued);
        again.requires_known_member_id = true;
        let mut rx = coordinator.join(again);
        settle(&coordinator);
        assert_eq!(answered(&mut rx).unwrap().error, None);
    }

    #[test]
    fn join_with_a_member_id_the_group_never_gave_is_unknown_member_id() {
        let outcome = join_now(&coordinator(), join_request("g", "made-up"));
        assert_eq!(outcome.error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn the_first_join_waits_for_the_initial_rebalance_delay() {
        let coordinator = coordinator();
        let mut rx = coordinator.join(join_request("g", ""));
        assert!(answered(&mut rx).is_none());
    }

    #[test]
    fn the_first_completed_join_is_generation_one() {
        let joined = form_group(&coordinator(), "g", 1);
        assert_eq!(joined[0].generation_id, 1);
    }

    #[test]
    fn the_longest_standing_member_leads() {
        let joined = form_group(&coordinator(), "g", 2);
        assert_eq!(joined[1].leader, joined[0].member_id);
    }

    #[test]
    fn only_the_leader_is_sent_the_members() {
        let joined = form_group(&coordinator(), "g", 2);
        assert_eq!((joined[0].members.len(), joined[1].members.len()), (2, 0));
    }

    #[test]
    fn a_rejoin_waits_for_every_known_member() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 2);
        let mut first = coordinator.join(join_request("g", &joined[0].member_id));
        assert!(answered(&mut first).is_none());
    }

    #[test]
    fn a_rejoin_completes_in_the_next_generation_when_the_last_member_rejoins() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 2);
        let mut first = coordinator.join(join_request("g", &joined[0].member_id));
        let _second = coordinator.join(join_request("g", &joined[1].member_id));
        assert_eq!(answered(&mut first).unwrap().generation_id, 2);
    }

    #[test]
    fn a_rejoin_completes_without_members_that_did_not_rejoin_in_time() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 2);
        let mut first = coordinator.join(join_request("g", &joined[0].member_id));
        let timeout = Duration::from_millis(u64::try_from(SESSION_MS).unwrap());
        coordinator.tick(Instant::now() + timeout + Duration::from_secs(1));
        assert_eq!(answered(&mut first).unwrap().members.len(), 1);
    }

    #[test]
    fn a_restarted_static_member_fences_its_old_member_id() {
        let coordinator = coordinator();
        let mut rx = coordinator.join(static_join_request("g", "", "instance-1"));
        settle(&coordinator);
        let old = answered(&mut rx).unwrap();
        let _restarted = coordinator.join(static_join_request("g", "", "instance-1"));
        let heartbeat =
            coordinator.heartbeat("g", old.generation_id, &old.member_id, Some("instance-1"));
        assert_eq!(heartbeat, Err(GroupError::FencedInstanceId));
    }

    // SyncGroup

    #[test]
    fn a_follower_waits_for_the_leaders_assignment() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 2);
        let mut follower = coordinator.sync(sync_request("g", &joined[1], Vec::new()));
        assert!(answered(&mut follower).is_none());
    }

    #[test]
    fn a_follower_gets_the_assignment_the_leader_made_for_it() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 2);
        let mut follower = coordinator.sync(sync_request("g", &joined[1], Vec::new()));
        let assignments = vec![(joined[1].member_id.clone(), Bytes::from_static(b"p1"))];
        let _leader = coordinator.sync(sync_request("g", &joined[0], assignments));
        let assignment = answered(&mut follower).unwrap().assignment;
        assert_eq!(assignment, Bytes::from_static(b"p1"));
    }

    #[test]
    fn a_member_the_leader_left_out_gets_an_empty_assignment() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 2);
        let assignments = vec![(joined[0].member_id.clone(), Bytes::from_static(b"p0"))];
        let _leader = coordinator.sync(sync_request("g", &joined[0], assignments));
        let mut follower = coordinator.sync(sync_request("g", &joined[1], Vec::new()));
        assert!(answered(&mut follower).unwrap().assignment.is_empty());
    }

    #[test]
    fn the_leaders_sync_makes_the_group_stable() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 1);
        let _leader = coordinator.sync(sync_request("g", &joined[0], Vec::new()));
        assert_eq!(state(&coordinator, "g"), "Stable");
    }

    #[test]
    fn sync_in_another_generation_is_illegal_generation() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 1);
        let mut request = sync_request("g", &joined[0], Vec::new());
        request.generation_id = 0;
        let outcome = answered(&mut coordinator.sync(request)).unwrap();
        assert_eq!(outcome.error, Some(GroupError::IllegalGeneration));
    }

    #[test]
    fn sync_from_a_member_not_in_the_group_is_unknown_member_id() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 1);
        let mut request = sync_request("g", &joined[0], Vec::new());
        request.member_id = "nobody".into();
        let outcome = answered(&mut coordinator.sync(request)).unwrap();
        assert_eq!(outcome.error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn sync_naming_another_protocol_is_an_inconsistent_group_protocol() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 1);
        let mut request = sync_request("g", &joined[0], Vec::new());
        request.protocol_name = Some("roundrobin".into());
        let outcome = answered(&mut coordinator.sync(request)).unwrap();
        assert_eq!(outcome.error, Some(GroupError::InconsistentGroupProtocol));
    }

    #[test]
    fn sync_during_a_rebalance_is_rebalance_in_progress() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 2);
        let _rejoin = coordinator.join(join_request("g", &joined[0].member_id));
        let mut rx = coordinator.sync(sync_request("g", &joined[1], Vec::new()));
        let outcome = answered(&mut rx).unwrap();
        assert_eq!(outcome.error, Some(GroupError::RebalanceInProgress));
    }

    // Heartbeat

    #[test]
    fn a_stable_members_heartbeat_is_accepted() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 1);
        let member = &joined[0];
        let heartbeat = coordinator.heartbeat("g", member.generation_id, &member.member_id, None);
        assert_eq!(heartbeat, Ok(()));
    }

    #[test]
    fn a_heartbeat_in_an_old_generation_is_illegal_generation() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 1);
        let member = &joined[0];
        let heartbeat =
            coordinator.heartbeat("g", member.generation_id - 1, &member.member_id, None);
        assert_eq!(heartbeat, Err(GroupError::IllegalGeneration));
    }

    #[test]
    fn a_heartbeat_during_a_rebalance_tells_the_member_to_rejoin() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 2);
        let _rejoin = coordinator.join(join_request("g", &joined[0].member_id));
        let member = &joined[1];
        let heartbeat = coordinator.heartbeat("g", member.generation_id, &member.member_id, None);
        assert_eq!(heartbeat, Err(GroupError::RebalanceInProgress));
    }

    #[test]
    fn a_heartbeat_from_a_member_not_in_the_group_is_unknown_member_id() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 1);
        let heartbeat = coordinator.heartbeat("g", joined[0].generation_id, "nobody", None);
        assert_eq!(heartbeat, Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn a_heartbeat_to_an_unknown_group_is_unknown_member_id() {
        let heartbeat = coordinator().heartbeat("nope", 1, "m", None);
        assert_eq!(heartbeat, Err(GroupError::UnknownMemberId));
    }

    // Sessions

    #[test]
    fn a_member_whose_session_expires_is_removed() {
        let coordinator = coordinator();
        stable_group(&coordinator, "g", 1);
        let timeout = Duration::from_millis(u64::try_from(SESSION_MS).unwrap());
        coordinator.tick(Instant::now() + timeout + Duration::from_secs(1));
        assert!(coordinator.describe("g").unwrap().members.is_empty());
    }

    #[test]
    fn a_member_parked_in_join_group_does_not_expire() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 2);
        let mut parked = coordinator.join(join_request("g", &joined[0].member_id));
        let timeout = Duration::from_millis(u64::try_from(SESSION_MS).unwrap());
        coordinator.tick(Instant::now() + timeout + Duration::from_secs(1));
        assert_eq!(answered(&mut parked).unwrap().error, None);
    }

    // LeaveGroup

    #[test]
    fn the_last_member_leaving_empties_the_group() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 1);
        let _ = coordinator.leave("g", &[(joined[0].member_id.clone(), None)]);
        assert_eq!(state(&coordinator, "g"), "Empty");
    }

    #[test]
    fn a_member_leaving_starts_a_rebalance_for_the_others() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 2);
        let _ = coordinator.leave("g", &[(joined[1].member_id.clone(), None)]);
        assert_eq!(state(&coordinator, "g"), "PreparingRebalance");
    }

    #[test]
    fn leaving_names_each_unknown_member() {
        let coordinator = coordinator();
        stable_group(&coordinator, "g", 1);
        let left = coordinator.leave("g", &[("nobody".into(), None)]);
        assert_eq!(left, Ok(vec![Err(GroupError::UnknownMemberId)]));
    }

    #[test]
    fn leaving_an_unknown_group_is_unknown_member_id() {
        let left = coordinator().leave("nope", &[("m".into(), None)]);
        assert_eq!(left, Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn a_static_member_may_leave_by_its_instance_id_alone() {
        let coordinator = coordinator();
        let _rx = coordinator.join(static_join_request("g", "", "instance-1"));
        settle(&coordinator);
        let left = coordinator.leave("g", &[(String::new(), Some("instance-1".into()))]);
        assert_eq!(left, Ok(vec![Ok(())]));
    }

    // OffsetCommit rules

    #[test]
    fn a_simple_commit_to_an_unknown_group_is_allowed() {
        assert_eq!(coordinator().check_commit("g", -1, "", None), Ok(()));
    }

    #[test]
    fn a_generation_commit_to_an_unknown_group_is_illegal_generation() {
        let checked = coordinator().check_commit("g", 1, "m", None);
        assert_eq!(checked, Err(GroupError::IllegalGeneration));
    }

    #[test]
    fn a_commit_with_an_empty_group_id_is_invalid_group_id() {
        let checked = coordinator().check_commit("", -1, "", None);
        assert_eq!(checked, Err(GroupError::InvalidGroupId));
    }

    #[test]
    fn a_simple_commit_to_a_group_with_members_is_refused() {
        let coordinator = coordinator();
        stable_group(&coordinator, "g", 1);
        let checked = coordinator.check_commit("g", -1, "", None);
        assert_eq!(checked, Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn a_members_commit_in_the_current_generation_is_allowed() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 1);
        let member = &joined[0];
        let checked = coordinator.check_commit("g", member.generation_id, &member.member_id, None);
        assert_eq!(checked, Ok(()));
    }

    #[test]
    fn a_commit_in_a_stale_generation_is_illegal_generation() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 1);
        let member = &joined[0];
        let checked =
            coordinator.check_commit("g", member.generation_id - 1, &member.member_id, None);
        assert_eq!(checked, Err(GroupError::IllegalGeneration));
    }

    #[test]
    fn a_commit_before_the_assignment_arrives_is_rebalance_in_progress() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 1);
        let member = &joined[0];
        let checked = coordinator.check_commit("g", member.generation_id, &member.member_id, None);
        assert_eq!(checked, Err(GroupError::RebalanceInProgress));
    }

    #[test]
    fn a_commit_from_a_member_not_in_the_group_is_unknown_member_id() {
        let coordinator = coordinator();
        let joined = stable_group(&coordinator, "g", 1);
        let checked = coordinator.check_commit("g", joined[0].generation_id, "nobody", None);
        assert_eq!(checked, Err(GroupError::UnknownMemberId));
    }

    // Committed offsets

    #[test]
    fn an_older_commit_does_not_replace_a_newer_one() {
        let coordinator = coordinator();
        let key = ("t".to_string(), 0);
        coordinator.apply_offsets("g", vec![(key.clone(), Some(committed_offset(50, 5)))]);
        coordinator.apply_offsets("g", vec![(key, Some(committed_offset(30, 3)))]);
        assert_eq!(committed_at(&coordinator, "g", 0), Some(50));
    }

    #[test]
    fn a_tombstone_removes_a_committed_offset() {
        let coordinator = coordinator();
        let key = ("t".to_string(), 0);
        coordinator.apply_offsets("g", vec![(key.clone(), Some(committed_offset(50, 5)))]);
        coordinator.apply_offsets("g", vec![(key.clone(), Some(committed_offset(60, 6)))]);
        coordinator.apply_offsets("g", vec![(key, None)]);
        assert_eq!(committed_at(&coordinator, "g", 0), None);
    }

    #[test]
    fn a_group_with_only_committed_offsets_is_listed_as_empty() {
        let coordinator = coordinator();
        let key = ("t".to_string(), 0);
        coordinator.apply_offsets("g", vec![(key, Some(committed_offset(50, 5)))]);
        let listed = coordinator.list();
        assert_eq!(listed, vec![("g".to_string(), String::new(), "Empty")]);
    }

    #[test]
    fn a_group_left_with_neither_offsets_nor_members_is_forgotten() {
        let coordinator = coordinator();
        let key = ("t".to_string(), 0);
        coordinator.apply_offsets("g", vec![(key.clone(), Some(committed_offset(50, 5)))]);
        coordinator.apply_offsets("g", vec![(key, None)]);
        assert!(coordinator.list().is_empty());
    }

    // DeleteGroups and OffsetDelete

    #[test]
    fn deleting_a_group_with_members_is_non_empty_group() {
        let coordinator = coordinator();
        stable_group(&coordinator, "g", 1);
        let deleted = coordinator.prepare_delete("g");
        assert_eq!(deleted, Err(GroupError::NonEmptyGroup));
    }

    #[test]
    fn deleting_an_unknown_group_is_group_id_not_found() {
        let deleted = coordinator().prepare_delete("nope");
        assert_eq!(deleted, Err(GroupError::GroupIdNotFound));
    }

    #[test]
    fn deleting_an_empty_group_returns_its_committed_partitions_to_tombstone() {
        let coordinator = coordinator();
        let entries = vec![
            (("t".to_string(), 0), Some(committed_offset(1, 1))),
            (("t".to_string(), 1), Some(committed_offset(2, 2))),
        ];
        coordinator.apply_offsets("g", entries);
        let deleted = coordinator.prepare_delete("g");
        assert_eq!(
            deleted,
            Ok(vec![("t".to_string(), 0), ("t".to_string(), 1)])
        );
    }

    #[test]
    fn a_topic_named_in_a_members_subscription_is_subscribed() {
        let subscription = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("orders")]);
        let mut metadata = BytesMut::new();
        metadata.put_i16(0);
        subscription.encode(&mut metadata, 0).unwrap();
        let mut request = join_request("g", "");
        request.protocols = vec![("range".into(), metadata.freeze())];
        let coordinator = coordinator();
        let _rx = coordinator.join(request);
        settle(&coordinator);
        assert_eq!(coordinator.subscribed_to("g", "orders"), Ok(true));
    }

    #[test]
    fn members_get_their_assignments_only_once_the_generation_is_stored() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 2);
        let mut follower = coordinator.sync(sync_request("g", &joined[1], Vec::new()));
        let assignments = vec![(joined[1].member_id.clone(), Bytes::from_static(b"p1"))];
        let (mut leader, write) =
            coordinator.sync_and_store(sync_request("g", &joined[0], assignments));
        let write = write.expect("the leader's sync asks for the generation to be stored");
        assert_eq!(write.generation, joined[0].generation_id);
        assert_eq!(write.value.members.len(), 2);
        assert!(
            answered(&mut follower).is_none(),
            "nothing before it is durable"
        );
        assert!(answered(&mut leader).is_none());
        assert_eq!(state(&coordinator, "g"), "CompletingRebalance");
        coordinator.stored("g", write.generation, Ok(()));
        assert_eq!(
            answered(&mut follower).unwrap().assignment,
            Bytes::from_static(b"p1")
        );
        assert!(answered(&mut leader).unwrap().error.is_none());
        assert_eq!(state(&coordinator, "g"), "Stable");
    }

    #[test]
    fn a_generation_that_cannot_be_stored_is_rebalanced() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 1);
        let assignments = vec![(joined[0].member_id.clone(), Bytes::from_static(b"p"))];
        let (mut leader, write) =
            coordinator.sync_and_store(sync_request("g", &joined[0], assignments));
        coordinator.stored(
            "g",
            write.unwrap().generation,
            Err(GroupError::NotCoordinator),
        );
        assert_eq!(
            answered(&mut leader).unwrap().error,
            Some(GroupError::NotCoordinator)
        );
        assert_eq!(state(&coordinator, "g"), "PreparingRebalance");
    }

    #[test]
    fn a_restored_group_is_stable_in_its_generation_and_members_carry_on() {
        let old = coordinator();
        let joined = stable_group(&old, "g", 2);
        let record = {
            let groups = old.lock();
            groups["g"].metadata(0)
        };
        let new = coordinator();
        new.restore("g", Some(record));
        assert_eq!(state(&new, "g"), "Stable");
        for member in &joined {
            assert_eq!(
                new.heartbeat("g", member.generation_id, &member.member_id, None),
                Ok(())
            );
        }
        let mut sync = new.sync(sync_request("g", &joined[1], Vec::new()));
        assert_eq!(
            answered(&mut sync).unwrap().assignment,
            Bytes::from(joined[1].member_id.clone())
        );
        // A tombstone: the group and its members are gone.
        new.restore("g", None);
        assert_eq!(
            new.heartbeat("g", joined[0].generation_id, &joined[0].member_id, None),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn a_rebalance_during_the_store_does_not_block_the_next_generation() {
        let coordinator = coordinator();
        let joined = form_group(&coordinator, "g", 2);
        let assignments = vec![(joined[0].member_id.clone(), Bytes::from_static(b"p"))];
        let (_leader, write) =
            coordinator.sync_and_store(sync_request("g", &joined[0], assignments.clone()));
        let write = write.unwrap();
        // The second member leaves while the generation is being written.
        let left = coordinator
            .leave("g", &[(joined[1].member_id.clone(), None)])
            .unwrap();
        assert_eq!(left, vec![Ok(())]);
        coordinator.stored("g", write.generation, Ok(()));
        assert_eq!(state(&coordinator, "g"), "PreparingRebalance");
        // The remaining member rejoins; its generation is stored and completes.
        let rejoined = join_now(&coordinator, join_request("g", &joined[0].member_id));
        assert_eq!(rejoined.generation_id, write.generation + 1);
        let (mut leader, next) =
            coordinator.sync_and_store(sync_request("g", &rejoined, assignments));
        let next = next.expect("the new generation is written too");
        coordinator.stored("g", next.generation, Ok(()));
        assert!(answered(&mut leader).unwrap().error.is_none());
        assert_eq!(state(&coordinator, "g"), "Stable");
    }
}
