//! The dashboard's HTTP API against a real broker on a free port, with real topics, a real
//! consumer group and a running stream job: every endpoint, the token, the admin switch,
//! and the 4xx answers to bad input. Each endpoint test starts the same world, a
//! [`Cluster`], and stops it cleanly at its end.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::{Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use millrace_connectors::SinkMetrics;
use millrace_dashboard::{Dashboard, DashboardConfig};
use millrace_streams::runtime::{Job, Sink, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
use millrace_testkit::http::{get, post_json, request, sse_events, Response};
use millrace_testkit::{create_topic, free_port, produce_all, TestBroker, FAST_GROUPS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const TOKEN: &str = "s3cret-token";
const RECORDS: i64 = 200;
const PARTITIONS: i32 = 3;
/// What the test waits for a condition at most.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct View {
    page: String,
    ts: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Polls `check` until it returns `Some`, or fails the test after [`WAIT`]. The dashboard
/// samples the cluster once a second, so what a test just did shows up within a sample or
/// two; this waits for the condition itself, not for a guessed time.
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

/// Produces [`RECORDS`] views of five pages by ten users, now, round-robin over the
/// partitions, with a `source` header alternating `web` and `app`.
async fn produce_views(client: &ClientConfig, topic: &str) {
    let now = now_ms();
    let records = (0..RECORDS).map(|i| {
        let view = View {
            page: format!("/page/{}", i % 5),
            ts: now,
        };
        let source = if i % 2 == 0 { "web" } else { "app" };
        ProducerRecord::new(topic, serde_json::to_vec(&view).unwrap())
            .key(format!("user-{}", i % 10))
            .header("source", source)
            .partition((i % PARTITIONS as i64) as i32)
    });
    let records = records.collect();
    produce_all(ProducerConfig::new(client.clone()), records).await;
}

/// A Parquet directory with a Hive `dt=` partition, written by DataFusion itself.
async fn write_parquet(dir: &std::path::Path) {
    let part = dir.join("dt=2026-11-25");
    std::fs::create_dir_all(&part).unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    let frame = ctx
        .sql("SELECT * FROM (VALUES ('/home', 3), ('/cart', 5)) AS t(page, views)")
        .await
        .unwrap();
    frame
        .write_parquet(
            part.join("part-0.parquet").to_str().unwrap(),
            datafusion::dataframe::DataFrameWriteOptions::new().with_single_file_output(true),
            None,
        )
        .await
        .unwrap();
}

/// A running dashboard and how to stop it.
struct Running {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), millrace_dashboard::DashboardError>>,
}

impl Running {
    async fn start(dashboard: Dashboard) -> Running {
        let bound = dashboard.bind().await.unwrap();
        let addr = bound.local_addr().to_string();
        assert_eq!(bound.url(), format!("http://{addr}/"));
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            served,
        }
    }

    /// Stops the server and checks that it shut down cleanly and promptly.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.served)
            .await
            .expect("the dashboard did not shut down")
            .unwrap()
            .unwrap();
    }
}

fn auth() -> [(&'static str, &'static str); 1] {
    [("Authorization", "Bearer s3cret-token")]
}

async fn api(addr: &str, path: &str) -> Response {
    get(addr, path, &auth()).await
}

fn assert_error(response: &Response, status: u16) -> String {
    assert_eq!(
        response.status,
        status,
        "expected {status}, got {}: {}",
        response.status,
        response.text()
    );
    let body = response.json();
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"));
    assert!(!message.is_empty());
    message.to_string()
}

/// Runs a test's future on a task, that is on the heap: the fixture makes these futures too
/// large for the test thread's stack in debug builds.
async fn on_heap(test: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(test).await.unwrap();
}

/// The world every endpoint test looks at: a broker with the `views` topic ([`RECORDS`]
/// records over [`PARTITIONS`] partitions), the `readers` group that committed offset 10 on
/// every partition and stays a member, the `page-counter` stream job with its `page-counts`
/// store, a Parquet directory, and a dashboard with a token and without `--allow-admin`.
struct Cluster {
    broker: TestBroker,
    admin: Admin,
    consumer: Consumer,
    job_stop: oneshot::Sender<()>,
    job_task: tokio::task::JoinHandle<Result<(), millrace_streams::StreamsError>>,
    _parquet: tempfile::TempDir,
    /// `None` once a test has shut the dashboard down itself.
    running: Option<Running>,
    addr: String,
}

