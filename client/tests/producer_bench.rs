//! A quick produce throughput measurement against the in-process broker (not a timed test):
//! `cargo test --release -p millrace-client --test producer_bench -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::Bytes;
use millrace_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use millrace_testkit::{create_topic, TestBroker, FAST_GROUPS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; run by hand in release mode"]
async fn produce_100_byte_records_acks_all() {
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let partitions: i32 = std::env::var("BENCH_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    create_topic(
        &broker.client_config("millrace-client-test"),
        "bench",
        partitions,
    )
    .await;
    let producer = Producer::connect(
        ProducerConfig::builder(broker.client_config("millrace-client-test"))
            .acks(Acks::All)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let value = Bytes::from(vec![b'x'; 100]);
    let started = Instant::now();
    let mut last = None;
    for _ in 0..records {
        let record = ProducerRecord {
            topic: "bench".to_string(),
            value: Some(value.clone()),
            ..Default::default()
        };
        last = Some(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    let elapsed = started.elapsed();
    let metadata = last.unwrap().await.unwrap();
    println!(
        "{records} records of 100 bytes, acks=all, {partitions} partition(s): {:.2}s, {:.0} records/s, {:.1} MB/s (last offset {})",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64(),
        records as f64 * 100.0 / elapsed.as_secs_f64() / 1e6,
        metadata.offset
    );
    producer.close().await;
    broker.broker.shutdown().await;
}
