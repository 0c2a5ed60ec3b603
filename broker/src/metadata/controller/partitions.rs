//! The controller's partition decisions: ISR changes proposed by leaders (AlterPartition) and
//! leader elections when brokers are fenced, shut down or come back.
//!
//! Elections are clean only (`unclean.leader.election.enable` off): a new leader always comes
//! from the ISR, and an ISR never loses its last member, so a partition whose every in-sync
//! replica is down stays offline (leader -1) until one of them returns, instead of electing a
//! replica that may lack acknowledged records.

use super::AlterPartitionError;
use crate::metadata::{MetadataImage, MetadataRecord, PartitionImage, TopicImage};
use crate::replica::AlterPartition;

/// The record of a partition's new state.
fn partition_record(topic: &TopicImage, partition: i32, state: &PartitionImage) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id: topic.topic_id,
        partition,
        replicas: state.replicas.clone(),
        isr: state.isr.clone(),
        leader: state.leader,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        adding_replicas: state.adding_replicas.clone(),
        removing_replicas: state.removing_replicas.clone(),
    }
}

/// Judges an ISR change a partition leader proposes: only the current leader, in its current
/// broker epoch, leader epoch and partition epoch, may change the ISR; the new ISR holds the leader, only
/// assigned replicas, and no fenced broker among the members it adds (KIP-841). The partition
/// epoch is bumped.
pub(super) fn alter_partition(
    image: &MetadataImage,
    change: &AlterPartition,
) -> Result<Vec<MetadataRecord>, AlterPartitionError> {
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
    let registered = image.broker(change.leader).map_or(-1, |b| b.epoch);
    if registered != change.broker_epoch {
        return Err(AlterPartitionError::StaleBrokerEpoch {
            sent: change.broker_epoch,
            current: registered,
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
    let mut next = state.clone();
    next.isr = change.isr.clone();
    next.isr.sort_unstable();
    next.isr.dedup();
    next.partition_epoch += 1;
    Ok(vec![partition_record(topic, change.partition, &next)])
}

/// Whether `broker` may lead or join an ISR now: registered and not fenced.
fn is_eligible(image: &MetadataImage, broker: i32, excluded: Option<i32>) -> bool {
    Some(broker) != excluded && image.broker(broker).is_some_and(|b| !b.fenced)
}

/// Moves everything away from `broker` (fenced for missed heartbeats, or shutting down): it
/// leaves every ISR that has another member, and partitions it leads get a new leader from the
/// rest of the ISR (in replica order: the preferred leader first), or none, with a new leader
/// epoch either way so that the old leader is fenced.
pub(super) fn move_away_from(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for (&index, state) in &topic.partition_states {
            let leads = state.leader == broker;
            let in_isr = state.isr.contains(&broker);
            if !leads && !in_isr {
                continue;
            }
            let mut next = state.clone();
            if in_isr && state.isr.len() > 1 {
                next.isr.retain(|r| *r != broker);
            }
            if leads {
                next.leader = next
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| next.isr.contains(r) && is_eligible(image, *r, Some(broker)))
                    .unwrap_or(-1);
                next.leader_epoch += 1;
            }
            if next == *state {
                continue;
            }
            next.partition_epoch += 1;
            records.push(partition_record(topic, index, &next));
        }
    }
    records
}

/// Elects leaders for offline partitions (leader -1) that have an eligible ISR member again,
/// for example the last in-sync replica coming back after being fenced.
pub(super) fn elect_offline_leaders(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for (&index, state) in &topic.partition_states {
            if state.leader >= 0 {
                continue;
            }
            let Some(leader) = state
                .replicas
                .iter()
                .copied()
                .find(|r| state.isr.contains(r) && is_eligible(image, *r, None))
            else {
                continue;
            };
            let mut next = state.clone();
            next.leader = leader;
            next.leader_epoch += 1;
            next.partition_epoch += 1;
            records.push(partition_record(topic, index, &next));
        }
    }
    records
}

/// Why a preferred-leader election did not happen for one partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ElectionOutcome {
    /// The preferred replica became leader (or will, once the record is committed).
    Elected,
    /// ELECTION_NOT_NEEDED: it already leads.
    NotNeeded,
    /// PREFERRED_LEADER_NOT_AVAILABLE: it is fenced or out of the ISR.
    PreferredNotAvailable,
    /// UNKNOWN_TOPIC_OR_PARTITION.
    UnknownPartition,
}

