//! The page-view workload of the fault tests (a job killed, a leader failing over): views of
//! six pages with some late ones, far-future end markers that close every window, the batch
//! answer to compare with, and reading a topic back whole.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::{Admin, ClientConfig, IsolationLevel, OffsetSpec, TopicPartition};
use millrace_streams::runtime::{Job, Sink, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Window length of the page counts.
pub const WINDOW_MS: i64 = 10_000;
/// Event time of the first view.
pub const BASE: i64 = 1_800_000_000_000;

/// One page view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct View {
    pub page: String,
    pub ts: i64,
}

/// A window's count, as the jobs emit it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PageCount {
    pub page: String,
    pub window_start: i64,
    pub views: u64,
}

/// The job under test: views from `views` counted per page in tumbling windows (1 s grace),
/// each window emitted once when it closes, to `counts`.
pub fn page_count_job(config: StreamsConfig) -> Job<String, View, String, PageCount> {
    Job::group_by(
        config,
        Source::json(&["views"], |v: &View| v.ts),
        |_user, view| view.page.clone(),
        |views| {
            views
                .window(
                    Windows::tumbling(Duration::from_millis(WINDOW_MS as u64))
                        .grace(Duration::from_secs(1)),
                )
                .emit(EmitMode::Final)
                .named("page-counts")
                .count()
                .map(|w, views| {
                    let count = PageCount {
                        page: w.key.clone(),
                        window_start: w.window_start,
                        views,
                    };
                    (w.key, count)
                })
        },
        Sink::json_values("counts"),
    )
}

/// `n` views of 6 pages by 50 users over `span_ms` of event time, every 9th up to 2 s late.
pub fn views(n: usize, span_ms: i64) -> Vec<(String, Option<View>)> {
    (0..n)
        .map(|i| {
            let mut ts = BASE + (i as i64) * span_ms / n as i64;
            if i % 9 == 4 {
                ts -= 2_000;
            }
            let view = View {
                page: format!("/p/{}", (i * 5) % 6),
                ts,
            };
            (format!("user-{}", i % 50), Some(view))
        })
        .collect()
}

/// Far-future views on every partition (30 pages, so every task gets one): they close all
/// earlier windows, and never close themselves.
pub fn end_markers() -> Vec<(String, Option<View>)> {
    (0..30)
        .map(|i| {
            let view = View {
                page: format!("end-{i}"),
                ts: BASE + 3_600_000,
            };
            (format!("end-user-{i}"), Some(view))
        })
        .collect()
}

/// The batch answer: views per (page, window start).
pub fn batch(input: &[(String, Option<View>)]) -> BTreeMap<(String, i64), u64> {
    let mut counts = BTreeMap::new();
    for view in input.iter().filter_map(|(_, v)| v.as_ref()) {
        let start = view.ts - view.ts.rem_euclid(WINDOW_MS);
        *counts.entry((view.page.clone(), start)).or_insert(0) += 1;
    }
    counts
}

/// Every value of `topic` that parses as `T`, from the beginning to the end offsets of now.
pub async fn read_json<T: DeserializeOwned>(client: &ClientConfig, topic: &str) -> Vec<T> {
    read_json_with(client, topic, IsolationLevel::ReadUncommitted).await
}

/// [`read_json`] at an isolation level: read_committed reads up to the last stable offset and
/// skips aborted transactions.
pub async fn read_json_with<T: DeserializeOwned>(
    client: &ClientConfig,
    topic: &str,
    isolation: IsolationLevel,
) -> Vec<T> {
    let config = ConsumerConfig::builder(client.clone())
        .isolation_level(isolation)
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(config).await.unwrap();
    let partitions: Vec<TopicPartition> = consumer
        .partitions_for(topic)
        .await
        .unwrap()
        .into_iter()
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let ends = consumer
        .offsets_for(&partitions, OffsetSpec::Latest)
        .await
        .unwrap();
    consumer.assign(&partitions).unwrap();
    consumer.seek_to_beginning(&partitions).unwrap();
    let mut out = Vec::new();
    while partitions
        .iter()
        .any(|tp| consumer.position(tp).is_none_or(|p| p < ends[tp].offset))
    {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            if let Some(value) = record.value.as_deref() {
                if let Ok(parsed) = serde_json::from_slice(value) {
                    out.push(parsed);
                }
            }
        }
    }
    consumer.close().await.unwrap();
    out
}

/// Sum of application `app`'s committed offsets on its repartition topic.
pub async fn committed(admin: &Admin, app: &str) -> i64 {
    admin
        .list_group_offsets(app)
        .await
        .map(|offsets| {
            offsets
                .iter()
                .filter(|(tp, _)| tp.topic == format!("{app}-repartition"))
                .map(|(_, o)| *o)
                .sum()
        })
        .unwrap_or(0)
}

/// Checks emitted counts against the batch answer: a window emitted twice carries the same
/// count, and every window has its exact count.
pub fn assert_exact(outputs: &[PageCount], expected: &BTreeMap<(String, i64), u64>) {
    let mut seen: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for output in outputs {
        let key = (output.page.clone(), output.window_start);
        if let Some(previous) = seen.insert(key.clone(), output.views) {
            assert_eq!(previous, output.views, "{key:?} emitted with two counts");
        }
    }
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(window, count)| seen.get(*window) != Some(count))
        .map(|(window, count)| (window, *count, seen.get(window).copied()))
        .collect();
    assert!(wrong.is_empty(), "(window, expected, got): {wrong:?}");
    assert_eq!(seen.len(), expected.len(), "windows nobody asked for");
}
