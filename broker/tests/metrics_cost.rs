//! A benchmark, not a check: what the metrics cost in produce throughput. Two brokers in one
//! process, one with `metrics.listener` set (and scraped every second, as a Prometheus with a
//! 1 s interval would) and one without (no endpoint, and then no request timing or per-topic
//! counting either); runs alternate between them so drift in the machine's speed hits both
//! alike, and the medians are compared. Ignored by default; run it in release:
//!
//! ```sh
//! scripts/bench-metrics            # = cargo test --release -p millrace-broker --test metrics_cost -- --ignored --nocapture
//! ```
//!
//! `MILLRACE_BENCH_RECORDS` (default 300000) and `MILLRACE_BENCH_RUNS` (default 5) size it.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use millrace_client::{ClientConfig, Producer, ProducerConfig, ProducerRecord};
use millrace_testkit::{http, TestBroker};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Produces `records` 100-byte records (acks=all, the producer's defaults) and returns
/// records per second.
async fn produce_run(bootstrap: &str, topic: &str, records: usize) -> f64 {
    let producer = Producer::connect(ProducerConfig::new(ClientConfig::new(bootstrap)))
        .await
        .unwrap();
    let value = bytes::Bytes::from(vec![b'x'; 100]);
    let started = Instant::now();
    let mut acks = Vec::with_capacity(records);
    for _ in 0..records {
        let record = ProducerRecord {
            topic: topic.to_string(),
            value: Some(value.clone()),
            ..ProducerRecord::default()
        };
        acks.push(producer.send(record).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let took = started.elapsed();
    producer.close().await;
    records as f64 / took.as_secs_f64()
}

/// What timing and counting one produce request costs on the request path: the stage clock
/// (start, five timestamps, six histogram observations) and the per-topic counters of one
/// partition, averaged over many requests.
fn instrumentation_cost_per_request() -> Duration {
    use millrace_broker::metrics::{BrokerTopicMetrics, RequestMetrics};
    let registry = prometheus_registry();
    let requests = RequestMetrics::new(&registry, None, true).unwrap();
    let topics = BrokerTopicMetrics::new(&registry, true).unwrap();
    // A Produce v9 header: api key 0, version 9, correlation id, client id "bench".
    let mut frame = vec![0, 0, 0, 9, 0, 0, 0, 1, 0, 5];
    frame.extend_from_slice(b"bench");
    let frame = bytes::Bytes::from(frame);
    let iterations = 1_000_000u32;
    let started = Instant::now();
    for _ in 0..iterations {
        let mut timer = requests.start(&frame).unwrap();
        if let Some(counters) = topics.topic("bench") {
            counters.produced(Some((5_000, 500_000)));
        }
        timer = timer.local_done();
        timer.dequeued();
        timer.completed();
        timer.sent();
    }
    started.elapsed() / iterations
}

fn prometheus_registry() -> millrace_broker::metrics::Registry {
    millrace_broker::metrics::Registry::new()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run with --release --ignored --nocapture (scripts/bench-metrics)"]
async fn metrics_cost_in_produce_throughput() {
    let records = env_or("MILLRACE_BENCH_RECORDS", 300_000);
    let runs = env_or("MILLRACE_BENCH_RUNS", 5);
    let off = TestBroker::start(&[]).await;
    let on = TestBroker::start(&["metrics.listener=http://127.0.0.1:0"]).await;
    let endpoint = on.broker.metrics_addr().unwrap().to_string();
    let scraper = tokio::spawn(async move {
        let mut scrapes = 0u64;
        loop {
            let response = http::get(&endpoint, "/metrics", &[]).await;
            assert_eq!(response.status, 200);
            scrapes += 1;
            if scrapes == u64::MAX {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // A first, unmeasured run each: topic creation and warm caches are not the metrics' cost.
    produce_run(&off.bootstrap(), "bench", records / 10).await;
    produce_run(&on.bootstrap(), "bench", records / 10).await;
    let (mut off_rates, mut on_rates) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        off_rates.push(produce_run(&off.bootstrap(), "bench", records).await);
        on_rates.push(produce_run(&on.bootstrap(), "bench", records).await);
        eprintln!(
            "run {run}: endpoint off {:.0} records/s, on {:.0} records/s",
            off_rates[run - 1],
            on_rates[run - 1]
        );
    }
    scraper.abort();
    // The same cost measured without the noise of a shared machine: the instrumentation's
    // time per request, times the requests the measured load made.
    let text = http::get(
        &on.broker.metrics_addr().unwrap().to_string(),
        "/metrics",
        &[],
    )
    .await
    .text();
    let produce_requests: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("kafka_network_requestmetrics_requests_total{request=\"Produce\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let produced = (records * runs + records / 10) as f64;
    let per_request = instrumentation_cost_per_request();
    let records_per_request = produced / produce_requests;
    let (off_median, on_median) = (median(off_rates), median(on_rates));
    println!("records per run: {records}, runs per side: {runs}, acks=all, 100-byte records");
    println!("metrics endpoint off: {off_median:.0} records/s (median)");
    println!("metrics endpoint on:  {on_median:.0} records/s (median)");
    println!(
        "cost of the metrics: {:.1}% of produce throughput",
        (1.0 - on_median / off_median) * 100.0
    );
    println!(
        "instrumentation: {:.0} ns per request; the load made {produce_requests:.0} produce \
         requests ({records_per_request:.0} records each): {:.2} ns per record, {:.3}% of one core \
         at the median rate with the endpoint on",
        per_request.as_nanos(),
        per_request.as_nanos() as f64 / records_per_request,
        per_request.as_secs_f64() / records_per_request * on_median * 100.0
    );
    on.shutdown().await;
    off.shutdown().await;
}