/// Makes the preferred replica (the first assigned) leader of `partition` of `topic`, if it
/// is in the ISR and not fenced: ElectLeaders, and the controller's automatic balancing.
pub(super) fn elect_preferred(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
) -> (ElectionOutcome, Option<MetadataRecord>) {
    let Some(topic) = image.topic(topic) else {
        return (ElectionOutcome::UnknownPartition, None);
    };
    let Some(state) = topic.partition(partition) else {
        return (ElectionOutcome::UnknownPartition, None);
    };
    let Some(&preferred) = state.replicas.first() else {
        return (ElectionOutcome::UnknownPartition, None);
    };
    if state.leader == preferred {
        return (ElectionOutcome::NotNeeded, None);
    }
    if !state.isr.contains(&preferred) || !is_eligible(image, preferred, None) {
        return (ElectionOutcome::PreferredNotAvailable, None);
    }
    let mut next = state.clone();
    next.leader = preferred;
    next.leader_epoch += 1;
    next.partition_epoch += 1;
    (
        ElectionOutcome::Elected,
        Some(partition_record(topic, partition, &next)),
    )
}

/// Preferred-leader elections for every partition whose preferred replica could lead but does
/// not (`auto.leader.rebalance.enable`).
pub(super) fn rebalance_leaders(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for &index in topic.partition_states.keys() {
            if let (ElectionOutcome::Elected, Some(record)) =
                elect_preferred(image, &topic.name, index)
            {
                records.push(record);
            }
        }
    }
    records
}

/// Why a reassignment of one partition was refused.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReassignmentError {
    /// UNKNOWN_TOPIC_OR_PARTITION.
    UnknownPartition,
    /// INVALID_REPLICA_ASSIGNMENT, with why.
    InvalidAssignment(String),
    /// NO_REASSIGNMENT_IN_PROGRESS: a cancellation of nothing.
    NoReassignmentInProgress,
}

/// Starts (or with `target` None cancels) moving a partition's replicas to `target` (KIP-455):
/// the replicas become the union of the target and the current ones, the target's new members
/// are `adding` (they start fetching as followers) and the others `removing`. The move
/// completes (see [`complete_reassignments`]) once every added replica is in the ISR.
pub(super) fn reassign(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
) -> Result<Vec<MetadataRecord>, ReassignmentError> {
    let Some(topic) = image.topic(topic) else {
        return Err(ReassignmentError::UnknownPartition);
    };
    let Some(state) = topic.partition(partition) else {
        return Err(ReassignmentError::UnknownPartition);
    };
    let in_progress = !state.adding_replicas.is_empty() || !state.removing_replicas.is_empty();
    let mut next = state.clone();
    match target {
        None => {
            if !in_progress {
                return Err(ReassignmentError::NoReassignmentInProgress);
            }
            // Back to the replicas before the move: drop the ones being added.
            next.replicas.retain(|r| !state.adding_replicas.contains(r));
            next.isr.retain(|r| next.replicas.contains(r));
        }
        Some(target) => {
            if target.is_empty() {
                return Err(ReassignmentError::InvalidAssignment(
                    "the target replica list is empty".into(),
                ));
            }
            if let Some(dup) = target
                .iter()
                .enumerate()
                .find(|(i, r)| target[..*i].contains(r))
            {
                return Err(ReassignmentError::InvalidAssignment(format!(
                    "broker {} appears twice in {target:?}",
                    dup.1
                )));
            }
            if let Some(unknown) = target.iter().find(|r| image.broker(**r).is_none()) {
                return Err(ReassignmentError::InvalidAssignment(format!(
                    "broker {unknown} is not registered in the cluster"
                )));
            }
            // The original replicas of a move in progress stay the base of the new one.
            let original: Vec<i32> = state
                .replicas
                .iter()
                .copied()
                .filter(|r| !state.adding_replicas.contains(r))
                .collect();
            let mut replicas = target.to_vec();
            replicas.extend(original.iter().copied().filter(|r| !target.contains(r)));
            next.adding_replicas = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            next.removing_replicas = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            next.replicas = replicas;
            next.isr.retain(|r| next.replicas.contains(r));
        }
    }
    if target.is_none() {
        next.adding_replicas.clear();
        next.removing_replicas.clear();
    }
    if next == *state {
        return Ok(Vec::new());
    }
    // A leader that is no longer a replica (a cancelled move) hands over.
    hand_over_if_removed(image, &mut next);
    next.partition_epoch += 1;
    let mut records = vec![partition_record(topic, partition, &next)];
    let mut preview = image.clone();
    preview.apply(&records[0]);
    records.extend(complete_reassignments(&preview));
    Ok(records)
}

