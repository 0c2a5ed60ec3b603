//! One-shot ETL export: a topic's records between two bounds, written in the sink's layout
//! by the same engine, so an export directory reads like a sink's and restarting an
//! interrupted export into the same directory neither duplicates nor skips records.
//!
//! The output directory never holds a record twice: an export into a directory that already
//! has a checkpoint for a partition starts no earlier than that checkpoint's resume point.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::{ClientConfig, IsolationLevel, OffsetSpec, TopicPartition};

use crate::error::{ConnectorError, Result};
use crate::framework::DeadLetterQueue;
use crate::metrics::{MetricsSnapshot, SinkMetrics};
use crate::parquet_sink::{EngineConfig, SinkEngine};

/// One end of an export range (`--from`, `--to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The log start (`beginning`).
    Beginning,
    /// The log end when the export starts (`end`).
    End,
    /// A Kafka offset, the same in every partition (a plain integer).
    Offset(i64),
    /// The first record at or after this time, ms since the epoch (`@MS` or RFC 3339).
    Time(i64),
}

impl Bound {
    /// Parses `beginning`, `end`, an offset (`1234`), `@MS` (ms since the epoch) or an RFC
    /// 3339 time (`2026-11-25T11:00:00Z`).
    pub fn parse(text: &str) -> std::result::Result<Bound, String> {
        let text = text.trim();
        match text {
            "beginning" | "earliest" => return Ok(Bound::Beginning),
            "end" | "latest" => return Ok(Bound::End),
            _ => {}
        }
        if let Some(ms) = text.strip_prefix('@') {
            return ms
                .parse::<i64>()
                .ok()
                .filter(|ms| *ms >= 0)
                .map(Bound::Time)
                .ok_or_else(|| format!("`{text}`: @ takes ms since the epoch"));
        }
        if let Ok(offset) = text.parse::<i64>() {
            return if offset >= 0 {
                Ok(Bound::Offset(offset))
            } else {
                Err(format!("`{text}`: offsets are 0 or more"))
            };
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| Bound::Time(t.timestamp_millis()))
            .map_err(|_| {
                format!(
                    "`{text}` is not beginning, end, an offset, @MS or an RFC 3339 time \
                     (2026-11-25T11:00:00Z)"
                )
            })
    }

    fn spec(self) -> OffsetSpec {
        match self {
            Bound::Beginning => OffsetSpec::Earliest,
            Bound::End => OffsetSpec::Latest,
            Bound::Offset(_) => OffsetSpec::Earliest,
            Bound::Time(ms) => OffsetSpec::Timestamp(ms),
        }
    }
}

/// What to export, and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Connection settings.
    pub client: ClientConfig,
    /// The topic.
    pub topic: String,
    /// First record (inclusive).
    pub from: Bound,
    /// Where to stop (exclusive): records at or after this offset or time are not exported.
    pub to: Bound,
    /// Layout, schema and rolling; `engine.out` is the output directory.
    pub engine: EngineConfig,
    /// Topic for records that cannot be written (logged and skipped without one).
    pub dead_letter_topic: Option<String>,
}

