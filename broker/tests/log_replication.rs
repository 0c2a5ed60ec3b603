//! The partition log's replication API driven the way the replica layer drives it: leaders
//! assign epochs and append, followers truncate by leader epoch (KIP-101/KIP-279, never to the
//! high watermark) and append what they fetch. Scenario names follow Kafka's own tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use millrace_broker::log::{
    EpochEntry, LogConfig, LogError, PartitionLog, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET,
};
use millrace_testkit::records::{batch, decode_records, record};

fn config() -> LogConfig {
    LogConfig {
        // Small segments, so that truncation crosses segment boundaries.
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Arc<PartitionLog> {
    PartitionLog::open(dir.to_path_buf(), config()).unwrap()
}

/// A batch of `n` records whose values name `tag`.
fn records(tag: &str, n: usize) -> Bytes {
    let recs: Vec<_> = (0..n)
        .map(|i| record(&format!("k{i}"), &format!("{tag}-{i}"), 1000 + i as i64))
        .collect();
    batch(&recs, Compression::None)
}

/// Every value in the log, in offset order.
fn values(log: &PartitionLog) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let data = log.read(offset, 1 << 20).unwrap();
        for r in decode_records(data) {
            if r.offset >= offset {
                offset = r.offset + 1;
                out.push(String::from_utf8_lossy(r.value.as_ref().unwrap()).into_owned());
            }
        }
    }
    out
}

/// The whole log as the bytes of its batches, read one by one.
fn batches(log: &PartitionLog) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let b = log.read(offset, 1).unwrap();
        // baseOffset + lastOffsetDelta + 1
        let base = i64::from_be_bytes(b[0..8].try_into().unwrap());
        let delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        offset = base + i64::from(delta) + 1;
        out.push(b);
    }
    out
}

/// The follower's side of KIP-101/KIP-279: ask the leader where the follower's latest epoch
/// ends and truncate there, repeating while the leader answers with an older epoch than the
/// one asked about (KAFKA-7164: after every epoch change, not only the first).
fn truncate_by_epoch(follower: &PartitionLog, leader: &PartitionLog) {
    loop {
        let Some(epoch) = follower.latest_epoch() else {
            return;
        };
        let (leader_epoch, leader_end) = leader.end_offset_for_epoch(epoch);
        assert_ne!(
            leader_end, UNDEFINED_EPOCH_OFFSET,
            "leader knows no epoch <= {epoch}"
        );
        let follower_end = follower.log_end_offset();
        if leader_epoch == epoch {
            follower.truncate_to(leader_end.min(follower_end)).unwrap();
            return;
        }
        // The leader never had `epoch`: cut to where the follower's copy of the leader's
        // epoch ends, and ask again with what is left.
        let (_, own_end) = follower.end_offset_for_epoch(leader_epoch);
        follower
            .truncate_to(own_end.min(leader_end).min(follower_end))
            .unwrap();
    }
}

/// Fetches from the leader until the follower has everything.
fn catch_up(follower: &PartitionLog, leader: &PartitionLog) {
    while follower.log_end_offset() < leader.log_end_offset() {
        let data = leader.read(follower.log_end_offset(), 700).unwrap();
        follower.append_as_follower(data).unwrap();
    }
}

fn follow(follower: &PartitionLog, leader: &PartitionLog) {
    truncate_by_epoch(follower, leader);
    catch_up(follower, leader);
}

fn e(epoch: i32, start_offset: i64) -> EpochEntry {
    EpochEntry {
        epoch,
        start_offset,
    }
}

