//! End to end: `millrace demo --events N` runs the whole activity pipeline; then every closed
//! window of `page-views-per-minute` and `ad-stats-per-minute` must equal a batch
//! recomputation of the raw topics, the injected incidents must be caught (and the control
//! user left alone), and the Parquet export must hold exactly the raw events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::cli::{millrace, send_signal, wait_with_deadline};
use millrace::activity::generator::{CONTROL_USER, FAILING_SERVICE, VICTIMS};
use millrace::activity::topics;
use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::record::ConsumerRecord;
use millrace_client::{Admin, ClientConfig, OffsetSpec, TopicPartition};
use millrace_testkit::free_port;
use serde_json::Value;

/// Generous: a loaded 2-core machine builds windows slowly, but a hang must still fail.
const PIPELINE_LIMIT: Duration = Duration::from_secs(300);
const MINUTE_MS: i64 = 60_000;

/// Kafka client settings (`security.protocol`, ...), as the secured demo writes them.
type Settings = Vec<(String, String)>;

/// Every record of `topic`, from the beginning to the end offsets of now.
async fn read_topic(bootstrap: &str, settings: &Settings, topic: &str) -> Vec<ConsumerRecord> {
    let mut builder = ClientConfig::builder(bootstrap.split(','));
    for (name, value) in settings {
        builder = builder.set(name, value).unwrap();
    }
    let client = builder.build().unwrap();
    let admin = Admin::connect(client.clone()).await.unwrap();
    let description = admin.describe_topics(&[topic]).await.unwrap();
    let partitions: Vec<TopicPartition> = description[0]
        .partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.id))
        .collect();
    let specs: Vec<(TopicPartition, OffsetSpec)> = partitions
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends = admin.list_offsets(&specs).await.unwrap();
    let mut consumer = Consumer::connect(ConsumerConfig::new(client))
        .await
        .unwrap();
    consumer.assign(&partitions).unwrap();
    consumer.seek_to_beginning(&partitions).unwrap();
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while partitions
        .iter()
        .any(|tp| consumer.position(tp).unwrap_or(0) < ends[tp].offset)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        records.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    consumer.close().await.unwrap();
    records
}

fn values(records: &[ConsumerRecord]) -> Vec<Value> {
    records
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap())
        .collect()
}

fn window_start(ts: i64) -> i64 {
    ts - ts.rem_euclid(MINUTE_MS)
}

fn text(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
        .to_string()
}

