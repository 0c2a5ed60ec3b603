//! An observer: a node that is not a voter (`process.roles=broker`) follows the quorum's
//! committed metadata by fetching it from the voters, as Kafka's brokers fetch
//! `__cluster_metadata` from the controllers without voting.
//!
//! The fetch is a long poll ([`ControllerClient::fetch_metadata`]): a voter answers as soon as
//! it applies something the observer lacks. Only committed entries are ever applied by a voter,
//! so any voter's answer is consistent with every other's; the observer prefers the active
//! controller (the freshest) and falls back to the other voters in turn. It keeps nothing on
//! disk: on start it is sent the whole image.
//!
//! A voter's answer is input from another process: entries that do not follow on from what
//! the observer has are refused (and another voter asked), never applied out of order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::network::ControllerClient;
use super::type_config::{LogIndex, NodeId};
use super::wire::MetadataUpdate;
use super::{AppliedImage, LeaderState};

/// How an observer fetches.
#[derive(Clone, Copy, Debug)]
pub struct ObserverTimings {
    /// How long a voter may hold a fetch when it has nothing new.
    pub max_wait: Duration,
    /// The pause after every voter failed in turn.
    pub backoff: Duration,
}

/// Follows the voters' metadata into `applied` and their view of the leader into `leader`,
/// until the task is aborted.
pub fn spawn(
    client: Arc<ControllerClient>,
    applied: watch::Sender<AppliedImage>,
    leader: watch::Sender<LeaderState>,
    timings: ObserverTimings,
) -> JoinHandle<()> {
    tokio::spawn(follow(client, applied, leader, timings))
}

async fn follow(
    client: Arc<ControllerClient>,
    applied: watch::Sender<AppliedImage>,
    leader: watch::Sender<LeaderState>,
    timings: ObserverTimings,
) {
    let voters = client.voter_ids();
    if voters.is_empty() {
        tracing::error!("an observer with no voters to follow");
        return;
    }
    let mut rotation = voters.iter().copied().cycle();
    let mut target: Option<NodeId> = None;
    let mut failures_in_a_row = 0usize;
    loop {
        let node = match target {
            Some(node) => node,
            None => rotation.next().unwrap_or(voters[0]),
        };
        let after = applied.borrow().index;
        let answer = client
            .fetch_metadata(node, after, timings.max_wait)
            .await
            .map_err(|e| e.to_string())
            .and_then(|answer| {
                apply(&applied, after, answer.update)?;
                Ok(LeaderState {
                    leader: answer.leader,
                    term: answer.term,
                })
            });
        match answer {
            Ok(state) => {
                failures_in_a_row = 0;
                learn_leader(&leader, state);
                // The active controller has everything first; without one, ask around.
                target = state.leader.filter(|leader| voters.contains(leader));
            }
            Err(error) => {
                tracing::debug!(voter = node, %error, "metadata fetch failed; trying another voter");
                // The leader we were told of does not answer: say so until a voter names one.
                leader.send_if_modified(|current| {
                    let stale = current.leader == Some(node);
                    if stale {
                        current.leader = None;
                    }
                    stale
                });
                target = None;
                failures_in_a_row += 1;
                if failures_in_a_row >= voters.len() {
                    failures_in_a_row = 0;
                    tracing::warn!(%error, "no voter of the metadata quorum answers a metadata fetch");
                    tokio::time::sleep(timings.backoff).await;
                }
            }
        }
    }
}

/// Takes a voter's view of the leader unless it is older than the one we have.
fn learn_leader(leader: &watch::Sender<LeaderState>, state: LeaderState) {
    leader.send_if_modified(|current| {
        if state.term < current.term || *current == state {
            return false;
        }
        tracing::info!(leader = ?state.leader, term = state.term, "metadata quorum leader changed");
        *current = state;
        true
    });
}