impl Cluster {
    async fn start() -> Cluster {
        let broker = TestBroker::start(&[FAST_GROUPS]).await;
        let bootstrap = broker.bootstrap();
        let client = ClientConfig::new(&bootstrap);
        let admin = Admin::connect(client.clone()).await.unwrap();
        create_topic(&client, "views", PARTITIONS).await;
        produce_views(&client, "views").await;

        // A consumer group that has read part of the topic: it commits offset 10 on every
        // partition and stays a member while the test looks at it.
        let config = ConsumerConfig::builder(client.clone())
            .group_id("readers")
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .enable_auto_commit(false)
            .build()
            .unwrap();
        let mut consumer = Consumer::connect(config).await.unwrap();
        consumer.subscribe(&["views"]).unwrap();
        // Joining the group happens inside poll.
        let deadline = tokio::time::Instant::now() + WAIT;
        while consumer.assignment().len() < PARTITIONS as usize {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the consumer got no assignment"
            );
            let _ = consumer.poll(Duration::from_millis(200)).await.unwrap();
        }
        let committed: std::collections::HashMap<_, _> = (0..PARTITIONS)
            .map(|p| (millrace_client::TopicPartition::new("views", p), 10))
            .collect();
        consumer.commit_offsets(&committed).await.unwrap();

        // A stream job counting views per page in hour windows: the windows stay open, so its
        // state store keeps rows for the dashboard to show.
        let job = Job::new(
            StreamsConfig::new("page-counter", client.clone())
                .commit_interval(Duration::from_millis(300)),
            Source::json(&["views"], |v: &View| v.ts),
            |views| {
                views
                    .key_by(|_user, view| view.page.clone())
                    .window(
                        Windows::tumbling(Duration::from_secs(3600)).grace(Duration::from_secs(1)),
                    )
                    .emit(EmitMode::Final)
                    .named("page-counts")
                    .count()
            },
            Sink::callback(|_| {}),
        );
        let state = job.state();
        let metrics = job.metrics();
        let (job_stop, job_stopped) = oneshot::channel::<()>();
        let job_task = tokio::spawn(job.run(async move {
            let _ = job_stopped.await;
        }));

        let parquet = tempfile::tempdir().unwrap();
        let lake = parquet.path().join("page-views");
        write_parquet(&lake).await;
        let sink_metrics = Arc::new(SinkMetrics::default());

        let dashboard = Dashboard::new(DashboardConfig {
            bootstrap: bootstrap.clone(),
            http: "127.0.0.1:0".parse().unwrap(),
            token: Some(TOKEN.to_string()),
            allow_admin: false,
            parquet_dirs: vec![lake.clone(), parquet.path().join("missing")],
            ..DashboardConfig::default()
        })
        .with_job("page-counter", state, metrics)
        .with_connector("archive", sink_metrics);
        let running = Running::start(dashboard).await;
        let addr = running.addr.clone();
        Cluster {
            broker,
            admin,
            consumer,
            job_stop,
            job_task,
            _parquet: parquet,
            running: Some(running),
            addr,
        }
    }

    /// Waits until the dashboard shows `views` with every record and a size; returns the
    /// `/api/topics` body.
    async fn topics_settled(&self) -> Value {
        let addr = self.addr.clone();
        eventually("views with every record and a size", || {
            let addr = addr.clone();
            async move {
                let body = api(&addr, "/api/topics").await.json();
                let views = body["topics"]
                    .as_array()?
                    .iter()
                    .find(|t| t["name"] == "views")?
                    .clone();
                (views["messages"] == RECORDS && views["size_bytes"].as_i64()? > 0).then_some(body)
            }
        })
        .await
    }

    /// Waits until the dashboard shows the `readers` group with its lag and one member;
    /// returns the `/api/groups/readers` body.
    async fn group_settled(&self) -> Value {
        let addr = self.addr.clone();
        eventually("the readers group with its lag and a member", || {
            let addr = addr.clone();
            async move {
                let body = api(&addr, "/api/groups/readers").await;
                if body.status != 200 {
                    return None;
                }
                let body = body.json();
                (body["lag"] == RECORDS - 10 * PARTITIONS as i64
                    && body["members"].as_array()?.len() == 1)
                    .then_some(body)
            }
        })
        .await
    }

    /// Waits until the job's `page-counts` table counts every view; returns the job and the
    /// table from `/api/aggregates`.
    async fn aggregates_settled(&self) -> (Value, Value) {
        let addr = self.addr.clone();
        eventually("the job's page-counts table with every view", || {
            let addr = addr.clone();
            async move {
                let body = api(&addr, "/api/aggregates").await.json();
                let job = body["jobs"].as_array()?.first()?.clone();
                let table = job["tables"]
                    .as_array()?
                    .iter()
                    .find(|t| t["store"] == "page-counts")?
                    .clone();
                let total: i64 = table["rows"]
                    .as_array()?
                    .iter()
                    .filter_map(|r| r["value"].as_i64())
                    .sum();
                (total == RECORDS).then_some((job, table))
            }
        })
        .await
    }

    /// Stops the dashboard (unless a test did), the job, the consumer and the broker, each
    /// cleanly.
    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        let _ = self.job_stop.send(());
        self.job_task.await.unwrap().unwrap();
        self.consumer.close().await.unwrap();
        self.broker.shutdown().await;
    }
}

