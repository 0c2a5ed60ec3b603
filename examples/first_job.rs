//! A first stream job, complete: page views per page and minute, from its own input topic to
//! its own output topic, with an end of input that closes the last windows and the result
//! printed.
//!
//! ```text
//! cargo run --example first_job                  # with a broker of its own, in a temp dir
//! cargo run --example first_job -- HOST:PORT     # against your cluster
//! ```
//!
//! The steps, in order: start a broker (unless given one), create the topics, produce a few
//! page views keyed by user, run the job (grouped by page, one-minute tumbling windows, each
//! window's count emitted once when it closes), signal the end of input, wait until every
//! window is closed and emitted, read the output topic and print it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use millrace_client::admin::NewTopic;
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::{
    Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use millrace_streams::runtime::{Job, Sink, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
use serde::{Deserialize, Serialize};

/// The input: one page view.
#[derive(Debug, Serialize, Deserialize)]
struct PageView {
    page: String,
    /// Event time, milliseconds since the epoch.
    ts: i64,
}

/// The output: views of one page in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PageViews {
    /// The page.
    pub page: String,
    /// The window's start, milliseconds since the epoch.
    pub window_start: i64,
    /// The window's end (exclusive).
    pub window_end: i64,
    /// Views in the window.
    pub views: u64,
}

const INPUT: &str = "first-job-page-views";
const OUTPUT: &str = "first-job-page-views-per-minute";
/// 2027-01-15 09:00 UTC: the example's event time (any fixed time would do).
const START_MS: i64 = 1_800_003_600_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap = std::env::args().nth(1);
    let results = run(bootstrap).await?;
    println!("{:<10} {:>6} {:>6} {:>5}", "page", "from", "to", "views");
    for r in &results {
        println!(
            "{:<10} {:>6} {:>6} {:>5}",
            r.page,
            clock(r.window_start),
            clock(r.window_end),
            r.views
        );
    }
    Ok(())
}

/// Runs the whole example (against `bootstrap`, or a broker of its own when `None`) and
/// returns the job's output, sorted by window and page.
pub async fn run(bootstrap: Option<String>) -> anyhow::Result<Vec<PageViews>> {
    let (broker, _data_dir, bootstrap) = match bootstrap {
        Some(bootstrap) => (None, None, bootstrap),
        None => {
            let dir = tempfile::tempdir().context("a temporary data directory")?;
            // Every member of the job's group starts at once: no need to wait for more.
            let settings = BTreeMap::from([(
                "group.initial.rebalance.delay.ms".to_string(),
                "0".to_string(),
            )]);
            let config = millrace_broker::BrokerConfig::from_settings(
                &settings,
                Some("127.0.0.1:0".parse()?),
                Some(dir.path().to_path_buf()),
            )?;
            let broker = millrace_broker::start(config).await?;
            let bootstrap = broker.local_addr().to_string();
            println!("started a broker on {bootstrap}");
            (Some(broker), Some(dir), bootstrap)
        }
    };
    let client = ClientConfig::new(bootstrap);

    let admin = Admin::connect(client.clone()).await?;
    for topic in [INPUT, OUTPUT] {
        admin
            .create_topic(NewTopic::new(topic, 3))
            .await
            .with_context(|| format!("creating {topic}"))?;
    }

    // Input: seven views of two pages over two minutes, keyed by user (so the job has to
    // regroup them by page).
    let producer = Producer::connect(ProducerConfig::new(client.clone())).await?;
    let views = [
        ("ana", "/home", 5),
        ("bo", "/home", 20),
        ("ana", "/pricing", 40),
        ("cy", "/home", 61),
        ("bo", "/pricing", 75),
        ("cy", "/pricing", 90),
        ("ana", "/pricing", 119),
    ];
    for (user, page, second) in views {
        let view = PageView {
            page: page.to_string(),
            ts: START_MS + second * 1_000,
        };
        producer
            .send(ProducerRecord::new(INPUT, serde_json::to_vec(&view)?).key(user))
            .await?
            .await?;
    }
    producer.close().await;
    println!("produced {} page views to {INPUT}", views.len());

    // The job: group by page, count per minute, emit each window once when it closes.
    let config = StreamsConfig::new("first-job", client.clone());
    let job = Job::group_by(
        config,
        Source::json([INPUT], |v: &PageView| v.ts),
        |_user, view| view.page.clone(),
        |views| {
            views
                .window(Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(5)))
                .emit(EmitMode::Final)
                .count()
                .map(|w, views| {
                    let result = serde_json::json!({
                        "page": w.key, "window_start": w.window_start,
                        "window_end": w.window_end, "views": views,
                    });
                    (w.key.clone(), result)
                })
        },
        Sink::json_values(OUTPUT),
    );
    // No record comes after the last minute, so event time alone would never close it: the
    // end of input does (taken before `run`, which consumes the job).
    let end = job.end_of_input();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut running = tokio::spawn(job.run(async move {
        let _ = stopped.await;
    }));
    end.signal();
    tokio::select! {
        () = end.drained() => {}
        stopped = &mut running => {
            stopped??;
            anyhow::bail!("the job stopped before its input was drained");
        }
    }
    println!("input ended: every window is closed and emitted to {OUTPUT}");

    // Read the output topic from the beginning to its end.
    let mut consumer = Consumer::connect(
        ConsumerConfig::builder(client)
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .build()?,
    )
    .await?;
    let partitions: Vec<TopicPartition> = consumer
        .partitions_for(OUTPUT)
        .await?
        .into_iter()
        .map(|p| TopicPartition::new(OUTPUT, p))
        .collect();
    consumer.assign(&partitions)?;
    let ends = consumer
        .offsets_for(&partitions, millrace_client::OffsetSpec::Latest)
        .await?;
    let mut results = Vec::new();
    while partitions
        .iter()
        .any(|p| consumer.position(p).unwrap_or(0) < ends.get(p).map_or(0, |end| end.offset))
    {
        for record in consumer.poll(Duration::from_secs(1)).await? {
            let value = record.value.context("an output record without a value")?;
            results.push(serde_json::from_slice::<PageViews>(&value)?);
        }
    }
    consumer.close().await?;
    results.sort_by(|a, b| (a.window_start, &a.page).cmp(&(b.window_start, &b.page)));

    let _ = stop.send(());
    running.await??;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    Ok(results)
}

/// `hh:mm` (UTC) of a timestamp in milliseconds.
fn clock(ms: i64) -> String {
    let minutes = ms.div_euclid(60_000);
    format!("{:02}:{:02}", minutes.div_euclid(60) % 24, minutes % 60)
}