/// A leader that is no longer among the replicas hands over to the first in-sync, eligible
/// replica (or none) in a new leader epoch.
fn hand_over_if_removed(image: &MetadataImage, next: &mut PartitionImage) {
    if next.replicas.contains(&next.leader) {
        return;
    }
    next.leader = next
        .replicas
        .iter()
        .copied()
        .find(|r| next.isr.contains(r) && is_eligible(image, *r, None))
        .unwrap_or(-1);
    next.leader_epoch += 1;
}

/// Finishes the moves whose added replicas are all in the ISR: the replicas become the
/// target, the removed ones leave the ISR, and a leader that was removed hands over to an
/// in-sync target replica in a new epoch.
pub(super) fn complete_reassignments(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for (&index, state) in &topic.partition_states {
            if state.adding_replicas.is_empty() && state.removing_replicas.is_empty() {
                continue;
            }
            if !state.adding_replicas.iter().all(|r| state.isr.contains(r)) {
                continue;
            }
            let mut next = state.clone();
            next.replicas
                .retain(|r| !state.removing_replicas.contains(r));
            next.isr.retain(|r| next.replicas.contains(r));
            next.adding_replicas.clear();
            next.removing_replicas.clear();
            hand_over_if_removed(image, &mut next);
            if next.isr.is_empty() {
                // Never leave an empty ISR: wait for a target replica to be in sync.
                continue;
            }
            next.partition_epoch += 1;
            records.push(partition_record(topic, index, &next));
        }
    }
    records
}

