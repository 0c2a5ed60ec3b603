//! Helpers for stream jobs against a broker on a free port: produce JSON, run a job and wait
//! for what it collects. The broker and topics come from `millrace-testkit`.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use millrace_client::{ClientConfig, ProducerConfig};
use millrace_streams::runtime::Sink;
use millrace_streams::Record;
use millrace_testkit::produce::json_record;
use serde::Serialize;
use tokio::sync::mpsc;

/// Produces `(key, value)` records (value as JSON, `None` as a tombstone) and waits for
/// every acknowledgement.
pub async fn produce_json<T: Serialize>(
    client: &ClientConfig,
    topic: &str,
    records: &[(String, Option<T>)],
) {
    let records = records
        .iter()
        .map(|(key, value)| json_record(topic, key, value.as_ref()))
        .collect();
    millrace_testkit::produce_all(ProducerConfig::new(client.clone()), records).await;
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