#[test]
fn should_follow_leader_epoch_basic_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = (open(&a_dir), open(&b_dir));
    a.assign_leader_epoch(1).unwrap();
    for i in 0..6 {
        a.append_as_leader(records(&format!("e1b{i}"), 5), 0, 1)
            .unwrap();
    }
    follow(&b, &a);
    assert_eq!(batches(&b), batches(&a));
    // B takes over in epoch 2, A follows.
    b.assign_leader_epoch(2).unwrap();
    for i in 0..4 {
        b.append_as_leader(records(&format!("e2b{i}"), 5), 0, 2)
            .unwrap();
    }
    follow(&a, &b);
    assert_eq!(batches(&a), batches(&b));
    assert_eq!(a.epoch_entries(), vec![e(1, 0), e(2, 30)]);
    assert_eq!(a.epoch_entries(), b.epoch_entries());
    // Both survive a restart unchanged.
    drop((a, b));
    let (a, b) = (open(&a_dir), open(&b_dir));
    assert_eq!(batches(&a), batches(&b));
    assert_eq!(a.epoch_entries(), b.epoch_entries());
    assert_eq!(values(&a).len(), 50);
}

/// KIP-101's motivating case: truncating to the high watermark would keep a message the new
/// leader never had, and the logs would diverge.
#[test]
fn should_not_allow_divergent_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = (open(&a_dir), open(&b_dir));
    a.assign_leader_epoch(1).unwrap();
    a.append_as_leader(records("m1", 10), 0, 1).unwrap();
    follow(&b, &a);
    // m2 reaches A only; both restart.
    a.append_as_leader(records("m2", 10), 0, 1).unwrap();
    drop((a, b));
    let (a, b) = (open(&a_dir), open(&b_dir));
    // B is elected and writes m3 at the offsets where A has m2.
    b.assign_leader_epoch(2).unwrap();
    b.append_as_leader(records("m3", 5), 0, 2).unwrap();
    // A asks where its epoch 1 ends on B: at 10, so m2 goes.
    assert_eq!(b.end_offset_for_epoch(1), (1, 10));
    follow(&a, &b);
    assert_eq!(batches(&a), batches(&b));
    let v = values(&a);
    assert_eq!(v.len(), 15);
    assert!(v[10].starts_with("m3"));
    assert_eq!(a.epoch_entries(), vec![e(1, 0), e(2, 10)]);
}

/// KAFKA-7164 and KAFKA-10706: leaders change twice without writing; the follower's epoch
/// without records must go, or its fetches diverge forever.
#[test]
fn should_survive_fast_leader_change() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir.path().join("a")), open(&dir.path().join("b")));
    a.assign_leader_epoch(1).unwrap();
    for i in 0..3 {
        a.append_as_leader(records(&format!("x{i}"), 10), 0, 1)
            .unwrap();
    }
    follow(&b, &a);
    // B leads epoch 2 and writes nothing; A leads epoch 3.
    b.assign_leader_epoch(2).unwrap();
    a.assign_leader_epoch(3).unwrap();
    assert_eq!(a.end_offset_for_epoch(2), (1, 30));
    follow(&b, &a);
    assert_eq!(b.epoch_entries(), vec![e(1, 0)]);
    a.append_as_leader(records("y", 10), 0, 3).unwrap();
    follow(&b, &a);
    assert_eq!(b.epoch_entries(), vec![e(1, 0), e(3, 30)]);
    assert_eq!(batches(&b), batches(&a));
}

/// The replicas of a partition through several leader changes, each writing a little, with
/// an unclean restart of every replica in between: offsets never go backwards on a replica
/// that was in sync, and all logs end identical.
#[test]
fn offsets_should_not_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..3).map(|i| dir.path().join(format!("r{i}"))).collect();
    let mut logs: Vec<_> = paths.iter().map(|p| open(p)).collect();
    for epoch in 1..=6 {
        let leader = (epoch as usize) % 3;
        logs[leader].assign_leader_epoch(epoch).unwrap();
        for i in 0..(epoch as usize % 3 + 1) {
            logs[leader]
                .append_as_leader(records(&format!("e{epoch}-{i}"), 3 + i), 0, epoch)
                .unwrap();
        }
        // One follower keeps up, the other only every other epoch.
        for f in 0..3 {
            if f != leader && (f == (leader + 1) % 3 || epoch % 2 == 0) {
                let before = logs[f].log_end_offset();
                follow(&logs[f], &logs[leader]);
                assert!(logs[f].log_end_offset() >= before);
            }
        }
        drop(std::mem::take(&mut logs));
        logs = paths.iter().map(|p| open(p)).collect();
    }
    let leader = 6 % 3;
    for f in 0..3 {
        if f != leader {
            follow(&logs[f], &logs[leader]);
            assert_eq!(batches(&logs[f]), batches(&logs[leader]));
            assert_eq!(logs[f].log_end_offset(), logs[leader].log_end_offset());
        }
    }
}

