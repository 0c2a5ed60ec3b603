//! What the console reads from one broker's metrics: the counters behind its request rate,
//! request latency, bytes in and out, CPU and memory, and the figures between two scrapes.

use serde::Serialize;

use super::exposition::MetricSample;

/// Requests received per API (Kafka's RequestsPerSec).
const REQUESTS: &str = "kafka_network_requestmetrics_requests_total";
/// Request latency histogram per API (Kafka's TotalTimeMs), in milliseconds.
const TOTAL_TIME_BUCKET: &str = "kafka_network_requestmetrics_totaltimems_bucket";
const BYTES_IN: &str = "kafka_server_brokertopicmetrics_bytesin_total";
const BYTES_OUT: &str = "kafka_server_brokertopicmetrics_bytesout_total";
const MESSAGES_IN: &str = "kafka_server_brokertopicmetrics_messagesin_total";
const CPU_SECONDS: &str = "process_cpu_seconds_total";
const RSS_BYTES: &str = "process_resident_memory_bytes";
const CONNECTIONS: &str = "kafka_server_socket_server_metrics_connections";
const LEADERS: &str = "kafka_server_replicamanager_leadercount";

/// A cumulative latency histogram: (upper bound in ms, requests at or below it), ascending,
/// the last bound `+Inf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// The `q` quantile (0..=1) of the requests counted since `earlier`, interpolated within
    /// its bucket as Prometheus's `histogram_quantile` does; `None` without new requests (or
    /// when the buckets changed shape, as after a restart).
    pub fn quantile_since(&self, earlier: &Histogram, q: f64) -> Option<f64> {
        let deltas: Vec<(f64, f64)> = if earlier.buckets.is_empty() {
            self.buckets.clone()
        } else {
            if earlier.buckets.len() != self.buckets.len() {
                return None;
            }
            self.buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|((le, now), (_, before))| (*le, now - before))
                .collect()
        };
        let total = deltas.last()?.1;
        if total.is_nan() || total <= 0.0 || deltas.iter().any(|(_, count)| *count < 0.0) {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower_bound = 0.0;
        let mut below = 0.0;
        for (le, count) in &deltas {
            if *count >= rank {
                if le.is_infinite() {
                    // Beyond the highest finite bucket: that bound is all that is known.
                    return Some(lower_bound);
                }
                let in_bucket = count - below;
                let fraction = if in_bucket > 0.0 {
                    (rank - below) / in_bucket
                } else {
                    1.0
                };
                return Some(lower_bound + (le - lower_bound) * fraction);
            }
            lower_bound = *le;
            below = *count;
        }
        None
    }
}

/// One scrape of one broker, reduced to what the console shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerCounters {
    /// Requests received, every API.
    pub requests: f64,
    /// Produce latency.
    pub produce: Histogram,
    /// Consumer fetch latency (`FetchConsumer`; followers' fetches wait by design).
    pub fetch: Histogram,
    /// Record bytes appended by producers.
    pub bytes_in: f64,
    /// Record bytes sent to consumers.
    pub bytes_out: f64,
    /// Records appended by producers.
    pub messages_in: f64,
    /// CPU seconds used by the process.
    pub cpu_seconds: f64,
    /// Resident memory.
    pub rss_bytes: f64,
    /// Open client connections.
    pub connections: f64,
    /// Partitions led.
    pub leaders: f64,
}

impl BrokerCounters {
    /// Reads the counters out of a scrape's samples.
    pub fn from_samples(samples: &[MetricSample]) -> Self {
        let mut counters = BrokerCounters::default();
        for sample in samples {
            let value = sample.value;
            match sample.name.as_str() {
                REQUESTS => counters.requests += value,
                BYTES_IN => counters.bytes_in += value,
                BYTES_OUT => counters.bytes_out += value,
                MESSAGES_IN => counters.messages_in += value,
                CPU_SECONDS => counters.cpu_seconds = value,
                RSS_BYTES => counters.rss_bytes = value,
                CONNECTIONS => counters.connections += value,
                LEADERS => counters.leaders = value,
                TOTAL_TIME_BUCKET => {
                    let histogram = match sample.label("request") {
                        Some("Produce") => &mut counters.produce,
                        Some("FetchConsumer") => &mut counters.fetch,
                        _ => continue,
                    };
                    let Some(le) = sample.label("le").and_then(|le| le.parse::<f64>().ok()) else {
                        continue;
                    };
                    histogram.buckets.push((le, value));
                }
                _ => {}
            }
        }
        for histogram in [&mut counters.produce, &mut counters.fetch] {
            histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        counters
    }
}

/// A broker's figures between two scrapes, as the console charts them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BrokerRates {
    /// When the later scrape was taken (ms since the epoch).
    pub at_ms: i64,
    /// Requests per second, every API.
    pub requests_per_sec: f64,
    /// Produce p99 latency in ms (`None`: no produce request in between).
    pub produce_p99_ms: Option<f64>,
    /// Consumer fetch p99 latency in ms (`None`: no consumer fetch in between).
    pub fetch_p99_ms: Option<f64>,
    /// Records appended per second.
    pub messages_in_per_sec: f64,
    /// Record bytes in per second.
    pub bytes_in_per_sec: f64,
    /// Record bytes out (to consumers) per second.
    pub bytes_out_per_sec: f64,
    /// CPU use as a share of one core (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Resident memory at the later scrape.
    pub rss_bytes: f64,
    /// Open client connections at the later scrape.
    pub connections: f64,
    /// Partitions led at the later scrape.
    pub leaders: f64,
}

