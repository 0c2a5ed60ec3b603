//! A consumer group's state under the classic protocol: members, generation, leader, the
//! chosen assignment protocol, and the members' pending join and sync answers.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use super::error::GroupError;
use super::records::{GroupMetadataValue, MemberMetadata};

/// A duration in whole milliseconds, as the records keep it.
fn millis_i32(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// Where a group is in its rebalance cycle (Kafka's names; DescribeGroups reports them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members (possibly committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Members have their assignments.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// The name the protocol uses.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The answer a member gets to JoinGroup.
#[derive(Clone, Debug, Default)]
pub struct JoinOutcome {
    /// Why the join failed, if it did.
    pub error: Option<GroupError>,
    /// The new generation.
    pub generation_id: i32,
    /// The group's protocol type (`consumer`).
    pub protocol_type: Option<String>,
    /// The chosen assignment strategy.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// The answer a member gets to SyncGroup.
#[derive(Clone, Debug, Default)]
pub struct SyncOutcome {
    /// Why the sync failed, if it did.
    pub error: Option<GroupError>,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignment strategy.
    pub protocol_name: Option<String>,
    /// This member's assignment (always a well-formed blob, possibly empty).
    pub assignment: Bytes,
}

/// One member of a group.
#[derive(Debug)]
pub struct Member {
    /// Member id, assigned by the coordinator.
    pub member_id: String,
    /// Static membership id (KIP-345).
    pub group_instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout.
    pub rebalance_timeout: Duration,
    /// Supported assignment protocols in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// The assignment from the last completed sync.
    pub assignment: Bytes,
    /// When the member last showed life (join, sync, heartbeat, commit).
    pub last_seen: Instant,
    /// Its JoinGroup is waiting for the rebalance to complete.
    pub join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    /// Its SyncGroup is waiting for the leader's assignment.
    pub sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    /// Order of joining, so the leader is the longest-standing member.
    pub joined_seq: u64,
}

impl Member {
    /// Metadata for a protocol, if the member supports it.
    pub fn metadata_for(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m)
    }
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The offset.
    pub offset: i64,
    /// Leader epoch the consumer saw, or -1.
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: String,
    /// When it was committed (ms since epoch).
    pub commit_timestamp: i64,
    /// Offset of the record in `__consumer_offsets` that holds it; a later commit wins even if
    /// its fsync finished first.
    pub log_offset: i64,
}

/// Committed offsets grouped by topic: (topic, [(partition, offset if committed)]).
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    /// Group id.
    pub group_id: String,
    /// Current state.
    pub state: GroupState,
    /// Generation; incremented by every completed join.
    pub generation_id: i32,
    /// Protocol type of the members (`consumer`, `connect`, ...).
    pub protocol_type: Option<String>,
    /// Chosen assignment strategy of the current generation.
    pub protocol_name: Option<String>,
    /// Leader member id.
    pub leader: Option<String>,
    /// Members by id.
    pub members: HashMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED (KIP-394) and when, awaiting their join.
    pub pending_members: HashMap<String, Instant>,
    /// Static members: instance id to member id.
    pub static_members: HashMap<String, String>,
    /// When the current join phase must end, whoever has not rejoined.
    pub rebalance_deadline: Option<Instant>,
    /// The join phase of a group that started empty waits this long for more members
    /// (`group.initial.rebalance.delay.ms`), so that consumers starting together share one
    /// rebalance.
    pub initial_join_until: Option<Instant>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Counter for `joined_seq`.
    pub next_join_seq: u64,
    /// The generation whose metadata is being written: its members get their assignments,
    /// and the group turns Stable, once the record is durable (as in Kafka), so that a new
    /// coordinator never restores an older generation than the one members were told.
    pub storing: Option<i32>,
    /// The group became empty and its metadata record does not say so yet.
    pub unsaved: bool,
}

