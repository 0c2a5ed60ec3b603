//! What every scenario shares: one scenario at a time on its own runtime, a cluster with a
//! replicated topic, waits on the cluster's metadata, raw Produce requests sent to one chosen
//! broker, and the final read and check.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use millrace_client::admin::NewTopic;
use millrace_testkit::cluster::ClusterProcesses;
use millrace_testkit::jepsen::topology::{self, PartitionView};
use millrace_testkit::jepsen::workload::{final_read, RunningWorkload, Workload};
use millrace_testkit::jepsen::{check, CheckReport, Recorder, SendOutcome};
use millrace_testkit::records::{batch, record};
use millrace_testkit::wire::TestClient;

/// Partitions of every scenario's topic.
pub const PARTITIONS: i32 = 3;

/// Kafka's error codes the scenarios expect.
pub const NONE: i16 = 0;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const FENCED_LEADER_EPOCH: i16 = 74;

/// What a broker that is no longer (or cannot act as) the leader may answer an acks=all
/// produce: refused, or not acknowledged in time; never success.
pub const REFUSALS: [i16; 4] = [
    NOT_LEADER_OR_FOLLOWER,
    FENCED_LEADER_EPOCH,
    REQUEST_TIMED_OUT,
    NOT_ENOUGH_REPLICAS,
];

/// Held while a scenario runs: each starts three to five broker processes and times failovers
/// in seconds, which two scenarios sharing this machine's two cores would distort.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `scenario` on a runtime of its own, one scenario of this binary at a time, and prints
/// how long it took.
pub fn run<F: Future<Output = ()>>(name: &str, scenario: F) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    runtime.block_on(scenario);
    eprintln!("scenario {name} took {:?}", started.elapsed());
}

/// The `millrace` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_millrace")
}

/// Starts `brokers` brokers (all voters) with `overrides` and waits until the metadata lists
/// every one.
pub async fn start_cluster(brokers: usize, overrides: &[&str]) -> ClusterProcesses {
    let mut settings = vec!["group.initial.rebalance.delay.ms=0"];
    settings.extend_from_slice(overrides);
    let mut cluster = ClusterProcesses::plan(binary(), brokers, &settings);
    cluster.start_all().unwrap();
    cluster
        .wait_for_brokers(Duration::from_secs(60))
        .await
        .unwrap();
    cluster
}

/// Creates `topic` with `replication_factor` and min.insync.replicas=2 and waits until every
/// partition has a leader.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, replication_factor: i16) {
    let client = millrace_client::ClientConfig::new(bootstrap);
    millrace_testkit::create_topic_with(
        &client,
        NewTopic::new(topic, partitions)
            .replication_factor(replication_factor)
            .config("min.insync.replicas", "2"),
    )
    .await;
    for partition in 0..partitions {
        topology::wait_for_leader(bootstrap, topic, partition, None, Duration::from_secs(30))
            .await
            .unwrap();
    }
}

/// A three-broker cluster with a replicated topic (RF=3, min.insync.replicas=2).
pub async fn cluster_with_topic(topic: &str, overrides: &[&str]) -> ClusterProcesses {
    let cluster = start_cluster(3, overrides).await;
    create_topic(&cluster.bootstrap(), topic, PARTITIONS, 3).await;
    cluster
}

/// `HOST:PORT,...` of every broker but `except` (a bootstrap list that avoids a broker whose
/// stale metadata would answer).
pub fn bootstrap_without(cluster: &ClusterProcesses, except: i32) -> String {
    let addrs: Vec<String> = cluster
        .specs()
        .iter()
        .filter(|s| s.id != except)
        .map(|s| s.client_addr.to_string())
        .collect();
    addrs.join(",")
}