/// Progress of a running export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportProgress {
    /// Records read so far.
    pub records: u64,
    /// Records in the range in total.
    pub total: u64,
}

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportSummary {
    /// Counters at the end (`records_written`, `files_committed`, `bytes_written`, ...).
    pub metrics: MetricsSnapshot,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Exports `options.topic` from `from` to `to`, calling `progress` as records arrive.
pub async fn export(
    options: ExportOptions,
    mut progress: impl FnMut(ExportProgress),
) -> Result<ExportSummary> {
    let started = Instant::now();
    let metrics = Arc::new(SinkMetrics::default());
    // read_committed, as the sink: `Bound::End` is then the last stable offset.
    let config = ConsumerConfig::builder(options.client.clone())
        .isolation_level(IsolationLevel::ReadCommitted)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .build()?;
    let mut consumer = Consumer::connect(config).await?;
    let partitions: Vec<TopicPartition> = consumer
        .partitions_for(&options.topic)
        .await?
        .into_iter()
        .map(|p| TopicPartition::new(options.topic.clone(), p))
        .collect();
    if partitions.is_empty() {
        return Err(ConnectorError::Config(format!(
            "topic {} has no partitions",
            options.topic
        )));
    }
    let starts = resolve(&consumer, &partitions, options.from).await?;
    let ends = resolve(&consumer, &partitions, options.to).await?;
    let log_ends = resolve(&consumer, &partitions, Bound::End).await?;

    let mut engine = SinkEngine::new(options.engine.clone(), metrics.clone())?;
    let mut dead_letters =
        DeadLetterQueue::connect(&options.client, options.dead_letter_topic.as_deref()).await?;
    let mut ranges: BTreeMap<TopicPartition, (i64, i64)> = BTreeMap::new();
    for tp in &partitions {
        let resume = engine.assign(tp)?;
        let start = starts[tp].max(resume.unwrap_or(0));
        let end = ends[tp].min(log_ends[tp]);
        if start < end {
            ranges.insert(tp.clone(), (start, end));
        }
    }
    let total: u64 = ranges.values().map(|(s, e)| (e - s) as u64).sum();
    let active: Vec<TopicPartition> = ranges.keys().cloned().collect();
    consumer.assign(&active)?;
    for (tp, (start, _)) in &ranges {
        consumer.seek(tp, *start)?;
    }

    let mut read = 0u64;
    progress(ExportProgress {
        records: read,
        total,
    });
    while ranges
        .iter()
        .any(|(tp, (_, end))| consumer.position(tp).is_none_or(|p| p < *end))
    {
        let records = consumer.poll(Duration::from_millis(500)).await?;
        let mut wanted = Vec::with_capacity(records.len());
        for record in records {
            let tp = TopicPartition::new(&*record.topic, record.partition);
            if ranges.get(&tp).is_some_and(|(_, end)| record.offset < *end) {
                wanted.push(record);
            }
        }
        read += wanted.len() as u64;
        engine.write(wanted)?;
        engine.tick(Instant::now())?;
        dead_letters.send(engine.take_dead_letters()).await?;
        if engine.has_pending_commit() {
            dead_letters.flush().await?;
            engine.commit()?;
        }
        progress(ExportProgress {
            records: read,
            total,
        });
    }
    engine.close_all()?;
    dead_letters.send(engine.take_dead_letters()).await?;
    dead_letters.close().await?;
    engine.commit()?;
    if let Err(error) = consumer.close().await {
        tracing::debug!(%error, "closing the consumer");
    }
    Ok(ExportSummary {
        metrics: metrics.snapshot(),
        elapsed: started.elapsed(),
    })
}

/// The offset `bound` means in each partition.
async fn resolve(
    consumer: &Consumer,
    partitions: &[TopicPartition],
    bound: Bound,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let found = consumer.offsets_for(partitions, bound.spec()).await?;
    let mut out = BTreeMap::new();
    for tp in partitions {
        let listed = found.get(tp).map(|l| l.offset).unwrap_or(-1);
        let offset = match bound {
            // Never before the log start.
            Bound::Offset(offset) => offset.max(listed.max(0)),
            // No record at or after that time: nothing from this partition.
            Bound::Time(_) if listed < 0 => i64::MAX,
            _ => listed.max(0),
        };
        out.insert(tp.clone(), offset);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_offsets_times_and_words() {
        assert_eq!(Bound::parse("beginning"), Ok(Bound::Beginning));
        assert_eq!(Bound::parse("end"), Ok(Bound::End));
        assert_eq!(Bound::parse("42"), Ok(Bound::Offset(42)));
        assert_eq!(Bound::parse("@1000"), Ok(Bound::Time(1000)));
        assert_eq!(
            Bound::parse("2026-11-25T11:30:00Z"),
            Ok(Bound::Time(1_795_606_200_000))
        );
        assert_eq!(
            Bound::parse("2026-11-25T12:30:00+01:00"),
            Ok(Bound::Time(1_795_606_200_000))
        );
        assert!(Bound::parse("-1").is_err());
        assert!(Bound::parse("yesterday").is_err());
    }
}
