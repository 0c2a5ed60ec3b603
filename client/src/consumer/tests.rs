//! Position tracking: what `position`, `positions`, `lag` and `committed` say after fetches,
//! seeks, pauses, resets and rebalances.
//!
//! Most tests hand the consumer fetch answers directly (`handle_fetch`), so they state exactly
//! which records arrived; the consumer still runs against a real in-process broker, which the
//! tests that poll, commit or rebalance use.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::admin::{Admin, NewTopic};
use crate::producer::{Producer, ProducerConfig, ProducerRecord};
use crate::record::TimestampType;
use crate::ClientConfig;

/// A broker on a free port in a temp dir, with groups that form without delay (the test
/// kit's launcher; the client config is this crate's own type, so it is built here).
struct TestBroker {
    broker: millrace_testkit::TestBroker,
}

impl TestBroker {
    async fn start() -> Self {
        let broker = millrace_testkit::TestBroker::start(&[millrace_testkit::FAST_GROUPS]).await;
        TestBroker { broker }
    }

    fn client(&self) -> ClientConfig {
        ClientConfig::builder([self.broker.bootstrap()])
            .build()
            .expect("client config")
    }

    async fn consumer(&self, group: Option<&str>) -> Consumer {
        let mut builder = ConsumerConfig::builder(self.client())
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .enable_auto_commit(false)
            .fetch_max_wait(Duration::from_millis(100))
            .heartbeat_interval(Duration::from_millis(200))
            .session_timeout(Duration::from_secs(6));
        if let Some(group) = group {
            builder = builder.group_id(group);
        }
        Consumer::connect(builder.build().expect("consumer config"))
            .await
            .expect("consumer connect")
    }

    /// Creates `topic` and writes `count` records to partition 0.
    async fn topic_with_records(&self, topic: &str, partitions: i32, count: usize) {
        let admin = Admin::connect(self.client()).await.expect("admin");
        admin
            .create_topic(NewTopic::new(topic, partitions))
            .await
            .expect("create topic");
        let producer = Producer::connect(
            ProducerConfig::builder(self.client())
                .build()
                .expect("producer config"),
        )
        .await
        .expect("producer");
        for i in 0..count {
            producer
                .send(ProducerRecord::new(topic, format!("v{i}")).partition(0))
                .await
                .expect("send")
                .await
                .expect("delivered");
        }
        producer.close().await;
    }
}

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("t", partition)
}

fn record(partition: i32, offset: i64) -> ConsumerRecord {
    ConsumerRecord {
        topic: Arc::from("t"),
        partition,
        offset,
        timestamp: 0,
        timestamp_type: TimestampType::CreateTime,
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Vec::new(),
        leader_epoch: None,
    }
}

/// A fetch answer for `partition` as the consumer asked for it now (same offset and seek
/// epoch): records at `offsets`, the next fetch at `next_offset`.
fn answer(
    consumer: &Consumer,
    partition: i32,
    offsets: std::ops::Range<i64>,
    next_offset: i64,
    high_watermark: i64,
) -> FetchOutcome {
    let state = &consumer.partitions[&tp(partition)];
    let target = FetchTarget {
        partition: tp(partition),
        topic: Arc::from("t"),
        offset: state.next_fetch,
        epoch: state.epoch,
        current_leader_epoch: -1,
        last_fetched_epoch: state.fetch_epoch,
    };
    let records: Vec<ConsumerRecord> = offsets.map(|o| record(partition, o)).collect();
    let bytes = records.len() * 10;
    FetchOutcome {
        node: 1,
        result: Ok(vec![(
            target.clone(),
            PartitionFetch::Records {
                records,
                bytes,
                next_offset: Some(next_offset),
                high_watermark,
                log_start_offset: 0,
                last_epoch: None,
                diverging: None,
            },
        )]),
        targets: vec![target],
    }
}

fn offsets(records: &[ConsumerRecord]) -> Vec<i64> {
    records.iter().map(|r| r.offset).collect()
}

/// Polls until `count` records came or 20 s passed.
async fn read(consumer: &mut Consumer, count: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    out
}

#[test]
fn seek_sets_the_position_and_the_next_fetch_and_drops_the_buffer() {
    let mut state = PartitionState::new(Arc::from("t"));
    state.buffered.push_back(Chunk::new(vec![record(0, 0)], 10));
    state.buffered_bytes = 10;

    state.seek(5);

    assert_eq!(
        (
            state.position,
            state.next_fetch,
            state.buffered.len(),
            state.buffered_bytes,
            state.epoch
        ),
        (Some(5), 5, 0, 0, 1)
    );
}

