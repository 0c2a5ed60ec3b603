//! Transactions over real TCP with requests encoded by the `kafka-protocol` crate: the last
//! stable offset and aborted transactions of read_committed fetches, KIP-890's refusal of
//! writes outside a transaction, Kafka's error codes for requests out of order, and recovery
//! after kill -9 (open transactions, the aborted-transaction index and the coordinator's state
//! all come back).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use millrace_testkit::wire::TestClient;
use millrace_testkit::{eventually, start_broker_in, TestBroker, TestCluster, FAST_FAILOVER};

const TOPIC: &str = "txn-topic";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A transactional batch of `n` records of a producer, sequences from `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

async fn create_topic(client: &mut TestClient) {
    create_topic_replicated(client, 1).await;
}

async fn create_topic_replicated(client: &mut TestClient, replication_factor: i16) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(replication_factor)])
        .with_timeout_ms(5000);
    let response = client.call(7, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
}

async fn find_coordinator(client: &mut TestClient, tid: &str) -> i16 {
    find_coordinator_node(client, tid).await.0
}

/// (error, coordinator node id) of a transactional id.
async fn find_coordinator_node(client: &mut TestClient, tid: &str) -> (i16, i32) {
    let request = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_key(s(tid));
    let r = client.call(3, &request).await;
    (r.error_code, r.node_id.0)
}

/// The coordinator of `tid` that succeeds `old`, as broker `via` names it once elected.
async fn new_coordinator(cluster: &TestCluster, via: i32, tid: &str, old: i32) -> i32 {
    let mut client = TestClient::connect(cluster.member(via).addr).await;
    for _ in 0..200 {
        let (error, node) = find_coordinator_node(&mut client, tid).await;
        if error == 0 && node != old {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no coordinator of {tid} succeeded broker {old}");
}

/// The leader of the test topic's partition 0, as `client`'s broker knows it.
async fn topic_leader(client: &mut TestClient) -> i32 {
    let request = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(s(TOPIC)))),
    ]));
    let r = client.call(12, &request).await;
    r.topics
        .first()
        .and_then(|t| t.partitions.first())
        .map_or(-1, |p| p.leader_id.0)
}

async fn init(client: &mut TestClient, tid: &str, timeout_ms: i32) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(tid))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r = client.call(4, &request).await;
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

/// AddPartitionsToTxn of the test topic's partition 0. In a cluster the coordinator may not
/// have applied a topic just created through another broker: UNKNOWN_TOPIC_OR_PARTITION is
/// retried for a few seconds, as a client would.
async fn add_partition(client: &mut TestClient, tid: &str, pid: i64, epoch: i16) -> i16 {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(tid)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![0])]);
    let mut attempts = 0;
    loop {
        let r = client.call(3, &request).await;
        let code = r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
        attempts += 1;
        if code != ResponseError::UnknownTopicOrPartition.code() || attempts == 100 {
            return code;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn produce(client: &mut TestClient, tid: &str, records: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s(tid))))
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let r = client.call(9, &request).await;
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn end_txn(client: &mut TestClient, tid: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(tid)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    client.call(3, &request).await.error_code
}

/// A read_committed fetch from offset 0: (bytes of records, last stable offset, high
/// watermark, aborted transactions as (producer id, first offset)).
async fn fetch_committed(client: &mut TestClient) -> (usize, i64, i64, Vec<(i64, i64)>) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(10 << 20)
        .with_isolation_level(1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(TOPIC)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let r = client.call(11, &request).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let aborted = p
        .aborted_transactions
        .iter()
        .flatten()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    (
        p.records.as_ref().map_or(0, |r| r.len()),
        p.last_stable_offset,
        p.high_watermark,
        aborted,
    )
}

/// ListOffsets latest for a read_committed consumer.
async fn latest_committed(client: &mut TestClient) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(1)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let r = client.call(7, &request).await;
    r.topics[0].partitions[0].offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_stops_at_the_open_transaction_and_names_the_aborted_one() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    create_topic(&mut client).await;
    assert_eq!(find_coordinator(&mut client, "t1").await, 0);
    let (error, pid, epoch) = init(&mut client, "t1", 60_000).await;
    assert_eq!(error, 0);
    assert_eq!(add_partition(&mut client, "t1", pid, epoch).await, 0);
    assert_eq!(
        produce(&mut client, "t1", txn_batch(pid, epoch, 0, 2)).await,
        (0, 0)
    );

    let (bytes, lso, hw, _) = fetch_committed(&mut client).await;
    assert_eq!((bytes, lso, hw), (0, 0, 2));
    assert_eq!(latest_committed(&mut client).await, 0);

    assert_eq!(end_txn(&mut client, "t1", pid, epoch, false).await, 0);
    let (bytes, lso, hw, aborted) = fetch_committed(&mut client).await;
    assert!(bytes > 0);
    assert_eq!((lso, hw), (3, 3), "two records and the abort marker");
    assert_eq!(aborted, vec![(pid, 0)]);
    assert_eq!(latest_committed(&mut client).await, 3);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_write_outside_the_transaction_is_refused() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    create_topic(&mut client).await;
    find_coordinator(&mut client, "t2").await;
    let (_, pid, epoch) = init(&mut client, "t2", 60_000).await;
    // No AddPartitionsToTxn: KIP-890's check refuses, and the LSO is not pinned.
    let (error, _) = produce(&mut client, "t2", txn_batch(pid, epoch, 0, 1)).await;
    assert_eq!(error, code(ResponseError::InvalidTxnState));
    let (_, lso, hw, _) = fetch_committed(&mut client).await;
    assert_eq!((lso, hw), (0, 0));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_out_of_order_get_kafkas_error_codes() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    create_topic(&mut client).await;
    find_coordinator(&mut client, "t3").await;
    assert_eq!(
        init(&mut client, "t3", i32::MAX).await.0,
        code(ResponseError::InvalidTransactionTimeout)
    );
    let (_, pid, epoch) = init(&mut client, "t3", 60_000).await;
    // EndTxn without a transaction.
    assert_eq!(
        end_txn(&mut client, "t3", pid, epoch, true).await,
        code(ResponseError::InvalidTxnState)
    );
    // An unknown producer id.
    assert_eq!(
        end_txn(&mut client, "t3", pid + 1000, epoch, true).await,
        code(ResponseError::InvalidProducerIdMapping)
    );
    // A second InitProducerId fences the first producer's epoch.
    let (_, pid2, epoch2) = init(&mut client, "t3", 60_000).await;
    assert_eq!((pid2, epoch2), (pid, epoch + 1));
    assert_eq!(
        add_partition(&mut client, "t3", pid, epoch).await,
        code(ResponseError::ProducerFenced)
    );
    // A fenced producer's write is refused too.
    assert_eq!(add_partition(&mut client, "t3", pid2, epoch2).await, 0);
    let (error, _) = produce(&mut client, "t3", txn_batch(pid, epoch, 0, 1)).await;
    assert_eq!(error, code(ResponseError::InvalidProducerEpoch));
    broker.shutdown().await;
}

/// Env var that turns [`transactions_child_process`] into a broker over the given dir.
const CHILD_DIR_ENV: &str = "MILLRACE_TXN_CHILD_DIR";

/// Not a test on its own: run by [`kill_9_keeps_open_and_aborted_transactions`] as a separate
/// process, it starts a broker over the dir, aborts one transaction, leaves a second open,
/// prints `ready <port> <pid> <epoch>` and waits to be killed. Without the env var it returns
/// at once.
#[test]
fn transactions_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let broker = start_broker_in(std::path::Path::new(&dir), &[]).await;
        let mut client = TestClient::connect(broker.local_addr()).await;
        create_topic(&mut client).await;
        find_coordinator(&mut client, "crash").await;
        let (_, pid, epoch) = init(&mut client, "crash", 600_000).await;
        add_partition(&mut client, "crash", pid, epoch).await;
        produce(&mut client, "crash", txn_batch(pid, epoch, 0, 2)).await; // 0..=1
        assert_eq!(end_txn(&mut client, "crash", pid, epoch, false).await, 0); // 2
        add_partition(&mut client, "crash", pid, epoch).await;
        produce(&mut client, "crash", txn_batch(pid, epoch, 2, 3)).await; // 3..=5, open
        println!("ready {} {pid} {epoch}", broker.local_addr().port());
        // Bounded, in case the parent dies without killing us.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

#[test]
fn kill_9_keeps_open_and_aborted_transactions() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "transactions_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // The test harness may print its own words before ours on the same line.
        .find_map(|l| l.split("ready ").nth(1).map(str::to_string))
        .expect("the child broker got ready");
    // SIGKILL: no shutdown, no snapshot, no index flush.
    child.kill().unwrap();
    child.wait().unwrap();
    let fields: Vec<&str> = ready.split(' ').collect();
    let port: u16 = fields[0].parse().unwrap();
    let pid: i64 = fields[1].parse().unwrap();
    let epoch: i16 = fields[2].parse().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let broker = millrace_testkit::start_broker_at(dir.path(), addr, &[]).await;
        let mut client = TestClient::connect(broker.local_addr()).await;
        let (_, lso, hw, aborted) = fetch_committed(&mut client).await;
        assert_eq!(
            (lso, hw),
            (3, 6),
            "the open transaction still bounds the LSO"
        );
        assert_eq!(aborted, vec![(pid, 0)]);
        // The coordinator replayed its state: the open transaction can be committed.
        let mut committed = -1;
        for _ in 0..100 {
            committed = end_txn(&mut client, "crash", pid, epoch, true).await;
            if committed == 0 {
                break;
            }
            // The coordinator may still be loading its partition after the restart.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(committed, 0);
        let (_, lso, hw, _) = fetch_committed(&mut client).await;
        assert_eq!((lso, hw), (7, 7));
        broker.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_coordinator_replays_the_open_transaction_and_commits_it() {
    let mut overrides = FAST_FAILOVER.to_vec();
    // One partition: the whole state moves with one leadership.
    overrides.push("transaction.state.log.num.partitions=1");
    let mut cluster = TestCluster::start(3, &overrides).await;
    let addr = |cluster: &TestCluster, id: i32| cluster.member(id).addr;
    let mut any = TestClient::connect(addr(&cluster, 1)).await;
    create_topic_replicated(&mut any, 3).await;
    let (error, coordinator) = find_coordinator_node(&mut any, "failover").await;
    assert_eq!(error, 0);
    let mut c = TestClient::connect(addr(&cluster, coordinator)).await;
    let (_, pid, epoch) = init(&mut c, "failover", 600_000).await;
    assert_eq!(add_partition(&mut c, "failover", pid, epoch).await, 0);
    let leader = topic_leader(&mut any).await;
    let mut l = TestClient::connect(addr(&cluster, leader)).await;
    assert_eq!(
        produce(&mut l, "failover", txn_batch(pid, epoch, 0, 3))
            .await
            .0,
        0
    );
    drop((c, l, any));

    // The coordinator stops without a controlled shutdown.
    cluster.halt(coordinator).await;
    let survivor = [1, 2, 3].into_iter().find(|n| *n != coordinator).unwrap();
    let next = new_coordinator(&cluster, survivor, "failover", coordinator).await;
    let mut c = TestClient::connect(addr(&cluster, next)).await;
    let mut committed = -1;
    for _ in 0..200 {
        committed = end_txn(&mut c, "failover", pid, epoch, true).await;
        if committed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed, 0, "the replayed transaction commits");
    eventually("the commit visible to read_committed on the leader", || {
        let cluster = &cluster;
        async move {
            let mut any = TestClient::connect(cluster.member(survivor).addr).await;
            let leader = topic_leader(&mut any).await;
            if leader <= 0 || leader == coordinator {
                return false;
            }
            let mut l = TestClient::connect(cluster.member(leader).addr).await;
            let (_, lso, hw, aborted) = fetch_committed(&mut l).await;
            lso == 4 && hw == 4 && aborted.is_empty()
        }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_open_transactions_and_their_producers() {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    create_topic(&mut client).await;
    find_coordinator(&mut client, "ops").await;
    let (_, pid, epoch) = init(&mut client, "ops", 60_000).await;
    add_partition(&mut client, "ops", pid, epoch).await;
    produce(&mut client, "ops", txn_batch(pid, epoch, 0, 2)).await;

    let listed = client
        .call(
            1,
            &ListTransactionsRequest::default()
                .with_state_filters(vec![s("Ongoing")])
                .with_duration_filter(-1),
        )
        .await;
    assert_eq!(listed.error_code, 0);
    let ids: Vec<(String, String)> = listed
        .transaction_states
        .iter()
        .map(|t| {
            (
                t.transactional_id.0.to_string(),
                t.transaction_state.to_string(),
            )
        })
        .collect();
    assert_eq!(ids, vec![("ops".to_string(), "Ongoing".to_string())]);

    let described = client
        .call(
            0,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![
                TransactionalId(s("ops")),
                TransactionalId(s("nope")),
            ]),
        )
        .await;
    let ops = &described.transaction_states[0];
    assert_eq!((ops.error_code, ops.producer_id.0), (0, pid));
    assert_eq!(ops.topics[0].topic.0.as_str(), TOPIC);
    assert_eq!(ops.topics[0].partitions, vec![0]);
    assert_eq!(
        described.transaction_states[1].error_code,
        code(ResponseError::TransactionalIdNotFound)
    );

    let producers = client
        .call(
            0,
            &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partition_indexes(vec![0])]),
        )
        .await;
    let partition = &producers.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let p = &partition.active_producers[0];
    assert_eq!(
        (p.producer_id.0, p.last_sequence, p.current_txn_start_offset),
        (pid, 1, 0)
    );

    end_txn(&mut client, "ops", pid, epoch, true).await;
    let described = client
        .call(
            0,
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("ops"))]),
        )
        .await;
    assert_eq!(
        described.transaction_states[0].transaction_state.as_str(),
        "CompleteCommit"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let broker =
        TestBroker::start(&["transaction.abort.timed.out.transaction.cleanup.interval.ms=100"])
            .await;
    let mut client = TestClient::connect(broker.addr()).await;
    create_topic(&mut client).await;
    find_coordinator(&mut client, "slow").await;
    let (_, pid, epoch) = init(&mut client, "slow", 300).await;
    add_partition(&mut client, "slow", pid, epoch).await;
    produce(&mut client, "slow", txn_batch(pid, epoch, 0, 2)).await;
    assert_eq!(fetch_committed(&mut client).await.1, 0);

    // The abort marker moves the last stable offset past the transaction.
    let addr = broker.addr();
    eventually("the timed-out transaction aborted", || async move {
        let mut client = TestClient::connect(addr).await;
        let (_, lso, hw, aborted) = fetch_committed(&mut client).await;
        lso == 3 && hw == 3 && aborted == vec![(pid, 0)]
    })
    .await;
    // The producer learns it was fenced: its late writes and its commit are refused.
    let (error, _) = produce(&mut client, "slow", txn_batch(pid, epoch, 2, 1)).await;
    assert_eq!(error, code(ResponseError::InvalidProducerEpoch));
    assert_eq!(
        end_txn(&mut client, "slow", pid, epoch, true).await,
        code(ResponseError::ProducerFenced)
    );
    broker.shutdown().await;
}

/// DescribeTransactions of one id: its error code and state.
async fn describe_one(client: &mut TestClient, tid: &str) -> (i16, String) {
    let described = client
        .call(
            0,
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s(tid))]),
        )
        .await;
    let state = &described.transaction_states[0];
    (state.error_code, state.transaction_state.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transactional_id_expires_and_one_in_a_transaction_does_not() {
    let dir = millrace_testkit::temp_dir();
    let settings = [
        "transactional.id.expiration.ms=400",
        "transaction.remove.expired.transaction.cleanup.interval.ms=100",
    ];
    let broker = start_broker_in(dir.path(), &settings).await;
    let addr = broker.local_addr();
    let mut client = TestClient::connect(addr).await;
    create_topic(&mut client).await;
    find_coordinator(&mut client, "busy").await;
    // "busy" opens a transaction before "idle" is even initialised, so by the time "idle"
    // expires, "busy" has been silent longer.
    let (_, busy_pid, busy_epoch) = init(&mut client, "busy", 60_000).await;
    assert_eq!(
        add_partition(&mut client, "busy", busy_pid, busy_epoch).await,
        0
    );
    let (error, idle_pid, idle_epoch) = init(&mut client, "idle", 60_000).await;
    assert_eq!(error, 0);
    assert_eq!(describe_one(&mut client, "idle").await.0, 0);

    eventually("the idle transactional id expired", || async move {
        let mut client = TestClient::connect(addr).await;
        describe_one(&mut client, "idle").await.0 == code(ResponseError::TransactionalIdNotFound)
    })
    .await;
    assert_eq!(
        describe_one(&mut client, "busy").await,
        (0, "Ongoing".to_string())
    );
    // The expired id's producer is unknown now; the id starts afresh with a new producer id.
    assert_eq!(
        add_partition(&mut client, "idle", idle_pid, idle_epoch).await,
        code(ResponseError::InvalidProducerIdMapping)
    );

    // The removal is durable: a restart replays the tombstone.
    broker.shutdown().await;
    let broker = start_broker_in(dir.path(), &settings).await;
    let addr = broker.local_addr();
    let mut client = TestClient::connect(addr).await;
    find_coordinator(&mut client, "idle").await;
    eventually("the coordinator loaded the state again", || async move {
        let mut client = TestClient::connect(addr).await;
        describe_one(&mut client, "busy").await == (0, "Ongoing".to_string())
    })
    .await;
    assert_eq!(
        describe_one(&mut client, "idle").await.0,
        code(ResponseError::TransactionalIdNotFound)
    );
    let (error, new_pid, _) = init(&mut client, "idle", 60_000).await;
    assert_eq!(error, 0);
    assert_ne!(new_pid, idle_pid);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_for_a_group_outside_the_transaction_is_refused() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    create_topic(&mut client).await;
    find_coordinator(&mut client, "offs").await;
    let (_, pid, epoch) = init(&mut client, "offs", 60_000).await;
    add_partition(&mut client, "offs", pid, epoch).await;
    // The group's coordinator exists, but AddOffsetsToTxn never added the group.
    let group = FindCoordinatorRequest::default().with_key(s("g"));
    assert_eq!(client.call(3, &group).await.error_code, 0);
    assert_eq!(
        commit_offset_5_of_g(&mut client, pid, epoch).await,
        code(ResponseError::InvalidTxnState)
    );
    broker.shutdown().await;
}

/// TxnOffsetCommit by "offs" of offset 5 for group "g" on the test topic's partition 0: the
/// partition's error code.
async fn commit_offset_5_of_g(client: &mut TestClient, pid: i64, epoch: i16) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("offs")))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])]);
    client.call(3, &request).await.topics[0].partitions[0].error_code
}

/// OffsetFetch v7 of group "g" for the test topic's partition 0: (error code, offset).
async fn offset_of_g(client: &mut TestClient, require_stable: bool) -> (i16, i64) {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(vec![0])]))
        .with_require_stable(require_stable);
    let response = client.call(7, &request).await;
    assert_eq!(response.error_code, 0);
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.committed_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_an_open_transaction_writes_is_unstable_for_those_who_require_stable_offsets() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    create_topic(&mut client).await;
    find_coordinator(&mut client, "offs").await;
    let (_, pid, epoch) = init(&mut client, "offs", 60_000).await;
    let group = FindCoordinatorRequest::default().with_key(s("g"));
    assert_eq!(client.call(3, &group).await.error_code, 0);
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("offs")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(s("g")));
    assert_eq!(client.call(3, &add).await.error_code, 0);
    assert_eq!(commit_offset_5_of_g(&mut client, pid, epoch).await, 0);

    // While the transaction is open: unstable for a read_committed consumer (KIP-447), the
    // offset before it (none) for everyone else.
    assert_eq!(
        offset_of_g(&mut client, true).await,
        (code(ResponseError::UnstableOffsetCommit), -1)
    );
    assert_eq!(offset_of_g(&mut client, false).await, (0, -1));
    assert_eq!(end_txn(&mut client, "offs", pid, epoch, true).await, 0);
    assert_eq!(offset_of_g(&mut client, true).await, (0, 5));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_reach_the_new_leader_when_the_partition_leader_stops_before_the_commit() {
    let mut overrides = FAST_FAILOVER.to_vec();
    overrides.push("transaction.state.log.num.partitions=1");
    let mut cluster = TestCluster::start(3, &overrides).await;
    let addr = |cluster: &TestCluster, id: i32| cluster.member(id).addr;
    let mut any = TestClient::connect(addr(&cluster, 1)).await;
    create_topic_replicated(&mut any, 3).await;
    let (_, coordinator) = find_coordinator_node(&mut any, "leader-stops").await;
    let leader = topic_leader(&mut any).await;
    let mut c = TestClient::connect(addr(&cluster, coordinator)).await;
    let (_, pid, epoch) = init(&mut c, "leader-stops", 600_000).await;
    assert_eq!(add_partition(&mut c, "leader-stops", pid, epoch).await, 0);
    let mut l = TestClient::connect(addr(&cluster, leader)).await;
    assert_eq!(
        produce(&mut l, "leader-stops", txn_batch(pid, epoch, 0, 3))
            .await
            .0,
        0
    );
    drop((l, any));
    if leader == coordinator {
        // Placement put both on one broker: the coordinator failover test covers that case.
        eprintln!("SKIP: the coordinator leads the data partition too");
        cluster.shutdown().await;
        return;
    }
    // The data partition's leader stops; the commit's marker must go to its successor.
    cluster.halt(leader).await;
    let mut committed = -1;
    for _ in 0..200 {
        committed = end_txn(&mut c, "leader-stops", pid, epoch, true).await;
        if committed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed, 0);
    eventually("the commit marker on the new leader", || {
        let cluster = &cluster;
        async move {
            let mut c = TestClient::connect(cluster.member(coordinator).addr).await;
            let new_leader = topic_leader(&mut c).await;
            if new_leader <= 0 || new_leader == leader {
                return false;
            }
            let mut l = TestClient::connect(cluster.member(new_leader).addr).await;
            let (_, lso, hw, aborted) = fetch_committed(&mut l).await;
            lso == 4 && hw == 4 && aborted.is_empty()
        }
    })
    .await;
    cluster.shutdown().await;
}

/// A transactional produce at `version` to partition 0: (error, base offset).
async fn produce_at(
    client: &mut TestClient,
    version: i16,
    tid: &str,
    records: Bytes,
) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s(tid))))
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let r = client.call(version, &request).await;
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// EndTxn v5: (error, producer id, producer epoch to go on with).
async fn end_txn_v5(
    client: &mut TestClient,
    tid: &str,
    pid: i64,
    epoch: i16,
    commit: bool,
) -> (i16, i64, i16) {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(tid)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let r = client.call(5, &request).await;
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_version_2_adds_partitions_on_write_and_ends_each_transaction_at_a_new_epoch() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    create_topic(&mut client).await;

    // The broker says clients may use transaction version 2.
    let versions = client.call(3, &ApiVersionsRequest::default()).await;
    let finalized = versions
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == "transaction.version")
        .expect("transaction.version is finalized");
    assert_eq!(finalized.max_version_level, 2);
    let end_txn_max = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::EndTxn as i16)
        .map(|k| k.max_version);
    assert_eq!(end_txn_max, Some(5));

    find_coordinator(&mut client, "tv2").await;
    let (_, pid, epoch) = init(&mut client, "tv2", 60_000).await;
    // No AddPartitionsToTxn: the first Produce v12 brings the partition in.
    assert_eq!(
        produce_at(&mut client, 12, "tv2", txn_batch(pid, epoch, 0, 2)).await,
        (0, 0)
    );
    let (_, lso, hw, _) = fetch_committed(&mut client).await;
    assert_eq!((lso, hw), (0, 2), "the open transaction holds the LSO");
    let (error, next_pid, next_epoch) = end_txn_v5(&mut client, "tv2", pid, epoch, true).await;
    assert_eq!(error, 0);
    assert_eq!(
        (next_pid, next_epoch),
        (pid, epoch + 1),
        "a new epoch per transaction"
    );
    let (bytes, lso, hw, aborted) = fetch_committed(&mut client).await;
    assert!(bytes > 0);
    assert_eq!((lso, hw), (3, 3), "two records and the commit marker");
    assert!(aborted.is_empty());

    // The answer was lost and the producer asks again: the same answer, nothing written.
    assert_eq!(
        end_txn_v5(&mut client, "tv2", pid, epoch, true).await,
        (0, pid, epoch + 1)
    );
    // A zombie write of the ended transaction at the old epoch is fenced by the marker's
    // new epoch, and changes nothing.
    let (error, _) = produce_at(&mut client, 12, "tv2", txn_batch(pid, epoch, 2, 1)).await;
    assert_eq!(error, code(ResponseError::InvalidProducerEpoch));
    assert_eq!(fetch_committed(&mut client).await.2, 3);

    // The next transaction, at the new epoch (sequences start again), is aborted.
    assert_eq!(
        produce_at(&mut client, 12, "tv2", txn_batch(pid, epoch + 1, 0, 1)).await,
        (0, 3)
    );
    let (error, _, after_abort) = end_txn_v5(&mut client, "tv2", pid, epoch + 1, false).await;
    assert_eq!((error, after_abort), (0, epoch + 2));
    let (_, lso, hw, aborted) = fetch_committed(&mut client).await;
    assert_eq!((lso, hw), (5, 5));
    assert_eq!(aborted, vec![(pid, 3)]);

    // A transaction that wrote nothing still ends at a new epoch, without a marker.
    assert_eq!(
        end_txn_v5(&mut client, "tv2", pid, epoch + 2, true).await,
        (0, pid, epoch + 3)
    );
    assert_eq!(fetch_committed(&mut client).await.2, 5);

    // Transaction version 1 on the same broker: EndTxn v3 keeps the epoch.
    find_coordinator(&mut client, "tv1").await;
    let (_, pid1, epoch1) = init(&mut client, "tv1", 60_000).await;
    assert_eq!(add_partition(&mut client, "tv1", pid1, epoch1).await, 0);
    assert_eq!(
        produce_at(&mut client, 9, "tv1", txn_batch(pid1, epoch1, 0, 1))
            .await
            .0,
        0
    );
    assert_eq!(end_txn(&mut client, "tv1", pid1, epoch1, true).await, 0);
    assert_eq!(
        produce_at(&mut client, 9, "tv1", txn_batch(pid1, epoch1, 1, 1))
            .await
            .0,
        code(ResponseError::InvalidTxnState),
        "a v9 write outside a transaction is still only verified, never added"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_version_2_across_brokers_and_a_coordinator_failover() {
    use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
    let mut overrides = FAST_FAILOVER.to_vec();
    overrides.push("transaction.state.log.num.partitions=1");
    let mut cluster = TestCluster::start(3, &overrides).await;
    let addr = |cluster: &TestCluster, id: i32| cluster.member(id).addr;
    let mut any = TestClient::connect(addr(&cluster, 1)).await;
    let (error, coordinator) = find_coordinator_node(&mut any, "tv2-cluster").await;
    assert_eq!(error, 0);
    // The topic's leader is another broker: it asks the coordinator (AddPartitionsToTxn v5)
    // to add the partition on the first write.
    let others: Vec<i32> = [1, 2, 3]
        .into_iter()
        .filter(|n| *n != coordinator)
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(vec![
                    BrokerId(others[0]),
                    BrokerId(others[1]),
                    BrokerId(coordinator),
                ])])])
        .with_timeout_ms(5000);
    assert_eq!(any.call(7, &request).await.topics[0].error_code, 0);
    let leader = others[0];
    let mut c = TestClient::connect(addr(&cluster, coordinator)).await;
    let (_, pid, epoch) = init(&mut c, "tv2-cluster", 600_000).await;
    let mut l = TestClient::connect(addr(&cluster, leader)).await;
    let mut written = (-1, -1);
    for _ in 0..100 {
        // Until the leader has applied its leadership.
        written = produce_at(&mut l, 12, "tv2-cluster", txn_batch(pid, epoch, 0, 2)).await;
        if written.0 != code(ResponseError::NotLeaderOrFollower)
            && written.0 != code(ResponseError::UnknownTopicOrPartition)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(written, (0, 0));
    assert_eq!(
        end_txn_v5(&mut c, "tv2-cluster", pid, epoch, true).await,
        (0, pid, epoch + 1)
    );
    drop((c, any));

    // The coordinator dies; its successor replays the state (version 1 records) and knows
    // the transaction ended at the new epoch: a retried EndTxn gets the same answer.
    cluster.halt(coordinator).await;
    let next = new_coordinator(&cluster, leader, "tv2-cluster", coordinator).await;
    let mut c = TestClient::connect(addr(&cluster, next)).await;
    let mut retried = (-1, -1, -1);
    for _ in 0..200 {
        retried = end_txn_v5(&mut c, "tv2-cluster", pid, epoch, true).await;
        if retried.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(retried, (0, pid, epoch + 1));
    let (bytes, lso, hw, aborted) = fetch_committed(&mut l).await;
    assert!(bytes > 0);
    assert_eq!((lso, hw), (3, 3), "two records and the commit marker");
    assert!(aborted.is_empty());
    cluster.shutdown().await;
}
