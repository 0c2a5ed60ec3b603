//! The transactional producer against an in-process broker: commit, abort, offsets sent to a
//! transaction, fencing by a newer producer, calls out of order, and read_committed
//! consumers skipping aborted records.
#![allow(clippy::unwrap_used)]

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::time::{Duration, Instant};

use millrace_client::admin::NewTopic;
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::IsolationLevel;
use millrace_client::{
    Admin, ClientError, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use millrace_testkit::wire::TestClient;
use millrace_testkit::{TestBroker, FAST_GROUPS};

async fn producer(broker: &TestBroker, transactional_id: &str) -> Producer {
    let config = ProducerConfig::builder(broker.client_config("txn-test"))
        .transactional_id(transactional_id)
        .build()
        .unwrap();
    Producer::connect(config).await.unwrap()
}

async fn send(producer: &Producer, value: &str) {
    // The delivery is awaited through commit/abort (which flush), not record by record.
    let _delivery = producer
        .send(ProducerRecord::new("t", value.as_bytes().to_vec()).partition(0))
        .await
        .unwrap();
}

/// A read_committed fetch of t-0 from 0: (last stable offset, high watermark, aborted
/// transactions' first offsets).
async fn read_committed(broker: &TestBroker) -> (i64, i64, Vec<i64>) {
    let mut client = TestClient::connect(broker.addr()).await;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = client.call(11, &request).await;
    let p = &response.responses[0].partitions[0];
    let aborted = p
        .aborted_transactions
        .iter()
        .flatten()
        .map(|a| a.first_offset)
        .collect();
    (p.last_stable_offset, p.high_watermark, aborted)
}

/// The epoch of `producer`'s last write to t-0, as DescribeProducers reports it.
async fn epoch_on_t0(admin: &Admin, producer: &Producer) -> i32 {
    let t0 = TopicPartition::new("t", 0);
    let producers = admin
        .describe_producers(std::slice::from_ref(&t0))
        .await
        .unwrap();
    let state = producers[&t0]
        .iter()
        .find(|p| p.producer_id == producer.producer_id())
        .expect("the producer wrote to t-0");
    state.producer_epoch
}

async fn setup() -> (TestBroker, Admin) {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let admin = Admin::connect(broker.client_config("txn-admin"))
        .await
        .unwrap();
    admin.create_topic(NewTopic::new("t", 1)).await.unwrap();
    (broker, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_and_aborted_transactions_end_with_their_markers() {
    let (broker, _admin) = setup().await;
    let producer = producer(&broker, "tx-a").await;
    producer.begin_transaction().unwrap();
    for v in ["a", "b", "c"] {
        send(&producer, v).await;
    }
    producer.commit_transaction().await.unwrap();
    assert_eq!(read_committed(&broker).await, (4, 4, vec![]));

    producer.begin_transaction().unwrap();
    send(&producer, "x").await;
    send(&producer, "y").await;
    producer.flush().await;
    // Open: read_committed consumers stop before it.
    assert_eq!(read_committed(&broker).await.0, 4);
    producer.abort_transaction().await.unwrap();
    assert_eq!(read_committed(&broker).await, (7, 7, vec![4]));
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_consumer_waits_for_offsets_an_open_transaction_writes() {
    let (broker, admin) = setup().await;
    let producer = producer(&broker, "tx-stable").await;
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&[("t".to_string(), 0, 7)], "g")
        .await
        .unwrap();
    let config = |level| {
        ConsumerConfig::builder(broker.client_config("stable-reader"))
            .group_id("g")
            .isolation_level(level)
            .build()
            .unwrap()
    };
    let t0 = [TopicPartition::new("t", 0)];
    // read_uncommitted answers at once with the offset before the transaction (none)...
    let uncommitted = Consumer::connect(config(IsolationLevel::ReadUncommitted))
        .await
        .unwrap();
    assert!(uncommitted.committed(&t0).await.unwrap().is_empty());
    // ...read_committed waits until the transaction has ended (KIP-447's require_stable).
    let committed_reader = Consumer::connect(config(IsolationLevel::ReadCommitted))
        .await
        .unwrap();
    let waiting = committed_reader.committed(&t0);
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a read_committed consumer got an offset an open transaction is writing"
    );
    producer.commit_transaction().await.unwrap();
    let offsets = waiting.await.unwrap();
    assert_eq!(offsets.get(&t0[0]), Some(&7));
    assert_eq!(admin.list_group_offsets("g").await.unwrap().len(), 1);
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_are_committed_with_it() {
    let (broker, admin) = setup().await;
    let producer = producer(&broker, "tx-offsets").await;
    producer.begin_transaction().unwrap();
    send(&producer, "out").await;
    producer
        .send_offsets_to_transaction(&[("t".to_string(), 0, 42)], "g")
        .await
        .unwrap();
    producer.abort_transaction().await.unwrap();
    assert!(admin.list_group_offsets("g").await.unwrap().is_empty());

    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&[("t".to_string(), 0, 43)], "g")
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    let offsets = admin.list_group_offsets("g").await.unwrap();
    assert_eq!(offsets.get(&TopicPartition::new("t", 0)), Some(&43));
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_producer_with_the_same_id_fences_the_older_one() {
    let (broker, _admin) = setup().await;
    let zombie = producer(&broker, "tx-z").await;
    zombie.begin_transaction().unwrap();
    send(&zombie, "zombie").await;
    zombie.flush().await;

    let successor = producer(&broker, "tx-z").await;
    let error = zombie.commit_transaction().await.unwrap_err();
    assert!(
        matches!(error, ClientError::ProducerFenced { .. }),
        "{error}"
    );
    assert!(zombie.is_fenced());
    // The zombie's open transaction was aborted when the successor initialised.
    assert_eq!(read_committed(&broker).await, (2, 2, vec![0]));

    successor.begin_transaction().unwrap();
    send(&successor, "successor").await;
    successor.commit_transaction().await.unwrap();
    assert_eq!(read_committed(&broker).await.0, 4);
    successor.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_calls_out_of_order_are_refused() {
    let (broker, _admin) = setup().await;
    let producer = producer(&broker, "tx-order").await;
    let outside = producer
        .send(ProducerRecord::new("t", b"v".to_vec()).partition(0))
        .await;
    assert!(matches!(outside, Err(ClientError::TransactionState(_))));
    assert!(matches!(
        producer.commit_transaction().await,
        Err(ClientError::TransactionState(_))
    ));
    producer.begin_transaction().unwrap();
    assert!(matches!(
        producer.begin_transaction(),
        Err(ClientError::TransactionState(_))
    ));
    producer.abort_transaction().await.unwrap();
    producer.close().await;
    broker.shutdown().await;
}

/// Every record of t-0 a consumer with `level` reads from the beginning, as strings.
async fn consume(broker: &TestBroker, level: IsolationLevel, expected: usize) -> Vec<String> {
    let config = ConsumerConfig::builder(broker.client_config("txn-reader"))
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100))
        .isolation_level(level)
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(config).await.unwrap();
    let partition = [TopicPartition::new("t", 0)];
    consumer.assign(&partition).unwrap();
    consumer.seek_to_beginning(&partition).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut values = Vec::new();
    while values.len() < expected && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            values.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into());
        }
    }
    // Anything wrongly delivered after the expected records would show up here.
    values.extend(
        consumer
            .poll(Duration::from_millis(300))
            .await
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into()),
    );
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_consumers_skip_aborted_records_and_read_uncommitted_ones_do_not() {
    let (broker, _admin) = setup().await;
    let producer = producer(&broker, "tx-read").await;
    for (values, commit) in [
        (["c1", "c2"], true),
        (["a1", "a2"], false),
        (["c3", "c4"], true),
    ] {
        producer.begin_transaction().unwrap();
        for v in values {
            send(&producer, v).await;
        }
        if commit {
            producer.commit_transaction().await.unwrap();
        } else {
            producer.abort_transaction().await.unwrap();
        }
    }
    assert_eq!(
        consume(&broker, IsolationLevel::ReadCommitted, 4).await,
        ["c1", "c2", "c3", "c4"]
    );
    assert_eq!(
        consume(&broker, IsolationLevel::ReadUncommitted, 6).await,
        ["c1", "c2", "a1", "a2", "c3", "c4"]
    );
    producer.close().await;
    broker.shutdown().await;
}