#[test]
fn consumers_read_up_to_the_high_watermark_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..4 {
        log.append_as_leader(records(&format!("b{i}"), 5), 0, 1)
            .unwrap();
    }
    let hw = 10;
    let visible = decode_records(log.read_up_to(0, 1 << 20, hw).unwrap());
    assert_eq!(visible.len(), 10);
    assert!(log.read_up_to(hw, 1 << 20, hw).unwrap().is_empty());
    assert!(log.read_up_to(15, 1 << 20, hw).unwrap().is_empty());
    assert!(matches!(
        log.read_up_to(21, 1 << 20, hw),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn offset_for_leader_epoch_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.end_offset_for_epoch(0), (UNDEFINED_EPOCH, -1));
    log.truncate_fully_and_start_at(100).unwrap();
    log.assign_leader_epoch(5).unwrap();
    log.append_as_leader(records("a", 10), 0, 5).unwrap();
    assert_eq!(log.end_offset_for_epoch(5), (5, 110));
    // Below the first epoch: where this log's history starts (KIP-279).
    assert_eq!(log.end_offset_for_epoch(3), (3, 100));
    assert_eq!(log.end_offset_for_epoch(6), (UNDEFINED_EPOCH, -1));
    assert_eq!(
        log.end_offset_for_epoch(UNDEFINED_EPOCH),
        (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    );
}

/// One leader term of the convergence test.
#[derive(Clone, Debug)]
struct Term {
    /// Which replica is elected (any of them: unclean elections included).
    leader: usize,
    /// Batches it writes.
    writes: usize,
    /// Fetches each other replica gets to make during the term (0: it is offline).
    fetches: [usize; 3],
    /// Whether every replica restarts (without a clean shutdown) afterwards.
    restart: bool,
}

fn term() -> impl proptest::strategy::Strategy<Value = Term> {
    use proptest::prelude::*;
    (
        0usize..3,
        0usize..4,
        [0usize..4, 0usize..4, 0usize..4],
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(leader, writes, fetches, restart)| Term {
            leader,
            writes,
            fetches,
            restart,
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Whatever the sequence of leaders (clean or not), how far followers got and restarts,
    /// once every follower truncates by leader epoch and catches up with the last leader, all
    /// logs are byte for byte the last leader's.
    #[test]
    fn replicas_converge_under_any_leader_sequence(terms in proptest::collection::vec(term(), 1..16)) {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..3).map(|i| dir.path().join(format!("r{i}"))).collect();
        let mut logs: Vec<_> = paths.iter().map(|p| open(p)).collect();
        let mut leader = 0;
        for (i, t) in terms.iter().enumerate() {
            let epoch = i as i32 + 1;
            leader = t.leader;
            proptest::prop_assert!(logs[leader].assign_leader_epoch(epoch).unwrap());
            for w in 0..t.writes {
                logs[leader]
                    .append_as_leader(records(&format!("e{epoch}w{w}"), 1 + w), 0, epoch)
                    .unwrap();
            }
            for f in (0..3).filter(|&f| f != leader && t.fetches[f] > 0) {
                truncate_by_epoch(&logs[f], &logs[leader]);
                for _ in 0..t.fetches[f] {
                    let from = logs[f].log_end_offset();
                    if from >= logs[leader].log_end_offset() {
                        break;
                    }
                    let data = logs[leader].read(from, 300).unwrap();
                    logs[f].append_as_follower(data).unwrap();
                }
            }
            if t.restart {
                drop(std::mem::take(&mut logs));
                logs = paths.iter().map(|p| open(p)).collect();
            }
        }
        for f in (0..3).filter(|&f| f != leader) {
            follow(&logs[f], &logs[leader]);
            proptest::prop_assert_eq!(batches(&logs[f]), batches(&logs[leader]));
        }
    }
}
