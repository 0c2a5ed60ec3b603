//! The Kafka runtime against a broker on a free port, over TCP: windowed counts equal a batch
//! recomputation, across a restart, a crash (the job dropped without committing), a rebalance
//! from one instance to two, and bad records routed to the dead-letter topic.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::TopicPartition;
use millrace_client::{ClientConfig, OffsetSpec, Producer, ProducerConfig, ProducerRecord};
use millrace_streams::runtime::{Job, JobMetrics, Sink, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
use millrace_testkit::produce::json_record;
use millrace_testkit::{produce_all, start_broker_in, FAST_GROUPS};
use serde::{Deserialize, Serialize};

const PARTITIONS: i32 = 3;
const WINDOW_MS: i64 = 10_000;
const BASE: i64 = 1_800_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct View {
    page: String,
    ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct PageCount {
    page: String,
    window_start: i64,
    window_end: i64,
    views: u64,
}

/// Views of 5 pages by 40 users over ~2 minutes of event time; every 7th record arrives up to
/// 2 s late (within the job's out-of-orderness), and each partition ends with a marker record
/// far ahead so every real window closes.
fn views(count: usize) -> Vec<(String, View)> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut ts = BASE + (i as i64) * 120_000 / count as i64;
        if i % 7 == 3 {
            ts -= 2_000;
        }
        let user = format!("user-{}", i % 40);
        let page = format!("/page/{}", (i * 7) % 5);
        out.push((user, View { page, ts }));
    }
    out
}

fn batch_counts(views: &[(String, View)]) -> BTreeMap<(String, i64), u64> {
    let mut counts = BTreeMap::new();
    for (_, view) in views {
        let start = view.ts - view.ts.rem_euclid(WINDOW_MS);
        *counts.entry((view.page.clone(), start)).or_insert(0) += 1;
    }
    counts
}

async fn produce(config: &ClientConfig, topic: &str, records: &[(String, View)]) {
    let records = records
        .iter()
        .map(|(user, view)| json_record(topic, user, Some(view)))
        .collect();
    produce_all(ProducerConfig::new(config.clone()), records).await;
}

/// Records far in the future on every source partition, for 30 different pages so that
/// every repartitioned task sees one too: they close every earlier window. (Their own
/// windows never close, so they never show up in the output.)
async fn produce_end_markers(config: &ClientConfig, topic: &str) {
    let producer = Producer::connect(ProducerConfig::new(config.clone()))
        .await
        .unwrap();
    for i in 0..30 {
        let view = View {
            page: format!("end-{i}"),
            ts: BASE + 3_600_000,
        };
        producer
            .send(
                ProducerRecord::new(topic, serde_json::to_vec(&view).unwrap())
                    .key("end")
                    .partition(i % PARTITIONS),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;
}

fn page_counts_job(
    config: StreamsConfig,
    source: &str,
    sink: Sink<String, PageCount>,
) -> Job<String, View, String, PageCount> {
    Job::group_by(
        config,
        Source::json(&[source], |v: &View| v.ts),
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
                        window_end: w.window_end,
                        views,
                    };
                    (w.key, count)
                })
        },
        sink,
    )
}

fn streams_config(client: &ClientConfig, app: &str) -> StreamsConfig {
    StreamsConfig::new(app, client.clone())
        .commit_interval(Duration::from_millis(300))
        .event_time(Duration::from_secs(3), Some(Duration::from_secs(2)))
        .session_timeout(Duration::from_secs(6))
}

async fn create_topic(client: &ClientConfig, topic: &str) {
    millrace_testkit::create_topic(client, topic, PARTITIONS).await;
}

/// Reads a whole topic of JSON page counts.
async fn read_counts(client: &ClientConfig, topic: &str) -> Vec<PageCount> {
    let mut consumer = Consumer::connect(ConsumerConfig::new(client.clone()))
        .await
        .unwrap();
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while partitions
        .iter()
        .any(|tp| consumer.position(tp).is_none_or(|p| p < ends[tp].offset))
    {
        assert!(Instant::now() < deadline, "could not read {topic}");
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            out.push(serde_json::from_slice(record.value.as_deref().unwrap()).unwrap());
        }
    }
    consumer.close().await.unwrap();
    out
}

