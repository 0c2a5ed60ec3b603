//! The file source and the HTTP ingest endpoint against a broker on a free port, over TCP:
//! what they produce is read back with a consumer.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::record::ConsumerRecord;
use millrace_client::{ClientConfig, OffsetSpec, TopicPartition};
use millrace_connectors::file_source::{FileSource, FileSourceConfig};
use millrace_connectors::framework::dead_letter::{ERROR_HEADER, SOURCE_HEADER};
use millrace_connectors::framework::Shutdown;
use millrace_connectors::http_source::{HttpSource, HttpSourceConfig};
use millrace_connectors::ConnectConfig;
use millrace_testkit::{create_topic, TestBroker, FAST_GROUPS};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads `topic` (all `partitions`) from the start until `count` records arrived, then checks
/// that the log holds no more than that.
async fn read_exactly(
    client: &ClientConfig,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::connect(
        ConsumerConfig::builder(client.clone())
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(&tps).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "{topic}: {} of {count} records",
            records.len()
        );
        records.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    let ends = consumer
        .offsets_for(&tps, OffsetSpec::Latest)
        .await
        .unwrap();
    let total: i64 = ends.values().map(|l| l.offset).sum();
    assert_eq!(total as usize, count, "{topic} holds more than expected");
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

fn text(bytes: &Option<bytes::Bytes>) -> String {
    String::from_utf8(bytes.as_ref().unwrap().to_vec()).unwrap()
}

fn header(record: &ConsumerRecord, name: &str) -> String {
    record
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| text(v))
        .unwrap()
}