/// The token: refused without it or with a wrong one, on every route; the page with
/// `?token=` sets an HttpOnly cookie that then opens the assets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_is_required_as_a_header_a_query_or_the_cookie_it_sets() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        let message = assert_error(&get(&addr, "/api/cluster", &[]).await, 401);
        assert!(message.contains("token"), "{message}");
        assert_error(
            &get(&addr, "/api/cluster", &[("Authorization", "Bearer wrong")]).await,
            401,
        );
        assert_error(&get(&addr, "/api/topics?token=wrong", &[]).await, 401);
        assert_error(&get(&addr, "/", &[]).await, 401);
        assert_error(&get(&addr, "/metrics", &[]).await, 401);
        let page = get(&addr, "/?token=s3cret-token", &[]).await;
        assert_eq!(page.status, 200);
        assert!(page.text().contains("<title>Millrace</title>"));
        let cookie = page.header("set-cookie").expect("a cookie for the browser");
        assert!(
            cookie.starts_with("millrace_token=s3cret-token"),
            "{cookie}"
        );
        assert!(cookie.contains("HttpOnly"));
        let with_cookie = get(
            &addr,
            "/assets/app.js",
            &[("Cookie", "millrace_token=s3cret-token")],
        )
        .await;
        assert_eq!(with_cookie.status, 200);
        assert!(with_cookie
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript"));
        let uplot = api(&addr, "/assets/vendor/uplot/uPlot.iife.min.js").await;
        assert_eq!(uplot.status, 200);
        assert_error(&api(&addr, "/assets/nope.js").await, 404);

        world.stop().await;
    })
    .await;
}

/// `/api/cluster`: one broker on the broker's port, the admin switch, jobs and connectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_names_the_broker_the_jobs_and_the_connectors() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        let cluster = api(&addr, "/api/cluster").await;
        assert_eq!(cluster.status, 200, "{}", cluster.text());
        let cluster = cluster.json();
        assert_eq!(cluster["brokers"].as_array().unwrap().len(), 1);
        assert_eq!(cluster["brokers"][0]["port"], world.broker.addr().port());
        // One broker: alive, the controller, leading every partition, none lagging.
        let broker = &cluster["brokers"][0];
        assert_eq!(broker["fenced"], false);
        assert_eq!(broker["controller"], true);
        assert!(broker["leader_partitions"].as_u64().unwrap() >= PARTITIONS as u64);
        assert_eq!(broker["under_replicated_partitions"], 0);
        assert_eq!(cluster["under_replicated_partitions"], 0);
        assert_eq!(cluster["offline_partitions"], 0);
        let brokers = api(&addr, "/api/brokers").await.json();
        // The same brokers; each one's `endpoint` is scraped state that may have changed
        // between the two requests (it is checked in tests/broker_metrics.rs).
        let without_endpoint = |list: &Value| -> Value {
            let mut list = list.clone();
            for broker in list.as_array_mut().unwrap() {
                broker.as_object_mut().unwrap().remove("endpoint");
            }
            list
        };
        assert_eq!(
            without_endpoint(&brokers["brokers"]),
            without_endpoint(&cluster["brokers"])
        );
        assert_eq!(brokers["controller_id"], cluster["controller_id"]);
        assert_eq!(cluster["allow_admin"], false);
        assert_eq!(cluster["jobs"], json!(["page-counter"]));
        assert_eq!(cluster["connectors"], json!(["archive"]));
        world.stop().await;
    })
    .await;
}

