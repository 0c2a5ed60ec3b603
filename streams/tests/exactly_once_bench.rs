//! What exactly-once costs a stream job: the page-count job (a `group_by` through the
//! repartition topic, tumbling windows, changelogged state) over the same input, at-least-once
//! and exactly-once in interleaved runs (A B B A ...) against one broker, each run a fresh
//! application that reads the input from the beginning until end of input is drained. Prints
//! each run and the medians.
//!
//! A benchmark, not a test: run it by hand, in release mode for figures worth quoting:
//!
//! ```text
//! cargo test --release -p millrace-streams --test exactly_once_bench -- --ignored --nocapture
//! ```
//!
//! `MILLRACE_BENCH_EVENTS` (default 200000), `MILLRACE_BENCH_RUNS` (per mode, default 3) and
//! `MILLRACE_BENCH_COMMIT_MS` (default 100, Kafka Streams' commit interval under exactly-once)
//! change the size.
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;
#[path = "common/page_views.rs"]
mod page_views;

use std::time::{Duration, Instant};

use kafka::produce_json;
use millrace_client::ClientConfig;
use millrace_streams::runtime::{ProcessingGuarantee, StreamsConfig};
use millrace_testkit::{create_topic, start_broker_in, FAST_GROUPS};
use page_views::{end_markers, page_count_job, views};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One run: a fresh application over the whole input; returns events per second.
async fn run(
    client: &ClientConfig,
    app: &str,
    guarantee: ProcessingGuarantee,
    commit: Duration,
    events: u64,
) -> f64 {
    let config = StreamsConfig::new(app, client.clone())
        .processing_guarantee(guarantee)
        .commit_interval(commit)
        .event_time(Duration::from_secs(3), Some(Duration::from_secs(30)));
    let job = page_count_job(config);
    let end = job.end_of_input();
    let metrics = job.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let handle = tokio::spawn(job.run(async {
        let _ = stopped.await;
    }));
    end.signal();
    end.drained().await;
    let elapsed = started.elapsed();
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let snapshot = metrics.snapshot();
    assert!(snapshot.commits > 0, "{app} never committed");
    events as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; run by hand in release mode"]
async fn exactly_once_against_at_least_once_events_per_second() {
    let events = env_or("MILLRACE_BENCH_EVENTS", 200_000);
    let runs = env_or("MILLRACE_BENCH_RUNS", 3);
    let commit = Duration::from_millis(env_or("MILLRACE_BENCH_COMMIT_MS", 100));
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "views", 3).await;
    let input = views(events as usize, events as i64 * 10);
    for chunk in input.chunks(50_000) {
        produce_json(&client, "views", chunk).await;
    }
    produce_json(&client, "views", &end_markers()).await;

    let (mut at_least_once, mut exactly_once) = (Vec::new(), Vec::new());
    for round in 0..runs {
        // A B, then B A: neither mode always runs on the warmer broker.
        let order = if round % 2 == 0 {
            [
                ProcessingGuarantee::AtLeastOnce,
                ProcessingGuarantee::ExactlyOnceV2,
            ]
        } else {
            [
                ProcessingGuarantee::ExactlyOnceV2,
                ProcessingGuarantee::AtLeastOnce,
            ]
        };
        for guarantee in order {
            let app = format!("bench-{guarantee:?}-{round}").to_lowercase();
            let rate = run(&client, &app, guarantee, commit, events).await;
            eprintln!("run {round} {guarantee:?}: {rate:.0} events/s");
            match guarantee {
                ProcessingGuarantee::AtLeastOnce => at_least_once.push(rate),
                ProcessingGuarantee::ExactlyOnceV2 => exactly_once.push(rate),
            }
        }
    }
    let (alo, eos) = (median(at_least_once), median(exactly_once));
    eprintln!(
        "{events} events, commit interval {commit:?}, medians of {runs}: at_least_once \
         {alo:.0} events/s, exactly_once_v2 {eos:.0} events/s ({:+.1}%)",
        (eos / alo - 1.0) * 100.0
    );
    broker.shutdown().await;
}
