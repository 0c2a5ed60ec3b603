//! The recent results of stream jobs, read from their output topics: each output topic is a
//! SQL table `<topic>_results` (`page-views-per-minute` is `page_views_per_minute_results`).
//!
//! A job's live state table holds only what is still open (the windows that have not closed,
//! so its sums change meaning as windows close); the results table holds what the job
//! emitted: closed windows with their `window_start`/`window_end`, alerts, recommendations.
//! "Views per page over the last hour" is a question for the results table; "what is
//! counting right now" one for the state table.
//!
//! The table is bounded by rows: the newest [`MAX_RESULT_ROWS`] records of the topic, read
//! from the end of each partition when the dashboard starts and followed from then on. Each
//! JSON object value is a row; its columns are inferred from the rows at query time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::json::reader::{infer_json_schema_from_iterator, ReaderBuilder};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::{ClientConfig, OffsetSpec, TopicPartition};
use serde_json::Value;
use tokio::sync::watch;

/// Rows kept per results table (the newest records of the topic).
pub const MAX_RESULT_ROWS: usize = 10_000;

/// One job output topic shown as a table.
#[derive(Debug, Clone)]
pub(crate) struct ResultsTopic {
    /// The job that writes it.
    pub(crate) job: String,
    /// The topic.
    pub(crate) topic: String,
}

/// The SQL name of `topic`'s results table.
pub fn results_table_name(topic: &str) -> String {
    format!("{}_results", millrace_streams::query::table_name(topic))
}

/// The newest rows of every results topic, kept up to date by [`ResultsCache::run`].
#[derive(Debug, Default)]
pub(crate) struct ResultsCache {
    topics: Vec<ResultsTopic>,
    rows: Mutex<HashMap<String, VecDeque<Value>>>,
    /// The next offset to read of each partition read so far: a new consumer (after an
    /// error, or to pick up a topic created later) resumes there without reading twice.
    next: Mutex<HashMap<TopicPartition, i64>>,
}

impl ResultsCache {
    pub(crate) fn new(topics: Vec<ResultsTopic>) -> Self {
        ResultsCache {
            topics,
            rows: Mutex::default(),
            next: Mutex::default(),
        }
    }

    /// The topics shown, with their job.
    pub(crate) fn topics(&self) -> &[ResultsTopic] {
        &self.topics
    }

