//! Tests of the log's replication API: leader epochs, follower appends, truncation, reads
//! bounded by the high watermark, and recovery keeping the leader epoch cache consistent.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::batch::{crc_matches, BatchHeader};
use super::leader_epoch_cache::LEADER_EPOCH_FILE;
use super::test_util::{batch_of, encode_batch, producer_batch, read_all_records, records};
use super::{EpochEntry, LogConfig, LogError, PartitionLog, TimestampType};
use kafka_protocol::records::Compression;

fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// A config whose segments hold `batches` batches of `batch_of(10, 50, _)`.
fn small_segments(batches: u64) -> LogConfig {
    LogConfig {
        segment_bytes: batch_of(10, 50, 0).len() as u64 * batches,
        ..config()
    }
}

fn open(dir: &Path, config: LogConfig) -> Arc<PartitionLog> {
    PartitionLog::open(dir.to_path_buf(), config).unwrap()
}

fn e(epoch: i32, start_offset: i64) -> EpochEntry {
    EpochEntry {
        epoch,
        start_offset,
    }
}

/// The headers of the batches in fetched bytes.
fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = BatchHeader::parse(&bytes[pos..]).unwrap();
        assert!(crc_matches(&bytes[pos..pos + h.total_size().unwrap()], &h));
        pos += h.total_size().unwrap();
        out.push(h);
    }
    out
}

/// The header of the batch holding `offset`.
fn header_at(log: &PartitionLog, offset: i64) -> BatchHeader {
    headers(&log.read(offset, 1).unwrap())[0]
}

/// Every offset from the log start to the end reads the batch holding it.
fn assert_every_offset_readable(log: &PartitionLog) {
    for offset in log.log_start_offset()..log.log_end_offset() {
        let h = header_at(log, offset);
        assert!(
            h.base_offset <= offset && offset <= h.last_offset(),
            "offset {offset} read batch {}..={}",
            h.base_offset,
            h.last_offset()
        );
    }
    assert!(log.read(log.log_end_offset(), 1 << 20).unwrap().is_empty());
}

/// Replicates `leader` into `follower` the way a fetcher does: read from the follower's log
/// end, append what came back.
fn replicate(leader: &PartitionLog, follower: &PartitionLog, max_bytes: usize) {
    while follower.log_end_offset() < leader.log_end_offset() {
        let data = leader.read(follower.log_end_offset(), max_bytes).unwrap();
        follower.append_as_follower(data).unwrap();
    }
}

/// The whole log as batches, each read on its own: equal for byte-identical logs.
fn all_batches(log: &PartitionLog) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let b = log.read(offset, 1).unwrap();
        offset = headers(&b)[0].next_offset();
        out.push(b);
    }
    out
}

#[test]
fn append_as_leader_stamps_the_epoch_and_records_new_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config());
    assert_eq!(log.latest_epoch(), None);
    log.append_as_leader(batch_of(10, 20, 0), 0, 3).unwrap();
    log.append_as_leader(batch_of(10, 20, 0), 0, 3).unwrap();
    let info = log.append_as_leader(batch_of(5, 20, 0), 0, 5).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (20, 24));
    assert_eq!(header_at(&log, 0).partition_leader_epoch, 3);
    assert_eq!(header_at(&log, 15).partition_leader_epoch, 3);
    assert_eq!(header_at(&log, 20).partition_leader_epoch, 5);
    assert_eq!(log.epoch_entries(), vec![e(3, 0), e(5, 20)]);
    assert_eq!(log.latest_epoch(), Some(5));
    // A stale leader writes nothing.
    assert!(matches!(
        log.append_as_leader(batch_of(1, 20, 0), 0, 4),
        Err(LogError::FencedLeaderEpoch {
            epoch: 4,
            latest: 5
        })
    ));
    assert!(matches!(
        log.append_as_leader(batch_of(1, 20, 0), 0, -1),
        Err(LogError::InvalidRecord(_))
    ));
    assert_eq!(log.log_end_offset(), 25);
    // A plain append stamps the latest epoch.
    log.append(batch_of(1, 20, 0), 0).unwrap();
    assert_eq!(header_at(&log, 25).partition_leader_epoch, 5);
    // Records decode (CRC intact after the stamp).
    assert_eq!(read_all_records(&log).len(), 26);
}