fn int(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// One output record per (key, window): returns them by (key, window_start).
fn by_window(outputs: &[Value], key: &str) -> BTreeMap<(String, i64), Value> {
    let mut windows = BTreeMap::new();
    for v in outputs {
        let id = (text(v, key), int(v, "window_start"));
        assert_eq!(int(v, "window_end") - id.1, MINUTE_MS, "{v}");
        let previous = windows.insert(id.clone(), v.clone());
        assert!(previous.is_none(), "two final results for {id:?}");
    }
    windows
}

fn check_page_views(raw: &[Value], outputs: &[Value]) {
    let mut expected: BTreeMap<(String, i64), (u64, HashSet<String>)> = BTreeMap::new();
    for v in raw {
        let entry = expected
            .entry((text(v, "page"), window_start(int(v, "ts"))))
            .or_default();
        entry.0 += 1;
        entry.1.insert(text(v, "user_id"));
    }
    let actual = by_window(outputs, "page");
    let expected_keys: BTreeSet<_> = expected.keys().cloned().collect();
    let actual_keys: BTreeSet<_> = actual.keys().cloned().collect();
    assert_eq!(actual_keys, expected_keys, "page-views-per-minute windows");
    for (id, (views, users)) in &expected {
        let got = &actual[id];
        assert_eq!(int(got, "views") as u64, *views, "views of {id:?}");
        assert_eq!(
            int(got, "unique_users") as usize,
            users.len(),
            "unique users of {id:?}"
        );
    }
}

#[derive(Default)]
struct AdWindow {
    impressions: u64,
    clicks: u64,
    users: HashSet<String>,
}

fn check_ad_stats(raw: &[Value], outputs: &[Value]) {
    let mut seen = HashSet::new();
    let mut expected: BTreeMap<(String, i64), AdWindow> = BTreeMap::new();
    for v in raw {
        // Duplicates carry the event id of the first copy.
        if !seen.insert(text(v, "event_id")) {
            continue;
        }
        let w = expected
            .entry((text(v, "campaign_id"), window_start(int(v, "ts"))))
            .or_default();
        if text(v, "kind") == "click" {
            w.clicks += 1;
        } else {
            w.impressions += 1;
        }
        w.users.insert(text(v, "user_id"));
    }
    assert!(
        seen.len() < raw.len(),
        "the generator sent no duplicate clicks"
    );
    let actual = by_window(outputs, "campaign_id");
    let expected_keys: BTreeSet<_> = expected.keys().cloned().collect();
    let actual_keys: BTreeSet<_> = actual.keys().cloned().collect();
    assert_eq!(actual_keys, expected_keys, "ad-stats-per-minute windows");
    for (id, w) in &expected {
        let got = &actual[id];
        assert_eq!(int(got, "impressions") as u64, w.impressions, "{id:?}");
        assert_eq!(int(got, "clicks") as u64, w.clicks, "{id:?}");
        assert_eq!(int(got, "unique_users") as usize, w.users.len(), "{id:?}");
        let ctr = if w.impressions == 0 {
            0.0
        } else {
            w.clicks as f64 / w.impressions as f64
        };
        assert!((got["ctr"].as_f64().unwrap() - ctr).abs() < 1e-9, "{id:?}");
    }
}

fn check_incidents(login_alerts: &[Value], error_rates: &[Value]) {
    for victim in VICTIMS {
        assert!(
            login_alerts
                .iter()
                .any(|a| text(a, "user_id") == victim && int(a, "failures") >= 10),
            "no credential-stuffing alert for {victim}: {login_alerts:?}"
        );
    }
    assert!(
        login_alerts
            .iter()
            .all(|a| text(a, "user_id") != CONTROL_USER),
        "an alert fired for the control user: {login_alerts:?}"
    );
    assert!(
        error_rates
            .iter()
            .any(|r| text(r, "service") == FAILING_SERVICE && r["alert"] == Value::Bool(true)),
        "no error-rate alert for {FAILING_SERVICE}"
    );
}

/// Every social action must give exactly one notification, to the owner of its item.
fn check_notifications(actions: &[Value], items: &[Value], notifications: &[Value]) {
    let owners: HashMap<String, String> = items
        .iter()
        .map(|item| (text(item, "item_id"), text(item, "owner_id")))
        .collect();
    let key = |v: &Value| {
        (
            int(v, "ts"),
            text(v, "user_id"),
            text(v, "action"),
            text(v, "item_id"),
        )
    };
    let mut expected: Vec<_> = actions
        .iter()
        .map(|a| {
            let owner = owners[&text(a, "item_id")].clone();
            (
                int(a, "ts"),
                owner,
                text(a, "user_id"),
                text(a, "action"),
                text(a, "item_id"),
            )
        })
        .collect();
    let mut actual: Vec<_> = notifications
        .iter()
        .map(|n| {
            let (ts, owner, action, item) = key(n);
            (ts, owner, text(n, "actor"), action, item)
        })
        .collect();
    expected.sort();
    actual.sort();
    assert!(!expected.is_empty(), "no social actions were generated");
    assert_eq!(
        actual, expected,
        "notifications differ from the social actions"
    );
}

/// A plain HTTP/1.1 GET; returns the whole response (status line, headers, body).
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("the dashboard did not answer")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The rows of every Parquet file under `dir`, as JSON objects.
fn parquet_rows(dir: &Path) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(&path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let mut writer = arrow::json::ArrayWriter::new(Vec::new());
                writer.write(&batch.unwrap()).unwrap();
                writer.finish().unwrap();
                let batch_rows: Vec<Value> = serde_json::from_slice(&writer.into_inner()).unwrap();
                rows.extend(batch_rows);
            }
        }
    }
    rows
}