    fn push(&self, topic: &str, row: Value) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let rows = rows.entry(topic.to_string()).or_default();
        if rows.len() == MAX_RESULT_ROWS {
            rows.pop_front();
        }
        rows.push_back(row);
    }

    /// A copy of `topic`'s rows, oldest first.
    pub(crate) fn rows(&self, topic: &str) -> Vec<Value> {
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .map(|rows| rows.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Registers in `ctx` the results tables that `sql` names and that have rows; returns,
    /// for the others it names, why not (no results yet, or values whose columns do not
    /// agree). Building a table converts its rows, so tables a query does not mention are
    /// left out.
    pub(crate) fn register(&self, ctx: &SessionContext, sql: &str) -> Vec<String> {
        let sql = sql.to_ascii_lowercase();
        let mut skipped = Vec::new();
        for entry in &self.topics {
            let name = results_table_name(&entry.topic);
            if !sql.contains(&name.to_ascii_lowercase()) {
                continue;
            }
            let registered = to_batch(&self.rows(&entry.topic)).and_then(|batch| {
                let batch = batch.ok_or_else(|| "no results yet".to_string())?;
                let table = MemTable::try_new(batch.schema(), vec![vec![batch]])
                    .map_err(|e| e.to_string())?;
                ctx.register_table(name.as_str(), Arc::new(table))
                    .map_err(|e| e.to_string())?;
                Ok(())
            });
            if let Err(reason) = registered {
                skipped.push(format!("{name} ({reason})"));
            }
        }
        skipped
    }

    /// Follows the results topics until `stop` turns true: starts at the newest
    /// [`MAX_RESULT_ROWS`] records of each partition, then reads what comes. A topic that
    /// does not exist yet is looked for again every few seconds.
    pub(crate) async fn run(
        self: Arc<Self>,
        client: ClientConfig,
        mut stop: watch::Receiver<bool>,
    ) {
        if self.topics.is_empty() {
            return;
        }
        let follow = async {
            loop {
                if let Err(error) = self.follow(&client).await {
                    tracing::debug!(%error, "reading the jobs' results topics; trying again");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        };
        tokio::select! {
            () = follow => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
    }

    /// One consumer over every partition of every results topic found; returns when that
    /// fails, or when a topic not found before may have appeared.
    async fn follow(&self, client: &ClientConfig) -> Result<(), millrace_client::ClientError> {
        let mut consumer = Consumer::connect(ConsumerConfig::new(client.clone())).await?;
        let mut partitions = Vec::new();
        let mut missing = false;
        for entry in &self.topics {
            match consumer.partitions_for(&entry.topic).await {
                Ok(ids) if !ids.is_empty() => partitions.extend(
                    ids.into_iter()
                        .map(|p| TopicPartition::new(entry.topic.as_str(), p)),
                ),
                _ => missing = true,
            }
        }
        if partitions.is_empty() {
            return Ok(());
        }
        consumer.assign(&partitions)?;
        let starts = consumer
            .offsets_for(&partitions, OffsetSpec::Earliest)
            .await?;
        let ends = consumer
            .offsets_for(&partitions, OffsetSpec::Latest)
            .await?;
        for tp in &partitions {
            let start = starts.get(tp).map_or(0, |o| o.offset);
            let end = ends.get(tp).map_or(0, |o| o.offset);
            let newest = end.saturating_sub(MAX_RESULT_ROWS as i64);
            let resume = self
                .next
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(tp)
                .copied();
            let from = resume.unwrap_or(newest).max(start).max(0);
            consumer.seek(tp, from)?;
        }
        // With topics still missing, look for them again now and then.
        let rescan = async {
            if missing {
                tokio::time::sleep(Duration::from_secs(5)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(rescan);
        loop {
            let records = tokio::select! {
                records = consumer.poll(Duration::from_millis(500)) => records?,
                () = &mut rescan => return Ok(()),
            };
            for record in records {
                self.next.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    TopicPartition::new(&*record.topic, record.partition),
                    record.offset + 1,
                );
                let Some(value) = record.value.as_deref() else {
                    continue;
                };
                match serde_json::from_slice::<Value>(value) {
                    Ok(row @ Value::Object(_)) => self.push(&record.topic, row),
                    _ => {
                        tracing::debug!(topic = %record.topic, "a result that is not a JSON object")
                    }
                }
            }
        }
    }
}

/// The rows as one record batch, columns inferred from them (`None` without rows).
fn to_batch(rows: &[Value]) -> Result<Option<RecordBatch>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    let schema = infer_json_schema_from_iterator(rows.iter().map(|row| Ok(row.clone())))
        .map_err(|e| e.to_string())?;
    let mut decoder = ReaderBuilder::new(Arc::new(schema))
        .with_batch_size(rows.len())
        .build_decoder()
        .map_err(|e| e.to_string())?;
    decoder.serialize(rows).map_err(|e| e.to_string())?;
    decoder.flush().map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_tables_are_named_after_their_topics() {
        assert_eq!(
            results_table_name("page-views-per-minute"),
            "page_views_per_minute_results"
        );
    }

    #[test]
    fn rows_become_a_batch_with_every_field_as_a_column() {
        let rows = vec![
            json!({"page": "/a", "window_start": 0, "window_end": 60000, "views": 3}),
            json!({"page": "/b", "window_start": 0, "window_end": 60000, "views": 1.5}),
        ];
        let batch = to_batch(&rows).unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        for column in ["page", "window_start", "window_end", "views"] {
            assert!(batch.schema().field_with_name(column).is_ok(), "{column}");
        }
        assert_eq!(to_batch(&[]).unwrap(), None);
    }

    #[test]
    fn the_cache_keeps_the_newest_rows() {
        let cache = ResultsCache::new(Vec::new());
        for i in 0..MAX_RESULT_ROWS + 5 {
            cache.push("t", json!({ "i": i }));
        }
        let rows = cache.rows("t");
        assert_eq!(rows.len(), MAX_RESULT_ROWS);
        assert_eq!(rows[0], json!({"i": 5}));
    }
}
