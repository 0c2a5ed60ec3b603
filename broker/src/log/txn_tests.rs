//! Transactions in the log: the last stable offset, markers, the aborted-transaction index,
//! and their recovery after a crash, on leaders and followers.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, TRANSACTIONAL_BIT};
use super::test_util::producer_batch;
use super::{AbortedTxn, ControlRecordType, LogConfig, LogError, PartitionLog};

const HW: i64 = i64::MAX;

fn open(dir: &Path) -> Arc<PartitionLog> {
    PartitionLog::open(
        dir.to_path_buf(),
        LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 256,
            ..LogConfig::default()
        },
    )
    .unwrap()
}

/// A transactional batch of `n` records of producer `pid`, as a transactional producer sends it.
fn txn_batch(pid: i64, epoch: i16, base_seq: i32, n: i64) -> Bytes {
    let mut b = producer_batch(pid, epoch, base_seq, n, 100).to_vec();
    let h = BatchHeader::parse(&b).unwrap();
    batch::set_attributes(&mut b, h.attributes | TRANSACTIONAL_BIT);
    batch::update_crc(&mut b);
    Bytes::from(b)
}

/// The offset after the last batch in fetched bytes.
fn next_offset_after(mut bytes: &[u8]) -> i64 {
    let mut next = -1;
    while let Some(h) = BatchHeader::parse(bytes) {
        next = h.next_offset();
        bytes = &bytes[h.total_size().unwrap()..];
    }
    next
}

fn marker(log: &PartitionLog, pid: i64, epoch: i16, kind: ControlRecordType) -> i64 {
    log.append_txn_marker(pid, epoch, 0, kind, None, 200)
        .unwrap()
        .base_offset
}

fn aborted(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    }
}

#[test]
fn an_open_transaction_holds_the_last_stable_offset_until_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(producer_batch(1, 0, 0, 3, 100), 100).unwrap(); // 0..=2, not transactional
    log.append(txn_batch(2, 0, 0, 2), 100).unwrap(); // 3..=4
    log.append(producer_batch(1, 0, 3, 1, 100), 100).unwrap(); // 5
    assert_eq!(log.first_unstable_offset(), Some(3));
    let (records, lso, _) = log.read_committed(0, 1 << 20, HW).unwrap();
    assert_eq!(lso, 3);
    assert_eq!(next_offset_after(&records), 3);
    assert_eq!(marker(&log, 2, 0, ControlRecordType::Commit), 6);
    assert_eq!(log.first_unstable_offset(), None);
    let (_, lso, aborted) = log.read_committed(0, 1 << 20, 7).unwrap();
    assert_eq!((lso, aborted), (7, vec![]));
}

#[test]
fn the_high_watermark_caps_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(producer_batch(1, 0, 0, 3, 100), 100).unwrap();
    let (_, lso, _) = log.read_committed(0, 1 << 20, 2).unwrap();
    assert_eq!(lso, 2);
}

#[test]
fn an_abort_is_indexed_and_named_to_reads_that_overlap_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(txn_batch(7, 0, 0, 2), 100).unwrap(); // 0..=1
    log.append(txn_batch(8, 0, 0, 2), 100).unwrap(); // 2..=3
    assert_eq!(marker(&log, 7, 0, ControlRecordType::Abort), 4);
    // Producer 8 still holds the LSO at 2.
    assert_eq!(log.first_unstable_offset(), Some(2));
    assert_eq!(log.aborted_transactions(0, 10), vec![aborted(7, 0, 4, 2)]);
    marker(&log, 8, 0, ControlRecordType::Abort);
    let (_, lso, list) = log.read_committed(0, 1 << 20, HW).unwrap();
    assert_eq!(lso, HW);
    assert_eq!(list, vec![aborted(7, 0, 4, 2), aborted(8, 2, 5, 6)]);
    // A read starting after both markers names neither.
    log.append(producer_batch(1, 0, 0, 1, 100), 100).unwrap();
    assert_eq!(log.read_committed(6, 1 << 20, HW).unwrap().2, vec![]);
}

#[test]
fn clients_may_not_write_markers_nor_write_outside_their_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let forged = super::control_batch::marker_batch(7, 0, 0, ControlRecordType::Commit, 0).unwrap();
    assert!(matches!(
        log.append(forged, 1),
        Err(LogError::InvalidRecord(_))
    ));
    log.append(txn_batch(7, 0, 0, 2), 100).unwrap();
    assert!(matches!(
        log.append(producer_batch(7, 0, 2, 1, 100), 100),
        Err(LogError::InvalidTxnState(_))
    ));
}