#[test]
fn a_reset_forgets_the_position_until_it_is_looked_up() {
    let mut state = PartitionState::new(Arc::from("t"));
    state.seek(5);

    state.reset_to(PositionSource::Lookup(OffsetSpec::Latest));

    assert_eq!(state.position, None);
    assert_eq!(state.source, PositionSource::Lookup(OffsetSpec::Latest));
    assert_eq!(
        state.epoch, 2,
        "a reset is a seek: answers in flight are stale"
    );
}

#[test]
fn with_nothing_buffered_the_position_follows_the_fetch_position() {
    let mut state = PartitionState::new(Arc::from("t"));
    state.seek(3);
    // 3..7 were answered (a transaction marker, compacted offsets) and a long poll from 7
    // is in flight: an answer from 3 would be stale (it must start at `next_fetch`).
    state.next_fetch = 7;
    state.in_flight = true;
    state.skip_to_fetch_position();

    assert_eq!(state.position, Some(7));
}

#[test]
fn with_records_buffered_the_position_stays_at_the_next_record() {
    let mut state = PartitionState::new(Arc::from("t"));
    state.seek(3);
    state.buffered.push_back(Chunk::new(vec![record(3, 0)], 10));
    state.next_fetch = 7;
    state.skip_to_fetch_position();

    assert_eq!(state.position, Some(3));
}

#[tokio::test]
async fn handing_out_fetched_records_moves_the_position_past_the_last_one() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0)]).expect("assign");
    consumer.seek(&tp(0), 0).expect("seek");

    consumer.handle_fetch(answer(&consumer, 0, 0..3, 3, 10));
    assert_eq!(
        consumer.position(&tp(0)),
        Some(0),
        "fetched is not yet handed out"
    );
    let records = consumer.take_records(100);

    assert_eq!(offsets(&records), [0, 1, 2]);
    assert_eq!(consumer.position(&tp(0)), Some(3));
    assert_eq!(consumer.high_watermark(&tp(0)), 10);
    assert_eq!(consumer.lag(&tp(0)), Some(7));
}

#[tokio::test]
async fn a_partly_handed_out_chunk_leaves_the_position_after_the_last_record_handed_out() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0)]).expect("assign");
    consumer.seek(&tp(0), 0).expect("seek");
    consumer.handle_fetch(answer(&consumer, 0, 0..5, 5, 5));

    assert_eq!(offsets(&consumer.take_records(2)), [0, 1]);
    assert_eq!(consumer.position(&tp(0)), Some(2));
    assert_eq!(offsets(&consumer.take_records(100)), [2, 3, 4]);
    assert_eq!(consumer.position(&tp(0)), Some(5));
}

#[tokio::test]
async fn an_answer_to_a_fetch_sent_before_a_seek_is_dropped() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0)]).expect("assign");
    consumer.seek(&tp(0), 0).expect("seek");
    let stale = answer(&consumer, 0, 0..3, 3, 10);

    consumer.seek(&tp(0), 100).expect("seek");
    consumer.handle_fetch(stale);

    assert!(consumer.take_records(100).is_empty());
    assert_eq!(consumer.position(&tp(0)), Some(100));
}

#[tokio::test]
async fn an_empty_answer_past_a_gap_moves_the_position_to_the_next_fetch_offset() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0)]).expect("assign");
    consumer.seek(&tp(0), 0).expect("seek");

    // Offsets 0..4 were compacted away or were a control batch: no records, next fetch at 4.
    consumer.handle_fetch(answer(&consumer, 0, 0..0, 4, 6));
    assert!(consumer.take_records(100).is_empty());

    assert_eq!(consumer.position(&tp(0)), Some(4));
}

#[tokio::test]
async fn a_paused_partition_keeps_its_records_and_position_until_resumed() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0), tp(1)]).expect("assign");
    consumer.seek(&tp(0), 0).expect("seek");
    consumer.seek(&tp(1), 0).expect("seek");
    consumer.handle_fetch(answer(&consumer, 0, 0..2, 2, 2));
    consumer.handle_fetch(answer(&consumer, 1, 0..3, 3, 3));

    consumer.pause(&[tp(0)]).expect("pause");
    assert_eq!(consumer.paused(), [tp(0)]);
    let while_paused = consumer.take_records(100);
    assert!(
        while_paused.iter().all(|r| r.partition == 1),
        "only partition 1 is read"
    );
    assert_eq!(consumer.position(&tp(0)), Some(0));
    assert_eq!(consumer.position(&tp(1)), Some(3));

    consumer.resume(&[tp(0)]).expect("resume");
    let after_resume = consumer.take_records(100);

    assert_eq!(offsets(&after_resume), [0, 1]);
    assert_eq!(consumer.position(&tp(0)), Some(2));
    assert!(consumer.paused().is_empty());
}

