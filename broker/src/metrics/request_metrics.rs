//! Kafka's `RequestMetrics` (`kafka.network:type=RequestMetrics,name=...,request=<API>`):
//! requests per API and version, and the latency of each API split into the stages a request
//! goes through, as Prometheus histograms in milliseconds.
//!
//! The stages, in the order a request meets them on one connection:
//! - **request queue**: from the whole frame being read to its handler starting. A connection
//!   hands frames to their handlers as it reads them, so this stays near zero; it is kept for
//!   the dashboards that plot Kafka's five parts.
//! - **local**: the handler's own work (decode, validate, append to the log, encode).
//! - **response queue**: waiting behind the earlier responses of the same connection, which
//!   go out in request order (a pipelined produce may wait for the one before it).
//! - **remote**: waiting, at the head of the connection's queue, for what the handler left to
//!   finish: the fsync of a group commit, the in-sync replicas of an acks=all produce, the
//!   long poll of a fetch. A produce's p99 is usually here, and this is where it shows.
//! - **response send**: writing the response to the socket.
//!
//! `totaltimems` is the sum: from the frame read to the response written.
//!
//! Fetches are split as Kafka splits them: `FetchConsumer` and `FetchFollower`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use super::slow_request;
use super::{MetricsError, LATENCY_BUCKETS_MS};

/// Highest API key a series is cached for (Kafka's keys are below 100).
const MAX_API_KEY: usize = 100;

/// Versions a request counter is cached for; higher ones are counted without the cache.
const MAX_CACHED_VERSION: usize = 32;

/// The stage histograms, by name (the MBean's `name=` in lower case) and help text.
const STAGES: [(&str, &str); 6] = [
    (
        "kafka_network_requestmetrics_totaltimems",
        "Time from a request being read to its response being written, in ms (Kafka: RequestMetrics TotalTimeMs)",
    ),
    (
        "kafka_network_requestmetrics_requestqueuetimems",
        "Time a request waited before its handler started, in ms (Kafka: RequestMetrics RequestQueueTimeMs)",
    ),
    (
        "kafka_network_requestmetrics_localtimems",
        "Time the handler worked on the request, in ms (Kafka: RequestMetrics LocalTimeMs)",
    ),
    (
        "kafka_network_requestmetrics_remotetimems",
        "Time waiting for fsync, the in-sync replicas or a long poll, in ms (Kafka: RequestMetrics RemoteTimeMs)",
    ),
    (
        "kafka_network_requestmetrics_responsequeuetimems",
        "Time a finished response waited behind earlier ones on its connection, in ms (Kafka: RequestMetrics ResponseQueueTimeMs)",
    ),
    (
        "kafka_network_requestmetrics_responsesendtimems",
        "Time writing the response to the socket, in ms (Kafka: RequestMetrics ResponseSendTimeMs)",
    ),
];

/// Request counts and stage latencies per API.
pub struct RequestMetrics {
    requests: IntCounterVec,
    stages: Vec<HistogramVec>,
    /// Per API key (and one more slot for `FetchFollower`), the series, made on first use.
    series: Vec<OnceLock<Arc<ApiSeries>>>,
    slow_request: Option<Duration>,
    /// Whether requests are timed at all (an endpoint or the slow-request log wants them).
    enabled: bool,
}

/// One API's series, looked up once so that timing a request touches only atomics.
pub struct ApiSeries {
    name: String,
    /// total, request queue, local, remote, response queue, response send.
    stages: [Histogram; 6],
    by_version: Vec<OnceLock<IntCounter>>,
    requests: IntCounterVec,
}

impl RequestMetrics {
    /// Registers the request metrics; `slow_request_ms` turns on the slow-request log;
    /// without `enabled` no request is timed.
    pub fn new(
        registry: &Registry,
        slow_request_ms: Option<u64>,
        enabled: bool,
    ) -> Result<Self, MetricsError> {
        let requests = IntCounterVec::new(
            Opts::new(
                "kafka_network_requestmetrics_requests_total",
                "Requests received, per API and version (Kafka: RequestMetrics RequestsPerSec)",
            ),
            &["request", "version"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let mut stages = Vec::with_capacity(STAGES.len());
        for (name, help) in STAGES {
            let vec = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_MS.to_vec()),
                &["request"],
            )?;
            registry.register(Box::new(vec.clone()))?;
            stages.push(vec);
        }
        Ok(RequestMetrics {
            requests,
            stages,
            series: (0..=MAX_API_KEY + 1).map(|_| OnceLock::new()).collect(),
            slow_request: slow_request_ms.map(Duration::from_millis),
            enabled,
        })
    }

