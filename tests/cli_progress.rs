//! Commands that wait on the broker say why they wait: `millrace bench produce` against a
//! broker that rejects every write (as one with a full disk answers `KAFKA_STORAGE_ERROR`)
//! names the broker, the partition, the error and its meaning while it waits, then gives up
//! after its `--timeout` with a non-zero exit, instead of retrying silently for minutes; and
//! so does `millrace produce`.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use millrace_client::ResponseError;
use millrace_testkit::api_hiding_proxy::start_broker_rejecting_produce;

/// Far above the `--timeout` the command is given: a hang fails the test.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Runs `millrace ARGS` with `stdin` as its input, off the async runtime (the broker and
/// the proxy run on it).
async fn millrace(args: &[&str], stdin: &str) -> (Output, Duration) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let stdin = stdin.to_string();
    let run = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        // A command that stops reading early must not fail the test here.
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        child.wait_with_output().unwrap()
    });
    let output = tokio::time::timeout(COMMAND_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("millrace {args:?} still running after {COMMAND_LIMIT:?}"))
        .unwrap();
    (output, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_against_a_broker_rejecting_writes_explains_and_gives_up() {
    let cluster = start_broker_rejecting_produce(
        ResponseError::KafkaStorageError,
        "No space left on device (os error 28)",
    )
    .await;
    let bootstrap = cluster.bootstrap.to_string();

    let (output, took) = millrace(
        &[
            "bench",
            "produce",
            "-t",
            "fill",
            "--partitions",
            "1",
            "--records",
            "1000",
            "--timeout",
            "8",
            "-b",
            &bootstrap,
        ],
        "",
    )
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "bench succeeded: {stderr}");
    // While waiting: the broker, the partition, the error and what it means.
    assert!(
        stderr.contains("no record acknowledged for")
            && stderr.contains("broker 1 rejects writes to fill-0: KAFKA_STORAGE_ERROR")
            && stderr.contains("disk is full"),
        "stderr: {stderr}"
    );
    // Then it gives up, saying so, after the stated timeout (not the producer's two minutes).
    assert!(
        stderr.contains("gave up after 8 s without an acknowledged record"),
        "stderr: {stderr}"
    );
    assert!(took < Duration::from_secs(40), "took {took:?}");
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_a_broker_rejecting_writes_explains_and_gives_up() {
    let cluster = start_broker_rejecting_produce(
        ResponseError::KafkaStorageError,
        "No space left on device (os error 28)",
    )
    .await;
    let bootstrap = cluster.bootstrap.to_string();
    let admin = millrace_client::Admin::connect(millrace_client::ClientConfig::new(&bootstrap))
        .await
        .unwrap();
    admin
        .create_topic(millrace_client::admin::NewTopic::new("fill", 1))
        .await
        .unwrap();

    let (output, took) = millrace(
        &["produce", "-t", "fill", "--timeout", "6", "-b", &bootstrap],
        "a\nb\nc\n",
    )
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "produce succeeded: {stderr}");
    assert!(
        stderr.contains("broker 1 rejects writes to fill-0: KAFKA_STORAGE_ERROR")
            && stderr.contains("gave up after 6 s without an acknowledged record"),
        "stderr: {stderr}"
    );
    assert!(took < Duration::from_secs(40), "took {took:?}");
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_e2e_against_a_broker_rejecting_writes_explains_and_gives_up() {
    let cluster = start_broker_rejecting_produce(
        ResponseError::KafkaStorageError,
        "No space left on device (os error 28)",
    )
    .await;
    let bootstrap = cluster.bootstrap.to_string();

    let (output, took) = millrace(
        &[
            "bench",
            "e2e",
            "-t",
            "fill",
            "--records",
            "100",
            "--timeout",
            "6",
            "-b",
            &bootstrap,
        ],
        "",
    )
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "bench e2e succeeded: {stderr}");
    assert!(
        stderr.contains("broker 1 rejects writes to fill-0: KAFKA_STORAGE_ERROR")
            && stderr.contains("gave up after 6 s without an acknowledged record"),
        "stderr: {stderr}"
    );
    assert!(took < Duration::from_secs(40), "took {took:?}");
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_a_group_whose_coordinator_is_down_explains_and_gives_up() {
    use kafka_protocol::messages::FindCoordinatorRequest;
    use kafka_protocol::protocol::StrBytes;
    use millrace_testkit::wire::TestClient;
    use millrace_testkit::{create_topic, TestCluster, FAST_GROUPS};

    let mut cluster = TestCluster::start(
        3,
        &[
            FAST_GROUPS,
            "offsets.topic.num.partitions=1",
            "offsets.topic.replication.factor=3",
        ],
    )
    .await;
    create_topic(&cluster.client_config("setup"), "events", 1).await;
    let mut client = TestClient::connect(cluster.member(1).addr).await;
    let found = client
        .call(
            3,
            &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("readers")),
        )
        .await;
    assert_eq!(found.error_code, 0);
    let coordinator = found.node_id.0;
    // The coordinator and one more broker down: the survivor has no quorum to move the group.
    let survivor = (1..=3).find(|id| *id != coordinator).unwrap();
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.halt(id).await;
    }
    let bootstrap = cluster.member(survivor).addr.to_string();

    let (output, took) = millrace(
        &[
            "consume",
            "-t",
            "events",
            "--group",
            "readers",
            "--timeout",
            "6",
            "-b",
            &bootstrap,
        ],
        "",
    )
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "consume succeeded: {stderr}");
    assert!(
        stderr.contains("waiting to join group `readers`: ")
            && stderr.contains("gave up joining group `readers` after 6 s"),
        "stderr: {stderr}"
    );
    assert!(took < Duration::from_secs(40), "took {took:?}");
    cluster.shutdown().await;
}