/// `/api/topics` and `/api/topics/{name}`: partitions, end offsets, leaders, sizes, history
/// and configs; an unknown topic is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_are_listed_and_described_with_offsets_sizes_and_configs() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        let topics = world.topics_settled().await;
        let views = topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "views")
            .unwrap();
        assert_eq!(views["partitions"], PARTITIONS);
        assert_eq!(views["internal"], false);
        assert!(views["rate"].as_f64().is_some());

        let topic = api(&addr, "/api/topics/views").await.json();
        let partitions = topic["partitions"].as_array().unwrap();
        assert_eq!(partitions.len(), PARTITIONS as usize);
        let ends: i64 = partitions
            .iter()
            .map(|p| p["end_offset"].as_i64().unwrap())
            .sum();
        assert_eq!(ends, RECORDS);
        assert!(partitions
            .iter()
            .all(|p| p["leader"] == 1 && p["size_bytes"].as_i64().unwrap() > 0));
        for p in partitions {
            assert!(p["leader_epoch"].as_i64().unwrap() >= 0, "{p}");
            assert_eq!(p["replicas"], json!([1]), "{p}");
            assert_eq!(p["isr"], json!([1]), "{p}");
            assert_eq!(p["offline_replicas"], json!([]), "{p}");
            assert_eq!(p["under_replicated"], false, "{p}");
        }
        assert!(!topic["history"].as_array().unwrap().is_empty());
        assert!(topic["configs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "cleanup.policy"));
        assert_error(&api(&addr, "/api/topics/no-such-topic").await, 404);
        world.stop().await;
    })
    .await;
}

/// `/api/groups/{id}` and `/api/groups`: state, committed offsets, lag per partition and
/// its history; an unknown group is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_show_committed_offsets_lag_and_members() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        let group = world.group_settled().await;
        assert_eq!(group["state"], "Stable");
        let lag = group["partitions"].as_array().unwrap();
        assert_eq!(lag.len(), PARTITIONS as usize);
        for p in lag {
            assert_eq!(p["committed"], 10);
            assert_eq!(
                p["lag"].as_i64().unwrap(),
                p["log_end"].as_i64().unwrap() - 10
            );
        }
        let history = group["history"].as_array().unwrap();
        assert!(!history.is_empty());
        assert_eq!(history.last().unwrap()["lag"], RECORDS - 30);
        let groups = api(&addr, "/api/groups").await.json();
        let readers = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group_id"] == "readers")
            .unwrap()
            .clone();
        assert_eq!(readers["lag"], RECORDS - 30);
        assert_eq!(readers["topics"], json!(["views"]));
        assert_error(&api(&addr, "/api/groups/no-such-group").await, 404);
        world.stop().await;
    })
    .await;
}

/// `/api/topics/{name}/messages`: a page of a partition from an offset, with the next
/// offsets, and the newest records of every partition by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_message_browser_pages_through_a_partition_and_shows_the_newest() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        let page = api(
            &addr,
            "/api/topics/views/messages?partition=0&offset=0&limit=5",
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let records = page["records"].as_array().unwrap();
        assert_eq!(records.len(), 5);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r["partition"], 0);
            assert_eq!(r["offset"], i as i64);
            assert_eq!(r["value_encoding"], "utf8");
            let view: View = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            assert!(view.page.starts_with("/page/"));
        }
        assert_eq!(page["next_offsets"]["0"], 5);
        // Newest records of every partition by default.
        let newest = api(&addr, "/api/topics/views/messages?limit=7")
            .await
            .json();
        assert_eq!(newest["records"].as_array().unwrap().len(), 7);
        world.stop().await;
    })
    .await;
}

