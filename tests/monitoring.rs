//! The broker's metrics and health endpoint (`metrics.listener`), checked against the README's
//! "Monitoring" table, `promtool`, a real Prometheus server, and a broker recovering a large
//! log.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`scripts/test` installs
//! it when run as root); without them those tests print SKIP with the reason and pass.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::records::Compression;
use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::{ClientConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition};
use millrace_testkit::{eventually, free_port, http, temp_dir, TestBroker, FAST_GROUPS};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A broker with the endpoint on a free port.
async fn broker_with_endpoint(extra: &[&str]) -> (TestBroker, String) {
    let mut overrides = vec![FAST_GROUPS, "metrics.listener=http://127.0.0.1:0"];
    overrides.extend_from_slice(extra);
    let broker = TestBroker::start(&overrides).await;
    let addr = broker.broker.metrics_addr().expect("the metrics endpoint");
    (broker, addr.to_string())
}

async fn scrape(addr: &str) -> String {
    let response = http::get(addr, "/metrics", &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

/// Produces `count` records of 100 bytes to `topic` with acks=all and waits for every one.
async fn produce(bootstrap: &str, topic: &str, count: usize) {
    let producer = Producer::connect(ProducerConfig::new(ClientConfig::new(bootstrap)))
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..count {
        let record = ProducerRecord {
            topic: topic.to_string(),
            key: Some(format!("k{i}").into_bytes().into()),
            value: Some(vec![b'x'; 100].into()),
            ..ProducerRecord::default()
        };
        acks.push(producer.send(record).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
    producer.close().await;
}

/// One documented metric: its name, type and labels.
#[derive(Debug)]
struct Documented {
    name: String,
    kind: String,
    labels: BTreeSet<String>,
}

/// The rows of the README's "Monitoring" metrics table.
fn readme_metrics() -> Vec<Documented> {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let section = readme
        .split("\n## Monitoring\n")
        .nth(1)
        .expect("a Monitoring section in the README");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | labels | MBean | meaning |
        if cells.len() < 6 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`');
        if !name.contains('_') || !["counter", "gauge", "histogram"].contains(&cells[2]) {
            continue;
        }
        let labels = cells[3]
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "—")
            .map(str::to_string)
            .collect();
        rows.push(Documented {
            name: name.to_string(),
            kind: cells[2].to_string(),
            labels,
        });
    }
    assert!(
        rows.len() > 30,
        "the README table has only {} metrics",
        rows.len()
    );
    rows
}

/// Per sample name, the label-name sets it appears with.
type Samples = HashMap<String, Vec<BTreeSet<String>>>;

/// Per sample name, the label-name sets it appears with, and the `# TYPE` of each family.
fn parse_exposition(text: &str) -> (Samples, HashMap<String, String>) {
    let mut samples: HashMap<String, Vec<BTreeSet<String>>> = HashMap::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, labels) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}').unwrap();
                let labels = line[open + 1..close]
                    .split("\",")
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, _)| k.trim().to_string())
                    .filter(|k| k != "le" && k != "quantile")
                    .collect();
                (line[..open].to_string(), labels)
            }
            None => (
                line.split_whitespace().next().unwrap().to_string(),
                BTreeSet::new(),
            ),
        };
        samples.entry(name).or_default().push(labels);
    }
    (samples, types)
}