/// The load most scenarios run under: two producers at 300 writes/s each (acks=all,
/// idempotent), one consumer assigned every partition and `group_consumers` in a group;
/// returns once `acks` writes are acknowledged (failing with `what` otherwise).
pub async fn steady_load(
    bootstrap: &str,
    topic: &str,
    group_consumers: usize,
    acks: u64,
    what: &str,
) -> (Recorder, RunningWorkload) {
    let recorder = Recorder::new();
    let mut running = Workload::new(bootstrap, topic, PARTITIONS)
        .producers(2)
        .consumers(1, group_consumers)
        .rate_per_producer(300.0)
        .start(recorder.clone());
    wait_for_acks(&mut running, &recorder, acks, what).await;
    (recorder, running)
}

/// Waits until `more` sends more than so far were acknowledged (within 60 s), failing the
/// test with `what` otherwise (and what the producers last heard, and the timeline).
pub async fn wait_for_acks(
    running: &mut RunningWorkload,
    recorder: &Recorder,
    more: u64,
    what: &str,
) {
    let want = running.acked() + more;
    if running.wait_for_acks(want, Duration::from_secs(60)).await {
        return;
    }
    let history = recorder.snapshot();
    let unacked: Vec<String> = history
        .sends
        .iter()
        .rev()
        .filter(|s| !matches!(s.outcome, SendOutcome::Acked { .. }))
        .take(6)
        .map(|s| format!("{:?} at {:?}: {:?}", s.partition, s.at, s.outcome))
        .collect();
    panic!(
        "{what}: {} of {want} writes acknowledged; the last sends not acknowledged: \
         {unacked:#?}\n{}",
        running.acked(),
        check(&history)
    );
}

/// Polls the metadata every 100 ms until partition `partition` of `topic` satisfies `ok`
/// (an ISR change or an election has no event a test could await from outside), failing the
/// test with `what` after `within`.
pub async fn wait_for_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    within: Duration,
    what: &str,
    ok: impl Fn(&PartitionView) -> bool,
) -> PartitionView {
    let deadline = Instant::now() + within;
    loop {
        let last = match topology::describe_partitions(bootstrap, topic).await {
            Ok(views) => match views.into_iter().find(|v| v.partition == partition) {
                Some(view) if ok(&view) => return view,
                Some(view) => format!("{view:?}"),
                None => "no such partition".to_string(),
            },
            Err(e) => format!("{e:#}"),
        };
        assert!(
            Instant::now() < deadline,
            "{topic}-{partition}: {what} did not happen within {within:?} (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The partition as the metadata describes it now.
pub async fn partition_view(bootstrap: &str, topic: &str, partition: i32) -> PartitionView {
    wait_for_partition(
        bootstrap,
        topic,
        partition,
        Duration::from_secs(30),
        "a description",
        |_| true,
    )
    .await
}

/// True if every replica is in the ISR and there is a leader.
/// A replica of the partition that is not its leader.
pub fn a_follower(view: &PartitionView) -> i32 {
    *view
        .replicas
        .iter()
        .find(|id| Some(**id) != view.leader)
        .expect("a follower")
}

/// kill -9 of broker `id`, noted in the history as "kill -9 of broker ID, `role`".
pub fn kill9_noted(cluster: &mut ClusterProcesses, recorder: &Recorder, id: i32, role: &str) {
    cluster.kill9(id).unwrap();
    recorder.note(format!("kill -9 of broker {id}, {role}"));
}

pub fn fully_in_sync(view: &PartitionView) -> bool {
    let mut isr = view.isr.clone();
    isr.sort_unstable();
    let mut replicas = view.replicas.clone();
    replicas.sort_unstable();
    view.leader.is_some() && isr == replicas
}

/// Waits until every partition of `topic` has all its replicas in sync again (a restarted,
/// resumed or reconnected broker caught up and was let back in).
pub async fn wait_for_full_isr(bootstrap: &str, topic: &str, partitions: i32) {
    for partition in 0..partitions {
        wait_for_partition(
            bootstrap,
            topic,
            partition,
            Duration::from_secs(60),
            "the ISR growing back to every replica",
            fully_in_sync,
        )
        .await;
    }
}

/// Waits until the cluster's metadata lists broker `id` (it registered after a restart),
/// while others may still be down.
pub async fn wait_for_broker_listed(bootstrap: &str, id: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match topology::brokers(bootstrap).await {
            Ok(brokers) if brokers.iter().any(|(b, _)| *b == id) => return,
            Ok(brokers) => format!("{brokers:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            Instant::now() < deadline,
            "broker {id} was not listed within 60 s (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every partition back (through the client, and from every broker's replica), checks
/// the history and asserts that it holds no anomaly.
pub async fn check_everything(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    recorder: &Recorder,
) -> CheckReport {
    final_read(bootstrap, topic, partitions, recorder)
        .await
        .unwrap();
    topology::record_every_broker(recorder, bootstrap, topic, partitions)
        .await
        .unwrap();
    let report = check(&recorder.snapshot());
    eprintln!("{report}");
    report.assert_valid();
    report
}

/// Asserts that no final read holds `value` below its high watermark: a write that was never
/// acknowledged was not committed either.
pub fn assert_never_committed(recorder: &Recorder, value: &str) {
    let history = recorder.snapshot();
    for read in &history.final_reads {
        if let Some(r) = read.committed().find(|r| r.value == value.as_bytes()) {
            panic!(
                "{value:?} was refused, yet {:?} holds it at {}-{} (committed)",
                read.source, read.partition, r.offset
            );
        }
    }
}

/// Asserts that some final read holds `value` below its high watermark.
pub fn assert_committed(recorder: &Recorder, value: &str) {
    let history = recorder.snapshot();
    assert!(
        history
            .final_reads
            .iter()
            .any(|read| read.committed().any(|r| r.value == value.as_bytes())),
        "{value:?} was acknowledged, yet no final read holds it"
    );
}

/// An acks=all Produce (v9) of one record `value` to `topic`-`partition`, waiting at most
/// `timeout_ms` for the in-sync replicas.
pub fn produce_request(
    topic: &str,
    partition: i32,
    value: &str,
    timeout_ms: i32,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch(
                    &[record("k", value, 1)],
                    Compression::None,
                )))])])
}