fn file_source_config(broker: &TestBroker, path: &Path, extra: &str) -> FileSourceConfig {
    ConnectConfig::parse(&format!(
        "[[file_source]]\nname = \"files\"\nbootstrap = \"{}\"\ntopic = \"events\"\npath = \"{}\"\npoll_interval_ms = 20\n{extra}",
        broker.bootstrap(),
        path.display()
    ))
    .unwrap()
    .file_source
    .remove(0)
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn lines(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| format!("{{\"user\":\"u{}\",\"n\":{i}}}\n", i % 4))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailed_json_lines_file_is_sent_once_across_a_restart() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "events", 1).await;
    create_topic(&client, "events-dlq", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    append(&path, &lines(0, 30));
    append(&path, "{oops\n");
    let config = file_source_config(
        &broker,
        &path,
        "key_field = \"user\"\nbatch_records = 7\ndead_letter_topic = \"events-dlq\"\n",
    );

    let source = FileSource::new(config.clone()).unwrap();
    let metrics = source.metrics();
    let (trigger, stop) = Shutdown::new();
    let task = tokio::spawn(source.run_until(stop));
    read_exactly(&client, "events", 1, 30).await;
    // Tailing: lines appended later, the last one in two writes.
    append(&path, &lines(30, 40));
    append(&path, "{\"user\":\"u0\",");
    read_exactly(&client, "events", 1, 40).await;
    append(&path, "\"n\":40}\n");
    read_exactly(&client, "events", 1, 41).await;
    trigger.trigger();
    task.await.unwrap().unwrap();
    let snapshot = metrics.snapshot();
    assert_eq!((snapshot.records, snapshot.rejected), (41, 1));

    // Restarted: only what was appended meanwhile is sent.
    append(&path, &lines(41, 50));
    let (trigger, stop) = Shutdown::new();
    let source = FileSource::new(config).unwrap();
    let metrics = source.metrics();
    let task = tokio::spawn(source.run_until(stop));
    let records = read_exactly(&client, "events", 1, 50).await;
    trigger.trigger();
    task.await.unwrap().unwrap();
    assert_eq!(metrics.snapshot().records, 9);

    for (i, record) in records.iter().enumerate() {
        let value: Value = serde_json::from_str(&text(&record.value)).unwrap();
        assert_eq!(value["n"], json!(i), "record {i}");
        assert_eq!(text(&record.key), format!("u{}", i % 4));
    }
    let letters = read_exactly(&client, "events-dlq", 1, 1).await;
    assert_eq!(text(&letters[0].value), "{oops");
    assert!(header(&letters[0], ERROR_HEADER).starts_with("line is not valid JSON"));
    let offset = lines(0, 30).len();
    assert_eq!(
        header(&letters[0], SOURCE_HEADER),
        format!("events.jsonl:{offset}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_csv_files_becomes_json_objects() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "events", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    std::fs::write(
        incoming.join("2026-11-25.csv"),
        "user,amount,note\nu1,12,\"hello, world\"\nu2,0.5,\n",
    )
    .unwrap();
    std::fs::write(incoming.join("ignored.txt"), "not,csv\n").unwrap();
    let config = file_source_config(
        &broker,
        &incoming,
        &format!(
            "format = \"csv\"\nsuffix = \".csv\"\nposition_file = \"{}\"\n",
            dir.path().join("pos").display()
        ),
    );
    let (trigger, stop) = Shutdown::new();
    let task = tokio::spawn(FileSource::new(config).unwrap().run_until(stop));
    read_exactly(&client, "events", 1, 2).await;
    // A new file in the directory is picked up.
    std::fs::write(
        incoming.join("2026-11-26.csv"),
        "user,amount,note\nu3,007,x\n",
    )
    .unwrap();
    let records = read_exactly(&client, "events", 1, 3).await;
    trigger.trigger();
    task.await.unwrap().unwrap();
    let values: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_str(&text(&r.value)).unwrap())
        .collect();
    assert_eq!(
        values,
        [
            json!({"user": "u1", "amount": 12, "note": "hello, world"}),
            json!({"user": "u2", "amount": 0.5, "note": null}),
            json!({"user": "u3", "amount": "007", "note": "x"}),
        ]
    );
    assert!(dir.path().join("pos").exists());
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the JSON body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before reading a refused body.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    http(
        addr,
        "POST",
        path,
        &format!("Content-Length: {}\r\n", body.len()),
        body.as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_endpoint_produces_with_acks_all_and_answers_offsets() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "views", 2).await;
    create_topic(&client, "private", 1).await;
    let config: HttpSourceConfig = ConnectConfig::parse(&format!(
        "[[http_source]]\nname = \"ingest\"\nbootstrap = \"{}\"\nlisten = \"127.0.0.1:0\"\ntopics = [\"views\", \"missing\"]\nkey_field = \"user\"\nmax_body_bytes = 1024\n",
        broker.bootstrap()
    ))
    .unwrap()
    .http_source
    .remove(0);
    let source = HttpSource::bind(config).await.unwrap();
    let addr = source.local_addr().unwrap();
    let metrics = source.metrics();
    let (trigger, stop) = Shutdown::new();
    let task = tokio::spawn(source.run_until(stop));

    let (status, body) = http(addr, "GET", "/health", "", b"").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    let (status, one) = post(addr, "/topics/views", r#"{"user":"u1","n":0}"#).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["topic"], "views");
    assert_eq!(one["offsets"].as_array().unwrap().len(), 1);
    let (status, many) = post(
        addr,
        "/topics/views",
        r#"[{"user":"u1","n":1},{"user":"u2","n":2},{"n":3}]"#,
    )
    .await;
    assert_eq!(status, 200, "{many}");
    let offsets = many["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 3);

    // Refused, with JSON errors, and nothing produced.
    let (status, err) = post(addr, "/topics/views", r#"{"user":"#).await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().starts_with("malformed JSON"),
        "{err}"
    );
    let (status, err) = post(addr, "/topics/views", r#"[{"n":4}, 5]"#).await;
    assert_eq!(
        (status, err["error"].as_str().unwrap()),
        (400, "event 1 is not a JSON object")
    );
    let (status, err) = post(addr, "/topics/views", "42").await;
    assert_eq!(status, 400, "{err}");
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000));
    let (status, err) = post(addr, "/topics/views", &big).await;
    assert_eq!(status, 413, "{err}");
    assert!(err["error"].as_str().unwrap().contains("1024"), "{err}");
    // Chunked, without a declared length: cut off at the limit.
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let (status, _) = http(
        addr,
        "POST",
        "/topics/views",
        "Transfer-Encoding: chunked\r\n",
        chunked.as_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    let (status, err) = post(addr, "/topics/missing", r#"{"n":1}"#).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"], "topic missing does not exist");
    let (status, err) = post(addr, "/topics/private", r#"{"n":1}"#).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"], "topic private is not served by this endpoint");

    let records = read_exactly(&client, "views", 2, 4).await;
    trigger.trigger();
    task.await.unwrap().unwrap();
    // Every answered offset holds the event that was posted.
    let answered: Vec<(i64, i64)> = std::iter::once(&one["offsets"][0])
        .chain(offsets.iter())
        .map(|o| {
            (
                o["partition"].as_i64().unwrap(),
                o["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    for (n, (partition, offset)) in answered.iter().enumerate() {
        let record = records
            .iter()
            .find(|r| i64::from(r.partition) == *partition && r.offset == *offset)
            .unwrap();
        let value: Value = serde_json::from_str(&text(&record.value)).unwrap();
        assert_eq!(value["n"], json!(n));
        match value.get("user") {
            Some(user) => assert_eq!(&text(&record.key), user.as_str().unwrap()),
            None => assert!(record.key.is_none()),
        }
    }
    let snapshot = metrics.snapshot();
    assert_eq!((snapshot.records, snapshot.batches), (4, 2));
    assert_eq!(snapshot.rejected, 7);
    // Nothing was created by the refused requests.
    let admin = millrace_client::Admin::connect(client).await.unwrap();
    let names: Vec<String> = admin
        .list_topics(false)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(!names.contains(&"missing".to_string()), "{names:?}");
}

/// The values of `topic`-0 read with read_committed up to its last stable offset, and that
/// offset.
async fn read_committed_values(client: &ClientConfig, topic: &str) -> (Vec<String>, i64) {
    let mut consumer = Consumer::connect(
        ConsumerConfig::builder(client.clone())
            .isolation_level(millrace_client::IsolationLevel::ReadCommitted)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let tp = TopicPartition::new(topic, 0);
    let end = consumer
        .offsets_for(std::slice::from_ref(&tp), OffsetSpec::Latest)
        .await
        .unwrap()[&tp]
        .offset;
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer
        .seek_to_beginning(std::slice::from_ref(&tp))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut values = Vec::new();
    while consumer.position(&tp).is_none_or(|p| p < end) {
        assert!(Instant::now() < deadline, "{topic} not read to {end}");
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            values.push(text(&record.value));
        }
    }
    (values, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_file_source_commits_each_chunk_in_one_transaction() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "events", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    append(&path, &lines(0, 25));
    let config = file_source_config(
        &broker,
        &path,
        "batch_records = 10\ntransactional_id = \"files-txn\"\n",
    );
    let source = FileSource::new(config).unwrap();
    let metrics = source.metrics();
    let (trigger, stop) = Shutdown::new();
    let task = tokio::spawn(source.run_until(stop));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.snapshot().records < 25 {
        assert!(Instant::now() < deadline, "{:?}", metrics.snapshot());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger.trigger();
    task.await.unwrap().unwrap();

    let (values, end) = read_committed_values(&client, "events").await;
    assert_eq!(values, lines(0, 25).lines().collect::<Vec<_>>());
    // Chunks of 10, 10 and 5 lines, each followed by its commit marker.
    assert_eq!(end, 25 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_ingest_request_is_written_whole_or_not_at_all() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "views", 1).await;
    let config: HttpSourceConfig = ConnectConfig::parse(&format!(
        "[[http_source]]\nname = \"ingest\"\nbootstrap = \"{}\"\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 4000000\ntransactional_id = \"ingest-txn\"\n",
        broker.bootstrap()
    ))
    .unwrap()
    .http_source
    .remove(0);
    let source = HttpSource::bind(config).await.unwrap();
    let addr = source.local_addr().unwrap();
    let (trigger, stop) = Shutdown::new();
    let task = tokio::spawn(source.run_until(stop));

    let (status, body) = post(addr, "/topics/views", r#"[{"n":0},{"n":1}]"#).await;
    assert_eq!(status, 200, "{body}");
    // Two small events and one larger than a produce request may be: the producer refuses
    // the third after the first two were sent, and the request's transaction aborts.
    let huge = format!(
        r#"[{{"n":2}},{{"n":3}},{{"pad":"{}"}}]"#,
        "x".repeat(1_500_000)
    );
    let (status, body) = post(addr, "/topics/views", &huge).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = post(addr, "/topics/views", r#"{"n":4}"#).await;
    assert_eq!(status, 200, "{body}");
    trigger.trigger();
    task.await.unwrap().unwrap();

    let (values, _) = read_committed_values(&client, "views").await;
    assert_eq!(values, [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":4}"#]);
}

/// Kafka client settings for a PLAIN user on a SASL_PLAINTEXT listener.
const SASL_USER: &[(&str, &str)] = &[
    ("security.protocol", "SASL_PLAINTEXT"),
    ("sasl.mechanism", "PLAIN"),
    ("sasl.username", "connect"),
    ("sasl.password", "connect-secret"),
];

#[tokio::test]
async fn a_file_source_of_a_sasl_cluster_takes_kafka_client_settings() {
    // The broker's one listener speaks SASL_PLAINTEXT; nothing gets in without a login.
    let jaas = r#"sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_connect="connect-secret";"#;
    let broker = TestBroker::start(&[
        FAST_GROUPS,
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=PLAIN",
        jaas,
    ])
    .await;
    let mut builder = ClientConfig::builder([broker.bootstrap()]).client_id(common::CLIENT_ID);
    for (name, value) in SASL_USER {
        builder = builder.set(name, value).unwrap();
    }
    let client = builder.build().unwrap();
    create_topic(&client, "events", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    append(&path, &lines(0, 10));

    let table: String = SASL_USER
        .iter()
        .map(|(name, value)| format!("\"{name}\" = \"{value}\"\n"))
        .collect();
    let config = file_source_config(&broker, &path, &format!("[file_source.client]\n{table}"));
    let source = FileSource::new(config).unwrap();
    let (trigger, stop) = Shutdown::new();
    let task = tokio::spawn(source.run_until(stop));
    read_exactly(&client, "events", 1, 10).await;
    trigger.trigger();
    task.await.unwrap().unwrap();

    // An unknown client setting is refused by name.
    let typo = file_source_config(
        &broker,
        &path,
        "[file_source.client]\n\"sasl.pasword\" = \"x\"\n",
    );
    let err = typo.client_config().unwrap_err().to_string();
    assert!(err.contains("sasl.pasword"), "{err}");
}
