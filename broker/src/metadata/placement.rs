//! Replica placement: which brokers hold each partition of a new topic (or new partitions).
//!
//! As Kafka does, leaders (first replicas) go round-robin over the brokers from a random
//! start, so leadership spreads evenly, and the followers of a partition are the brokers
//! after its leader in a fixed order. With racks, that order alternates racks (rack A's
//! first broker, rack B's first, ..., rack A's second, ...), so consecutive brokers sit in
//! different racks and a partition's replicas span as many racks as it can.

use std::collections::BTreeMap;

/// A broker that can take replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementBroker {
    /// `node.id`.
    pub id: i32,
    /// `broker.rack`, if set.
    pub rack: Option<String>,
}

/// Why replicas could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More replicas per partition than brokers to hold them.
    #[error("replication factor {replication_factor} is larger than the number of available brokers ({brokers})")]
    NotEnoughBrokers {
        /// Requested replicas per partition.
        replication_factor: i16,
        /// Brokers available.
        brokers: usize,
    },
    /// A replication factor below 1.
    #[error("replication factor must be positive, got {0}")]
    InvalidReplicationFactor(i16),
}

/// Assigns replicas to `count` partitions numbered from `first_partition`.
///
/// `start` picks the broker that leads `first_partition` (callers pass a random value, so
/// that small topics do not all lead on the same broker); the result is deterministic in it.
pub fn assign_replicas(
    brokers: &[PlacementBroker],
    first_partition: i32,
    count: i32,
    replication_factor: i16,
    start: usize,
) -> Result<Vec<(i32, Vec<i32>)>, PlacementError> {
    let Ok(rf) = usize::try_from(replication_factor) else {
        return Err(PlacementError::InvalidReplicationFactor(replication_factor));
    };
    if rf == 0 {
        return Err(PlacementError::InvalidReplicationFactor(replication_factor));
    }
    if rf > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers {
            replication_factor,
            brokers: brokers.len(),
        });
    }
    let (order, racked) = rack_alternating_order(brokers);
    let n = order.len();
    let mut assignments = Vec::new();
    for index in 0..count.max(0) {
        let partition = first_partition + index;
        // The leader moves one broker per partition; every full round shifts the followers
        // by one more, so the pairs of brokers that share partitions vary (as Kafka's
        // "replica shift") and a broker's failure spreads its load over several others.
        let offset = start + usize::try_from(partition).unwrap_or(0);
        let leader = offset % n;
        // With racks the followers are the next brokers in the rack-alternating order:
        // any other shift could land twice in one rack.
        let shift = if racked || n < 2 {
            1
        } else {
            1 + (offset / n) % (n - 1)
        };
        let mut replicas = vec![order[leader]];
        let mut next = leader;
        while replicas.len() < rf {
            next = (next + shift) % n;
            if replicas.contains(&order[next]) {
                // The shift cycled back (it shares a factor with n): take the next free one.
                next = (0..n)
                    .map(|step| (next + step) % n)
                    .find(|&i| !replicas.contains(&order[i]))
                    .unwrap_or(next);
            }
            replicas.push(order[next]);
        }
        assignments.push((partition, replicas));
    }
    Ok(assignments)
}

/// Broker ids sorted, then interleaved by rack when every broker has one (Kafka places
/// rack-unaware when only some brokers have a rack, and so do we).
/// Also says whether racks are in use.
fn rack_alternating_order(brokers: &[PlacementBroker]) -> (Vec<i32>, bool) {
    let mut sorted: Vec<&PlacementBroker> = brokers.iter().collect();
    sorted.sort_by_key(|b| b.id);
    if sorted.iter().any(|b| b.rack.is_none()) {
        return (sorted.iter().map(|b| b.id).collect(), false);
    }
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for broker in &sorted {
        by_rack
            .entry(broker.rack.as_deref().unwrap_or_default())
            .or_default()
            .push(broker.id);
    }
    let mut order = Vec::with_capacity(sorted.len());
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for round in 0..deepest {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(round) {
                order.push(*id);
            }
        }
    }
    (order, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn brokers(racks: &[Option<&str>]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(i, rack)| PlacementBroker {
                id: i32::try_from(i).unwrap() + 1,
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn replicas_are_distinct_and_leaders_spread_evenly() {
        let brokers = brokers(&[None, None, None]);
        for start in 0..6 {
            let assignments = assign_replicas(&brokers, 0, 6, 3, start).unwrap();
            let mut leaders: HashMap<i32, usize> = HashMap::new();
            for (_, replicas) in &assignments {
                assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
                *leaders.entry(replicas[0]).or_default() += 1;
            }
            assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        }
    }

    #[test]
    fn replication_factor_beyond_the_brokers_is_refused() {
        let error = assign_replicas(&brokers(&[None]), 0, 1, 3, 0).unwrap_err();
        assert_eq!(
            error,
            PlacementError::NotEnoughBrokers {
                replication_factor: 3,
                brokers: 1
            }
        );
        assert!(assign_replicas(&brokers(&[None]), 0, 1, 0, 0).is_err());
    }

    #[test]
    fn with_racks_every_partition_spans_as_many_racks_as_it_can() {
        let racked = brokers(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let rack_of = |id: i32| racked[usize::try_from(id - 1).unwrap()].rack.clone();
        for start in 0..6 {
            for (_, replicas) in assign_replicas(&racked, 0, 12, 3, start).unwrap() {
                let racks: BTreeSet<_> = replicas.iter().map(|id| rack_of(*id)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
        }
    }

    #[test]
    fn new_partitions_continue_the_numbering() {
        let assignments = assign_replicas(&brokers(&[None, None]), 3, 2, 1, 0).unwrap();
        assert_eq!(
            assignments.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }
}
