//! Helpers for tests against a broker on a free port: start it, create topics, produce JSON,
//! run a job and wait for what it collects.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::admin::NewTopic;
use millrace_client::{Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use millrace_streams::runtime::Sink;
use millrace_streams::Record;
use serde::Serialize;
use tokio::sync::mpsc;

/// A broker on 127.0.0.1, port chosen by the OS, storing in `dir`.
pub async fn start_broker(dir: &std::path::Path) -> RunningBroker {
    let overrides = vec!["group.initial.rebalance.delay.ms=0".to_string()];
    let settings = millrace_broker::config::parse_overrides(&overrides).unwrap();
    let config = BrokerConfig::from_settings(
        &settings,
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.to_path_buf()),
    )
    .unwrap();
    millrace_broker::start(config).await.unwrap()
}

/// Creates `topic` with `partitions` partitions, compacted when `compact`.
pub async fn create_topic(client: &ClientConfig, topic: &str, partitions: i32, compact: bool) {
    let admin = Admin::connect(client.clone()).await.unwrap();
    let mut new = NewTopic::new(topic, partitions);
    if compact {
        new = new.config("cleanup.policy", "compact");
    }
    admin.create_topic(new).await.unwrap();
}

/// Produces `(key, value)` records (value as JSON, `None` as a tombstone) and waits for
/// every acknowledgement.
pub async fn produce_json<T: Serialize>(
    client: &ClientConfig,
    topic: &str,
    records: &[(String, Option<T>)],
) {
    let producer = Producer::connect(ProducerConfig::new(client.clone()))
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for (key, value) in records {
        let record = ProducerRecord {
            topic: topic.to_string(),
            key: Some(key.clone().into_bytes().into()),
            value: value
                .as_ref()
                .map(|v| serde_json::to_vec(v).unwrap().into()),
            ..ProducerRecord::default()
        };
        deliveries.push(producer.send(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
}

/// A sink handing every output record to the returned channel.
pub fn channel_sink<K, V>() -> (Sink<K, V>, mpsc::UnboundedReceiver<Record<K, V>>)
where
    K: Send + 'static,
    V: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Sink::callback(move |records: Vec<Record<K, V>>| {
        for record in records {
            // The test may have stopped listening; the job does not care.
            let _ = tx.send(record);
        }
    });
    (sink, rx)
}

/// Receives exactly `n` records (failing if they do not come within 60 s).
pub async fn recv_n<K, V>(
    rx: &mut mpsc::UnboundedReceiver<Record<K, V>>,
    n: usize,
) -> Vec<Record<K, V>> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(record)) => out.push(record),
            Ok(None) => panic!("the job stopped after {} of {n} results", out.len()),
            Err(_) => panic!("only {} of {n} results arrived", out.len()),
        }
    }
    out
}

/// Whatever the channel holds now, without waiting.
pub fn drain_now<K, V>(rx: &mut mpsc::UnboundedReceiver<Record<K, V>>) -> Vec<Record<K, V>> {
    let mut out = Vec::new();
    while let Ok(record) = rx.try_recv() {
        out.push(record);
    }
    out
}

/// Runs `future` (a job's `run`) on a task, stopped by the returned sender.
pub fn spawn_job<F>(
    run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<F::Output>,
)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel();
    (stop, tokio::spawn(run(stopped)))
}
