//! A windowed stream-stream join run by the Kafka runtime over TCP: impressions and clicks
//! (two co-partitioned topics) joined per ad within 10 s, stopped half-way and restarted, so
//! pairs whose first record came before the restart are found from the restored buffers.
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;

use std::time::{Duration, Instant};

use kafka::{channel_sink, produce_json, recv_n, spawn_job};
use millrace_client::ClientConfig;
use millrace_streams::runtime::{Job, JobMetrics, Sink, Source, StreamsConfig};
use millrace_streams::windows::join::{JoinWindows, Side};
use millrace_streams::Record;
use millrace_testkit::{create_topic, start_broker_in, FAST_GROUPS};
use serde::{Deserialize, Serialize};

const BASE: i64 = 1_800_000_000_000;
const WINDOW_MS: i64 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Impression {
    id: u32,
    ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Click {
    id: u32,
    ts: i64,
}

type Input = (
    Vec<(String, Option<Impression>)>,
    Vec<(String, Option<Click>)>,
);

/// 200 impressions of 5 ads, 0.5 s apart; every third is clicked 2 s later, and every
/// seventh ad gets a stray click 30 s after its impression (matching earlier or later
/// impressions of the same ad only if within 10 s).
fn input() -> Input {
    let mut impressions = Vec::new();
    let mut clicks = Vec::new();
    for n in 0..200u32 {
        let ad = format!("ad-{}", n % 5);
        let ts = BASE + i64::from(n) * 500;
        impressions.push((ad.clone(), Some(Impression { id: n, ts })));
        if n % 3 == 0 {
            clicks.push((
                ad.clone(),
                Some(Click {
                    id: n,
                    ts: ts + 2_000,
                }),
            ));
        }
        if n % 7 == 0 {
            clicks.push((
                ad,
                Some(Click {
                    id: 1_000 + n,
                    ts: ts + 30_000,
                }),
            ));
        }
    }
    clicks.sort_by_key(|(_, c)| c.as_ref().map(|c| c.ts));
    (impressions, clicks)
}

fn batch((impressions, clicks): &Input) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for (ad, i) in impressions {
        let i = i.as_ref().unwrap();
        for (ad2, c) in clicks {
            let c = c.as_ref().unwrap();
            if ad == ad2 && (i.ts - c.ts).abs() <= WINDOW_MS {
                out.push((ad.clone(), i.id, c.id));
            }
        }
    }
    out.sort();
    out
}

fn job(
    client: &ClientConfig,
    sink: Sink<String, (u32, u32)>,
) -> Job<String, Side<Impression, Click>, String, (u32, u32)> {
    Job::new(
        StreamsConfig::new("ad-joins", client.clone())
            .commit_interval(Duration::from_millis(300))
            .event_time(Duration::from_secs(5), Some(Duration::from_secs(600)))
            .session_timeout(Duration::from_secs(6)),
        Source::sides(
            Source::json(&["impressions"], |i: &Impression| i.ts),
            Source::json(&["clicks"], |c: &Click| c.ts),
        ),
        |ads| {
            ads.window_join(
                JoinWindows::of(Duration::from_millis(WINDOW_MS as u64))
                    .grace(Duration::from_secs(1)),
            )
            .named("impression-clicks")
            .inner(|_ad, impression: &Impression, click: &Click| (impression.id, click.id))
        },
        sink,
    )
}

async fn wait_for_records_in(metrics: &JobMetrics, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.snapshot().records_in < n {
        assert!(
            Instant::now() < deadline,
            "read only {:?}",
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rows(records: Vec<Record<String, (u32, u32)>>) -> Vec<(String, u32, u32)> {
    records
        .into_iter()
        .map(|r| (r.key, r.value.0, r.value.1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_join_survives_a_restart_with_its_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "impressions", 3).await;
    create_topic(&client, "clicks", 3).await;
    let all = input();
    let expected = batch(&all);
    let (impressions, clicks) = &all;
    // Split by event time: pairs straddle the restart.
    let cut = BASE + 50_000;
    let (imp_a, imp_b): (Vec<_>, Vec<_>) = impressions
        .iter()
        .cloned()
        .partition(|(_, i)| i.as_ref().unwrap().ts < cut);
    let (click_a, click_b): (Vec<_>, Vec<_>) = clicks
        .iter()
        .cloned()
        .partition(|(_, c)| c.as_ref().unwrap().ts < cut);

    produce_json(&client, "impressions", &imp_a).await;
    produce_json(&client, "clicks", &click_a).await;
    let (sink, mut first_rx) = channel_sink();
    let first = job(&client, sink);
    let metrics = first.metrics();
    let (stop, handle) = spawn_job(|stopped| {
        first.run(async move {
            let _ = stopped.await;
        })
    });
    wait_for_records_in(&metrics, (imp_a.len() + click_a.len()) as u64).await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let mut got = rows(kafka::drain_now(&mut first_rx));
    let before_restart = got.len();

    produce_json(&client, "impressions", &imp_b).await;
    produce_json(&client, "clicks", &click_b).await;
    let (sink, mut second_rx) = channel_sink();
    let second = job(&client, sink);
    let (stop, handle) = spawn_job(|stopped| {
        second.run(async move {
            let _ = stopped.await;
        })
    });
    got.extend(rows(
        recv_n(&mut second_rx, expected.len() - before_restart).await,
    ));
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    // Nothing beyond the expected pairs either.
    got.extend(rows(kafka::drain_now(&mut second_rx)));
    got.sort();
    assert_eq!(got, expected);
    // Some pairs needed a record buffered before the restart.
    let straddling = expected
        .iter()
        .filter(|(_, i, c)| {
            let its = BASE + i64::from(*i) * 500;
            let cts = clicks
                .iter()
                .filter_map(|(_, c)| c.as_ref())
                .find(|x| x.id == *c)
                .unwrap()
                .ts;
            (its < cut) != (cts < cut)
        })
        .count();
    assert!(straddling > 0);
    broker.shutdown().await;
}
