//! Broker observability: Prometheus metrics under Kafka's names, the health checks, the
//! slow-request log, and the HTTP endpoint that serves them (`metrics.listener`).
//!
//! Metric names are what the Prometheus JMX exporter's Kafka rules make of Kafka's MBeans
//! (`kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic=t` becomes
//! `kafka_server_brokertopicmetrics_messagesin_total{topic="t"}`), so dashboards and alert
//! rules written for Kafka work against Millrace. The README's "Monitoring" section maps each
//! one to its MBean.
//!
//! Two kinds of metric, kept apart for the hot path's sake:
//! - events (requests, bytes, fsyncs) are counted as they happen, with atomics only: handles
//!   to labelled series are looked up once and cached ([`request_metrics`], [`topic_metrics`],
//!   [`log_flush`], [`socket_server`]);
//! - state (log sizes and offsets, under-replicated partitions, the active controller, group
//!   lag) is read from the broker when Prometheus scrapes ([`snapshot`]), so keeping it costs
//!   nothing between scrapes.
//!
//! Where to start: [`endpoint`] serves the routes; [`health`] decides readiness.

pub mod endpoint;
pub mod health;
pub mod log_flush;
pub mod request_metrics;
pub mod slow_request;
pub mod snapshot;
pub mod socket_server;
pub mod topic_metrics;
pub mod transaction_metrics;

use prometheus::{Encoder, TextEncoder};

/// The Prometheus registry the metric groups register into (re-exported: their constructors
/// take one).
pub use prometheus::Registry;

use crate::config::BrokerConfig;

pub use health::Readiness;
pub use request_metrics::{RequestMetrics, RequestTimer};
pub use socket_server::SocketServerMetrics;
pub use topic_metrics::BrokerTopicMetrics;
pub use transaction_metrics::TransactionMetrics;

/// Why the metrics could not be set up (a bug: two metrics of one name).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Bucket bounds, in ms, of the request and fsync latency histograms: from 0.1 ms (a cached
/// metadata answer) to 30 s (the longest produce timeout clients use), roughly ×2.5 apart so
/// `histogram_quantile` stays within a bucket's width of the truth.
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0,
    5_000.0, 10_000.0, 30_000.0,
];

/// One broker's metrics: the registry the endpoint encodes, and the event counters the
/// request path updates.
pub struct BrokerMetrics {
    registry: Registry,
    /// `kafka.network:type=RequestMetrics`: request counts and latency by stage, per API.
    pub requests: RequestMetrics,
    /// `kafka.server:type=BrokerTopicMetrics`: messages and bytes in and out, per topic.
    pub topics: BrokerTopicMetrics,
    /// `kafka.server:type=socket-server-metrics`: connections.
    pub sockets: SocketServerMetrics,
    /// Transactions completed and timed out (ours).
    pub transactions: TransactionMetrics,
    /// Gauges set from the broker's state at each scrape.
    snapshot: snapshot::SnapshotMetrics,
    /// `metrics.partition.level.enable`.
    partition_level: bool,
    /// Where the endpoint serving these metrics listens, once bound (`metrics.listener` may
    /// name port 0), for DescribeConfigs to tell consoles.
    endpoint: std::sync::OnceLock<std::net::SocketAddr>,
}

impl BrokerMetrics {
    /// Creates and registers every metric of a broker with `config`.
    pub fn new(config: &BrokerConfig) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        // Without an endpoint nobody reads the counters: the request path skips them (and
        // times requests only for the slow-request log, when that is on).
        let exported = config.metrics.listener.is_some();
        let timed = exported || config.metrics.slow_request_ms.is_some();
        let requests = RequestMetrics::new(&registry, config.metrics.slow_request_ms, timed)?;
        let topics = BrokerTopicMetrics::new(&registry, exported)?;
        let sockets = SocketServerMetrics::new(&registry, &config.client_listener().name)?;
        let transactions = TransactionMetrics::new(&registry)?;
        let snapshot = snapshot::SnapshotMetrics::new(&registry)?;
        log_flush::register(&registry)?;
        // Process-wide (one process may embed several brokers in tests; each shows the same).
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(BrokerMetrics {
            registry,
            requests,
            topics,
            sockets,
            transactions,
            snapshot,
            partition_level: config.metrics.partition_level,
            endpoint: std::sync::OnceLock::new(),
        })
    }

    /// Notes where the endpoint serving these metrics is bound (the first call counts).
    pub fn set_endpoint(&self, address: std::net::SocketAddr) {
        let _ = self.endpoint.set(address);
    }

    /// Where the endpoint serving these metrics is bound, if there is one.
    pub fn endpoint(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.get().copied()
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, with the state gauges
    /// read from `broker` first (when the broker is open).
    pub fn encode(&self, broker: Option<&crate::Broker>) -> Vec<u8> {
        if let Some(broker) = broker {
            self.snapshot.refresh(broker, self.partition_level);
        }
        encode_registry(&self.registry)
    }
}

impl BrokerMetrics {
    /// [`Self::encode`] for a controller-only node: the controller's gauges, the process and
    /// nothing of a broker's.
    pub fn encode_controller(
        &self,
        controller: &crate::metadata::Controller,
        node_id: i32,
    ) -> Vec<u8> {
        self.snapshot.controller.refresh(controller, node_id);
        encode_registry(&self.registry)
    }
}

/// The text exposition of everything in `registry`.
pub(crate) fn encode_registry(registry: &Registry) -> Vec<u8> {
    let families = registry.gather();
    let mut out = Vec::with_capacity(64 * 1024);
    if let Err(error) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!(%error, "encoding metrics failed");
    }
    out
}

/// The content type of [`BrokerMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters whose source is a plain atomic elsewhere in the broker (ISR changes, leader
/// elections): moves the Prometheus counter up to `value`. Counters never go down, so a
/// source that restarts from zero (a replica re-created) is only counted again past its old
/// high.
pub(crate) fn sync_counter(counter: &prometheus::IntCounter, value: u64) {
    let seen = counter.get();
    if value > seen {
        counter.inc_by(value - seen);
    }
}