/// `/api/topics/{name}/messages` filters: key, value, header and timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_message_browser_filters_by_key_value_header_and_time() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        // Filters: key, value, header.
        let by_key = api(
            &addr,
            "/api/topics/views/messages?offset=0&limit=1000&key=user-3",
        )
        .await
        .json();
        let by_key = by_key["records"].as_array().unwrap();
        assert_eq!(by_key.len(), (RECORDS / 10) as usize);
        assert!(by_key.iter().all(|r| r["key"] == "user-3"));
        let by_value = api(
            &addr,
            "/api/topics/views/messages?offset=0&limit=1000&value=%2Fpage%2F4",
        )
        .await
        .json();
        assert_eq!(
            by_value["records"].as_array().unwrap().len(),
            (RECORDS / 5) as usize
        );
        let by_header = api(
            &addr,
            "/api/topics/views/messages?offset=0&limit=1000&header=source%3Dapp",
        )
        .await
        .json();
        let by_header = by_header["records"].as_array().unwrap();
        assert_eq!(by_header.len(), (RECORDS / 2) as usize);
        assert!(by_header
            .iter()
            .all(|r| r["headers"][0] == json!({"key": "source", "value": "app"})));
        // By time: everything was produced before now.
        let by_time = api(
            &addr,
            "/api/topics/views/messages?partition=1&timestamp=0&limit=3",
        )
        .await
        .json();
        assert_eq!(by_time["records"][0]["offset"], 0);
        let future = format!(
            "/api/topics/views/messages?timestamp={}&limit=3",
            now_ms() + 3_600_000
        );
        assert!(api(&addr, &future).await.json()["records"]
            .as_array()
            .unwrap()
            .is_empty());
        world.stop().await;
    })
    .await;
}

/// `/api/topics/{name}/messages` with a bad limit, offset or partition is a 4xx, and
/// browsing an unknown topic neither succeeds nor creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_message_browser_refuses_bad_input_and_does_not_create_topics() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        // Bad input.
        let message = assert_error(
            &api(&addr, "/api/topics/views/messages?limit=5000").await,
            400,
        );
        assert!(message.contains("limit"), "{message}");
        assert_error(&api(&addr, "/api/topics/views/messages?limit=0").await, 400);
        assert_error(
            &api(&addr, "/api/topics/views/messages?limit=abc").await,
            400,
        );
        assert_error(
            &api(&addr, "/api/topics/views/messages?offset=1&timestamp=1").await,
            400,
        );
        assert_error(
            &api(&addr, "/api/topics/views/messages?offset=-1").await,
            400,
        );
        assert_error(
            &api(&addr, "/api/topics/views/messages?partition=9").await,
            404,
        );
        assert_error(&api(&addr, "/api/topics/no-such-topic/messages").await, 404);
        // Browsing an unknown topic must not create it (auto.create.topics.enable is on).
        let listed = world.admin.list_topics(false).await.unwrap();
        assert!(listed.iter().all(|t| t.name != "no-such-topic"));
        world.stop().await;
    })
    .await;
}

/// `/api/aggregates`: the job, its metrics and its `page-counts` table with a row per page;
/// a bad limit is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregates_show_the_jobs_state_tables() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        let (job, table) = world.aggregates_settled().await;
        assert_eq!(job["name"], "page-counter");
        assert!(job["metrics"]["records_in"].as_u64().unwrap() >= RECORDS as u64);
        assert_eq!(table["table"], "page_counts");
        assert_eq!(table["windowed"], true);
        assert_eq!(table["label_column"], "key");
        assert_eq!(table["value_column"], "value");
        for column in ["key", "window_start", "window_end", "value"] {
            assert!(
                table["columns"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(column)),
                "{column}"
            );
        }
        // Five pages; the rows of each task are that task's counts.
        let pages: std::collections::BTreeSet<&str> = table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        assert_eq!(pages.len(), 5);
        assert_error(&api(&addr, "/api/aggregates?limit=0").await, 400);
        assert_error(&api(&addr, "/api/aggregates?limit=99999999").await, 400);
        world.stop().await;
    })
    .await;
}