#[tokio::test]
async fn offset_out_of_range_forgets_the_position_for_the_reset_policy() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0)]).expect("assign");
    consumer.seek(&tp(0), 50).expect("seek");
    let mut outcome = answer(&consumer, 0, 0..0, 50, 10);
    if let Ok(results) = &mut outcome.result {
        results[0].1 = PartitionFetch::Error(
            ResponseError::OffsetOutOfRange,
            ResponseError::OffsetOutOfRange.code(),
        );
    }

    consumer.handle_fetch(outcome);

    assert_eq!(consumer.position(&tp(0)), None);
    assert_eq!(
        consumer.partitions[&tp(0)].source,
        PositionSource::ResetPolicy
    );
    assert!(
        consumer.positions().is_empty(),
        "no position, nothing to commit"
    );
}

#[tokio::test]
async fn assign_keeps_the_positions_of_partitions_kept_and_forgets_the_others() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0), tp(1)]).expect("assign");
    consumer.seek(&tp(0), 7).expect("seek");
    consumer.seek(&tp(1), 9).expect("seek");

    consumer.assign(&[tp(1), tp(2)]).expect("assign");

    assert_eq!(consumer.positions(), HashMap::from([(tp(1), 9)]));
    assert_eq!(consumer.position(&tp(2)), None);
    assert!(
        consumer.seek(&tp(0), 1).is_err(),
        "partition 0 is no longer assigned"
    );
}

#[tokio::test]
async fn seek_to_beginning_looks_the_position_up_on_the_next_poll() {
    let broker = TestBroker::start().await;
    broker.topic_with_records("t", 1, 3).await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0)]).expect("assign");
    assert_eq!(offsets(&read(&mut consumer, 3).await), [0, 1, 2]);

    consumer.seek_to_beginning(&[tp(0)]).expect("seek");
    assert_eq!(consumer.position(&tp(0)), None);
    let again = read(&mut consumer, 3).await;

    assert_eq!(offsets(&again), [0, 1, 2]);
    assert_eq!(consumer.position(&tp(0)), Some(3));
}

#[tokio::test]
async fn the_committed_offset_moves_only_on_commit_while_the_position_moves_on_every_poll() {
    let broker = TestBroker::start().await;
    broker.topic_with_records("t", 1, 3).await;
    let mut consumer = broker.consumer(Some("positions")).await;
    consumer.assign(&[tp(0)]).expect("assign");

    assert_eq!(read(&mut consumer, 3).await.len(), 3);
    assert_eq!(consumer.position(&tp(0)), Some(3));
    assert!(consumer
        .committed(&[tp(0)])
        .await
        .expect("committed")
        .is_empty());

    consumer.commit().await.expect("commit");
    consumer.seek(&tp(0), 1).expect("seek");

    assert_eq!(consumer.position(&tp(0)), Some(1));
    assert_eq!(
        consumer.committed(&[tp(0)]).await.expect("committed"),
        HashMap::from([(tp(0), 3)])
    );
}

