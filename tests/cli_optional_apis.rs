//! The `millrace` client commands against a Kafka-protocol broker that lacks an optional API:
//! the command does its job and says what it skipped, instead of failing. The broker is a
//! real millrace broker behind a proxy that removes the API from ApiVersions
//! (`millrace_testkit::api_hiding_proxy`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use millrace_client::admin::NewTopic;
use millrace_client::{Admin, ClientConfig, ClientError, OffsetSpec, TopicPartition};
use millrace_testkit::api_hiding_proxy::{start_broker_without, BrokerWithoutApis};

/// The longest one command may run before the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Runs `millrace ARGS -b BOOTSTRAP` with `stdin` as its input, off the async runtime (the
/// broker and the proxy run on it meanwhile), killed after [`COMMAND_LIMIT`].
async fn millrace(cluster: &BrokerWithoutApis, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
    command
        .args(args)
        .args(["-b", &cluster.bootstrap.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_string();
    let run = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    });
    tokio::time::timeout(COMMAND_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("millrace {args:?} still running after {COMMAND_LIMIT:?}"))
        .unwrap()
}

/// Asserts success and returns stdout and stderr.
fn succeeded(output: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    (stdout, stderr)
}

async fn admin(cluster: &BrokerWithoutApis) -> Admin {
    let config = ClientConfig::builder([cluster.bootstrap.to_string()])
        .build()
        .unwrap();
    Admin::connect(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_hides_the_api_from_the_client() {
    let cluster = start_broker_without(&[ApiKey::DescribeLogDirs]).await;
    let admin = admin(&cluster).await;
    admin.create_topic(NewTopic::new("t", 1)).await.unwrap();

    let error = admin.describe_log_dirs(None).await.unwrap_err();

    assert!(
        matches!(
            error,
            ClientError::UnsupportedVersion {
                api: "DescribeLogDirs",
                ..
            }
        ),
        "{error}"
    );
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_without_describe_log_dirs_benchmarks_and_notes_the_missing_overhead() {
    let cluster = start_broker_without(&[ApiKey::DescribeLogDirs]).await;

    let output = millrace(
        &cluster,
        &[
            "bench",
            "produce",
            "-t",
            "bench",
            "--partitions",
            "2",
            "--records",
            "2000",
        ],
        "",
    )
    .await;

    let (stdout, _) = succeeded(&output);
    assert!(stdout.contains("2000 records in"), "{stdout}");
    assert!(
        stdout.contains("on-disk overhead: not reported by this broker")
            && stdout.contains("DescribeLogDirs"),
        "{stdout}"
    );
    cluster.broker.shutdown().await;
}

/// `millrace bench produce --json` of 1,000 records through `cluster`: its JSON report.
async fn bench_produce_json(cluster: &BrokerWithoutApis) -> serde_json::Value {
    let output = millrace(
        cluster,
        &[
            "bench",
            "produce",
            "-t",
            "bench",
            "--records",
            "1000",
            "--json",
        ],
        "",
    )
    .await;
    let (stdout, _) = succeeded(&output);
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_json_without_describe_log_dirs_has_a_note_instead_of_the_overhead() {
    let cluster = start_broker_without(&[ApiKey::DescribeLogDirs]).await;

    let report = bench_produce_json(&cluster).await;
    assert_eq!(report["records"], 1000);
    assert!(
        report.get("overhead_bytes_per_record").is_none(),
        "{report}"
    );
    assert!(
        report["overhead_note"]
            .as_str()
            .is_some_and(|note| note.contains("DescribeLogDirs")),
        "{report}"
    );
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_through_the_proxy_hiding_nothing_still_measures_the_overhead() {
    let cluster = start_broker_without(&[]).await;

    let report = bench_produce_json(&cluster).await;
    assert!(report["overhead_bytes_per_record"].is_f64(), "{report}");
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_describe_without_describe_configs_shows_the_partitions_and_a_note() {
    let cluster = start_broker_without(&[ApiKey::DescribeConfigs]).await;
    admin(&cluster)
        .await
        .create_topic(NewTopic::new("orders", 2).config("retention.ms", "60000"))
        .await
        .unwrap();

    let output = millrace(&cluster, &["topics", "describe", "orders"], "").await;

    let (stdout, _) = succeeded(&output);
    assert!(stdout.contains("topic orders"), "{stdout}");
    assert!(stdout.contains("\n1\t"), "partition 1 is listed: {stdout}");
    assert!(
        stdout.contains("configs: not reported by this broker")
            && stdout.contains("DescribeConfigs"),
        "{stdout}"
    );
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_describe_without_describe_groups_shows_the_lag_and_a_note() {
    let cluster = start_broker_without(&[ApiKey::DescribeGroups]).await;
    let admin = admin(&cluster).await;
    admin
        .create_topic(NewTopic::new("events", 1))
        .await
        .unwrap();
    let produced = millrace(&cluster, &["produce", "-t", "events"], "a\nb\nc\n").await;
    succeeded(&produced);
    let committed = HashMap::from([(TopicPartition::new("events", 0), 1)]);
    admin
        .alter_group_offsets("readers", &committed)
        .await
        .unwrap();

    let output = millrace(&cluster, &["groups", "describe", "readers"], "").await;

    let (stdout, _) = succeeded(&output);
    assert!(
        stdout.contains("state and members not reported by this broker")
            && stdout.contains("DescribeGroups"),
        "{stdout}"
    );
    // topic, partition, committed, log end, lag, consumer.
    assert!(stdout.contains("events\t0\t1\t3\t2\t-"), "{stdout}");
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_without_init_producer_id_delivers_without_idempotence() {
    let cluster = start_broker_without(&[ApiKey::InitProducerId]).await;
    let admin = admin(&cluster).await;
    admin.create_topic(NewTopic::new("lines", 1)).await.unwrap();

    let output = millrace(&cluster, &["produce", "-t", "lines"], "one\ntwo\n").await;

    let (_, stderr) = succeeded(&output);
    assert!(
        stderr.contains("without idempotence") && stderr.contains("InitProducerId"),
        "{stderr}"
    );
    let end = admin
        .list_offsets(&[(TopicPartition::new("lines", 0), OffsetSpec::Latest)])
        .await
        .unwrap();
    assert_eq!(end[&TopicPartition::new("lines", 0)].offset, 2);
    cluster.broker.shutdown().await;
}