#[test]
fn a_marker_of_a_fenced_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(txn_batch(7, 3, 0, 2), 100).unwrap();
    let stale = log.append_txn_marker(7, 2, 0, ControlRecordType::Commit, None, 1);
    assert!(matches!(stale, Err(LogError::InvalidProducerEpoch { .. })));
    // A fencing abort at a bumped epoch ends it, and the old epoch is fenced from then on.
    marker(&log, 7, 4, ControlRecordType::Abort);
    assert_eq!(log.first_unstable_offset(), None);
    assert!(matches!(
        log.append(txn_batch(7, 3, 2, 1), 100),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
}

/// Writes, over several segments: an aborted transaction spanning a roll, a committed one, and
/// one left open; then "crashes" (drops the log without closing it).
fn crash_with_transactions(dir: &Path) {
    let log = open(dir);
    log.append(txn_batch(7, 0, 0, 10), 100).unwrap(); // 0..=9
    for i in 0..6 {
        log.append(producer_batch(1, 0, i * 10, 10, 100), 100)
            .unwrap();
    }
    marker(&log, 7, 0, ControlRecordType::Abort); // 70
    log.append(txn_batch(8, 0, 0, 5), 100).unwrap(); // 71..=75
    marker(&log, 8, 0, ControlRecordType::Commit); // 76
    log.append(txn_batch(9, 0, 0, 5), 100).unwrap(); // 77..=81
    assert!(
        std::fs::read_dir(dir).unwrap().count() > 6,
        "the test needs several segments"
    );
}

#[test]
fn recovery_rebuilds_open_transactions_and_the_aborted_index() {
    let dir = tempfile::tempdir().unwrap();
    crash_with_transactions(dir.path());
    // The index files of the active segment and the producer snapshots are lost too.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".snapshot") || name.ends_with(".txnindex") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let log = open(dir.path());
    assert_eq!(log.first_unstable_offset(), Some(77));
    assert_eq!(
        log.aborted_transactions(0, 100),
        vec![aborted(7, 0, 70, 71)]
    );
    // Closing writes a snapshot holding the open transaction; the next open starts from it.
    log.close().unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.first_unstable_offset(), Some(77));
    assert_eq!(
        log.aborted_transactions(0, 100),
        vec![aborted(7, 0, 70, 71)]
    );
    marker(&log, 9, 0, ControlRecordType::Abort);
    assert_eq!(log.first_unstable_offset(), None);
    assert_eq!(log.aborted_transactions(0, 100).len(), 2);
}

#[test]
fn recovery_drops_index_entries_of_markers_the_crash_took_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.append(txn_batch(7, 0, 0, 2), 100).unwrap();
        marker(&log, 7, 0, ControlRecordType::Abort); // 2
    }
    // The marker was torn off the log, but its index entry reached the disk.
    let path = dir.path().join("00000000000000000000.log");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 10).unwrap();
    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.aborted_transactions(0, 100), vec![]);
    assert_eq!(log.first_unstable_offset(), Some(0));
}

#[test]
fn followers_track_transactions_from_replicated_batches_and_truncation_undoes_them() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"));
    let follower = open(&dir.path().join("follower"));
    leader.append(txn_batch(7, 0, 0, 2), 100).unwrap();
    marker(&leader, 7, 0, ControlRecordType::Abort);
    leader.append(txn_batch(8, 0, 0, 2), 100).unwrap();
    follower
        .append_as_follower(leader.read(0, 1 << 20).unwrap())
        .unwrap();
    assert_eq!(follower.first_unstable_offset(), Some(3));
    assert_eq!(
        follower.aborted_transactions(0, 10),
        vec![aborted(7, 0, 2, 3)]
    );
    follower.truncate_to(2).unwrap();
    assert_eq!(follower.first_unstable_offset(), Some(0));
    assert_eq!(follower.aborted_transactions(0, 10), vec![]);
}

#[test]
fn producers_with_open_transactions_are_described() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(txn_batch(7, 1, 0, 2), 100).unwrap();
    let producers = log.active_producers();
    assert_eq!(producers.len(), 1);
    assert_eq!(
        (
            producers[0].producer_epoch,
            producers[0].last_sequence,
            producers[0].current_txn_start_offset
        ),
        (1, 1, 0)
    );
}

#[test]
fn compaction_drops_aborted_records_and_keeps_the_committed_values_they_would_hide() {
    use super::test_util::{encode_batch, kv, read_all_records, records};
    use super::CleanupPolicy;
    use kafka_protocol::records::Compression;

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 256,
        cleanup_policy: CleanupPolicy::Compact,
        min_compaction_lag_ms: 0,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
    log.append(producer_batch(1, 0, 0, 3, 100), 100).unwrap(); // k0..k2 at 0..=2
    log.append(txn_batch(7, 0, 0, 3), 100).unwrap(); // k0..k2 at 3..=5
    marker(&log, 7, 0, ControlRecordType::Abort); // 6
    let filler = |from: i64| encode_batch(&records(from, 5, 0), Compression::None);
    for i in 0..12 {
        log.append(filler(100 + i * 5), 100).unwrap();
    }
    // An open transaction's records must not hide committed values either.
    let open = log.append(txn_batch(8, 0, 0, 1), 100).unwrap().base_offset; // k0
    for i in 12..24 {
        log.append(filler(100 + i * 5), 100).unwrap();
    }
    log.run_maintenance(1_000).unwrap();
    let kept: Vec<i64> = kv(&read_all_records(&log))
        .into_iter()
        .filter(|(_, key, _)| ["k0", "k1", "k2"].contains(&key.as_str()))
        .map(|(offset, _, _)| offset)
        .collect();
    assert_eq!(
        kept,
        vec![0, 1, 2, open],
        "aborted 3..=5 dropped, committed 0..=2 kept"
    );
}