impl Group {
    /// A new empty group.
    pub fn new(group_id: &str) -> Self {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: HashMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_join_until: None,
            offsets: BTreeMap::new(),
            next_join_seq: 0,
            storing: None,
            unsaved: false,
        }
    }

    /// The group's metadata record as it stands: members in joining order, each with its
    /// metadata for the chosen protocol and its assignment.
    pub fn metadata(&self, now_ms: i64) -> GroupMetadataValue {
        let protocol = self.protocol_name.clone();
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: now_ms,
            members: members
                .into_iter()
                .map(|m| MemberMetadata {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: millis_i32(m.rebalance_timeout),
                    session_timeout_ms: millis_i32(m.session_timeout),
                    subscription: protocol
                        .as_deref()
                        .and_then(|p| m.metadata_for(p))
                        .cloned()
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Takes the membership of a metadata record read back from `__consumer_offsets` (this
    /// broker just became the group's coordinator). A group with members is Stable in the
    /// recorded generation, and every member's session starts now: members carry on with
    /// their heartbeats and assignments instead of rejoining. Committed offsets are kept.
    pub fn restore(&mut self, value: GroupMetadataValue, now: Instant) {
        self.restore_deleted();
        self.generation_id = value.generation;
        self.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
        self.protocol_name = value.protocol;
        for (seq, member) in value.members.into_iter().enumerate() {
            if let Some(instance) = &member.group_instance_id {
                self.static_members
                    .insert(instance.clone(), member.member_id.clone());
            }
            let protocols = self
                .protocol_name
                .clone()
                .map(|p| vec![(p, member.subscription)])
                .unwrap_or_default();
            self.members.insert(
                member.member_id.clone(),
                Member {
                    member_id: member.member_id,
                    group_instance_id: member.group_instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    session_timeout: Duration::from_millis(
                        u64::try_from(member.session_timeout_ms).unwrap_or(0),
                    ),
                    rebalance_timeout: Duration::from_millis(
                        u64::try_from(member.rebalance_timeout_ms).unwrap_or(0),
                    ),
                    protocols,
                    assignment: member.assignment,
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                    joined_seq: seq as u64,
                },
            );
        }
        self.next_join_seq = self.members.len() as u64;
        self.leader = value
            .leader
            .filter(|leader| self.members.contains_key(leader));
        self.state = if self.members.is_empty() {
            self.leader = None;
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    /// Forgets the membership (a tombstone for the group's metadata was read back).
    /// Members with a request parked here are told to look for the coordinator again.
    pub fn restore_deleted(&mut self) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinOutcome {
                    error: Some(GroupError::NotCoordinator),
                    ..JoinOutcome::default()
                });
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncOutcome {
                    error: Some(GroupError::NotCoordinator),
                    ..SyncOutcome::default()
                });
            }
        }
        self.members.clear();
        self.pending_members.clear();
        self.static_members.clear();
        self.state = GroupState::Empty;
        self.leader = None;
        self.protocol_name = None;
        self.rebalance_deadline = None;
        self.initial_join_until = None;
        self.storing = None;
        self.unsaved = false;
    }

    /// A protocol every member (and `candidate`, if given) supports, chosen by the members'
    /// votes: each votes for its most preferred protocol that all support.
    pub fn select_protocol(&self) -> Option<String> {
        let mut candidates: Vec<&String> = match self.members.values().next() {
            Some(first) => first.protocols.iter().map(|(n, _)| n).collect(),
            None => return None,
        };
        candidates.retain(|name| {
            self.members
                .values()
                .all(|m| m.metadata_for(name).is_some())
        });
        if candidates.is_empty() {
            return None;
        }
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n))
            {
                *votes.entry(name).or_default() += 1;
            }
        }
        // Most votes; ties broken by the first candidate's order for determinism.
        candidates
            .iter()
            .max_by_key(|name| {
                (
                    votes.get(**name).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|c| c == *name)),
                )
            })
            .map(|n| (*n).clone())
    }

    /// Whether a new member's protocols fit the group (same type, at least one in common).
    pub fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.metadata_for(name).is_some())
        })
    }

    /// Whether every member has rejoined in this join phase.
    pub fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some())
    }

    /// The largest rebalance timeout of the members.
    pub fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::new()))
                .collect(),
            assignment: Bytes::new(),
            last_seen: Instant::now(),
            join_waiter: None,
            sync_waiter: None,
            joined_seq: 0,
        }
    }

    #[test]
    fn protocol_is_one_all_members_support_with_most_votes() {
        let mut group = Group::new("g");
        group.protocol_type = Some("consumer".into());
        group
            .members
            .insert("a".into(), member("a", &["range", "roundrobin"]));
        group
            .members
            .insert("b".into(), member("b", &["roundrobin", "range"]));
        group
            .members
            .insert("c".into(), member("c", &["roundrobin", "sticky"]));
        assert_eq!(group.select_protocol().as_deref(), Some("roundrobin"));
        assert!(group.accepts("consumer", &[("roundrobin".into(), Bytes::new())]));
        assert!(!group.accepts("consumer", &[("cooperative-sticky".into(), Bytes::new())]));
        assert!(!group.accepts("connect", &[("roundrobin".into(), Bytes::new())]));
    }
}