/// `/api/tables` and `/api/sql`: a state table, a Parquet directory with its Hive partition
/// as a column, and the row limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_queries_state_tables_and_parquet_directories() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        // The job must have counted every view before its table is summed.
        world.aggregates_settled().await;
        let tables = api(&addr, "/api/tables").await.json();
        let names: Vec<&str> = tables["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"page_counts") && names.contains(&"page_views"),
            "{names:?}"
        );
        let sql = |query: &str| json!({ "sql": query });
        let result = post_json(
            &addr,
            "/api/sql",
            &auth(),
            &sql("SELECT key, sum(value) AS views FROM page_counts GROUP BY key ORDER BY key"),
        )
        .await;
        assert_eq!(result.status, 200, "{}", result.text());
        let result = result.json();
        assert_eq!(result["columns"], json!(["key", "views"]));
        let rows = result["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0], json!(["/page/0", RECORDS / 5]));
        assert_eq!(result["truncated"], false);
        // A Parquet directory, with its Hive partition as a column.
        let result = post_json(
            &addr,
            "/api/sql",
            &auth(),
            &sql("SELECT dt, page, views FROM page_views ORDER BY views DESC"),
        )
        .await;
        assert_eq!(result.status, 200, "{}", result.text());
        assert_eq!(
            result.json()["rows"],
            json!([["2026-11-25", "/cart", 5], ["2026-11-25", "/home", 3]])
        );
        // The row limit.
        let limited = post_json(
            &addr,
            "/api/sql",
            &auth(),
            &json!({"sql": "SELECT * FROM (VALUES (1), (2), (3)) AS t(x)", "limit": 2}),
        )
        .await
        .json();
        assert_eq!(limited["rows"], json!([[1], [2]]));
        assert_eq!(limited["truncated"], true);
        world.stop().await;
    })
    .await;
}

/// `/api/sql` refuses bad SQL, unknown tables, DDL, empty queries, a limit too large,
/// a wrong or malformed body, and a request without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_refuses_bad_queries_and_bodies() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        let sql = |query: &str| json!({ "sql": query });
        // Bad queries.
        let message = assert_error(
            &post_json(&addr, "/api/sql", &auth(), &sql("SELEC nonsense")).await,
            400,
        );
        assert!(
            message.to_lowercase().contains("sql") || message.contains("Expected"),
            "{message}"
        );
        let message = assert_error(
            &post_json(&addr, "/api/sql", &auth(), &sql("SELECT * FROM missing")).await,
            400,
        );
        assert!(message.contains("missing"), "{message}");
        assert_error(
            &post_json(
                &addr,
                "/api/sql",
                &auth(),
                &sql("CREATE TABLE t AS SELECT 1"),
            )
            .await,
            400,
        );
        assert_error(
            &post_json(&addr, "/api/sql", &auth(), &sql("   ")).await,
            400,
        );
        assert_error(
            &post_json(
                &addr,
                "/api/sql",
                &auth(),
                &json!({"sql": "SELECT 1", "limit": 1_000_000}),
            )
            .await,
            400,
        );
        assert_error(
            &post_json(&addr, "/api/sql", &auth(), &json!({"query": "SELECT 1"})).await,
            422,
        );
        let not_json = request(
            &addr,
            "POST",
            "/api/sql",
            &[
                ("Authorization", "Bearer s3cret-token"),
                ("Content-Type", "application/json"),
            ],
            Some(b"{not json"),
        )
        .await;
        assert_error(&not_json, 400);
        assert_error(
            &post_json(&addr, "/api/sql", &[], &sql("SELECT 1")).await,
            401,
        );
        world.stop().await;
    })
    .await;
}

/// `/api/events`: server-sent updates with the topics, groups and aggregates, one after
/// the other; without the token a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_stream_updates_and_require_the_token() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        // The sampler must have seen the topic and the group before an update can name them.
        world.topics_settled().await;
        world.group_settled().await;
        let (status, events) =
            sse_events(&addr, "/api/events?token=s3cret-token", &[], "update", 2).await;
        assert_eq!(status, 200);
        let first: Value = serde_json::from_str(&events[0]).unwrap();
        let second: Value = serde_json::from_str(&events[1]).unwrap();
        assert!(second["ts"].as_i64().unwrap() > first["ts"].as_i64().unwrap());
        assert!(first["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "views"));
        assert!(first["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group_id"] == "readers"));
        assert_eq!(first["aggregates"]["jobs"][0]["name"], "page-counter");
        let (status, _) = sse_events(&addr, "/api/events", &[], "update", 1).await;
        assert_eq!(status, 401);
        world.stop().await;
    })
    .await;
}