/// Waits until the job has emitted every expected window (one output per window), or fails.
async fn wait_for_outputs(client: &ClientConfig, topic: &str, expected: usize) -> Vec<PageCount> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = read_counts(client, topic).await;
        let windows: std::collections::BTreeSet<(String, i64)> = counts
            .iter()
            .map(|c| (c.page.clone(), c.window_start))
            .collect();
        if windows.len() >= expected {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} windows emitted",
            windows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every window's final count equals the batch answer; a window emitted more than once (at
/// least once delivery after a crash) always carries the same count.
fn assert_equals_batch(outputs: &[PageCount], expected: &BTreeMap<(String, i64), u64>) {
    let mut seen: HashMap<(String, i64), u64> = HashMap::new();
    for output in outputs {
        let key = (output.page.clone(), output.window_start);
        assert_eq!(output.window_end, output.window_start + WINDOW_MS);
        if let Some(previous) = seen.insert(key.clone(), output.views) {
            assert_eq!(
                previous, output.views,
                "window {key:?} emitted with two counts"
            );
        }
    }
    let got: BTreeMap<(String, i64), u64> = seen.into_iter().collect();
    assert_eq!(&got, expected);
}

fn spawn_job(
    job: Job<String, View, String, PageCount>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), millrace_streams::StreamsError>>,
    Arc<JobMetrics>,
) {
    let metrics = job.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(job.run(async move {
        let _ = stopped.await;
    }));
    (stop, handle, metrics)
}