#[tokio::test]
async fn a_new_assignment_starts_at_the_committed_offset() {
    let broker = TestBroker::start().await;
    broker.topic_with_records("t", 1, 3).await;
    let mut first = broker.consumer(Some("resume")).await;
    first.assign(&[tp(0)]).expect("assign");
    first
        .commit_offsets(&HashMap::from([(tp(0), 2)]))
        .await
        .expect("commit");

    let mut second = broker.consumer(Some("resume")).await;
    second.assign(&[tp(0)]).expect("assign");
    let records = read(&mut second, 1).await;

    assert_eq!(offsets(&records), [2]);
    assert_eq!(second.position(&tp(0)), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_partitions_keep_their_positions_until_the_next_poll_gives_them_up() {
    let broker = TestBroker::start().await;
    broker.topic_with_records("t", 2, 3).await;
    let mut first = broker.consumer(Some("rebalance")).await;
    first.subscribe(&["t"]).expect("subscribe");
    assert_eq!(read(&mut first, 3).await.len(), 3);
    assert_eq!(first.assignment(), [tp(0), tp(1)]);
    assert_eq!(first.position(&tp(0)), Some(3));

    // A second member joins: the first must give its partitions up (eager protocol).
    let mut second = broker.consumer(Some("rebalance")).await;
    second.subscribe(&["t"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(20);
    let joining = tokio::spawn(async move {
        // Polled until its partition has a position (from the committed offsets).
        while second.positions().is_empty() && Instant::now() < deadline {
            second
                .poll(Duration::from_millis(200))
                .await
                .expect("poll second");
        }
        second
    });
    let revoked = loop {
        assert!(Instant::now() < deadline, "no revocation within 20 s");
        if let Some(ConsumerEvent::Revoked(revoked)) = first
            .poll_event(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            break revoked;
        }
    };
    assert_eq!(revoked, [tp(0), tp(1)]);
    assert_eq!(
        first.position(&tp(0)),
        Some(3),
        "still assigned, so the application can commit it"
    );
    first.commit().await.expect("commit before giving up");

    let assigned = loop {
        assert!(Instant::now() < deadline, "no new assignment within 20 s");
        if let Some(ConsumerEvent::Assigned(partitions)) = first
            .poll_event(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            break partitions;
        }
    };

    assert_eq!(assigned.len(), 1, "two members share two partitions");
    assert_eq!(first.assignment(), assigned);
    let moved = if assigned[0] == tp(0) { tp(1) } else { tp(0) };
    assert_eq!(first.position(&moved), None, "given up with its position");
    let mut second = joining.await.expect("second member");
    // The partition that moved starts where the first member committed it.
    let expected = if moved == tp(0) { 3 } else { 0 };
    assert_eq!(second.positions(), HashMap::from([(moved, expected)]));
    second.close().await.expect("close");
    first.close().await.expect("close");
}

// KIP-320: leader changes, validation and truncation.

fn record_in_epoch(offset: i64, epoch: i32) -> ConsumerRecord {
    ConsumerRecord {
        leader_epoch: Some(epoch),
        ..record(0, offset)
    }
}

/// A partition that handed out offsets 0..10, the last written in leader epoch 3, fetched
/// from node 1 in epoch 3.
fn consumed_up_to_10() -> PartitionState {
    let mut state = PartitionState::new(Arc::from("t"));
    state.seek(0);
    state.note_leader(1, 3);
    state.position = Some(10);
    state.position_epoch = Some(3);
    state.next_fetch = 12;
    state.fetch_epoch = Some(3);
    state.buffered.push_back(Chunk::new(
        vec![record_in_epoch(10, 3), record_in_epoch(11, 3)],
        20,
    ));
    state.buffered_bytes = 20;
    state
}

#[test]
fn a_new_leader_epoch_starts_a_validation_from_the_consumed_position() {
    let mut state = consumed_up_to_10();
    let seek_epoch = state.epoch;

    state.note_leader(1, 3);
    assert!(!state.awaiting_validation, "same leader, same epoch");

    state.note_leader(2, 4);

    assert!(state.awaiting_validation);
    assert_eq!(state.next_fetch, 10, "refetch from the consumed position");
    assert_eq!(state.fetch_epoch, Some(3));
    assert!(
        state.buffered.is_empty(),
        "records of the old leader dropped"
    );
    assert!(state.epoch > seek_epoch, "fetches in flight are stale");
}

#[test]
fn without_a_known_epoch_a_leader_change_is_not_validated() {
    let mut state = PartitionState::new(Arc::from("t"));
    state.seek(5);
    state.note_leader(1, 0);
    state.note_leader(2, 1);
    assert!(!state.awaiting_validation);
}

#[test]
fn an_epoch_ending_at_or_after_the_position_validates_it() {
    let mut state = consumed_up_to_10();
    state.note_leader(2, 4);

    state
        .apply_epoch_end(&tp(0), 3, 10, AutoOffsetReset::None)
        .expect("no truncation");

    assert!(!state.awaiting_validation);
    assert_eq!(state.position, Some(10));
}

#[test]
fn truncation_with_a_reset_policy_moves_the_position_back_to_the_divergence() {
    let mut state = consumed_up_to_10();
    state.note_leader(2, 4);

    state
        .apply_epoch_end(&tp(0), 3, 7, AutoOffsetReset::Earliest)
        .expect("reset, no error");

    assert_eq!(state.position, Some(7));
    assert_eq!(state.next_fetch, 7);
    assert_eq!(state.position_epoch, Some(3));
    assert!(!state.awaiting_validation);
}

#[test]
fn truncation_without_a_reset_policy_is_a_log_truncation_error() {
    let mut state = consumed_up_to_10();
    state.note_leader(2, 4);

    let error = state
        .apply_epoch_end(&tp(0), 3, 7, AutoOffsetReset::None)
        .expect_err("truncated below the position");

    match error {
        ClientError::LogTruncation {
            position,
            divergent_offset,
            ..
        } => assert_eq!((position, divergent_offset), (10, 7)),
        other => panic!("expected LogTruncation, got {other}"),
    }
    assert!(
        state.awaiting_validation,
        "no fetch until the application seeks"
    );
    assert_eq!(state.position, Some(10));

    state.seek(7);
    assert!(!state.awaiting_validation);
}

#[test]
fn an_unknown_epoch_on_the_leader_resets_by_the_policy() {
    let mut state = consumed_up_to_10();
    state.note_leader(2, 4);

    state
        .apply_epoch_end(&tp(0), -1, -1, AutoOffsetReset::Earliest)
        .expect("reset");

    assert_eq!(state.position, None);
    assert_eq!(state.source, PositionSource::ResetPolicy);
}

#[tokio::test]
async fn handed_out_records_set_the_position_epoch_and_fetches_the_fetch_epoch() {
    let broker = TestBroker::start().await;
    broker.topic_with_records("t", 1, 0).await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0)]).expect("assign");
    consumer.seek(&tp(0), 0).expect("seek");
    let mut outcome = answer(&consumer, 0, 0..2, 2, 2);
    if let Ok(results) = &mut outcome.result {
        if let PartitionFetch::Records {
            records,
            last_epoch,
            ..
        } = &mut results[0].1
        {
            *records = vec![record_in_epoch(0, 2), record_in_epoch(1, 5)];
            *last_epoch = Some(5);
        }
    }

    consumer.handle_fetch(outcome);
    assert_eq!(consumer.partitions[&tp(0)].fetch_epoch, Some(5));
    let records = consumer.take_records(1);

    assert_eq!(offsets(&records), vec![0]);
    assert_eq!(consumer.partitions[&tp(0)].position_epoch, Some(2));
    consumer.take_records(1);
    assert_eq!(consumer.partitions[&tp(0)].position_epoch, Some(5));
}

#[tokio::test]
async fn a_diverging_epoch_below_the_position_moves_it_back() {
    let broker = TestBroker::start().await;
    broker.topic_with_records("t", 1, 0).await;
    let mut consumer = broker.consumer(None).await;
    consumer.assign(&[tp(0)]).expect("assign");
    consumer.seek(&tp(0), 0).expect("seek");
    let state = consumer.partitions.get_mut(&tp(0)).expect("assigned");
    state.position = Some(10);
    state.position_epoch = Some(3);
    state.next_fetch = 10;
    let mut outcome = answer(&consumer, 0, 0..0, 10, 10);
    if let Ok(results) = &mut outcome.result {
        if let PartitionFetch::Records { diverging, .. } = &mut results[0].1 {
            *diverging = Some((3, 8));
        }
    }

    consumer.handle_fetch(outcome);

    assert_eq!(consumer.position(&tp(0)), Some(8));
    assert_eq!(consumer.partitions[&tp(0)].next_fetch, 8);
}

#[tokio::test]
async fn a_commit_carries_the_position_epoch_and_a_resumed_position_is_validated() {
    let broker = TestBroker::start().await;
    broker.topic_with_records("t", 1, 4).await;
    let mut first = broker.consumer(Some("epochs")).await;
    first.assign(&[tp(0)]).expect("assign");
    assert_eq!(offsets(&read(&mut first, 4).await), [0, 1, 2, 3]);
    let epoch = first.partitions[&tp(0)].position_epoch;
    assert!(
        epoch.is_some(),
        "the broker stamps a leader epoch on its batches"
    );
    first.commit().await.expect("commit");

    let committed = crate::offsets::fetch_committed_with_epochs(
        &first.cluster,
        "epochs",
        Some(&[tp(0)]),
        false,
    )
    .await
    .expect("committed");
    assert_eq!(committed[&tp(0)], (4, epoch));

    let mut second = broker.consumer(Some("epochs")).await;
    second.assign(&[tp(0)]).expect("assign");
    second.update_positions().await.expect("positions");
    let state = &second.partitions[&tp(0)];
    assert_eq!((state.position, state.position_epoch), (Some(4), epoch));
    assert!(
        state.awaiting_validation,
        "validated before the first fetch"
    );
    // This broker has no OffsetForLeaderEpoch: the position goes on unvalidated.
    second.ensure_leaders().await;
    second.validate_positions().await.expect("validate");
    assert!(!second.partitions[&tp(0)].awaiting_validation);
}