impl BrokerRates {
    /// The figures between `earlier` (at `earlier_ms`) and `later` (at `later_ms`). A counter
    /// that went down (the broker restarted) counts from zero.
    pub fn between(
        earlier: &BrokerCounters,
        earlier_ms: i64,
        later: &BrokerCounters,
        later_ms: i64,
    ) -> Self {
        let seconds = ((later_ms - earlier_ms) as f64 / 1000.0).max(0.001);
        let restarted = later.requests < earlier.requests;
        let rate = |now: f64, before: f64| {
            let delta = if restarted || now < before {
                now
            } else {
                now - before
            };
            delta / seconds
        };
        let empty = Histogram::default();
        let (produce_before, fetch_before) = if restarted {
            (&empty, &empty)
        } else {
            (&earlier.produce, &earlier.fetch)
        };
        BrokerRates {
            at_ms: later_ms,
            requests_per_sec: rate(later.requests, earlier.requests),
            produce_p99_ms: later.produce.quantile_since(produce_before, 0.99),
            fetch_p99_ms: later.fetch.quantile_since(fetch_before, 0.99),
            messages_in_per_sec: rate(later.messages_in, earlier.messages_in),
            bytes_in_per_sec: rate(later.bytes_in, earlier.bytes_in),
            bytes_out_per_sec: rate(later.bytes_out, earlier.bytes_out),
            cpu_cores: rate(later.cpu_seconds, earlier.cpu_seconds),
            rss_bytes: later.rss_bytes,
            connections: later.connections,
            leaders: later.leaders,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::exposition::parse;
    use super::*;

    fn scrape(produce: [f64; 4], requests: f64, bytes_in: f64) -> BrokerCounters {
        let text = format!(
            "{REQUESTS}{{request=\"Produce\",version=\"9\"}} {requests}\n\
             {TOTAL_TIME_BUCKET}{{request=\"Produce\",le=\"1\"}} {}\n\
             {TOTAL_TIME_BUCKET}{{request=\"Produce\",le=\"5\"}} {}\n\
             {TOTAL_TIME_BUCKET}{{request=\"Produce\",le=\"10\"}} {}\n\
             {TOTAL_TIME_BUCKET}{{request=\"Produce\",le=\"+Inf\"}} {}\n\
             {TOTAL_TIME_BUCKET}{{request=\"Metadata\",le=\"+Inf\"}} 99\n\
             {BYTES_IN}{{topic=\"a\"}} {bytes_in}\n{BYTES_IN}{{topic=\"b\"}} 0\n\
             {RSS_BYTES} 1048576\n",
            produce[0], produce[1], produce[2], produce[3]
        );
        BrokerCounters::from_samples(&parse(&text).unwrap())
    }

    #[test]
    fn rates_and_p99_come_from_the_difference_of_two_scrapes() {
        let earlier = scrape([100.0, 100.0, 100.0, 100.0], 100.0, 1000.0);
        // 100 more requests: 90 under 1 ms, 10 between 5 and 10 ms.
        let later = scrape([190.0, 190.0, 200.0, 200.0], 200.0, 3000.0);
        let rates = BrokerRates::between(&earlier, 0, &later, 2000);
        assert_eq!(rates.requests_per_sec, 50.0);
        assert_eq!(rates.bytes_in_per_sec, 1000.0);
        assert_eq!(rates.rss_bytes, 1048576.0);
        // Rank 99 of 100 lies 9/10 into the 5-10 ms bucket.
        let p99 = rates.produce_p99_ms.unwrap();
        assert!((p99 - 9.5).abs() < 1e-9, "{p99}");
        assert_eq!(rates.fetch_p99_ms, None, "no consumer fetch");
    }

    #[test]
    fn a_restarted_broker_counts_from_zero() {
        let earlier = scrape([100.0, 100.0, 100.0, 100.0], 100.0, 5000.0);
        let later = scrape([10.0, 10.0, 10.0, 10.0], 10.0, 500.0);
        let rates = BrokerRates::between(&earlier, 0, &later, 1000);
        assert_eq!(rates.requests_per_sec, 10.0);
        assert_eq!(rates.bytes_in_per_sec, 500.0);
        assert!(rates.produce_p99_ms.unwrap() <= 1.0);
    }

    #[test]
    fn latency_beyond_the_last_bucket_reports_that_bound() {
        let earlier = scrape([0.0, 0.0, 0.0, 0.0], 0.0, 0.0);
        let later = scrape([0.0, 0.0, 0.0, 4.0], 4.0, 0.0);
        let rates = BrokerRates::between(&earlier, 0, &later, 1000);
        assert_eq!(rates.produce_p99_ms, Some(10.0));
    }
}
