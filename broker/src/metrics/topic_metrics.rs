//! Kafka's `BrokerTopicMetrics` (`kafka.server:type=BrokerTopicMetrics,name=...,topic=<t>`):
//! messages and bytes in and out, produce and fetch requests, per topic.
//!
//! Kafka also keeps a topic-less MBean for the whole broker; it is left out here because
//! one Prometheus name cannot carry two label sets in one registry, and `sum()` over the
//! topics gives the same number.
//!
//! The hot path calls [`BrokerTopicMetrics::topic`] once per topic of a request (a read
//! lock on a map, never a write after the topic's first request) and then only atomics.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::MetricsError;

/// The counters, and the per-topic handles already looked up.
pub struct BrokerTopicMetrics {
    vecs: [IntCounterVec; 7],
    /// `ReplicationBytesOutPerSec`: record bytes sent to followers (broker-wide, as in Kafka,
    /// which keeps them out of `BytesOutPerSec`).
    replication_bytes_out: IntCounter,
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
    /// Whether anything reads the counters (an endpoint is configured).
    enabled: bool,
}

/// One topic's counters.
pub struct TopicCounters {
    /// `MessagesInPerSec`: records appended by producers.
    pub messages_in: IntCounter,
    /// `BytesInPerSec`: record batch bytes appended by producers.
    pub bytes_in: IntCounter,
    /// `BytesOutPerSec`: record batch bytes sent to consumers (followers' are replication).
    pub bytes_out: IntCounter,
    /// `TotalProduceRequestsPerSec`: produce requests naming the topic (per partition).
    pub produce_requests: IntCounter,
    /// `TotalFetchRequestsPerSec`: fetch requests naming the topic (per partition).
    pub fetch_requests: IntCounter,
    /// `FailedProduceRequestsPerSec`: partitions of produce requests that failed.
    pub failed_produce_requests: IntCounter,
    /// `FailedFetchRequestsPerSec`: partitions of fetch requests that failed.
    pub failed_fetch_requests: IntCounter,
}

const COUNTERS: [(&str, &str); 7] = [
    (
        "kafka_server_brokertopicmetrics_messagesin_total",
        "Records appended by producers (Kafka: BrokerTopicMetrics MessagesInPerSec)",
    ),
    (
        "kafka_server_brokertopicmetrics_bytesin_total",
        "Record batch bytes appended by producers (Kafka: BrokerTopicMetrics BytesInPerSec)",
    ),
    (
        "kafka_server_brokertopicmetrics_bytesout_total",
        "Record batch bytes sent to consumers (Kafka: BrokerTopicMetrics BytesOutPerSec)",
    ),
    (
        "kafka_server_brokertopicmetrics_totalproducerequests_total",
        "Produce requests per partition (Kafka: BrokerTopicMetrics TotalProduceRequestsPerSec)",
    ),
    (
        "kafka_server_brokertopicmetrics_totalfetchrequests_total",
        "Fetch requests per partition (Kafka: BrokerTopicMetrics TotalFetchRequestsPerSec)",
    ),
    (
        "kafka_server_brokertopicmetrics_failedproducerequests_total",
        "Failed produce requests per partition (Kafka: BrokerTopicMetrics FailedProduceRequestsPerSec)",
    ),
    (
        "kafka_server_brokertopicmetrics_failedfetchrequests_total",
        "Failed fetch requests per partition (Kafka: BrokerTopicMetrics FailedFetchRequestsPerSec)",
    ),
];

impl BrokerTopicMetrics {
    /// Registers the per-topic counters; without `enabled`, nothing is counted.
    pub fn new(registry: &Registry, enabled: bool) -> Result<Self, MetricsError> {
        let make = |(name, help): (&str, &str)| -> Result<IntCounterVec, MetricsError> {
            let vec = IntCounterVec::new(Opts::new(name, help), &["topic"])?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let [a, b, c, d, e, f, g] = COUNTERS;
        let replication_bytes_out = IntCounter::new(
            "kafka_server_brokertopicmetrics_replicationbytesout_total",
            "Record batch bytes sent to followers (Kafka: BrokerTopicMetrics ReplicationBytesOutPerSec)",
        )?;
        registry.register(Box::new(replication_bytes_out.clone()))?;
        Ok(BrokerTopicMetrics {
            replication_bytes_out,
            vecs: [
                make(a)?,
                make(b)?,
                make(c)?,
                make(d)?,
                make(e)?,
                make(f)?,
                make(g)?,
            ],
            topics: RwLock::new(HashMap::new()),
            enabled,
        })
    }

    /// The counters of `topic`, or `None` when nothing is counted.
    pub fn topic(&self, topic: &str) -> Option<Arc<TopicCounters>> {
        if !self.enabled {
            return None;
        }
        if let Some(found) = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
        {
            return Some(found.clone());
        }
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let counters = topics
            .entry(topic.to_string())
            .or_insert_with(|| {
                let [a, b, c, d, e, f, g] = &self.vecs;
                let get = |vec: &IntCounterVec| vec.with_label_values(&[topic]);
                Arc::new(TopicCounters {
                    messages_in: get(a),
                    bytes_in: get(b),
                    bytes_out: get(c),
                    produce_requests: get(d),
                    fetch_requests: get(e),
                    failed_produce_requests: get(f),
                    failed_fetch_requests: get(g),
                })
            })
            .clone();
        Some(counters)
    }

    /// Records a fetch response about to be sent, to a follower or a consumer: per partition,
    /// the record bytes it carries or its failure. (Counted on the answer, not on each read: a
    /// long poll reads again until data arrives.)
    pub fn fetch_answered(&self, responses: &[FetchableTopicResponse], follower: bool) {
        for topic in responses {
            // An unknown topic id leaves the name empty: nothing to count it under.
            if topic.topic.0.is_empty() {
                continue;
            }
            let Some(counters) = self.topic(&topic.topic.0) else {
                return;
            };
            for partition in &topic.partitions {
                let sent = (partition.error_code == 0).then(|| {
                    partition
                        .records
                        .as_ref()
                        .map_or(0, |records| records.len() as u64)
                });
                if follower {
                    // As Kafka: requests and failures count per topic, bytes as replication.
                    counters.fetched(sent.map(|_| 0));
                    self.replication_bytes_out.inc_by(sent.unwrap_or(0));
                } else {
                    counters.fetched(sent);
                }
            }
        }
    }
}

impl TopicCounters {
    /// Records one partition of a produce request: `records` and `bytes` appended, or
    /// `None` for a failure.
    pub fn produced(&self, appended: Option<(u64, u64)>) {
        self.produce_requests.inc();
        match appended {
            Some((records, bytes)) => {
                self.messages_in.inc_by(records);
                self.bytes_in.inc_by(bytes);
            }
            None => self.failed_produce_requests.inc(),
        }
    }

    /// Records one partition of a fetch request: `bytes` of records sent, or `None` for a
    /// failure.
    pub fn fetched(&self, sent: Option<u64>) {
        self.fetch_requests.inc();
        match sent {
            Some(bytes) => self.bytes_out.inc_by(bytes),
            None => self.failed_fetch_requests.inc(),
        }
    }
}
