//! Partition assignment strategies, run by the group leader (the classic protocol leaves
//! assignment to the clients): `range`, `roundrobin` and `cooperative-sticky`, under the names
//! the Java client and librdkafka use, so members of different clients can share a group.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{ClientError, Result};
use crate::types::TopicPartition;

use super::protocol::Subscription;

/// A partition assignment strategy (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssignmentStrategy {
    /// Per topic, consecutive partition ranges to members in order (Kafka's `range`).
    Range,
    /// All partitions dealt to members in turn (Kafka's `roundrobin`).
    RoundRobin,
    /// Balanced, keeping partitions where they are, and moving them without stopping the
    /// whole group (Kafka's `cooperative-sticky`, incremental rebalancing).
    CooperativeSticky,
}

impl AssignmentStrategy {
    /// The protocol name sent in JoinGroup.
    pub fn name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Whether members may keep their partitions through a rebalance (the cooperative
    /// protocol) instead of revoking all of them first (eager).
    pub fn is_cooperative(self) -> bool {
        matches!(self, AssignmentStrategy::CooperativeSticky)
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

impl std::str::FromStr for AssignmentStrategy {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        AssignmentStrategy::from_name(s).ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "unknown assignment strategy {s:?} (range, roundrobin, cooperative-sticky)"
            ))
        })
    }
}

/// One member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone)]
pub(crate) struct GroupMember {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) subscription: Subscription,
}

impl GroupMember {
    /// The order members are dealt partitions in: static members by instance id (stable
    /// across restarts), then dynamic ones by member id, as the Java client sorts them.
    fn sort_key(&self) -> (u8, &str) {
        match &self.group_instance_id {
            Some(id) => (0, id.as_str()),
            None => (1, self.member_id.as_str()),
        }
    }
}

/// Computes every member's partitions. `partition_counts` holds the partition count of each
/// subscribed topic that exists; topics missing from it are skipped.
pub(crate) fn assign(
    strategy: AssignmentStrategy,
    members: &[GroupMember],
    partition_counts: &HashMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut sorted: Vec<&GroupMember> = members.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut assignment: BTreeMap<String, Vec<TopicPartition>> = members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    match strategy {
        AssignmentStrategy::Range => range(&sorted, partition_counts, &mut assignment),
        AssignmentStrategy::RoundRobin => round_robin(&sorted, partition_counts, &mut assignment),
        AssignmentStrategy::CooperativeSticky => {
            cooperative_sticky(&sorted, partition_counts, &mut assignment)
        }
    }
    for partitions in assignment.values_mut() {
        partitions.sort();
    }
    assignment
}

fn subscribes(member: &GroupMember, topic: &str) -> bool {
    member.subscription.topics.iter().any(|t| t == topic)
}

/// The subscribed topics that exist, in name order.
fn topics<'a>(
    members: &[&GroupMember],
    partition_counts: &'a HashMap<String, i32>,
) -> BTreeMap<&'a str, i32> {
    let wanted: BTreeSet<&str> = members
        .iter()
        .flat_map(|m| m.subscription.topics.iter().map(String::as_str))
        .collect();
    partition_counts
        .iter()
        .filter(|(name, count)| wanted.contains(name.as_str()) && **count > 0)
        .map(|(name, count)| (name.as_str(), *count))
        .collect()
}

fn range(
    members: &[&GroupMember],
    partition_counts: &HashMap<String, i32>,
    assignment: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    for (topic, count) in topics(members, partition_counts) {
        let consumers: Vec<&&GroupMember> =
            members.iter().filter(|m| subscribes(m, topic)).collect();
        if consumers.is_empty() {
            continue;
        }
        let count = count as usize;
        let per_member = count / consumers.len();
        let with_extra = count % consumers.len();
        let mut next = 0usize;
        for (index, member) in consumers.iter().enumerate() {
            let take = per_member + usize::from(index < with_extra);
            let partitions = assignment.entry(member.member_id.clone()).or_default();
            for partition in next..next + take {
                partitions.push(TopicPartition::new(topic, partition as i32));
            }
            next += take;
        }
    }
}