    /// Starts timing the request in `frame`, read completely just now. Frames too short to
    /// name an API are not timed (they close the connection), nor is anything when no one
    /// reads the timings.
    pub fn start(&self, frame: &Bytes) -> Option<RequestTimer> {
        if !self.enabled {
            return None;
        }
        let received = Instant::now();
        let api_key = i16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
        let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
        let api = ApiKey::try_from(api_key).ok()?;
        let follower = api == ApiKey::Fetch && is_follower_fetch(frame, version);
        let slot = if follower {
            MAX_API_KEY + 1
        } else {
            usize::try_from(api_key)
                .ok()
                .filter(|k| *k <= MAX_API_KEY)?
        };
        let series = self
            .series
            .get(slot)?
            .get_or_init(|| Arc::new(self.make_series(api, follower)))
            .clone();
        series.count(version);
        Some(RequestTimer {
            series,
            received,
            started: Instant::now(),
            local_done: None,
            dequeued: None,
            completed: None,
            slow: self
                .slow_request
                .map(|threshold| (threshold, frame.clone(), version)),
        })
    }

    fn make_series(&self, api: ApiKey, follower: bool) -> ApiSeries {
        let name = match (api, follower) {
            (ApiKey::Fetch, true) => "FetchFollower".to_string(),
            (ApiKey::Fetch, false) => "FetchConsumer".to_string(),
            // Kafka's request names are its ApiKeys names, which the enum's variants spell.
            _ => format!("{api:?}"),
        };
        let stage = |i: usize| {
            self.stages
                .get(i)
                .map(|vec| vec.with_label_values(&[name.as_str()]))
                .unwrap_or_else(|| unreachable!("six stages are registered"))
        };
        let stages = [stage(0), stage(1), stage(2), stage(3), stage(4), stage(5)];
        ApiSeries {
            name,
            stages,
            by_version: (0..MAX_CACHED_VERSION).map(|_| OnceLock::new()).collect(),
            requests: self.requests.clone(),
        }
    }
}

impl ApiSeries {
    fn count(&self, version: i16) {
        let slot = usize::try_from(version)
            .ok()
            .and_then(|v| self.by_version.get(v));
        match slot {
            Some(slot) => slot
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[self.name.as_str(), &version.to_string()])
                })
                .inc(),
            None => self
                .requests
                .with_label_values(&[self.name.as_str(), &version.to_string()])
                .inc(),
        }
    }
}

/// Whether a Fetch frame comes from a follower (replica id >= 0) rather than a consumer. The
/// replica id is the body's first field in every version we serve (4..=12); parsing stops at
/// anything unexpected and calls it a consumer's.
fn is_follower_fetch(frame: &[u8], version: i16) -> bool {
    let Some(len) = frame.get(8..10).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return false;
    };
    let mut pos = 10 + usize::try_from(len.max(0)).unwrap_or(0);
    if ApiKey::Fetch.request_header_version(version) >= 2 {
        // Flexible header: tagged fields follow; requests carry none in practice.
        if frame.get(pos) != Some(&0) {
            return false;
        }
        pos += 1;
    }
    frame
        .get(pos..pos + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .is_some_and(|replica_id| replica_id >= 0)
}

/// The clock of one request through its stages; see the module docs for what each measures.
/// Recorded when the response is written ([`RequestTimer::sent`]) or, for a request without
/// response, when its handler returns ([`RequestTimer::unanswered`]).
pub struct RequestTimer {
    series: Arc<ApiSeries>,
    received: Instant,
    started: Instant,
    local_done: Option<Instant>,
    dequeued: Option<Instant>,
    completed: Option<Instant>,
    /// With `log.slow.request.ms`: the threshold, the frame (to name the client and
    /// partitions only if the request turns out slow) and the version.
    slow: Option<(Duration, Bytes, i16)>,
}

impl RequestTimer {
    /// The handler returned.
    pub fn local_done(mut self) -> Self {
        self.local_done = Some(Instant::now());
        self
    }

    /// The connection's writer reached this response.
    pub fn dequeued(&mut self) {
        self.dequeued = Some(Instant::now());
    }

    /// The response is ready (its fsync, replicas or long poll are done).
    pub fn completed(&mut self) {
        self.completed = Some(Instant::now());
    }

    /// The response is written: records every stage.
    pub fn sent(self) {
        let now = Instant::now();
        let local_done = self.local_done.unwrap_or(now);
        let dequeued = self.dequeued.unwrap_or(local_done).max(local_done);
        let completed = self.completed.unwrap_or(dequeued).max(dequeued);
        let times = StageTimes {
            total: now - self.received,
            request_queue: self.started - self.received,
            local: local_done - self.started,
            response_queue: dequeued - local_done,
            remote: completed - dequeued,
            response_send: now - completed,
        };
        self.record(times);
    }