#[test]
fn plain_appends_write_epoch_zero_and_the_cache_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config());
    log.append(batch_of(3, 5, 0), 0).unwrap();
    let file = dir.path().join(LEADER_EPOCH_FILE);
    let written = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    for _ in 0..5 {
        log.append(batch_of(3, 5, 0), 0).unwrap();
    }
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        written
    );
    assert_eq!(header_at(&log, 10).partition_leader_epoch, 0);
    assert_eq!(log.epoch_entries(), vec![e(0, 0)]);
}

#[test]
fn epochs_without_records_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), config());
        log.append_as_leader(batch_of(10, 20, 0), 0, 1).unwrap();
        assert!(log.assign_leader_epoch(2).unwrap());
        assert!(log.assign_leader_epoch(4).unwrap());
        assert!(!log.assign_leader_epoch(3).unwrap());
        // Epoch 2 never wrote anything before 4 began at the same offset.
        assert_eq!(log.epoch_entries(), vec![e(1, 0), e(4, 10)]);
        // Dropped without close.
    }
    let log = open(dir.path(), config());
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(4, 10)]);
    assert_eq!(log.end_offset_for_epoch(4), (4, 10));
    assert_eq!(log.end_offset_for_epoch(1), (1, 10));
    assert_eq!(log.end_offset_for_epoch(3), (1, 10));
    assert_eq!(log.end_offset_for_epoch(0), (0, 0));
    assert_eq!(log.end_offset_for_epoch(5), (-1, -1));
    assert_eq!(log.end_offset_for_epoch(-1), (-1, -1));
    log.append_as_leader(batch_of(5, 20, 0), 0, 4).unwrap();
    assert_eq!(log.end_offset_for_epoch(4), (4, 15));
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(4, 10)]);
    log.close().unwrap();
    let log = open(dir.path(), config());
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(4, 10)]);
}

#[test]
fn follower_log_is_byte_identical_and_detects_retries_after_taking_over() {
    let dir = tempfile::tempdir().unwrap();
    let leader_config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..small_segments(3)
    };
    let leader = open(&dir.path().join("leader"), leader_config.clone());
    let pid = 4000;
    let mut sent = Vec::new();
    for i in 0..8 {
        let epoch = 1 + i / 3;
        leader.assign_leader_epoch(epoch).unwrap();
        let b = producer_batch(pid, 0, i * 5, 5, 100);
        leader
            .append_as_leader(b.clone(), 1000 + i64::from(i), epoch)
            .unwrap();
        // Plain and compressed batches alternate with the producer's.
        let plain = if i % 2 == 0 {
            batch_of(10, 50, 0)
        } else {
            encode_batch(&records(0, 10, 0), Compression::Zstd)
        };
        leader.append_as_leader(plain, 2000, epoch).unwrap();
        sent.push(b);
    }
    assert!(leader.log_end_offset() == 120);
    let follower = open(&dir.path().join("follower"), small_segments(3));
    replicate(&leader, &follower, 700);
    assert_eq!(follower.log_end_offset(), 120);
    assert_eq!(all_batches(&follower), all_batches(&leader));
    for offset in 0..120 {
        assert_eq!(
            follower.read(offset, 1 << 20).unwrap(),
            leader.read(offset, 1 << 20).unwrap(),
            "offset {offset}"
        );
    }
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.epoch_entries(), vec![e(1, 0), e(2, 45), e(3, 90)]);
    // The timestamps the leader assigned are kept.
    assert_eq!(header_at(&follower, 0).max_timestamp, 1000);

    // The follower takes over in epoch 4; the producer retries its last batch, and an older
    // one, and both are recognised, also after a restart.
    let take_over = |f: &PartitionLog| {
        f.assign_leader_epoch(4).unwrap();
        let last = f.append_as_leader(sent[7].clone(), 5000, 4).unwrap();
        assert!(last.duplicate);
        assert_eq!((last.base_offset, last.last_offset), (105, 109));
        let older = f.append_as_leader(sent[5].clone(), 5000, 4).unwrap();
        assert!(older.duplicate);
        assert_eq!(older.base_offset, 75);
        assert_eq!(f.log_end_offset(), 120);
        // A gap in the sequence is refused as on the leader.
        assert!(matches!(
            f.append_as_leader(producer_batch(pid, 0, 45, 5, 100), 5000, 4),
            Err(LogError::OutOfOrderSequence { .. })
        ));
    };
    take_over(&follower);
    follower.close().unwrap();
    take_over(&open(&dir.path().join("follower"), small_segments(3)));
}