fn round_robin(
    members: &[&GroupMember],
    partition_counts: &HashMap<String, i32>,
    assignment: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    if members.is_empty() {
        return;
    }
    let mut turn = 0usize;
    for (topic, count) in topics(members, partition_counts) {
        for partition in 0..count {
            // The next member in turn that subscribes to this topic.
            for step in 0..members.len() {
                let member = members[(turn + step) % members.len()];
                if subscribes(member, topic) {
                    assignment
                        .entry(member.member_id.clone())
                        .or_default()
                        .push(TopicPartition::new(topic, partition));
                    turn = (turn + step + 1) % members.len();
                    break;
                }
            }
        }
    }
}

/// Balanced and sticky: each member keeps what it owns up to its fair share, the rest goes to
/// the members with the fewest partitions. Then, for the cooperative protocol, a partition that
/// moves away from a member that still owns it is left out of this round: its owner revokes it
/// and rejoins, and the follow-up rebalance hands it to its new member. So no partition is ever
/// consumed by two members at once.
fn cooperative_sticky(
    members: &[&GroupMember],
    partition_counts: &HashMap<String, i32>,
    assignment: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    if members.is_empty() {
        return;
    }
    let all: Vec<TopicPartition> = topics(members, partition_counts)
        .into_iter()
        .flat_map(|(topic, count)| (0..count).map(move |p| TopicPartition::new(topic, p)))
        .collect();
    let valid: BTreeSet<&TopicPartition> = all.iter().collect();

    // Current owners; when two members claim a partition the newer generation wins.
    let mut owners: HashMap<&TopicPartition, (&str, i32)> = HashMap::new();
    let mut contested: BTreeSet<&TopicPartition> = BTreeSet::new();
    for member in members {
        for tp in &member.subscription.owned_partitions {
            if !valid.contains(tp) || !subscribes(member, &tp.topic) {
                continue;
            }
            let generation = member.subscription.generation;
            match owners.get(tp) {
                Some((_, other)) if *other > generation => {}
                Some((_, other)) if *other == generation => {
                    contested.insert(tp);
                }
                _ => {
                    contested.remove(tp);
                    owners.insert(tp, (member.member_id.as_str(), generation));
                }
            }
        }
    }
    for tp in contested {
        owners.remove(tp);
    }

    let floor = all.len() / members.len();
    let mut ceilings_left = all.len() % members.len();
    let mut counts: BTreeMap<&str, usize> = members
        .iter()
        .map(|m| (m.member_id.as_str(), 0usize))
        .collect();
    let mut unassigned: Vec<&TopicPartition> = Vec::new();

    // Keep owned partitions up to the fair share (one more for as many members as the
    // remainder allows), in partition order so the choice is deterministic.
    let mut owned_by: BTreeMap<&str, Vec<&TopicPartition>> = BTreeMap::new();
    for tp in &all {
        match owners.get(tp) {
            Some((owner, _)) => owned_by.entry(owner).or_default().push(tp),
            None => unassigned.push(tp),
        }
    }
    for member in members {
        let id = member.member_id.as_str();
        let owned = owned_by.remove(id).unwrap_or_default();
        let mut keep = owned.len().min(floor);
        if owned.len() > floor && ceilings_left > 0 {
            keep += 1;
            ceilings_left -= 1;
        }
        for (index, tp) in owned.into_iter().enumerate() {
            if index < keep {
                assignment
                    .entry(id.to_string())
                    .or_default()
                    .push(tp.clone());
                *counts.entry(id).or_default() += 1;
            } else {
                unassigned.push(tp);
            }
        }
    }
    unassigned.sort();

    // Each remaining partition to the subscribed member with the fewest.
    for tp in unassigned {
        let target = members
            .iter()
            .filter(|m| subscribes(m, &tp.topic))
            .min_by_key(|m| counts.get(m.member_id.as_str()).copied().unwrap_or(0));
        let Some(target) = target else { continue };
        let id = target.member_id.as_str();
        *counts.entry(id).or_default() += 1;
        let moving_from_live_owner = matches!(owners.get(tp), Some((owner, _)) if *owner != id);
        if !moving_from_live_owner {
            assignment
                .entry(id.to_string())
                .or_default()
                .push(tp.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, i32)], generation: i32) -> GroupMember {
        GroupMember {
            member_id: id.to_string(),
            group_instance_id: None,
            subscription: Subscription {
                topics: topics.iter().map(|t| t.to_string()).collect(),
                owned_partitions: owned
                    .iter()
                    .map(|(t, p)| TopicPartition::new(*t, *p))
                    .collect(),
                generation,
            },
        }
    }

    fn counts(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(t, c)| (t.to_string(), *c)).collect()
    }

    fn all_assigned(assignment: &BTreeMap<String, Vec<TopicPartition>>) -> Vec<TopicPartition> {
        let mut all: Vec<TopicPartition> = assignment.values().flatten().cloned().collect();
        all.sort();
        all
    }

    #[test]
    fn range_gives_the_first_members_the_extra_partitions() {
        let members = [member("a", &["t"], &[], -1), member("b", &["t"], &[], -1)];
        let assignment = assign(AssignmentStrategy::Range, &members, &counts(&[("t", 5)]));
        let partitions =
            |id: &str| -> Vec<i32> { assignment[id].iter().map(|tp| tp.partition).collect() };
        assert_eq!(partitions("a"), vec![0, 1, 2]);
        assert_eq!(partitions("b"), vec![3, 4]);
    }

    #[test]
    fn round_robin_skips_members_not_subscribed() {
        let members = [
            member("a", &["t", "u"], &[], -1),
            member("b", &["t"], &[], -1),
        ];
        let assignment = assign(
            AssignmentStrategy::RoundRobin,
            &members,
            &counts(&[("t", 2), ("u", 2)]),
        );
        assert_eq!(assignment["b"].len(), 1);
        assert_eq!(assignment["a"].len(), 3);
        assert!(assignment["b"].iter().all(|tp| tp.topic == "t"));
    }

    #[test]
    fn every_strategy_covers_every_partition_once() {
        let members = [
            member("a", &["t"], &[], -1),
            member("b", &["t"], &[], -1),
            member("c", &["t"], &[], -1),
        ];
        for strategy in [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ] {
            let assignment = assign(strategy, &members, &counts(&[("t", 7)]));
            let expected: Vec<TopicPartition> =
                (0..7).map(|p| TopicPartition::new("t", p)).collect();
            assert_eq!(all_assigned(&assignment), expected, "{strategy:?}");
            let sizes: Vec<usize> = assignment.values().map(Vec::len).collect();
            assert!(sizes.iter().all(|n| (2..=3).contains(n)), "{strategy:?}");
        }
    }

    #[test]
    fn sticky_keeps_owned_partitions_and_holds_back_moving_ones() {
        // a owned everything; b joins. a keeps half; the other half is not given to b in this
        // round because a still owns it.
        let owned: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
        let members = [member("a", &["t"], &owned, 3), member("b", &["t"], &[], -1)];
        let assignment = assign(
            AssignmentStrategy::CooperativeSticky,
            &members,
            &counts(&[("t", 6)]),
        );
        assert_eq!(assignment["a"].len(), 3);
        assert!(assignment["b"].is_empty());
        // Second round: a now owns only its three; b gets the other three.
        let kept: Vec<(&str, i32)> = assignment["a"]
            .iter()
            .map(|tp| ("t", tp.partition))
            .collect();
        let members = [member("a", &["t"], &kept, 4), member("b", &["t"], &[], 4)];
        let second = assign(
            AssignmentStrategy::CooperativeSticky,
            &members,
            &counts(&[("t", 6)]),
        );
        assert_eq!(second["a"], assignment["a"]);
        assert_eq!(second["b"].len(), 3);
    }

    #[test]
    fn sticky_ignores_stale_claims_from_older_generations() {
        let members = [
            member("a", &["t"], &[("t", 0)], 5),
            member("b", &["t"], &[("t", 0)], 4),
        ];
        let assignment = assign(
            AssignmentStrategy::CooperativeSticky,
            &members,
            &counts(&[("t", 2)]),
        );
        assert!(assignment["a"].contains(&TopicPartition::new("t", 0)));
        assert_eq!(assignment["b"], vec![TopicPartition::new("t", 1)]);
    }

    #[test]
    fn strategy_names_parse_back() {
        for strategy in [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ] {
            assert_eq!(
                strategy.name().parse::<AssignmentStrategy>().ok(),
                Some(strategy)
            );
        }
        assert!("sticky-ish".parse::<AssignmentStrategy>().is_err());
    }
}