    /// A request that gets no response (acks=0 produce): all of it was local.
    pub fn unanswered(self) {
        let now = Instant::now();
        let times = StageTimes {
            total: now - self.received,
            request_queue: self.started - self.received,
            local: now - self.started,
            ..StageTimes::default()
        };
        self.record(times);
    }

    fn record(self, times: StageTimes) {
        let [total, queue, local, remote, response_queue, send] = &self.series.stages;
        total.observe(ms(times.total));
        queue.observe(ms(times.request_queue));
        local.observe(ms(times.local));
        remote.observe(ms(times.remote));
        response_queue.observe(ms(times.response_queue));
        send.observe(ms(times.response_send));
        if let Some((threshold, frame, version)) = self.slow {
            if times.total > threshold {
                slow_request::log(&self.series.name, version, &frame, &times);
            }
        }
    }
}

/// How long one request spent in each stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    /// Read to written.
    pub total: Duration,
    /// Read to handler start.
    pub request_queue: Duration,
    /// The handler's own work.
    pub local: Duration,
    /// Waiting behind earlier responses of the connection.
    pub response_queue: Duration,
    /// Waiting for fsync, replicas or a long poll.
    pub remote: Duration,
    /// Writing to the socket.
    pub response_send: Duration,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::BufMut;

    fn fetch_frame(version: i16, replica_id: i32) -> Bytes {
        let mut frame = bytes::BytesMut::new();
        frame.put_i16(1);
        frame.put_i16(version);
        frame.put_i32(7);
        frame.put_i16(3);
        frame.put_slice(b"abc");
        if ApiKey::Fetch.request_header_version(version) >= 2 {
            frame.put_u8(0);
        }
        frame.put_i32(replica_id);
        frame.freeze()
    }

    #[test]
    fn fetches_are_told_apart_by_replica_id_in_old_and_flexible_versions() {
        for version in [4, 11, 12] {
            assert!(is_follower_fetch(&fetch_frame(version, 2), version));
            assert!(!is_follower_fetch(&fetch_frame(version, -1), version));
        }
        assert!(!is_follower_fetch(b"short", 12));
    }

    #[test]
    fn a_timed_request_is_counted_with_its_api_and_version() {
        let registry = Registry::new();
        let metrics = RequestMetrics::new(&registry, None, true).unwrap();
        let timer = metrics.start(&fetch_frame(12, 3)).unwrap().local_done();
        timer.sent();
        let text = String::from_utf8(super::super::encode_registry(&registry)).unwrap();
        assert!(
            text.contains(
                "kafka_network_requestmetrics_requests_total{request=\"FetchFollower\",version=\"12\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "kafka_network_requestmetrics_totaltimems_count{request=\"FetchFollower\"} 1"
            ),
            "{text}"
        );
    }

    /// A writer for the test subscriber that keeps what is logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn produce_frame() -> Bytes {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{ProduceRequest, RequestHeader, TopicName};
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut frame = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(9)
            .with_client_id(Some(StrBytes::from_static_str("loader")))
            .encode(&mut frame, ApiKey::Produce.request_header_version(9))
            .unwrap();
        ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("clicks")))
                .with_partition_data(
                    vec![PartitionProduceData::default().with_index(2)],
                )])
            .encode(&mut frame, 9)
            .unwrap();
        frame.freeze()
    }

    /// Times one produce that waits `remote` for its response, logging into the returned text.
    fn time_produce(slow_request_ms: Option<u64>, remote: Duration) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let metrics = RequestMetrics::new(&Registry::new(), slow_request_ms, true).unwrap();
            let mut timer = metrics.start(&produce_frame()).unwrap().local_done();
            timer.dequeued();
            std::thread::sleep(remote);
            timer.completed();
            timer.sent();
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn a_request_slower_than_the_threshold_is_logged_with_client_partitions_and_stages() {
        let text = time_produce(Some(5), Duration::from_millis(20));
        assert!(text.contains("slow request"), "{text}");
        for field in [
            "api=\"Produce\"",
            "client_id=\"loader\"",
            "partitions=clicks-2",
            "remote_ms=",
            "local_ms=",
        ] {
            assert!(text.contains(field), "{field} missing: {text}");
        }
    }

    #[test]
    fn fast_requests_and_brokers_without_the_setting_log_nothing() {
        assert_eq!(time_produce(Some(10_000), Duration::from_millis(1)), "");
        assert_eq!(time_produce(None, Duration::from_millis(20)), "");
    }
}