#[test]
fn follower_appends_refuse_overlaps_and_corrupt_batches_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"), config());
    for _ in 0..3 {
        leader.append_as_leader(batch_of(10, 50, 0), 0, 1).unwrap();
    }
    let follower = open(&dir.path().join("follower"), config());
    follower
        .append_as_follower(leader.read(0, 1).unwrap())
        .unwrap();
    let size = follower.size_bytes();
    // Starts below the log end.
    assert!(matches!(
        follower.append_as_follower(leader.read(0, 1 << 20).unwrap()),
        Err(LogError::OffsetMismatch {
            expected: 10,
            got: 0
        })
    ));
    // A bit flip in the middle of a batch.
    let mut bad = BytesMut::from(leader.read(10, 1 << 20).unwrap());
    let mid = bad.len() / 4;
    bad[mid] ^= 0x08;
    assert!(matches!(
        follower.append_as_follower(bad.freeze()),
        Err(LogError::CorruptRecord(_))
    ));
    // A good batch followed by a torn one: nothing of either is written.
    let good = leader.read(10, 1).unwrap();
    let mut torn = BytesMut::from(&good[..]);
    torn.extend_from_slice(&leader.read(20, 1).unwrap()[..30]);
    assert!(follower.append_as_follower(torn.freeze()).is_err());
    assert!(follower.append_as_follower(Bytes::new()).is_err());
    assert_eq!(follower.log_end_offset(), 10);
    assert_eq!(follower.size_bytes(), size);
    follower.append_as_follower(good).unwrap();
    assert_eq!(follower.log_end_offset(), 20);
}

#[test]
fn follower_accepts_an_offset_gap_left_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"), config());
    for _ in 0..3 {
        leader.append_as_leader(batch_of(10, 50, 0), 0, 1).unwrap();
    }
    let follower = open(&dir.path().join("follower"), config());
    follower
        .append_as_follower(leader.read(0, 1).unwrap())
        .unwrap();
    // As if the batch 10..=19 had been compacted away on the leader.
    let info = follower
        .append_as_follower(leader.read(20, 1).unwrap())
        .unwrap();
    assert_eq!((info.base_offset, info.last_offset), (20, 29));
    assert_eq!(follower.log_end_offset(), 30);
    assert_eq!(header_at(&follower, 15).base_offset, 20);
}

#[test]
fn truncate_in_a_closed_segment_then_append_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(2));
    for i in 0..10 {
        let epoch = if i < 3 { 1 } else { 2 };
        log.append_as_leader(batch_of(10, 50, i * 100), 0, epoch)
            .unwrap();
    }
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(2, 30)]);
    let segments = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(segments(dir.path()).len(), 5);
    // Offset 25 is inside the batch 20..=29, which starts the second segment: the log ends
    // at 20.
    log.truncate_to(25).unwrap();
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(
        segments(dir.path()),
        vec!["00000000000000000000.log", "00000000000000000020.log"]
    );
    assert_eq!(log.epoch_entries(), vec![e(1, 0)]);
    assert_every_offset_readable(&log);
    // Appends continue at the new end and the indexes find everything.
    for i in 0..5 {
        let info = log
            .append_as_leader(batch_of(10, 50, 5000 + i * 100), 0, 3)
            .unwrap();
        assert_eq!(info.base_offset, 20 + i * 10);
    }
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(3, 20)]);
    assert_every_offset_readable(&log);
    assert_eq!(log.offset_for_timestamp(5150).unwrap(), Some((40, 5200)));
    assert_eq!(log.offset_for_timestamp(5400).unwrap(), Some((60, 5400)));
    let records = read_all_records(&log);
    assert_eq!(records.len(), 70);
    assert_eq!(records[30].timestamp, 5100);

    // In the middle of a closed segment (40..=59): it becomes the active segment again.
    log.truncate_to(50).unwrap();
    assert_eq!(log.log_end_offset(), 50);
    assert_every_offset_readable(&log);
    assert_eq!(log.offset_for_timestamp(5400).unwrap(), None);
    assert_eq!(log.offset_for_timestamp(5201).unwrap(), Some((41, 5201)));
    assert_eq!(
        log.append(batch_of(10, 50, 7000), 0).unwrap().base_offset,
        50
    );
    // In the middle of the active segment.
    log.truncate_to(50).unwrap();
    assert_eq!(log.log_end_offset(), 50);
    assert_every_offset_readable(&log);
    let config = log.config();
    drop(log);
    let log = open(dir.path(), config);
    assert_eq!(log.log_end_offset(), 50);
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(3, 20)]);
    assert_every_offset_readable(&log);
    assert_eq!(log.offset_for_timestamp(5201).unwrap(), Some((41, 5201)));
    assert_eq!(log.append(batch_of(10, 50, 0), 0).unwrap().base_offset, 50);
    assert_eq!(header_at(&log, 55).partition_leader_epoch, 3);
}