/// Reads t-0 with read_committed from the beginning until the position reaches the end
/// ListOffsets answers (the last stable offset); returns the values and where it stopped.
async fn read_to_end(broker: &TestBroker) -> (Vec<String>, i64, Option<i64>) {
    let config = ConsumerConfig::builder(broker.client_config("txn-end-reader"))
        .fetch_max_wait(Duration::from_millis(100))
        .isolation_level(IsolationLevel::ReadCommitted)
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(config).await.unwrap();
    let tp = TopicPartition::new("t", 0);
    let end = consumer
        .offsets_for(
            std::slice::from_ref(&tp),
            millrace_client::OffsetSpec::Latest,
        )
        .await
        .unwrap()[&tp]
        .offset;
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer
        .seek_to_beginning(std::slice::from_ref(&tp))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut values = Vec::new();
    while consumer.position(&tp).is_none_or(|p| p < end) && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            values.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into());
        }
    }
    (values, end, consumer.position(&tp))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_consumer_reaches_the_end_past_a_commit_marker() {
    let (broker, _admin) = setup().await;
    let producer = producer(&broker, "tx-end-commit").await;
    producer.begin_transaction().unwrap();
    send(&producer, "c1").await;
    producer.commit_transaction().await.unwrap();
    assert_eq!(
        read_to_end(&broker).await,
        (vec!["c1".to_string()], 2, Some(2))
    );
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_consumer_reaches_the_end_past_the_abort_marker_of_a_fenced_producer() {
    let (broker, _admin) = setup().await;
    let first = producer(&broker, "tx-end-fenced").await;
    first.begin_transaction().unwrap();
    send(&first, "c1").await;
    first.commit_transaction().await.unwrap();
    first.begin_transaction().unwrap();
    send(&first, "a1").await;
    first.flush().await;
    // The successor's initialisation aborts the open transaction (a marker at offset 3).
    let successor = producer(&broker, "tx-end-fenced").await;
    assert_eq!(
        read_to_end(&broker).await,
        (vec!["c1".to_string()], 4, Some(4))
    );
    successor.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_with_a_generation_that_ended_are_refused_and_the_current_one_accepted() {
    let (broker, _admin) = setup().await;
    let config = ConsumerConfig::builder(broker.client_config("txn-member"))
        .group_id("g447")
        .fetch_max_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.subscribe(&["t"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.assignment().is_empty() {
        assert!(Instant::now() < deadline, "never assigned");
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    let current = consumer.group_metadata().unwrap();
    let ended = millrace_client::consumer::ConsumerGroupMetadata {
        generation_id: current.generation_id + 5,
        member_id: "a-zombie".into(),
        ..current.clone()
    };
    let producer = producer(&broker, "tx-447").await;
    producer.begin_transaction().unwrap();
    let error = producer
        .send_offsets_to_transaction_for(&[("t".to_string(), 0, 1)], &ended)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.kafka_error(),
            Some(
                millrace_client::ResponseError::IllegalGeneration
                    | millrace_client::ResponseError::UnknownMemberId
            )
        ),
        "{error}"
    );
    producer.abort_transaction().await.unwrap();
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction_for(&[("t".to_string(), 0, 1)], &current)
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    producer.close().await;
    consumer.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn on_transaction_version_2_each_transaction_ends_at_a_new_epoch() {
    let (broker, admin) = setup().await;
    let producer = producer(&broker, "tv2").await;
    // Two transactions, one committed and one aborted, with no AddPartitionsToTxn: the
    // broker finalizes transaction.version 2, so the partition joins on its first write.
    producer.begin_transaction().unwrap();
    send(&producer, "a").await;
    producer.commit_transaction().await.unwrap();
    producer.begin_transaction().unwrap();
    send(&producer, "b").await;
    producer.abort_transaction().await.unwrap();
    producer.begin_transaction().unwrap();
    send(&producer, "c").await;
    producer.commit_transaction().await.unwrap();

    // Each marker carried the next epoch: a fresh id starts at 0, so three ends make 3. (The
    // writes at each new epoch were accepted, so their sequences started again at 0.)
    assert_eq!(epoch_on_t0(&admin, &producer).await, 3);
    let (lso, hw, aborted) = read_committed(&broker).await;
    assert_eq!((lso, hw), (6, 6), "three records and three markers");
    assert_eq!(aborted, vec![2]);
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_commits_in_the_background_end_in_order_and_all_commit() {
    let (broker, admin) = setup().await;
    let producer = producer(&broker, "pipelined").await;
    producer.begin_transaction().unwrap();
    let mut pending = Vec::new();
    let mut expected = Vec::new();
    // More hand-overs than commits may go on at once: the call waits for room, never fails.
    for t in 0..millrace_client::producer::MAX_COMMITS_IN_FLIGHT + 3 {
        for r in 0..2 {
            let value = format!("t{t}r{r}");
            send(&producer, &value).await;
            expected.push(value);
        }
        pending.push(producer.commit_and_begin_transaction().await.unwrap());
    }
    send(&producer, "last").await;
    expected.push("last".to_string());
    producer.commit_transaction().await.unwrap();
    for commit in pending {
        commit.await.unwrap();
    }

    assert_eq!(
        consume(&broker, IsolationLevel::ReadCommitted, expected.len()).await,
        expected
    );
    let ends = millrace_client::producer::MAX_COMMITS_IN_FLIGHT + 4;
    assert_eq!(epoch_on_t0(&admin, &producer).await as usize, ends);
    let (lso, hw, aborted) = read_committed(&broker).await;
    assert_eq!(
        hw,
        (expected.len() + ends) as i64,
        "the records and a marker per end"
    );
    assert_eq!(lso, hw);
    assert!(aborted.is_empty());
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_begun_while_the_one_before_commits_is_written_after_that_commit() {
    let (broker, admin) = setup().await;
    let producer = producer(&broker, "overlap").await;
    producer.begin_transaction().unwrap();
    send(&producer, "c1").await;
    send(&producer, "c2").await;
    let first = producer.commit_and_begin_transaction().await.unwrap();
    // Sent while the first commits: they must wait for its end, or they would join it (the
    // first write of a partition adds it to the coordinator's open transaction) and commit
    // with it instead of being aborted here.
    send(&producer, "a1").await;
    send(&producer, "a2").await;
    producer.abort_transaction().await.unwrap();
    first.await.unwrap();
    producer.begin_transaction().unwrap();
    send(&producer, "c3").await;
    let second = producer.commit_and_begin_transaction().await.unwrap();
    send(&producer, "c4").await;
    producer.commit_transaction().await.unwrap();
    second.await.unwrap();

    assert_eq!(
        consume(&broker, IsolationLevel::ReadCommitted, 4).await,
        ["c1", "c2", "c3", "c4"]
    );
    let (lso, hw, aborted) = read_committed(&broker).await;
    // c1 c2 | commit | a1 a2 | abort | c3 | commit | c4 | commit
    assert_eq!((lso, hw), (10, 10));
    assert_eq!(aborted, vec![3]);
    assert_eq!(epoch_on_t0(&admin, &producer).await, 4, "four ends");
    producer.close().await;
    broker.shutdown().await;
}
