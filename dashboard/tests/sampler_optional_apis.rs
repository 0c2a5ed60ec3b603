//! The dashboard against a Kafka-protocol broker that lacks an optional API
//! (DescribeLogDirs, ListGroups, DescribeGroups): the sampler keeps sampling, and the API
//! says what the broker could not report instead of failing. The broker is a real millrace
//! broker behind a proxy that removes the API from ApiVersions.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use millrace_client::admin::NewTopic;
use millrace_client::{
    Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use millrace_dashboard::{Dashboard, DashboardConfig};
use millrace_testkit::api_hiding_proxy::{start_broker_without, BrokerWithoutApis};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long a sample showing what a test waits for may take to appear.
const SAMPLE_WAIT: Duration = Duration::from_secs(30);

/// A dashboard serving in the background until dropped.
struct Served {
    addr: String,
    _stop: oneshot::Sender<()>,
}

async fn serve_dashboard(cluster: &BrokerWithoutApis) -> Served {
    let bound = Dashboard::new(DashboardConfig {
        bootstrap: cluster.bootstrap.to_string(),
        http: "127.0.0.1:0".parse().unwrap(),
        ..DashboardConfig::default()
    })
    .bind()
    .await
    .unwrap();
    let addr = bound.local_addr().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    Served { addr, _stop: stop }
}

/// `GET path` as JSON, with its status.
async fn get(addr: &str, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Polls `path` until `ready` accepts its (200) body.
async fn wait_for(addr: &str, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + SAMPLE_WAIT;
    loop {
        let (status, body) = get(addr, path).await;
        if status == 200 && ready(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never became ready; last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn client_config(cluster: &BrokerWithoutApis) -> ClientConfig {
    ClientConfig::builder([cluster.bootstrap.to_string()])
        .build()
        .unwrap()
}

/// Creates `topic` with two partitions and three records.
async fn topic_with_records(cluster: &BrokerWithoutApis, topic: &str) {
    let admin = Admin::connect(client_config(cluster)).await.unwrap();
    admin.create_topic(NewTopic::new(topic, 2)).await.unwrap();
    let producer = Producer::connect(
        ProducerConfig::builder(client_config(cluster))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for value in ["a", "b", "c"] {
        producer
            .send(ProducerRecord::new(topic, value))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_describe_log_dirs_topics_say_their_size_is_not_reported() {
    let cluster = start_broker_without(&[ApiKey::DescribeLogDirs]).await;
    topic_with_records(&cluster, "views").await;
    let dashboard = serve_dashboard(&cluster).await;

    let topic = wait_for(&dashboard.addr, "/api/topics/views", |t| t["messages"] == 3).await;

    assert_eq!(topic["size_bytes"], Value::Null, "{topic}");
    assert_eq!(topic["size_note"], "size not reported by this broker");
    let partitions = topic["partitions"].as_array().unwrap();
    assert!(
        partitions.iter().all(|p| p["size_bytes"].is_null()),
        "{topic}"
    );
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_describe_log_dirs_the_cluster_notes_it_and_reports_no_error() {
    let cluster = start_broker_without(&[ApiKey::DescribeLogDirs]).await;
    let dashboard = serve_dashboard(&cluster).await;

    let overview = wait_for(&dashboard.addr, "/api/cluster", |_| true).await;

    assert_eq!(overview["last_error"], Value::Null, "{overview}");
    let notes = overview["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.starts_with("size not reported by this broker")
                && n.contains("DescribeLogDirs"))),
        "{overview}"
    );
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_describe_log_dirs_through_the_same_proxy_sizes_are_reported() {
    let cluster = start_broker_without(&[]).await;
    topic_with_records(&cluster, "views").await;
    let dashboard = serve_dashboard(&cluster).await;

    let topic = wait_for(&dashboard.addr, "/api/topics/views", |t| {
        t["messages"] == 3 && t["size_bytes"].as_i64().is_some_and(|s| s > 0)
    })
    .await;

    assert!(topic.get("size_note").is_none(), "{topic}");
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_list_groups_the_topics_are_still_sampled_and_groups_are_noted() {
    let cluster = start_broker_without(&[ApiKey::ListGroups]).await;
    topic_with_records(&cluster, "views").await;
    let dashboard = serve_dashboard(&cluster).await;

    wait_for(&dashboard.addr, "/api/topics/views", |t| t["messages"] == 3).await;
    let overview = wait_for(&dashboard.addr, "/api/cluster", |_| true).await;

    assert_eq!(overview["last_error"], Value::Null, "{overview}");
    assert!(
        overview["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().is_some_and(
                |n| n.contains("consumer groups not reported") && n.contains("ListGroups")
            )),
        "{overview}"
    );
    cluster.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_describe_groups_a_group_shows_its_lag_without_members() {
    let cluster = start_broker_without(&[ApiKey::DescribeGroups]).await;
    topic_with_records(&cluster, "views").await;
    let admin = Admin::connect(client_config(&cluster)).await.unwrap();
    let committed = HashMap::from([
        (TopicPartition::new("views", 0), 0),
        (TopicPartition::new("views", 1), 0),
    ]);
    admin
        .alter_group_offsets("readers", &committed)
        .await
        .unwrap();
    let dashboard = serve_dashboard(&cluster).await;

    let group = wait_for(&dashboard.addr, "/api/groups/readers", |g| g["lag"] == 3).await;

    assert_eq!(group["members"], serde_json::json!([]), "{group}");
    cluster.broker.shutdown().await;
}
