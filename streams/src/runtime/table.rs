//! Loading global tables: every partition of the table topic from the beginning up to its end
//! offsets before the job processes stream records, then updates as they arrive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::record::ConsumerRecord;
use millrace_client::{ClientConfig, IsolationLevel, OffsetSpec, TopicPartition};

use super::JobMetrics;
use crate::error::StreamsError;
use crate::table::TableUpdates;

/// The running loaders of a job's tables.
pub(crate) struct TableLoaders {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long a loader's poll waits for updates; also how soon it notices the job stopping.
const POLL: Duration = Duration::from_millis(200);

impl TableLoaders {
    /// Loads every table up to its topic's current end, then keeps each one updated on a
    /// task of its own.
    pub(crate) async fn start(
        client: &ClientConfig,
        isolation: IsolationLevel,
        tables: Vec<Arc<dyn TableUpdates>>,
        timeout: Duration,
        metrics: Arc<JobMetrics>,
    ) -> Result<Self, StreamsError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(tables.len());
        for table in tables {
            let consumer = load(client, isolation, table.as_ref(), timeout, &metrics).await?;
            tasks.push(tokio::spawn(follow(
                consumer,
                table,
                stop.clone(),
                metrics.clone(),
            )));
        }
        Ok(TableLoaders { stop, tasks })
    }

    /// Stops following updates.
    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "table loader failed");
            }
        }
    }
}

/// Reads `table`'s topic from the beginning to its current end; returns the consumer,
/// positioned for the updates that follow.
async fn load(
    client: &ClientConfig,
    isolation: IsolationLevel,
    table: &dyn TableUpdates,
    timeout: Duration,
    metrics: &JobMetrics,
) -> Result<Consumer, StreamsError> {
    let topic = table.topic().to_string();
    let context = || format!("loading table {topic}");
    // The job's isolation level: exactly-once, an aborted table update is never applied.
    let config = ConsumerConfig::builder(client.clone())
        .isolation_level(isolation)
        .fetch_max_wait(Duration::from_millis(100))
        .build()
        .map_err(|e| StreamsError::client(context(), e))?;
    let mut consumer = Consumer::connect(config)
        .await
        .map_err(|e| StreamsError::client(context(), e))?;
    let partitions: Vec<TopicPartition> = consumer
        .partitions_for(&topic)
        .await
        .map_err(|e| StreamsError::client(context(), e))?
        .into_iter()
        .map(|p| TopicPartition::new(&topic, p))
        .collect();
    let ends = consumer
        .offsets_for(&partitions, OffsetSpec::Latest)
        .await
        .map_err(|e| StreamsError::client(context(), e))?;
    consumer
        .assign(&partitions)
        .map_err(|e| StreamsError::client(context(), e))?;
    consumer
        .seek_to_beginning(&partitions)
        .map_err(|e| StreamsError::client(context(), e))?;
    let started = Instant::now();
    let deadline = started + timeout;
    let behind = |consumer: &Consumer| {
        partitions.iter().any(|tp| {
            let end = ends.get(tp).map_or(0, |o| o.offset);
            end > 0 && consumer.position(tp).is_none_or(|p| p < end)
        })
    };
    let mut records = 0usize;
    while behind(&consumer) {
        if Instant::now() > deadline {
            return Err(StreamsError::Config(format!(
                "{}: the topic was not read to its end within {timeout:?}",
                context()
            )));
        }
        let batch = consumer
            .poll(POLL)
            .await
            .map_err(|e| StreamsError::client(context(), e))?;
        records += batch.len();
        apply(table, &batch, metrics);
    }
    tracing::info!(
        table = %topic,
        records,
        keys = table.len(),
        elapsed = ?started.elapsed(),
        "table loaded"
    );
    Ok(consumer)
}

/// Applies updates until told to stop.
async fn follow(
    mut consumer: Consumer,
    table: Arc<dyn TableUpdates>,
    stop: Arc<AtomicBool>,
    metrics: Arc<JobMetrics>,
) {
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(POLL).await {
            Ok(batch) => apply(table.as_ref(), &batch, &metrics),
            Err(error) => {
                tracing::warn!(table = table.topic(), %error, "reading table updates");
                // Back off instead of spinning on a broker that is away.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    if let Err(error) = consumer.close().await {
        tracing::debug!(%error, "closing a table loader");
    }
}

/// Applies records; those that cannot be decoded are counted as bad and skipped (the table
/// keeps its previous value for the key).
fn apply(table: &dyn TableUpdates, records: &[ConsumerRecord], metrics: &JobMetrics) {
    for record in records {
        let Some(key) = record.key.as_deref() else {
            metrics.bad_records.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                table = table.topic(),
                offset = record.offset,
                "table record without a key skipped"
            );
            continue;
        };
        if let Err(reason) = table.apply(key, record.value.as_deref()) {
            metrics.bad_records.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                table = table.topic(),
                partition = record.partition,
                offset = record.offset,
                %reason,
                "bad table record skipped"
            );
        }
    }
}