const PRODUCE_VERSION: i16 = 9;

/// Writes `request` to `client` without waiting for the answer (a paused broker's kernel takes
/// it; the broker handles it when it runs again).
pub async fn send_produce(client: &mut TestClient, correlation_id: i32, request: &ProduceRequest) {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("millrace-fault-test")));
    let mut body = BytesMut::new();
    header
        .encode(
            &mut body,
            ApiKey::Produce.request_header_version(PRODUCE_VERSION),
        )
        .unwrap();
    request.encode(&mut body, PRODUCE_VERSION).unwrap();
    client.send_raw(&body).await;
}

/// Reads the answer to a [`send_produce`] and returns its partition's error code; fails the
/// test if none comes within `within` or the broker closes the connection.
pub async fn read_produce_error(client: &mut TestClient, within: Duration) -> i16 {
    let mut frame = tokio::time::timeout(within, client.read_frame())
        .await
        .unwrap_or_else(|_| panic!("no answer to the Produce within {within:?}"))
        .expect("the broker closed the connection instead of answering the Produce");
    ResponseHeader::decode(
        &mut frame,
        ApiKey::Produce.response_header_version(PRODUCE_VERSION),
    )
    .unwrap();
    let response = ProduceResponse::decode(&mut frame, PRODUCE_VERSION).unwrap();
    response.responses[0].partition_responses[0].error_code
}

/// Sends an acks=all Produce of `value` straight to the broker at `addr` (whatever it thinks it
/// is) and returns the error code of its answer.
pub async fn produce_to(addr: SocketAddr, topic: &str, partition: i32, value: &str) -> i16 {
    let mut client = TestClient::try_connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    send_produce(
        &mut client,
        1,
        &produce_request(topic, partition, value, 3000),
    )
    .await;
    read_produce_error(&mut client, Duration::from_secs(30)).await
}