async fn wait_for_records_in(metrics: &JobMetrics, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.snapshot().records_in < at_least {
        assert!(
            Instant::now() < deadline,
            "job read only {:?}",
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_counts_equal_the_batch_answer_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "views").await;
    let input = views(3000);
    let expected = batch_counts(&input);

    // First half, then a clean stop (commit), then a new instance finishes the job.
    produce(&client, "views", &input[..1500]).await;
    let (stop, handle, metrics) = spawn_job(page_counts_job(
        streams_config(&client, "restart"),
        "views",
        Sink::json_values("counts"),
    ));
    // Both stages: 1500 source records read and forwarded, and 1500 repartitioned ones.
    wait_for_records_in(&metrics, 3000).await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();

    produce(&client, "views", &input[1500..]).await;
    produce_end_markers(&client, "views").await;
    let (stop, handle, metrics) = spawn_job(page_counts_job(
        streams_config(&client, "restart"),
        "views",
        Sink::json_values("counts"),
    ));
    let outputs = wait_for_outputs(&client, "counts", expected.len()).await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert_equals_batch(&outputs, &expected);
    // The second instance resumed after the first one's commit: it read the rest only.
    let read = metrics.snapshot().records_in;
    // Each source record is read twice: from the source and from the repartition topic.
    assert!(read <= 2 * (1500 + 30), "re-read {read} records");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_without_commit_replays_input_without_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "views").await;
    let input = views(4000);
    let expected = batch_counts(&input);

    produce(&client, "views", &input[..2500]).await;
    // One stable instance id for both runs, as a restarted process keeps it: the second
    // aborts what the first left open at once (exactly-once, the default), instead of
    // read_committed reads waiting for the transaction timeout.
    let config = streams_config(&client, "crash")
        .instance_id("crash-0")
        .commit_interval(Duration::from_millis(200));
    let (_stop, handle, metrics) = spawn_job(page_counts_job(
        config,
        "views",
        Sink::json_values("counts"),
    ));
    wait_for_records_in(&metrics, 2500).await;
    // Let at least one commit happen, then kill the job mid-way: no final commit, no leave.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.snapshot().commits < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.abort();
    let _ = handle.await;

    produce(&client, "views", &input[2500..]).await;
    produce_end_markers(&client, "views").await;
    // A fresh instance of the same application takes the old one's place in the group
    // (static membership), then restores from the changelog.
    let (stop, handle, _) = spawn_job(page_counts_job(
        streams_config(&client, "crash").instance_id("crash-0"),
        "views",
        Sink::json_values("counts"),
    ));
    let outputs = wait_for_outputs(&client, "counts", expected.len()).await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert_equals_batch(&outputs, &expected);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_takes_over_partitions_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "views").await;
    let input = views(3000);
    let expected = batch_counts(&input);

    produce(&client, "views", &input[..1200]).await;
    let (stop_a, handle_a, metrics_a) = spawn_job(page_counts_job(
        streams_config(&client, "scale"),
        "views",
        Sink::json_values("counts"),
    ));
    wait_for_records_in(&metrics_a, 1200).await;
    let (stop_b, handle_b, metrics_b) = spawn_job(page_counts_job(
        streams_config(&client, "scale"),
        "views",
        Sink::json_values("counts"),
    ));
    // Both instances end up with tasks.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics_b.snapshot().tasks == 0 || metrics_a.snapshot().tasks == PARTITIONS as u64 {
        assert!(
            Instant::now() < deadline,
            "no rebalance: a {:?} b {:?}",
            metrics_a.snapshot(),
            metrics_b.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metrics_a.snapshot().tasks + metrics_b.snapshot().tasks,
        PARTITIONS as u64
    );
    produce(&client, "views", &input[1200..]).await;
    produce_end_markers(&client, "views").await;
    let outputs = wait_for_outputs(&client, "counts", expected.len()).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    handle_a.await.unwrap().unwrap();
    handle_b.await.unwrap().unwrap();
    assert_equals_batch(&outputs, &expected);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_go_to_the_dead_letter_topic_and_the_job_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "views").await;
    let producer = Producer::connect(ProducerConfig::new(client.clone()))
        .await
        .unwrap();
    producer
        .send(
            ProducerRecord::new("views", "{not json")
                .key("u1")
                .partition(0),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await;
    let input = views(300);
    produce(&client, "views", &input).await;
    produce_end_markers(&client, "views").await;

    let collected: Arc<Mutex<Vec<PageCount>>> = Arc::default();
    let sink_target = collected.clone();
    let config = streams_config(&client, "dlq").dead_letter_topic("views-dlq");
    let job = page_counts_job(
        config,
        "views",
        Sink::callback(move |records| {
            let mut out = sink_target.lock().unwrap();
            out.extend(records.into_iter().map(|r| r.value));
        }),
    );
    let state = job.state();
    let (stop, handle, metrics) = spawn_job(job);
    let expected = batch_counts(&input);
    let deadline = Instant::now() + Duration::from_secs(60);
    while collected.lock().unwrap().len() < expected.len() {
        assert!(Instant::now() < deadline, "{:?}", metrics.snapshot());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Live state: only the end markers' windows are still open, one per marker page.
    let deadline = Instant::now() + Duration::from_secs(20);
    while state.rows("page-counts").len() != 30 {
        assert!(Instant::now() < deadline, "{:?}", state.rows("page-counts"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ctx = datafusion::prelude::SessionContext::new();
    state.register(&ctx).unwrap();
    let batches = ctx
        .sql("SELECT count(*) AS n, sum(value) AS views FROM page_counts WHERE key LIKE 'end-%'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 30);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert_equals_batch(&collected.lock().unwrap(), &expected);
    assert_eq!(metrics.snapshot().bad_records, 1);

    let mut consumer = Consumer::connect(ConsumerConfig::new(client.clone()))
        .await
        .unwrap();
    let tp = TopicPartition::new("views-dlq", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let records = consumer.poll(Duration::from_millis(200)).await.unwrap();
        if let Some(record) = records.into_iter().next() {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "nothing in the dead-letter topic"
        );
    };
    assert_eq!(dead.value.as_deref(), Some(&b"{not json"[..]));
    let header = |name: &str| {
        dead.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    assert!(header("millrace.error").unwrap().contains("invalid JSON"));
    assert_eq!(header("millrace.topic").as_deref(), Some("views"));
    assert_eq!(header("millrace.offset").as_deref(), Some("0"));
    broker.shutdown().await;
}