/// Applies a voter's answer on top of what was applied up to `after`.
fn apply(
    applied: &watch::Sender<AppliedImage>,
    after: Option<LogIndex>,
    update: MetadataUpdate,
) -> Result<(), String> {
    match update {
        MetadataUpdate::UpToDate { .. } => Ok(()),
        MetadataUpdate::Entries(entries) => {
            let Some((last, _)) = entries.last() else {
                return Ok(());
            };
            let last = *last;
            let first = after.map_or(0, |after| after + 1);
            for (expected, (index, _)) in (first..).zip(entries.iter()) {
                if *index != expected {
                    return Err(format!(
                        "metadata entry {index} where {expected} was due; not applied"
                    ));
                }
            }
            let mut image = applied.borrow().image.clone();
            let next = Arc::make_mut(&mut image);
            for (_, batch) in &entries {
                for record in &batch.0 {
                    next.apply(record);
                }
            }
            applied.send_replace(AppliedImage {
                image,
                index: Some(last),
            });
            Ok(())
        }
        MetadataUpdate::Image { index, image } => {
            // A voter behind the one we heard from last has nothing newer.
            if after.is_some_and(|after| index <= after) {
                return Ok(());
            }
            applied.send_replace(AppliedImage {
                image: Arc::new(*image),
                index: Some(index),
            });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metadata::image::MetadataImage;
    use crate::metadata::quorum::MetadataBatch;
    use crate::metadata::records::MetadataRecord;

    fn cluster(id: &str) -> MetadataBatch {
        MetadataBatch(vec![MetadataRecord::Cluster {
            cluster_id: id.into(),
        }])
    }

    fn empty() -> watch::Sender<AppliedImage> {
        watch::Sender::new(AppliedImage {
            image: Arc::new(MetadataImage::default()),
            index: None,
        })
    }

    #[test]
    fn entries_apply_in_order_and_gaps_or_repeats_are_refused() {
        let applied = empty();
        let first =
            MetadataUpdate::Entries(vec![(0, MetadataBatch::default()), (1, cluster("c1"))]);
        apply(&applied, None, first).unwrap();
        assert_eq!(applied.borrow().index, Some(1));
        assert_eq!(applied.borrow().image.cluster_id(), Some("c1"));

        // A gap (3 after 1) or a repeat (1 again) changes nothing.
        for bad in [vec![(3, cluster("c3"))], vec![(1, cluster("again"))]] {
            assert!(apply(&applied, Some(1), MetadataUpdate::Entries(bad)).is_err());
            assert_eq!(applied.borrow().index, Some(1));
            assert_eq!(applied.borrow().image.cluster_id(), Some("c1"));
        }
    }

    #[test]
    fn an_image_replaces_only_an_older_state() {
        let applied = empty();
        let mut image = MetadataImage::default();
        image.apply(&MetadataRecord::Cluster {
            cluster_id: "new".into(),
        });
        apply(
            &applied,
            Some(4),
            MetadataUpdate::Image {
                index: 3,
                image: Box::new(image.clone()),
            },
        )
        .unwrap();
        assert_eq!(applied.borrow().index, None, "older than what we have");
        apply(
            &applied,
            Some(4),
            MetadataUpdate::Image {
                index: 9,
                image: Box::new(image),
            },
        )
        .unwrap();
        assert_eq!(applied.borrow().index, Some(9));
        assert_eq!(applied.borrow().image.cluster_id(), Some("new"));
    }

    #[test]
    fn a_leader_from_an_older_term_is_ignored() {
        let leader = watch::Sender::new(LeaderState {
            leader: Some(2),
            term: 5,
        });
        learn_leader(
            &leader,
            LeaderState {
                leader: Some(1),
                term: 4,
            },
        );
        assert_eq!(leader.borrow().leader, Some(2));
        learn_leader(
            &leader,
            LeaderState {
                leader: Some(3),
                term: 6,
            },
        );
        assert_eq!(
            *leader.borrow(),
            LeaderState {
                leader: Some(3),
                term: 6
            }
        );
    }
}
