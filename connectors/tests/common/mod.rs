//! An in-process broker on a free port, and helpers to fill and read topics.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::admin::NewTopic;
use millrace_client::{Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A broker in a temp dir; dropping it removes the data.
pub struct TestBroker {
    pub broker: RunningBroker,
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    /// `HOST:PORT` of the broker.
    pub fn bootstrap(&self) -> String {
        self.broker.local_addr().to_string()
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig::builder([self.bootstrap()])
            .client_id("millrace-connectors-test")
            .build()
            .unwrap()
    }
}

/// Starts a broker on a free port, groups forming without delay.
pub async fn start_broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let overrides = vec!["group.initial.rebalance.delay.ms=0".to_string()];
    let settings = millrace_broker::config::parse_overrides(&overrides).unwrap();
    let config = BrokerConfig::from_settings(
        &settings,
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.path().to_path_buf()),
    )
    .unwrap();
    let broker = millrace_broker::start(config).await.unwrap();
    TestBroker { broker, dir }
}

pub async fn create_topic(config: &ClientConfig, topic: &str, partitions: i32) {
    let admin = Admin::connect(config.clone()).await.unwrap();
    admin
        .create_topic(NewTopic::new(topic, partitions))
        .await
        .unwrap();
}

/// Produces `values` to `topic` round-robin over `partitions`, acks=all, and waits for all.
pub async fn produce(config: &ClientConfig, topic: &str, partitions: i32, values: &[String]) {
    let producer = Producer::connect(ProducerConfig::builder(config.clone()).build().unwrap())
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let record = ProducerRecord::new(topic, value.clone()).partition(i as i32 % partitions);
        deliveries.push(producer.send(record).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await;
}

/// Every committed Parquet file under `out` (not the sink's state directory).
pub fn parquet_files(out: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "_millrace" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// All batches of one file.
pub fn read_file(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}