/// `/metrics`: the cluster, partition, group lag, job and connector series in Prometheus's
/// text format.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_prometheus_text() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        // The sampler must have seen the topic and the group before it exports their series.
        world.topics_settled().await;
        world.group_settled().await;
        let metrics = api(&addr, "/metrics").await;
        assert_eq!(metrics.status, 200);
        assert!(metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let text = metrics.text();
        for expected in [
            "millrace_dashboard_cluster_up 1",
            "# TYPE millrace_partition_end_offset gauge",
            "millrace_partition_end_offset{topic=\"views\",partition=\"0\"}",
            "millrace_partition_size_bytes{topic=\"views\",partition=\"2\"}",
            "millrace_group_lag{group=\"readers\",topic=\"views\",partition=\"1\"}",
            "# TYPE millrace_job_records_in_total counter",
            "millrace_job_records_in_total{job=\"page-counter\"}",
            "millrace_connector_records_in_total{connector=\"archive\"} 0",
            "# TYPE millrace_under_replicated_partitions gauge",
            "millrace_under_replicated_partitions{broker=\"1\"} 0",
            "millrace_leader_partitions{broker=\"1\"}",
            "millrace_offline_partitions 0",
            "millrace_active_controller{broker=\"1\"} 1",
            "millrace_broker_fenced{broker=\"1\"} 0",
            "# TYPE millrace_isr_shrinks_total counter",
            "millrace_isr_shrinks_total{broker=\"1\"} 0",
            "millrace_isr_expands_total{broker=\"1\"} 0",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        world.stop().await;
    })
    .await;
}

/// Creating or deleting a topic and resetting offsets are a 403 without `--allow-admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_actions_are_refused_without_allow_admin() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        let message = assert_error(
            &post_json(
                &addr,
                "/api/topics",
                &auth(),
                &json!({"name": "made", "partitions": 1}),
            )
            .await,
            403,
        );
        assert!(message.contains("--allow-admin"), "{message}");
        assert_error(
            &request(&addr, "DELETE", "/api/topics/views", &auth(), None).await,
            403,
        );
        assert_error(
            &post_json(
                &addr,
                "/api/groups/readers/reset-offsets",
                &auth(),
                &json!({"to": "earliest"}),
            )
            .await,
            403,
        );
        world.stop().await;
    })
    .await;
}

/// An unknown API route is a 404, a wrong method a 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    on_heap(async {
        let world = Cluster::start().await;
        let addr = world.addr.clone();
        assert_error(&api(&addr, "/api/nothing-here").await, 404);
        assert_error(
            &request(&addr, "PUT", "/api/cluster", &auth(), None).await,
            405,
        );
        world.stop().await;
    })
    .await;
}