#[test]
fn truncate_at_a_segment_base_and_rebuild_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(1));
    let pid = 77;
    let mut sent = Vec::new();
    for i in 0..6 {
        let b = producer_batch(pid, 0, i * 10, 10, 0);
        log.append_as_leader(b.clone(), 0, 1).unwrap();
        sent.push(b);
    }
    // The producer state is rebuilt as it was at 30.
    log.truncate_to(30).unwrap();
    assert_eq!(log.log_end_offset(), 30);
    assert_every_offset_readable(&log);
    assert!(log.append(sent[2].clone(), 0).unwrap().duplicate);
    // The batch cut off is new again, not a duplicate.
    let info = log.append(sent[3].clone(), 0).unwrap();
    assert!(!info.duplicate);
    assert_eq!(info.base_offset, 30);
    // Truncating everything readable at the log start.
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(log.epoch_entries().is_empty());
    assert!(!log.append(sent[0].clone(), 0).unwrap().duplicate);
}

#[test]
fn truncate_at_or_past_the_end_only_drops_later_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config());
    log.append_as_leader(batch_of(10, 5, 0), 0, 1).unwrap();
    log.assign_leader_epoch(2).unwrap();
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(2, 10)]);
    log.truncate_to(11).unwrap();
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(2, 10)]);
    // KAFKA-10706: the epoch without records at the end is removed.
    log.truncate_to(10).unwrap();
    assert_eq!(log.epoch_entries(), vec![e(1, 0)]);
    assert_eq!(log.log_end_offset(), 10);
    assert!(log.truncate_to(-1).is_err());
}

#[test]
fn truncate_fully_and_start_at_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("follower");
    let log = open(&path, small_segments(2));
    for i in 0..5 {
        log.append_as_leader(producer_batch(9, 0, i * 10, 10, 0), 0, 1)
            .unwrap();
        log.append_as_leader(batch_of(10, 50, 0), 0, 1).unwrap();
    }
    let end = log.log_end_offset();
    let mut rx = log.subscribe();
    log.truncate_fully_and_start_at(500).unwrap();
    assert_eq!(*rx.borrow_and_update(), 500);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    assert!(log.epoch_entries().is_empty());
    assert!(log.read(500, 1 << 20).unwrap().is_empty());
    assert!(matches!(
        log.read(end - 1, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // The producer is forgotten: its first batch is new again.
    let leader = open(&dir.path().join("leader"), config());
    leader.truncate_fully_and_start_at(500).unwrap();
    leader
        .append_as_leader(producer_batch(9, 0, 0, 10, 0), 0, 7)
        .unwrap();
    log.append_as_follower(leader.read(500, 1 << 20).unwrap())
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![e(7, 500)]);
    let config = log.config();
    drop(log);
    let log = open(&path, config);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 510));
    assert_eq!(log.epoch_entries(), vec![e(7, 500)]);
    assert_every_offset_readable(&log);
}

