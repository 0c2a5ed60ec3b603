//! A job's output topic as a SQL table of its results (`<topic>_results`): a job counts views
//! per page and minute, an end of input closes its windows, and the dashboard's SQL sees the
//! emitted windows, with their window columns, while the job's live state table is empty.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use millrace_client::{ClientConfig, ProducerConfig, ProducerRecord};
use millrace_dashboard::{Dashboard, DashboardConfig};
use millrace_streams::runtime::{Job, Sink, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
use millrace_testkit::http::{get, post_json};
use millrace_testkit::{create_topic, produce_all, TestBroker, FAST_GROUPS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
/// A minute boundary (2027-01-15 08:00 UTC).
const BASE: i64 = 1_800_000_000_000;

#[derive(Debug, Serialize, Deserialize)]
struct View {
    page: String,
    ts: i64,
}

/// Polls `check` until it returns `Some` (the results reader follows the topic in the
/// background), failing after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sql(addr: &str, query: &str) -> (u16, Value) {
    let response = post_json(addr, "/api/sql", &[], &json!({ "sql": query })).await;
    (response.status, response.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jobs_output_topic_is_a_sql_table_of_its_closed_windows() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.bootstrap());
    create_topic(&client, "views", 2).await;
    create_topic(&client, "page-counts", 2).await;
    // Minute 0: /a twice, /b once; minute 1: /a once.
    let views = [("/a", 1_000), ("/b", 2_000), ("/a", 30_000), ("/a", 61_000)];
    let records = views
        .iter()
        .map(|(page, at)| {
            let view = View {
                page: page.to_string(),
                ts: BASE + at,
            };
            ProducerRecord::new("views", serde_json::to_vec(&view).unwrap()).key(*page)
        })
        .collect();
    produce_all(ProducerConfig::new(client.clone()), records).await;

    let job = Job::new(
        StreamsConfig::new("page-counter", client.clone())
            .commit_interval(Duration::from_millis(300)),
        Source::json(["views"], |v: &View| v.ts),
        |views| {
            views
                .key_by(|_, view| view.page.clone())
                .window(Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(1)))
                .emit(EmitMode::Final)
                .named("page-counts")
                .count()
                .map(|w, views| {
                    let value = json!({"page": w.key, "window_start": w.window_start,
                        "window_end": w.window_end, "views": views});
                    (w.key.clone(), value)
                })
        },
        Sink::json_values("page-counts"),
    );
    let end = job.end_of_input();
    let (state, metrics) = (job.state(), job.metrics());
    let (job_stop, job_stopped) = tokio::sync::oneshot::channel::<()>();
    let job_task = tokio::spawn(job.run(async move {
        let _ = job_stopped.await;
    }));
    // Nothing comes after the last minute: the end of input closes it.
    end.signal();
    tokio::time::timeout(WAIT, end.drained()).await.unwrap();

    let bound = Dashboard::new(DashboardConfig {
        bootstrap: broker.bootstrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        ..DashboardConfig::default()
    })
    .with_job("page-counter", state, metrics)
    .with_results("page-counter", "page-counts")
    .bind()
    .await
    .unwrap();
    let addr = bound.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));

    let tables = get(&addr, "/api/tables", &[]).await.json();
    let results = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "page_counts_results")
        .cloned()
        .unwrap_or_else(|| panic!("no results table in {tables}"));
    assert_eq!(results["kind"], "results");
    assert_eq!(results["source"], "page-counts");
    assert_eq!(results["job"], "page-counter");

    let query = "SELECT page, window_start, window_end, views FROM page_counts_results \
                 ORDER BY window_start, page";
    let rows = eventually("the three closed windows in page_counts_results", || {
        let addr = addr.clone();
        async move {
            let (status, body) = sql(&addr, query).await;
            (status == 200 && body["rows"].as_array()?.len() == 3).then(|| body["rows"].clone())
        }
    })
    .await;
    let minute = |m: i64| BASE + m * 60_000;
    assert_eq!(
        rows,
        json!([
            ["/a", minute(0), minute(1), 2],
            ["/b", minute(0), minute(1), 1],
            ["/a", minute(1), minute(2), 1],
        ])
    );
    // "Views per page" over the emitted windows, where the live state holds none.
    let (status, body) = sql(
        &addr,
        "SELECT page, SUM(views) AS views FROM page_counts_results GROUP BY page ORDER BY page",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([["/a", 3], ["/b", 1]]));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = job_stop.send(());
    job_task.await.unwrap().unwrap();
    broker.shutdown().await;
}