/// Shutdown completes even with an event stream open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_completes_with_an_event_stream_open() {
    on_heap(async {
        let mut world = Cluster::start().await;
        let addr = world.addr.clone();
        // Shutdown completes even with an event stream open.
        let open_stream = {
            let addr = addr.clone();
            tokio::spawn(async move {
                sse_events(
                    &addr,
                    "/api/events?token=s3cret-token",
                    &[],
                    "never-sent",
                    1,
                )
                .await
            })
        };
        let _ = sse_events(&addr, "/api/events?token=s3cret-token", &[], "update", 1).await;
        world.running.take().unwrap().shutdown().await;
        open_stream.abort();
        world.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_with_allow_admin() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let bootstrap = broker.bootstrap();
    let running = Running::start(Dashboard::new(DashboardConfig {
        bootstrap: bootstrap.clone(),
        http: "127.0.0.1:0".parse().unwrap(),
        allow_admin: true,
        ..DashboardConfig::default()
    }))
    .await;
    let addr = running.addr.clone();
    // No token configured: no token needed.
    let cluster = get(&addr, "/api/cluster", &[]).await.json();
    assert_eq!(cluster["allow_admin"], true);

    let created = post_json(
        &addr,
        "/api/topics",
        &[],
        &json!({"name": "made-here", "partitions": 2, "configs": {"retention.ms": "60000"}}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let again = post_json(
        &addr,
        "/api/topics",
        &[],
        &json!({"name": "made-here", "partitions": 2}),
    )
    .await;
    assert_error(&again, 409);
    assert_error(
        &post_json(&addr, "/api/topics", &[], &json!({"name": ""})).await,
        400,
    );
    assert_error(
        &post_json(
            &addr,
            "/api/topics",
            &[],
            &json!({"name": "x", "partitions": 0}),
        )
        .await,
        400,
    );
    let topic = eventually("the new topic in the cache", || {
        let addr = addr.clone();
        async move {
            let body = get(&addr, "/api/topics/made-here", &[]).await;
            (body.status == 200).then(|| body.json())
        }
    })
    .await;
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 2);
    assert!(topic["configs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "retention.ms" && c["value"] == "60000"));

    // Reset offsets of an empty group that has committed some.
    let client = ClientConfig::new(&bootstrap);
    let producer = Producer::connect(ProducerConfig::new(client.clone()))
        .await
        .unwrap();
    for i in 0..4 {
        producer
            .send(ProducerRecord::new("made-here", format!("v{i}")).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;
    let admin = Admin::connect(client.clone()).await.unwrap();
    let offsets = [(millrace_client::TopicPartition::new("made-here", 0), 1)]
        .into_iter()
        .collect();
    admin
        .alter_group_offsets("resettable", &offsets)
        .await
        .unwrap();
    let reset = post_json(
        &addr,
        "/api/groups/resettable/reset-offsets",
        &[],
        &json!({"to": "latest", "topic": "made-here"}),
    )
    .await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(
        reset.json()["reset"],
        json!([{"topic": "made-here", "partition": 0, "offset": 4}])
    );
    let committed = admin.list_group_offsets("resettable").await.unwrap();
    assert_eq!(
        committed[&millrace_client::TopicPartition::new("made-here", 0)],
        4
    );
    assert_error(
        &post_json(
            &addr,
            "/api/groups/resettable/reset-offsets",
            &[],
            &json!({"to": "sideways"}),
        )
        .await,
        422,
    );
    assert_error(
        &post_json(
            &addr,
            "/api/groups/nobody/reset-offsets",
            &[],
            &json!({"to": "earliest"}),
        )
        .await,
        404,
    );

    let deleted = request(&addr, "DELETE", "/api/topics/made-here", &[], None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    eventually("the deleted topic gone from the cache", || {
        let addr = addr.clone();
        async move { (get(&addr, "/api/topics/made-here", &[]).await.status == 404).then_some(()) }
    })
    .await;

    running.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_503_not_a_hang() {
    // A port nobody listens on.
    let port = free_port();
    let running = Running::start(Dashboard::new(DashboardConfig {
        bootstrap: format!("127.0.0.1:{port}"),
        http: "127.0.0.1:0".parse().unwrap(),
        ..DashboardConfig::default()
    }))
    .await;
    let response = get(&running.addr, "/api/topics", &[]).await;
    let message = assert_error(&response, 503);
    assert!(message.contains("cluster"), "{message}");
    // What does not need the cluster still works.
    assert_eq!(get(&running.addr, "/", &[]).await.status, 200);
    let sql = post_json(
        &running.addr,
        "/api/sql",
        &[],
        &json!({"sql": "SELECT 1 + 1 AS two"}),
    )
    .await;
    assert_eq!(sql.json()["rows"], json!([[2]]));
    let metrics = get(&running.addr, "/metrics", &[]).await.text();
    assert!(
        metrics.contains("millrace_dashboard_cluster_up 0"),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn bad_configurations_are_refused() {
    let bad_token = Dashboard::new(DashboardConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        token: Some("has space".to_string()),
        ..DashboardConfig::default()
    })
    .bind()
    .await;
    assert!(matches!(
        bad_token,
        Err(millrace_dashboard::DashboardError::Config(_))
    ));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = Dashboard::new(DashboardConfig {
        http: taken.local_addr().unwrap(),
        ..DashboardConfig::default()
    })
    .bind()
    .await;
    assert!(matches!(
        in_use,
        Err(millrace_dashboard::DashboardError::Bind { .. })
    ));
}
