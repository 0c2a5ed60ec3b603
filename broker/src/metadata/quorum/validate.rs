//! Structural checks on Raft RPCs from other members, before openraft sees them.
//!
//! openraft trusts its peers: it assumes the invariants a correct leader or candidate keeps
//! (entries with consecutive indexes, no entry from a term after the sender's vote) and
//! asserts them, which would be a panic, or a corrupted log in a build without the asserts.
//! A buggy or confused member must cost at most its connection, so whatever a correct sender
//! can never send is refused here. Claimed sender ids are checked too: a leader or candidate
//! speaks for itself only.

use super::type_config::NodeId;
use super::wire::RpcRequest;

/// Why a request is refused, or `Ok` if it may go to openraft.
pub fn check_request(from: NodeId, request: &RpcRequest) -> Result<(), String> {
    match request {
        RpcRequest::AppendEntries(rpc) => {
            let vote = &rpc.vote.leader_id;
            if vote.node_id != from {
                return Err(format!(
                    "node {from} sent entries as leader {}",
                    vote.node_id
                ));
            }
            let prev_term = rpc.prev_log_id.map(|l| l.leader_id.term);
            if prev_term.is_some_and(|t| t > vote.term) {
                return Err("previous log id from a later term than the leader's".into());
            }
            let mut next = rpc.prev_log_id.map_or(0, |l| l.index.saturating_add(1));
            let mut term = prev_term.unwrap_or(0);
            for entry in &rpc.entries {
                if entry.log_id.index != next {
                    return Err(format!(
                        "entry index {} where {next} was due",
                        entry.log_id.index
                    ));
                }
                if entry.log_id.leader_id.term < term || entry.log_id.leader_id.term > vote.term {
                    return Err(format!(
                        "entry {} has term {} out of order",
                        entry.log_id.index, entry.log_id.leader_id.term
                    ));
                }
                term = entry.log_id.leader_id.term;
                next = next.saturating_add(1);
            }
            Ok(())
        }
        RpcRequest::Vote(rpc) => {
            let vote = &rpc.vote.leader_id;
            if vote.node_id != from {
                return Err(format!("node {from} asked votes for {}", vote.node_id));
            }
            if rpc
                .last_log_id
                .is_some_and(|l| l.leader_id.term > vote.term)
            {
                return Err("last log id from a later term than the candidacy".into());
            }
            Ok(())
        }
        RpcRequest::InstallSnapshot(rpc) => {
            let vote = &rpc.vote.leader_id;
            if vote.node_id != from {
                return Err(format!(
                    "node {from} sent a snapshot as leader {}",
                    vote.node_id
                ));
            }
            if rpc
                .meta
                .last_log_id
                .is_some_and(|l| l.leader_id.term > vote.term)
            {
                return Err("snapshot from a later term than the leader's".into());
            }
            Ok(())
        }
        RpcRequest::Application(_)
        | RpcRequest::FetchMetadata { .. }
        | RpcRequest::SaslHandshake { .. }
        | RpcRequest::SaslAuthenticate(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::quorum::type_config::{Entry, LogId};
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::{CommittedLeaderId, EntryPayload, Vote};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn append(prev: Option<(u64, u64)>, entries: Vec<Entry>) -> RpcRequest {
        RpcRequest::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: prev.map(|(t, i)| LogId::new(CommittedLeaderId::new(t, 1), i)),
            leader_commit: None,
            entries,
        })
    }

    #[test]
    fn what_a_correct_leader_sends_passes_and_the_rest_is_refused() {
        assert!(check_request(1, &append(None, vec![entry(1, 0), entry(2, 1)])).is_ok());
        assert!(check_request(1, &append(Some((2, 4)), vec![entry(3, 5), entry(3, 6)])).is_ok());
        assert!(check_request(1, &append(Some((2, 4)), vec![])).is_ok());
        // Someone else's leadership.
        assert!(check_request(2, &append(None, vec![])).is_err());
        // A gap, a repeat, a term going back, a term from the future.
        assert!(check_request(1, &append(Some((2, 4)), vec![entry(3, 6)])).is_err());
        assert!(check_request(1, &append(None, vec![entry(1, 0), entry(1, 0)])).is_err());
        assert!(check_request(1, &append(Some((3, 4)), vec![entry(2, 5)])).is_err());
        assert!(check_request(1, &append(None, vec![entry(4, 0)])).is_err());
        assert!(check_request(1, &append(Some((4, 4)), vec![])).is_err());
        // An index at the end of the range does not overflow.
        assert!(check_request(1, &append(Some((1, u64::MAX)), vec![entry(1, 0)])).is_err());

        let vote = |node, last: Option<u64>| {
            RpcRequest::Vote(VoteRequest::new(
                Vote::new(5, node),
                last.map(|t| LogId::new(CommittedLeaderId::new(t, 1), 9)),
            ))
        };
        assert!(check_request(2, &vote(2, Some(4))).is_ok());
        assert!(check_request(2, &vote(3, Some(4))).is_err());
        assert!(check_request(2, &vote(2, Some(6))).is_err());
        assert!(check_request(9, &RpcRequest::Application(vec![])).is_ok());
    }

    proptest::proptest! {
        /// Whatever bytes arrive, decoding and checking them returns; it never panics.
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder_or_the_checks(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(frame) = serde_json::from_slice::<crate::metadata::quorum::wire::RequestFrame>(&bytes) {
                let _ = check_request(frame.from, &frame.body);
            }
        }

        /// Well-formed JSON with arbitrary numbers in the places the checks read.
        #[test]
        fn arbitrary_append_entries_never_panic_the_checks(
            from in 0u64..4,
            leader in 0u64..4,
            term in proptest::num::u64::ANY,
            prev in proptest::option::of((proptest::num::u64::ANY, proptest::num::u64::ANY)),
            entries in proptest::collection::vec((proptest::num::u64::ANY, proptest::num::u64::ANY), 0..8),
        ) {
            let rpc = RpcRequest::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(term, leader),
                prev_log_id: prev.map(|(t, i)| LogId::new(CommittedLeaderId::new(t, leader), i)),
                leader_commit: None,
                entries: entries
                    .into_iter()
                    .map(|(t, i)| Entry {
                        log_id: LogId::new(CommittedLeaderId::new(t, leader), i),
                        payload: EntryPayload::Blank,
                    })
                    .collect(),
            });
            let _ = check_request(from, &rpc);
        }
    }
}