/// Rows as canonical JSON strings (sorted keys), sorted: a multiset to compare.
fn canonical(rows: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|row| {
            let sorted: BTreeMap<&String, &Value> = row.as_object().unwrap().iter().collect();
            serde_json::to_string(&sorted).unwrap()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn demo_pipeline_matches_a_batch_recomputation() {
    run_demo_and_check(1, false);
}

/// The same pipeline on a broker with a SASL_SSL listener: every part of it (generator, jobs,
/// export, dashboard) and this test connect over TLS as the demo user.
#[test]
fn demo_pipeline_on_a_sasl_ssl_broker_matches_a_batch_recomputation() {
    run_demo_and_check(1, true);
}

/// The same pipeline on an embedded cluster of three brokers, every topic replicated three
/// times: replication must not change a single result.
#[test]
fn demo_pipeline_on_three_brokers_matches_a_batch_recomputation() {
    run_demo_and_check(3, false);
}

/// A port `p` with `p..p+n` and `p+100..p+100+n` free (the demo's brokers and controllers).
fn free_port_range(n: u16) -> u16 {
    loop {
        let base = free_port();
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        let all_free = (0..n).all(|i| {
            base.checked_add(i).is_some_and(free) && base.checked_add(100 + i).is_some_and(free)
        });
        if all_free {
            return base;
        }
    }
}

fn run_demo_and_check(brokers: u16, secure: bool) {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = format!("127.0.0.1:{}", free_port_range(brokers));
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = millrace()
        .args([
            "demo",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &bootstrap,
            "--brokers",
            &brokers.to_string(),
            "--http",
            &http,
            "--events",
            "40000",
            "--rate",
            "4000",
            "--speedup",
            "60",
            "--seed",
            "7",
            "--security",
            if secure { "sasl_ssl" } else { "plaintext" },
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo: {line}");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + PIPELINE_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) if line.starts_with("input ended") => break,
            Ok(_) => {}
            Err(_) => {
                send_signal(child.id(), "KILL");
                panic!("the demo did not close its windows within {PIPELINE_LIMIT:?}");
            }
        }
    }

    // The secured demo's client settings, from the file it wrote (and named at start).
    let settings: Settings = if secure {
        let properties = dir.path().join("security").join("client.properties");
        std::fs::read_to_string(&properties)
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    } else {
        Vec::new()
    };
    if secure {
        // Nothing gets in without the demo user's login.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let plain = runtime.block_on(async {
            let client = ClientConfig::builder([bootstrap.as_str()])
                .request_timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            match Admin::connect(client).await {
                Ok(admin) => admin.list_topics(false).await.map(|_| ()),
                Err(e) => Err(e),
            }
        });
        assert!(
            plain.is_err(),
            "a plaintext client was served by the SASL_SSL demo"
        );
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let raw: HashMap<&str, Vec<Value>> = runtime.block_on(async {
        let mut raw = HashMap::new();
        for topic in topics::RAW {
            raw.insert(
                topic,
                values(&read_topic(&bootstrap, &settings, topic).await),
            );
        }
        raw
    });
    let output = |topic: &str| values(&runtime.block_on(read_topic(&bootstrap, &settings, topic)));
    let total: usize = raw.values().map(Vec::len).sum();
    assert!(total >= 40_000, "only {total} raw events");

    check_page_views(
        &raw[topics::PAGE_VIEWS],
        &output(topics::PAGE_VIEWS_PER_MINUTE),
    );
    check_ad_stats(
        &raw[topics::AD_EVENTS],
        &output(topics::AD_STATS_PER_MINUTE),
    );
    check_incidents(
        &output(topics::LOGIN_ANOMALIES),
        &output(topics::ERROR_RATE),
    );
    let items = values(&runtime.block_on(read_topic(&bootstrap, &settings, topics::ITEMS)));
    check_notifications(&raw[topics::SOCIAL], &items, &output(topics::NOTIFICATIONS));
    let late = runtime.block_on(read_topic(&bootstrap, &settings, topics::LATE));
    assert!(
        late.is_empty(),
        "{} records came after their windows",
        late.len()
    );

    // The dashboard serves the jobs' live state.
    let aggregates = runtime.block_on(async { http_get(&http, "/api/aggregates").await });
    assert!(
        aggregates.contains("page_views_per_minute"),
        "aggregates: {aggregates}"
    );

    // A clean stop commits the sink's open files; then the export must equal the topics.
    send_signal(child.id(), "INT");
    let status = wait_with_deadline(child, Duration::from_secs(60));
    assert!(status.status.success(), "demo exit: {:?}", status.status);
    for topic in topics::RAW {
        let files = parquet_rows(&dir.path().join("export").join(format!("topic={topic}")));
        assert_eq!(
            canonical(&files),
            canonical(&raw[topic]),
            "the Parquet export of {topic} differs from the topic"
        );
    }
}

/// One progress report: (events so far, rate printed, seconds of the interval).
fn parse_report(line: &str) -> Option<(u64, f64, f64)> {
    // "{count} events generated, {rate}/s over the last {seconds} s; jobs' input lag .."
    let (count, rest) = line.split_once(" events generated, ")?;
    let (rate, rest) = rest.split_once("/s over the last ")?;
    let (seconds, _) = rest.split_once(" s;")?;
    Some((
        count.parse().ok()?,
        rate.parse().ok()?,
        seconds.parse().ok()?,
    ))
}

/// The first seconds of `millrace demo`: each startup step is announced in order before the
/// tour, the jobs' assignment is announced, and each report's rate is that of its own
/// interval (the events since the previous report over its length), not an average since
/// start that would include the startup.
#[test]
fn demo_announces_its_startup_and_reports_the_rate_of_each_interval() {
    let http = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = millrace()
        .args(["demo", "--listen", &listen, "--http", &http])
        .args(["--rate", "400", "--report-every", "1", "--speedup", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo: {line}");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut lines = Vec::new();
    let mut reports_after_assignment = 0;
    let mut assigned = false;
    while reports_after_assignment < 4 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines_rx.recv_timeout(left) else {
            send_signal(child.id(), "KILL");
            panic!("the demo printed no 4 reports after its jobs' assignment: {lines:#?}");
        };
        if line.starts_with("all ") && line.contains("jobs have their partitions") {
            assigned = true;
        } else if assigned && parse_report(&line).is_some() {
            reports_after_assignment += 1;
        }
        lines.push(line);
    }
    send_signal(child.id(), "INT");
    let status = wait_with_deadline(child, Duration::from_secs(60));
    assert!(status.status.success(), "demo exit: {:?}", status.status);

    let position = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in {lines:#?}"))
    };
    let steps = [
        "1 broker started on",
        "topics ready",
        "stream jobs started",
        "Parquet export started",
        "dashboard listening on",
        "generating 400 events/s",
        "Press Ctrl-C to stop",
    ]
    .map(position);
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "startup steps out of order: {lines:#?}"
    );

    let reports: Vec<(u64, f64, f64)> = lines.iter().filter_map(|l| parse_report(l)).collect();
    for pair in reports.windows(2) {
        let ((before, _, _), (count, rate, seconds)) = (pair[0], pair[1]);
        let per_second = (count - before) as f64 / seconds;
        // Printed rounded to whole events per second, and the interval to 0.1 s.
        assert!(
            (rate - per_second).abs() <= 1.0 + per_second * 0.1,
            "report {count} says {rate}/s, but {} events came in {seconds} s",
            count - before
        );
    }
    let (_, last_rate, _) = reports[reports.len() - 1];
    assert!(
        last_rate > 200.0,
        "the last interval's rate {last_rate}/s is far below the asked 400/s"
    );
}