#[test]
fn follower_starting_inside_the_leaders_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"), config());
    for _ in 0..3 {
        leader.append_as_leader(batch_of(10, 50, 0), 0, 1).unwrap();
    }
    // DeleteRecords put the leader's log start inside the batch 10..=19.
    leader.delete_records_before(15).unwrap();
    let follower = open(&dir.path().join("follower"), config());
    follower.truncate_fully_and_start_at(15).unwrap();
    let data = leader.read(15, 1 << 20).unwrap();
    let info = follower.append_as_follower(data).unwrap();
    assert_eq!((info.base_offset, info.log_start_offset), (10, 15));
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (15, 30)
    );
    assert_eq!(follower.epoch_entries(), vec![e(1, 15)]);
    assert_eq!(
        follower.read(15, 1 << 20).unwrap(),
        leader.read(15, 1 << 20).unwrap()
    );
    assert!(matches!(
        follower.read(14, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let config = follower.config();
    drop(follower);
    let follower = open(&dir.path().join("follower"), config);
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (15, 30)
    );
    // Only an empty log restarts: a log holding data refuses an overlap.
    let data = leader.read(20, 1 << 20).unwrap();
    assert!(matches!(
        follower.append_as_follower(data),
        Err(LogError::OffsetMismatch {
            expected: 30,
            got: 20
        })
    ));
}

#[test]
fn read_up_to_stops_below_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config());
    for _ in 0..5 {
        log.append(batch_of(10, 20, 0), 0).unwrap();
    }
    let ranges = |b: Bytes| -> Vec<(i64, i64)> {
        headers(&b)
            .iter()
            .map(|h| (h.base_offset, h.last_offset()))
            .collect()
    };
    assert_eq!(
        ranges(log.read_up_to(0, 1 << 20, 30).unwrap()),
        vec![(0, 9), (10, 19), (20, 29)]
    );
    assert_eq!(ranges(log.read_up_to(25, 1, 30).unwrap()), vec![(20, 29)]);
    assert_eq!(
        ranges(log.read_up_to(0, 1 << 20, 25).unwrap()),
        vec![(0, 9), (10, 19)]
    );
    // The first batch reaches the bound.
    assert!(log.read_up_to(22, 1 << 20, 25).unwrap().is_empty());
    // Between the bound and the log end: empty, not out of range.
    assert!(log.read_up_to(30, 1 << 20, 30).unwrap().is_empty());
    assert!(log.read_up_to(45, 1 << 20, 30).unwrap().is_empty());
    assert!(log.read_up_to(50, 1 << 20, 30).unwrap().is_empty());
    assert!(matches!(
        log.read_up_to(51, 1 << 20, 30),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // A bound at or past the end is a plain read.
    assert_eq!(
        log.read_up_to(0, 1 << 20, 50).unwrap(),
        log.read(0, 1 << 20).unwrap()
    );
}

#[test]
fn bit_flip_in_the_last_batch_is_cut_on_open_and_epochs_follow() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch_of(10, 50, 0);
    {
        let log = open(dir.path(), config());
        for epoch in [1, 2, 2, 3] {
            log.append_as_leader(one.clone(), 0, epoch).unwrap();
        }
        assert_eq!(log.epoch_entries(), vec![e(1, 0), e(2, 10), e(3, 30)]);
        // Dropped without close: the active segment is recovered by a scan.
    }
    let path = dir.path().join("00000000000000000000.log");
    let flip = |batch_index: usize| {
        let mut bytes = std::fs::read(&path).unwrap();
        // One bit in the middle of the batch's records, which only the CRC covers.
        let at = batch_index * one.len() + one.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
    };
    flip(3);
    let log = open(dir.path(), config());
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        3 * one.len() as u64
    );
    // Epoch 3 began at 30 and has no records left: kept, as an epoch without records is.
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(2, 10), e(3, 30)]);
    assert_eq!(log.end_offset_for_epoch(2), (2, 30));
    assert_every_offset_readable(&log);
    drop(log);

    flip(2);
    let log = open(dir.path(), config());
    assert_eq!(log.log_end_offset(), 20);
    // Epoch 3 began past the recovered end: gone.
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(2, 10)]);
    assert_eq!(log.end_offset_for_epoch(2), (2, 20));
    assert_eq!(log.append_as_leader(one, 0, 4).unwrap().base_offset, 20);
    assert_every_offset_readable(&log);
}