/// A broker that has served produce, fetch, a group commit: every metric has a sample.
async fn busy_broker() -> (TestBroker, String) {
    let (broker, addr) = broker_with_endpoint(&["log.slow.request.ms=1000"]).await;
    produce(&broker.bootstrap(), "clicks", 200).await;
    let config = ConsumerConfig::builder(ClientConfig::new(broker.bootstrap()))
        .group_id("readers")
        .enable_auto_commit(false)
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(config).await.unwrap();
    let partition = TopicPartition::new("clicks", 0);
    consumer.assign(std::slice::from_ref(&partition)).unwrap();
    consumer
        .seek_to_beginning(std::slice::from_ref(&partition))
        .unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read < 50 {
        assert!(Instant::now() < deadline, "consuming timed out");
        read += consumer
            .poll(Duration::from_millis(500))
            .await
            .unwrap()
            .len();
    }
    consumer
        .commit_offsets(&HashMap::from([(partition, 50)]))
        .await
        .unwrap();
    consumer.close().await.unwrap();
    // One committed transaction, for the transaction coordinator's metrics.
    let config = millrace_client::ProducerConfig::builder(ClientConfig::new(broker.bootstrap()))
        .transactional_id("orders-writer")
        .build()
        .unwrap();
    let producer = millrace_client::Producer::connect(config).await.unwrap();
    producer.begin_transaction().unwrap();
    let _delivery = producer
        .send(millrace_client::ProducerRecord::new(
            "orders",
            b"o1".to_vec(),
        ))
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    (broker, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_in_the_readme_table_is_served_with_its_documented_labels() {
    let (broker, addr) = busy_broker().await;
    let text = scrape(&addr).await;
    let (samples, types) = parse_exposition(&text);
    let mut missing = Vec::new();
    for metric in readme_metrics() {
        let sample_name = if metric.kind == "histogram" {
            format!("{}_count", metric.name)
        } else {
            metric.name.clone()
        };
        match samples.get(&sample_name) {
            None => missing.push(format!("{} (no sample)", metric.name)),
            Some(label_sets) => {
                if !label_sets.contains(&metric.labels) {
                    missing.push(format!(
                        "{} (labels {:?}, served {:?})",
                        metric.name, metric.labels, label_sets[0]
                    ));
                }
            }
        }
        if types.get(&metric.name) != Some(&metric.kind) {
            missing.push(format!(
                "{} (documented {}, served as {:?})",
                metric.name,
                metric.kind,
                types.get(&metric.name)
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "not as documented: {missing:#?}\n{text}"
    );
    // The load shows in the values, not only the names.
    assert!(
        text.contains("kafka_server_brokertopicmetrics_messagesin_total{topic=\"clicks\"} 200"),
        "{text}"
    );
    assert!(
        text.contains("kafka_consumergroup_lag{consumergroup=\"readers\",partition=\"0\",topic=\"clicks\"} 150"),
        "{text}"
    );
    assert!(
        text.contains("millrace_transactions_completed_total{result=\"commit\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("millrace_transactions{state=\"CompleteCommit\"} 1"),
        "{text}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_partition_metrics_can_be_switched_off() {
    let (broker, addr) = broker_with_endpoint(&["metrics.partition.level.enable=false"]).await;
    produce(&broker.bootstrap(), "quiet", 10).await;
    let text = scrape(&addr).await;
    assert!(!text.contains("kafka_log_log_size{"), "{text}");
    assert!(
        text.contains("kafka_server_brokertopicmetrics_messagesin_total{topic=\"quiet\"} 10"),
        "{text}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_endpoint_and_health_answer_for_a_running_broker() {
    let (broker, addr) = broker_with_endpoint(&[]).await;
    produce(&broker.bootstrap(), "visible", 1).await;
    assert_eq!(http::get(&addr, "/health/live", &[]).await.status, 200);
    let ready = http::get(&addr, "/health/ready", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let cluster = http::get(&addr, "/v1/cluster", &[]).await.json();
    assert_eq!(cluster["ready"], true, "{cluster}");
    assert_eq!(cluster["brokers"].as_array().unwrap().len(), 1, "{cluster}");
    assert_eq!(cluster["offline_partitions"], 0, "{cluster}");
    assert!(cluster["topics"].as_i64().unwrap() >= 1, "{cluster}");
    broker.shutdown().await;
}

/// `promtool`, or the reason it cannot be used.
fn promtool() -> Option<PathBuf> {
    which("promtool")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn skip(test: &str, tool: &str) {
    eprintln!(
        "SKIP {test}: `{tool}` is not installed (Debian package `prometheus`; scripts/test \
         installs it when run as root)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_exposition_passes_promtool_check_metrics() {
    let Some(promtool) = promtool() else {
        return skip("the_exposition_passes_promtool_check_metrics", "promtool");
    };
    let (broker, addr) = busy_broker().await;
    let text = scrape(&addr).await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    broker.shutdown().await;
}

#[test]
fn the_alert_rules_load_in_promtool() {
    let Some(promtool) = promtool() else {
        return skip("the_alert_rules_load_in_promtool", "promtool");
    };
    let rules = Path::new(REPO).join("deploy/prometheus/alerts.yml");
    let output = Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn the_grafana_dashboard_queries_documented_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("deploy/grafana/millrace.json")).unwrap(),
    )
    .unwrap();
    let documented: BTreeSet<String> = readme_metrics().into_iter().map(|m| m.name).collect();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{} panels", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let named = documented.iter().any(|name| expr.contains(name.as_str()));
            assert!(
                named,
                "panel {} queries no documented metric: {expr}",
                panel["title"]
            );
        }
    }
}

/// A Prometheus server scraping one target every 500 ms, stopped on drop.
struct PrometheusServer {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    fn start(binary: &Path, target: &str) -> PrometheusServer {
        let dir = temp_dir();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
                 scrape_configs:\n  - job_name: millrace\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        PrometheusServer {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The value of an instant query's single series, if it has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let response = http::get(&self.addr, &path, &[]).await;
        if response.status != 200 {
            return None;
        }
        let body = response.json();
        let value = body["data"]["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        value.is_finite().then_some(value)
    }

    async fn ready(&self) -> bool {
        match tokio::net::TcpStream::connect(&self.addr).await {
            Ok(_) => http::get(&self.addr, "/-/ready", &[]).await.status == 200,
            Err(_) => false,
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_sees_produce_rate_latency_and_log_size_follow_the_load() {
    let Some(binary) = which("prometheus") else {
        return skip(
            "a_real_prometheus_sees_produce_rate_latency_and_log_size_follow_the_load",
            "prometheus",
        );
    };
    let (broker, addr) = broker_with_endpoint(&[]).await;
    produce(&broker.bootstrap(), "load", 1).await;
    let prometheus = PrometheusServer::start(&binary, &addr);
    eventually("Prometheus to be ready", || prometheus.ready()).await;
    eventually("the first scrape", || async {
        prometheus.query("up{job=\"millrace\"}").await == Some(1.0)
    })
    .await;
    let size_before = prometheus
        .query("kafka_log_log_size{topic=\"load\"}")
        .await
        .expect("the log size of `load`");

    // Load: batches of acks=all produce until told to stop (bounded to 60 s).
    let loading = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn({
        let bootstrap = broker.bootstrap();
        let loading = loading.clone();
        async move {
            let started = Instant::now();
            while loading.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                produce(&bootstrap, "load", 200).await;
            }
        }
    });
    let rate = "sum(rate(kafka_server_brokertopicmetrics_messagesin_total{topic=\"load\"}[3s]))";
    let p99 = "histogram_quantile(0.99, sum by (le) (rate(kafka_network_requestmetrics_totaltimems_bucket{request=\"Produce\"}[3s])))";
    eventually("a produce rate under load", || async {
        prometheus.query(rate).await.is_some_and(|r| r > 10.0)
    })
    .await;
    eventually("a Produce p99 under load", || async {
        prometheus.query(p99).await.is_some_and(|q| q > 0.0)
    })
    .await;
    eventually("the log size to grow", || async {
        prometheus
            .query("kafka_log_log_size{topic=\"load\"}")
            .await
            .is_some_and(|size| size > size_before + 10_000.0)
    })
    .await;

    loading.store(false, Ordering::Relaxed);
    load.await.unwrap();
    eventually(
        "the produce rate to fall to zero after the load",
        || async { prometheus.query(rate).await == Some(0.0) },
    )
    .await;
    drop(prometheus);
    broker.shutdown().await;
}

/// Appends `count` one-record batches to the active segment of `dir`, continuing its offsets
/// from `next_offset`: a large log for recovery to scan, written without a broker.
fn append_batches(segment: &Path, next_offset: i64, count: i64) {
    let record = millrace_testkit::records::record("k", "v", 1_700_000_000_000);
    let template = millrace_testkit::records::batch(&[record], Compression::None);
    let mut out = Vec::with_capacity(template.len() * usize::try_from(count).unwrap());
    for i in 0..count {
        let mut batch = template.to_vec();
        // The base offset is outside the CRC, which covers bytes 21.. only.
        batch[0..8].copy_from_slice(&(next_offset + i).to_be_bytes());
        out.extend_from_slice(&batch);
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(segment)
        .unwrap();
    file.write_all(&out).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_is_503_while_a_large_log_recovers_and_live_answers_throughout() {
    let dir = temp_dir();
    let client_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_port = free_port();
    let listener = format!("metrics.listener=http://127.0.0.1:{metrics_port}");
    let overrides = [listener.as_str()];
    let broker = millrace_testkit::start_broker_at(dir.path(), client_addr, &overrides).await;
    produce(&client_addr.to_string(), "big", 1).await;
    broker.shutdown().await;
    append_batches(
        &dir.path().join("big-0").join("00000000000000000000.log"),
        1,
        1_000_000,
    );

    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let restarting = tokio::spawn({
        let dir = dir.path().to_path_buf();
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        async move {
            let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
            millrace_testkit::start_broker_at(&dir, client_addr, &overrides).await
        }
    });
    // Watch until ready, noting every answer; bounded by `eventually`'s deadline.
    let mut answers: BTreeSet<(u16, u16, String)> = BTreeSet::new();
    let mut first_recovering: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "never ready: {answers:?}");
        if tokio::net::TcpStream::connect(&metrics_addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let live = http::get(&metrics_addr, "/health/live", &[]).await.status;
        let ready = http::get(&metrics_addr, "/health/ready", &[]).await;
        if ready.text().contains("recovering") {
            first_recovering.get_or_insert_with(Instant::now);
        }
        answers.insert((live, ready.status, ready.text()));
        if ready.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let broker = restarting.await.unwrap();
    eprintln!(
        "answers while restarting: {answers:?}; ready {:?} after the recovery was first reported",
        first_recovering.map(|t| t.elapsed())
    );
    assert!(
        answers.iter().any(|(live, ready, reason)| *live == 200
            && *ready == 503
            && reason.contains("recovering")),
        "no 503 naming the recovery while live answered 200: {answers:?}"
    );
    assert!(
        answers.iter().all(|(live, _, _)| *live == 200),
        "live did not answer 200 throughout: {answers:?}"
    );
    let end = broker
        .broker()
        .replicas
        .partition("big", 0)
        .unwrap()
        .log_end_offset();
    assert_eq!(end, 1_000_001, "the recovered log keeps every batch");
    broker.shutdown().await;
}

/// The value of the unlabelled sample `name` in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_shows_one_active_controller_and_a_stopped_follower_as_under_replication() {
    let mut overrides = millrace_testkit::FAST_FAILOVER.to_vec();
    overrides.push("metrics.listener=http://127.0.0.1:0");
    let mut cluster = millrace_testkit::TestCluster::start_with_brokers(3, 1, &overrides).await;
    let client = cluster.client_config("monitoring");
    millrace_testkit::create_topic_with(
        &client,
        millrace_client::admin::NewTopic::new("replicated", 1).replication_factor(3),
    )
    .await;
    produce(&cluster.bootstrap(), "replicated", 20).await;
    let endpoint = |cluster: &millrace_testkit::TestCluster, id: i32| {
        cluster.broker(id).metrics_addr().unwrap().to_string()
    };

    // Exactly one active controller, and every node (the broker-only one too) is ready.
    eventually("one active controller among the brokers", || async {
        let mut active = 0.0;
        for id in 1..=4 {
            let text = scrape(&endpoint(&cluster, id)).await;
            active += sample(
                &text,
                "kafka_controller_kafkacontroller_activecontrollercount",
            )
            .unwrap_or(0.0);
        }
        active == 1.0
    })
    .await;
    for id in 1..=4 {
        let ready = http::get(&endpoint(&cluster, id), "/health/ready", &[]).await;
        assert_eq!(ready.status, 200, "broker {id}: {}", ready.text());
    }

    let state = cluster
        .broker(1)
        .broker()
        .controller
        .image()
        .topic("replicated")
        .and_then(|t| t.partition(0).cloned())
        .unwrap();
    let leader = state.leader;
    // A follower that is not the active controller: this test is about the ISR, not about a
    // controller failover.
    let controller = cluster
        .broker(leader)
        .broker()
        .controller
        .active_controller_id();
    let follower = *state
        .replicas
        .iter()
        .find(|id| **id != leader && **id != controller)
        .unwrap();
    let leader_text = scrape(&endpoint(&cluster, leader)).await;
    assert!(
        sample(
            &leader_text,
            "kafka_server_brokertopicmetrics_replicationbytesout_total"
        )
        .is_some_and(|bytes| bytes > 0.0),
        "the leader counts what its followers fetched: {leader_text}"
    );
    let follower_text = scrape(&endpoint(&cluster, follower)).await;
    assert!(
        sample(
            &follower_text,
            "kafka_server_brokertopicmetrics_replicationbytesin_total"
        )
        .is_some_and(|bytes| bytes > 0.0),
        "the follower counts what it appended from its leader: {follower_text}"
    );
    cluster.halt(follower).await;
    let leader_endpoint = endpoint(&cluster, leader);
    eventually(
        "the leader to report the partition under-replicated",
        || async {
            let text = scrape(&leader_endpoint).await;
            sample(
                &text,
                "kafka_server_replicamanager_underreplicatedpartitions",
            ) == Some(1.0)
                && sample(&text, "kafka_server_replicamanager_isrshrinks_total")
                    .is_some_and(|shrinks| shrinks >= 1.0)
        },
    )
    .await;

    cluster.restart(follower).await;
    eventually("the follower back in the ISR", || async {
        let text = scrape(&leader_endpoint).await;
        sample(
            &text,
            "kafka_server_replicamanager_underreplicatedpartitions",
        ) == Some(0.0)
            && sample(&text, "kafka_server_replicamanager_isrexpands_total")
                .is_some_and(|expands| expands >= 1.0)
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedicated_controllers_serve_health_and_controller_metrics() {
    let root = temp_dir();
    let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = controller_ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let config = |settings: Vec<String>, dir: PathBuf| {
        let settings = millrace_broker::config::parse_overrides(&settings).unwrap();
        millrace_broker::BrokerConfig::from_settings(&settings, None, Some(dir)).unwrap()
    };
    let starting: Vec<_> = controller_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            config(
                vec![
                    format!("node.id={}", i + 1),
                    "process.roles=controller".into(),
                    format!("listeners=CONTROLLER://127.0.0.1:{port}"),
                    "controller.listener.names=CONTROLLER".into(),
                    format!("controller.quorum.voters={voters}"),
                    "metrics.listener=http://127.0.0.1:0".into(),
                ],
                root.path().join(format!("controller-{}", i + 1)),
            )
        })
        .map(|config| tokio::spawn(millrace_broker::start_controller(config)))
        .collect();
    let broker = millrace_broker::start(config(
        vec![
            "node.id=4".into(),
            "process.roles=broker".into(),
            format!("listeners=PLAINTEXT://127.0.0.1:{}", free_port()),
            "controller.listener.names=CONTROLLER".into(),
            format!("controller.quorum.voters={voters}"),
            "metrics.listener=http://127.0.0.1:0".into(),
        ],
        root.path().join("broker-4"),
    ))
    .await
    .unwrap();
    let mut controllers = Vec::new();
    for started in starting {
        controllers.push(started.await.unwrap().unwrap());
    }
    let endpoints: Vec<String> = controllers
        .iter()
        .map(|c| c.metrics_addr().unwrap().to_string())
        .collect();
    eventually("one active controller reporting the broker", || async {
        let (mut active, mut brokers) = (0.0, 0.0);
        for endpoint in &endpoints {
            let text = scrape(endpoint).await;
            active += sample(
                &text,
                "kafka_controller_kafkacontroller_activecontrollercount",
            )
            .unwrap_or(0.0);
            brokers +=
                sample(&text, "kafka_controller_kafkacontroller_activebrokercount").unwrap_or(0.0);
        }
        active == 1.0 && brokers == 1.0
    })
    .await;
    for endpoint in &endpoints {
        let ready = http::get(endpoint, "/health/ready", &[]).await;
        assert_eq!(ready.status, 200, "{endpoint}: {}", ready.text());
        let cluster = http::get(endpoint, "/v1/cluster", &[]).await.json();
        assert_eq!(cluster["process_roles"], "controller", "{cluster}");
        assert_eq!(cluster["brokers"][0]["id"], 4, "{cluster}");
    }
    let broker_endpoint = broker.metrics_addr().unwrap().to_string();
    let ready = http::get(&broker_endpoint, "/health/ready", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    broker.shutdown().await;
    for controller in controllers {
        controller.shutdown().await;
    }
}
