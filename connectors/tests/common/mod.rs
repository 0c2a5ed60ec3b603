//! The connectors' own test helpers: producing page views round-robin, and reading back the
//! Parquet files a sink committed. The broker, topics and producer come from
//! `millrace-testkit`.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use millrace_client::{ClientConfig, ProducerConfig, ProducerRecord};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The client id of the tests' clients.
pub const CLIENT_ID: &str = "millrace-connectors-test";

/// Produces `values` to `topic` round-robin over `partitions`, acks=all, and waits for all.
pub async fn produce(config: &ClientConfig, topic: &str, partitions: i32, values: &[String]) {
    let records = values.iter().enumerate().map(|(i, value)| {
        ProducerRecord::new(topic, value.clone()).partition(i as i32 % partitions)
    });
    let records = records.collect();
    millrace_testkit::produce_all(
        ProducerConfig::builder(config.clone()).build().unwrap(),
        records,
    )
    .await;
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

/// A Parquet sink running on its own task until [`RunningSink::stop`].
pub struct RunningSink {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<millrace_connectors::Result<()>>,
}

impl RunningSink {
    /// Starts `sink`.
    pub fn start(sink: millrace_connectors::parquet_sink::ParquetSink) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            sink.run(async {
                let _ = stopped.await;
            })
            .await
        });
        RunningSink { stop, task }
    }

    /// Stops the sink and waits for it; it must have run without error.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}
