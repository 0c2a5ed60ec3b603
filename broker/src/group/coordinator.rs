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

/// All consumer groups this broker coordinates.
pub struct GroupCoordinator {
    limits: Limits,
    groups: Mutex<HashMap<String, Group>>,
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
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// JoinGroup. The receiver resolves when the join phase completes (or at once on error).
    pub fn join(&self, request: JoinRequest) -> oneshot::Receiver<JoinOutcome> {
        if request.group_id.is_empty() {
            return reply(join_error(GroupError::InvalidGroupId, &request.member_id));
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

    /// SyncGroup. The receiver resolves when the leader's assignment arrives (or at once).
    pub fn sync(&self, request: SyncRequest) -> oneshot::Receiver<SyncOutcome> {
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
                if group.leader.as_deref() == Some(request.member_id.as_str()) {
                    let assignments: HashMap<String, Bytes> =
                        request.assignments.into_iter().collect();
                    for member in group.members.values_mut() {
                        member.assignment = assignments
                            .get(&member.member_id)
                            .cloned()
                            .unwrap_or_default();
                        if let Some(waiter) = member.sync_waiter.take() {
                            let _ = waiter.send(done(member.assignment.clone()));
                        }
                    }
                    group.state = GroupState::Stable;
                    tracing::info!(group = %group.group_id, generation = group.generation_id, "rebalance complete: group stable");
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
            }
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

    /// Enforces session timeouts, rebalance deadlines and unclaimed member ids.
    pub fn tick(&self, now: Instant) {
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
        }
    }
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