#[test]
fn corrupt_or_missing_epoch_file_is_rebuilt_from_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(2);
    {
        let log = open(dir.path(), config.clone());
        for epoch in [1, 1, 4, 4, 6] {
            log.append_as_leader(batch_of(10, 50, 0), 0, epoch).unwrap();
        }
        log.assign_leader_epoch(7).unwrap();
        log.close().unwrap();
    }
    let file = dir.path().join(LEADER_EPOCH_FILE);
    std::fs::write(&file, "garbage").unwrap();
    let log = open(dir.path(), config.clone());
    // The epoch without records cannot be recovered from the batches.
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(4, 20), e(6, 40)]);
    drop(log);
    std::fs::remove_file(&file).unwrap();
    let log = open(dir.path(), config.clone());
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(4, 20), e(6, 40)]);
    assert!(file.exists());
    // Entries past the end (a crash after the file was written) are dropped on open.
    drop(log);
    std::fs::write(&file, "0\n4\n1 0\n4 20\n6 40\n9 70\n").unwrap();
    let log = open(dir.path(), config);
    assert_eq!(log.epoch_entries(), vec![e(1, 0), e(4, 20), e(6, 40)]);
}

#[test]
fn epochs_are_rebuilt_from_segments_where_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(3);
    {
        let log = open(dir.path(), config.clone());
        for epoch in [1, 1, 2, 2, 2, 2, 2, 3, 3, 5] {
            log.append_as_leader(batch_of(10, 50, 0), 0, epoch).unwrap();
        }
        log.close().unwrap();
    }
    std::fs::remove_file(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
    let log = open(dir.path(), config);
    assert_eq!(
        log.epoch_entries(),
        vec![e(1, 0), e(2, 20), e(3, 70), e(5, 90)]
    );
}

#[test]
fn log_start_moves_trim_the_epoch_cache() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(1));
    for epoch in [1, 2, 3] {
        log.append_as_leader(batch_of(10, 50, 0), 0, epoch).unwrap();
    }
    log.delete_records_before(15).unwrap();
    assert_eq!(log.epoch_entries(), vec![e(2, 15), e(3, 20)]);
    assert_eq!(log.end_offset_for_epoch(1), (1, 15));
    let config = log.config();
    drop(log);
    let log = open(dir.path(), config);
    assert_eq!(log.epoch_entries(), vec![e(2, 15), e(3, 20)]);
}

#[tokio::test]
async fn durable_mark_does_not_outlive_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config());
    let mut last = 0;
    for _ in 0..3 {
        last = log
            .append_as_leader(batch_of(10, 5, 0), 0, 1)
            .unwrap()
            .last_offset;
    }
    log.wait_durable(last).await.unwrap();
    let synced = log.fsync_count();
    log.truncate_to(10).unwrap();
    let info = log.append_as_leader(batch_of(10, 5, 0), 0, 2).unwrap();
    assert_eq!(info.last_offset, 19);
    // Offset 19 was durable before the truncation, but these bytes are new.
    log.wait_durable(info.last_offset).await.unwrap();
    assert_eq!(log.fsync_count(), synced + 1);
}