/// How many partitions `broker` leads.
pub(super) fn leaderships(image: &MetadataImage, broker: i32) -> usize {
    image
        .topics()
        .flat_map(|t| t.partition_states.values())
        .filter(|p| p.leader == broker)
        .count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;

    fn image(fenced: &[i32], isr: Vec<i32>, leader: i32) -> (MetadataImage, Uuid) {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            image.apply(&MetadataRecord::RegisterBroker {
                broker_id: id,
                incarnation_id: Uuid::new_v4(),
                broker_epoch: i64::from(id),
                listeners: vec![],
                rack: None,
                fenced: fenced.contains(&id),
            });
        }
        let topic_id = Uuid::new_v4();
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id,
            partitions: 1,
            configs: BTreeMap::new(),
        });
        image.apply(&MetadataRecord::Partition {
            topic_id,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr,
            leader,
            leader_epoch: 5,
            partition_epoch: 7,
            adding_replicas: vec![],
            removing_replicas: vec![],
        });
        (image, topic_id)
    }

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) -> PartitionImage {
        for record in records {
            image.apply(record);
        }
        image.topic("t").unwrap().partition(0).unwrap().clone()
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_isr_with_a_new_epoch() {
        let (mut image, _) = image(&[1], vec![1, 2, 3], 1);
        let records = move_away_from(&image, 1);
        let state = apply(&mut image, &records);
        assert_eq!(state.leader, 2);
        assert_eq!(state.isr, vec![2, 3]);
        assert_eq!(state.leader_epoch, 6);
        assert_eq!(state.partition_epoch, 8);
    }

    #[test]
    fn the_last_isr_member_stays_and_the_partition_goes_offline_until_it_returns() {
        let (mut image, _) = image(&[1], vec![1], 1);
        let records = move_away_from(&image, 1);
        let state = apply(&mut image, &records);
        assert_eq!(state.leader, -1);
        assert_eq!(state.isr, vec![1], "no unclean election, no empty ISR");
        // Broker 2 is alive but out of sync: not elected.
        assert!(elect_offline_leaders(&image).is_empty());
        image.apply(&MetadataRecord::BrokerFencing {
            broker_id: 1,
            broker_epoch: 1,
            fenced: false,
        });
        let records = elect_offline_leaders(&image);
        let state = apply(&mut image, &records);
        assert_eq!(state.leader, 1);
        assert_eq!(state.leader_epoch, 7);
    }

    #[test]
    fn isr_changes_need_the_current_epochs_and_unfenced_new_members() {
        let (image, topic_id) = image(&[3], vec![1, 2], 1);
        let change = |leader_epoch, partition_epoch, isr: Vec<i32>| AlterPartition {
            topic_id,
            partition: 0,
            leader: 1,
            broker_epoch: 1,
            leader_epoch,
            partition_epoch,
            isr,
        };
        assert!(alter_partition(&image, &change(5, 7, vec![1])).is_ok());
        assert_eq!(
            alter_partition(&image, &change(4, 7, vec![1])),
            Err(AlterPartitionError::FencedLeaderEpoch { current: 5 })
        );
        assert_eq!(
            alter_partition(&image, &change(5, 6, vec![1])),
            Err(AlterPartitionError::InvalidUpdateVersion { current: 7 })
        );
        assert_eq!(
            alter_partition(&image, &change(5, 7, vec![1, 2, 3])),
            Err(AlterPartitionError::IneligibleReplica(3))
        );
        assert!(matches!(
            alter_partition(&image, &change(5, 7, vec![2])),
            Err(AlterPartitionError::InvalidRequest(_))
        ));
        let from_an_earlier_incarnation = AlterPartition {
            broker_epoch: 0,
            ..change(5, 7, vec![1])
        };
        assert_eq!(
            alter_partition(&image, &from_an_earlier_incarnation),
            Err(AlterPartitionError::StaleBrokerEpoch {
                sent: 0,
                current: 1
            })
        );
    }

    #[test]
    fn the_preferred_replica_leads_again_once_it_is_back_in_the_isr() {
        // Broker 1 (preferred) is out of the ISR: no election.
        let (image, _) = image(&[], vec![2, 3], 2);
        assert_eq!(
            elect_preferred(&image, "t", 0).0,
            ElectionOutcome::PreferredNotAvailable
        );
        assert!(rebalance_leaders(&image).is_empty());
        // Back in the ISR: it leads again, in a new epoch.
        let (mut image, _) = super::tests::image(&[], vec![1, 2, 3], 2);
        let records = rebalance_leaders(&image);
        let state = apply(&mut image, &records);
        assert_eq!((state.leader, state.leader_epoch), (1, 6));
        assert_eq!(
            elect_preferred(&image, "t", 0).0,
            ElectionOutcome::NotNeeded
        );
        assert_eq!(
            elect_preferred(&image, "nope", 0).0,
            ElectionOutcome::UnknownPartition
        );
    }

    #[test]
    fn a_move_adds_then_removes_and_can_be_cancelled() {
        let (mut image, _) = image(&[], vec![1, 2], 1);
        // Move from [1, 2, 3] (ISR 1, 2) to [2, 3]: 1 is removed; nothing to add, and 3 is
        // already a replica, so the move completes at once.
        let records = reassign(&image, "t", 0, Some(&[2, 3])).unwrap();
        let state = apply(&mut image, &records);
        assert_eq!(state.replicas, vec![2, 3]);
        assert_eq!(state.isr, vec![2]);
        assert_eq!(state.leader, 2, "the removed leader handed over");
        assert!(state.adding_replicas.is_empty() && state.removing_replicas.is_empty());
        assert_eq!(
            reassign(&image, "t", 0, None),
            Err(ReassignmentError::NoReassignmentInProgress)
        );
        assert!(matches!(
            reassign(&image, "t", 0, Some(&[2, 2])),
            Err(ReassignmentError::InvalidAssignment(_))
        ));
        assert!(matches!(
            reassign(&image, "t", 0, Some(&[9])),
            Err(ReassignmentError::InvalidAssignment(_))
        ));
        assert_eq!(
            reassign(&image, "nope", 0, Some(&[1])),
            Err(ReassignmentError::UnknownPartition)
        );
    }
}
