//! Kafka's `LogFlushStats` (`kafka.log:type=LogFlushStats,name=LogFlushRateAndTimeMs`): the
//! time each fsync of a log takes, and ours beside it: how many records each fsync made
//! durable, the size of a group commit (one fsync answers every produce that arrived while
//! the previous one ran). Together they show the cost of durability.
//!
//! Process-wide, as in Kafka (one JVM, one set of log statistics): the flusher of a log does
//! not know which broker it belongs to, and one process runs one broker outside tests.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, Registry};

use super::{MetricsError, LATENCY_BUCKETS_MS};

/// Records per fsync: a lone small produce up to a full segment's worth of group commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    20_000.0, 50_000.0, 100_000.0,
];

struct LogFlushStats {
    time_ms: Histogram,
    records: Histogram,
}

static STATS: LazyLock<Option<LogFlushStats>> = LazyLock::new(|| {
    let time_ms = Histogram::with_opts(
        HistogramOpts::new(
            "kafka_log_logflushstats_logflushrateandtimems",
            "Time of one fsync of a partition log, in ms (Kafka: LogFlushStats LogFlushRateAndTimeMs)",
        )
        .buckets(LATENCY_BUCKETS_MS.to_vec()),
    );
    let records = Histogram::with_opts(
        HistogramOpts::new(
            "millrace_log_groupcommit_records",
            "Records made durable by one fsync: the size of a group commit",
        )
        .buckets(BATCH_BUCKETS.to_vec()),
    );
    match (time_ms, records) {
        (Ok(time_ms), Ok(records)) => Some(LogFlushStats { time_ms, records }),
        _ => None,
    }
});

/// Records one fsync that took `took` and made `records` records durable.
pub(crate) fn observe(took: Duration, records: u64) {
    if let Some(stats) = STATS.as_ref() {
        stats.time_ms.observe(took.as_secs_f64() * 1_000.0);
        // Precision loss above 2^53 records per fsync is not a concern.
        #[allow(clippy::cast_precision_loss)]
        stats.records.observe(records as f64);
    }
}

/// Adds the flush statistics to a broker's registry.
pub(crate) fn register(registry: &Registry) -> Result<(), MetricsError> {
    if let Some(stats) = STATS.as_ref() {
        registry.register(Box::new(stats.time_ms.clone()))?;
        registry.register(Box::new(stats.records.clone()))?;
    }
    Ok(())
}