#[test]
fn readers_never_see_a_half_truncated_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(4));
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..60 {
                for _ in 0..6 {
                    log.append_as_leader(batch_of(10, 50, round), 0, 1).unwrap();
                }
                let end = log.log_end_offset();
                log.truncate_to(end - 30 - (round % 3) * 10).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let end = log.log_end_offset();
                    for from in [0, end / 2, (end - 5).max(0)] {
                        match log.read(from, 1 << 16) {
                            // Every batch whole with a valid CRC (checked by `headers`).
                            Ok(data) => {
                                if let Some(h) = headers(&data).first() {
                                    assert!(h.last_offset() >= from);
                                }
                            }
                            // The end moved below `from` meanwhile.
                            Err(LogError::OffsetOutOfRange { .. }) => {}
                            Err(e) => panic!("read at {from}: {e}"),
                        }
                    }
                }
            });
        }
    });
    assert_every_offset_readable(&log);
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    /// Append a batch of `n` records as leader, in a new epoch when `new_epoch`.
    Append { n: i64, new_epoch: bool },
    /// Truncate to the start of the model's batch at this index (modulo their count).
    Truncate(usize),
    /// Drop the log without closing it and open it again.
    Reopen,
    /// Empty the log and start it at the end offset plus this much.
    StartAfresh(i64),
    /// This replica becomes leader of the next epoch (an epoch without records, until
    /// something is appended).
    NewLeader,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (1i64..12, proptest::bool::weighted(0.3))
            .prop_map(|(n, new_epoch)| Op::Append { n, new_epoch }),
        2 => any::<usize>().prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
        1 => (0i64..20).prop_map(Op::StartAfresh),
        1 => Just(Op::NewLeader),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]
    /// Appends, leader changes, truncations, restarts and fresh starts in any order leave the
    /// log equal to a model: same bytes at every offset, same start and end, the leader epoch
    /// cache as its rules say (epochs without records included), and every batch stamped with
    /// the epoch in force at its offset.
    #[test]
    fn log_matches_a_model_of_its_batches(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 900,
            ..config()
        };
        let mut log = open(dir.path(), config.clone());
        // (base offset, epoch, bytes as stored)
        let mut model: Vec<(i64, i32, Bytes)> = Vec::new();
        let mut start = 0i64;
        let mut epoch = 0i32;
        // The leader epoch cache as the rules say it must be.
        let mut epochs: Vec<EpochEntry> = Vec::new();
        let assign = |epochs: &mut Vec<EpochEntry>, epoch: i32, at: i64| {
            if epochs.last().is_none_or(|l| epoch > l.epoch) {
                epochs.retain(|x| x.start_offset < at);
                epochs.push(e(epoch, at));
            }
        };
        for op in ops {
            let end = model.last().map_or(start, |(b, _, bytes)| {
                b + i64::from(headers(bytes)[0].last_offset_delta) + 1
            });
            match op {
                Op::Append { n, new_epoch } => {
                    epoch += i32::from(new_epoch);
                    let info = log.append_as_leader(batch_of(n, 20, end), 0, epoch).unwrap();
                    proptest::prop_assert_eq!(info.base_offset, end);
                    assign(&mut epochs, epoch, end);
                    model.push((end, epoch, log.read(end, 1).unwrap()));
                }
                Op::Truncate(i) if !model.is_empty() => {
                    let i = i % model.len();
                    log.truncate_to(model[i].0).unwrap();
                    epochs.retain(|x| x.start_offset < model[i].0);
                    model.truncate(i);
                }
                Op::Truncate(_) => {}
                Op::Reopen => {
                    drop(log);
                    log = open(dir.path(), config.clone());
                }
                Op::StartAfresh(gap) => {
                    start = end + gap;
                    log.truncate_fully_and_start_at(start).unwrap();
                    model.clear();
                    epochs.clear();
                }
                Op::NewLeader => {
                    epoch += 1;
                    proptest::prop_assert!(log.assign_leader_epoch(epoch).unwrap());
                    assign(&mut epochs, epoch, end);
                }
            }
            let end = model.last().map_or(start, |(b, _, bytes)| {
                b + i64::from(headers(bytes)[0].last_offset_delta) + 1
            });
            proptest::prop_assert_eq!(log.log_end_offset(), end);
            proptest::prop_assert_eq!(log.log_start_offset(), start);
            let stored: Vec<Bytes> = model.iter().map(|(_, _, b)| b.clone()).collect();
            proptest::prop_assert_eq!(all_batches(&log), stored);
            proptest::prop_assert_eq!(log.epoch_entries(), epochs.clone());
            // Every batch carries the epoch in force at its offset.
            for (base, batch_epoch, _) in &model {
                let in_force = epochs.iter().rev().find(|x| x.start_offset <= *base);
                proptest::prop_assert_eq!(in_force.map(|x| x.epoch), Some(*batch_epoch));
            }
        }
        assert_every_offset_readable(&log);
    }
}
