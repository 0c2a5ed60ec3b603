//! Exactly-once under SIGKILL: a job process killed many times at random points (while it
//! reads, forwards, writes output and changelog, commits) and restarted each time; the output
//! topic read with read_committed equals the batch answer exactly: every window once, with
//! its count, no duplicate at all. And a zombie: an instance frozen (SIGSTOP) until the group
//! moved its tasks, then woken, never gets its output committed.
//!
//! The job runs in child processes: this test binary started again with only `job_process`
//! selected, the broker's address and the instance id in the environment. The broker runs in
//! the parent, so a kill takes the job down alone.
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;
#[path = "common/page_views.rs"]
mod page_views;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka::produce_json;
use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::{Admin, ClientConfig, IsolationLevel, OffsetSpec, TopicPartition};
use millrace_streams::runtime::StreamsConfig;
use millrace_testkit::{create_topic, start_broker_in, FAST_GROUPS};
use page_views::{batch, committed, end_markers, page_count_job, read_json_with, views, PageCount};

/// Set in the child process: the broker address.
const BROKER_ENV: &str = "MILLRACE_EOS_BROKER";
/// Set in the child process: the application id.
const APP_ENV: &str = "MILLRACE_EOS_APP";
/// Set in the child process: its instance id.
const INSTANCE_ENV: &str = "MILLRACE_EOS_INSTANCE";
/// Set in the child process: its session timeout in milliseconds.
const SESSION_ENV: &str = "MILLRACE_EOS_SESSION_MS";
/// Set in the child process: its idle timeout in milliseconds.
const IDLE_ENV: &str = "MILLRACE_EOS_IDLE_MS";
/// Seeds the kill points (printed by the test, to replay a failure).
const SEED_ENV: &str = "MILLRACE_KILL9_SEED";

/// The children's idle timeout: short, so that a restart does not wait on it.
const IDLE: Duration = Duration::from_secs(2);
/// The zombie test's idle timeout: longer than the zombie's transaction can stay open
/// (timeout and abort sweep), for while it is open read_committed readers of the topics it
/// wrote to get nothing, and a partition idle that long would stop holding windows open.
const ZOMBIE_IDLE: Duration = Duration::from_secs(20);

/// The job, when this binary runs as a child; a no-op test otherwise.
#[test]
fn job_process() {
    let (Ok(address), Ok(app), Ok(instance)) = (
        std::env::var(BROKER_ENV),
        std::env::var(APP_ENV),
        std::env::var(INSTANCE_ENV),
    ) else {
        return;
    };
    let session = std::env::var(SESSION_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(6), Duration::from_millis);
    let idle = std::env::var(IDLE_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis);
    // MILLRACE_EOS_LOG=<filter> logs the children to stderr (with --nocapture).
    if let Ok(filter) = std::env::var("MILLRACE_EOS_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let config = StreamsConfig::new(app, ClientConfig::new(&address))
            .exactly_once()
            .instance_id(instance)
            .transaction_timeout(Duration::from_secs(5))
            .commit_interval(Duration::from_millis(150))
            .event_time(Duration::from_secs(3), Some(idle))
            .session_timeout(session);
        // Runs until killed.
        page_count_job(config)
            .run(std::future::pending())
            .await
            .unwrap();
    });
}

/// A job process; killed when dropped, so a failing test leaves none behind.
struct JobProcess(Child);

impl JobProcess {
    fn spawn(address: &str, app: &str, instance: &str, session: Duration, idle: Duration) -> Self {
        JobProcess(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "job_process", "--test-threads=1"])
                .env(BROKER_ENV, address)
                .env(APP_ENV, app)
                .env(INSTANCE_ENV, instance)
                .env(SESSION_ENV, session.as_millis().to_string())
                .env(IDLE_ENV, idle.as_millis().to_string())
                .stdout(Stdio::null())
                .stderr(if std::env::var_os("MILLRACE_EOS_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .unwrap(),
        )
    }

    /// Sends `signal` to the process (by its pid).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for JobProcess {
    fn drop(&mut self) {
        // SIGKILL: no shutdown, no final commit, no leaving the group (a stopped process
        // dies of it too).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator for the kill points (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The output read with read_committed, and how many records below the last stable offset
/// a read_uncommitted reader sees on top: the aborted output.
async fn committed_and_aborted(client: &ClientConfig) -> (Vec<PageCount>, usize) {
    let committed: Vec<PageCount> =
        read_json_with(client, "counts", IsolationLevel::ReadCommitted).await;
    let config = ConsumerConfig::builder(client.clone())
        .isolation_level(IsolationLevel::ReadCommitted)
        .build()
        .unwrap();
    let probe = Consumer::connect(config).await.unwrap();
    let partitions: Vec<TopicPartition> = probe
        .partitions_for("counts")
        .await
        .unwrap()
        .into_iter()
        .map(|p| TopicPartition::new("counts", p))
        .collect();
    let stable = probe
        .offsets_for(&partitions, OffsetSpec::Latest)
        .await
        .unwrap();
    let mut everything = Consumer::connect(ConsumerConfig::new(client.clone()))
        .await
        .unwrap();
    everything.assign(&partitions).unwrap();
    everything.seek_to_beginning(&partitions).unwrap();
    let mut below_stable = 0usize;
    while partitions.iter().any(|tp| {
        everything
            .position(tp)
            .is_none_or(|p| p < stable[tp].offset)
    }) {
        for record in everything.poll(Duration::from_millis(200)).await.unwrap() {
            let tp = TopicPartition::new(record.topic.to_string(), record.partition);
            if record.offset < stable[&tp].offset && record.value.is_some() {
                below_stable += 1;
            }
        }
    }
    let aborted = below_stable.saturating_sub(committed.len());
    (committed, aborted)
}

/// Every window exactly once, with its count.
fn assert_exactly_once(outputs: &[PageCount], expected: &BTreeMap<(String, i64), u64>) {
    let mut seen: BTreeMap<(String, i64), u64> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for output in outputs {
        let key = (output.page.clone(), output.window_start);
        if seen.insert(key.clone(), output.views).is_some() {
            duplicates.push(key);
        }
    }
    assert!(
        duplicates.is_empty(),
        "windows emitted twice: {duplicates:?}"
    );
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(window, count)| seen.get(*window) != Some(count))
        .map(|(window, count)| (window, *count, seen.get(window).copied()))
        .collect();
    assert!(wrong.is_empty(), "(window, expected, got): {wrong:?}");
    assert_eq!(seen.len(), expected.len(), "windows nobody asked for");
}

/// Waits until the committed output holds every expected window (or fails after `limit`).
async fn committed_output(
    client: &ClientConfig,
    expected: &BTreeMap<(String, i64), u64>,
    limit: Duration,
) -> (Vec<PageCount>, usize) {
    let deadline = Instant::now() + limit;
    loop {
        let (outputs, aborted) = committed_and_aborted(client).await;
        let windows: BTreeSet<(String, i64)> = outputs
            .iter()
            .map(|c| (c.page.clone(), c.window_start))
            .collect();
        if windows.len() >= expected.len() {
            return (outputs, aborted);
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} windows committed",
            windows.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Produces `rest` paced (chunks of 100 every 150 ms), then the end markers.
fn paced_input(
    client: &ClientConfig,
    rest: &[(String, Option<page_views::View>)],
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    let rest = rest.to_vec();
    tokio::spawn(async move {
        for chunk in rest.chunks(100) {
            produce_json(&client, "views", chunk).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        produce_json(&client, "views", &end_markers()).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_at_random_points_commits_every_window_exactly_once() {
    const APP: &str = "eos-kill9";
    if let Ok(filter) = std::env::var("MILLRACE_EOS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let address = broker.local_addr().to_string();
    let client = ClientConfig::new(&address);
    create_topic(&client, "views", 3).await;
    let admin = Admin::connect(client.clone()).await.unwrap();
    let input = views(6_000, 180_000);
    let expected = batch(&input);
    let (first, rest) = input.split_at(1_500);
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill points seeded with {SEED_ENV}={seed}");
    let mut rng = Rng(seed);

    produce_json(&client, "views", first).await;
    let producer = paced_input(&client, rest);
    let session = Duration::from_secs(6);
    // Kill while input arrives, each time after the job made progress (a commit since it
    // started, so that every run moves the job on; once the input is all read there may be
    // none to make), at a random point up to 3 commit intervals later.
    let mut kills = 0;
    while kills < 12 && (kills < 4 || !producer.is_finished()) {
        let before = committed(&admin, APP).await;
        let child = JobProcess::spawn(&address, APP, "only", session, IDLE);
        let progress_by = Instant::now() + Duration::from_secs(10);
        while committed(&admin, APP).await <= before && Instant::now() < progress_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(450))).await;
        drop(child);
        kills += 1;
    }

    // The last process finishes the input.
    let child = JobProcess::spawn(&address, APP, "only", session, IDLE);
    producer.await.unwrap();
    let (outputs, aborted) = committed_output(&client, &expected, Duration::from_secs(60)).await;
    drop(child);

    eprintln!(
        "{kills} kills; {} windows committed; {aborted} output records aborted",
        outputs.len()
    );
    assert_exactly_once(&outputs, &expected);
    // Some kill landed between writing output and committing it (the test would prove
    // little otherwise).
    assert!(aborted > 0, "no kill left output behind uncommitted");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_instance_never_gets_its_output_committed() {
    const APP: &str = "eos-zombie";
    let dir = tempfile::tempdir().unwrap();
    // Short sessions, and timed-out transactions aborted within a second.
    let broker = start_broker_in(
        dir.path(),
        &[
            FAST_GROUPS,
            "group.min.session.timeout.ms=1000",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
        ],
    )
    .await;
    let address = broker.local_addr().to_string();
    let client = ClientConfig::new(&address);
    create_topic(&client, "views", 3).await;
    let admin = Admin::connect(client.clone()).await.unwrap();
    let input = views(4_000, 120_000);
    let expected = batch(&input);
    let (first, rest) = input.split_at(1_000);
    produce_json(&client, "views", first).await;

    // Instance A runs alone, then freezes mid-stream with its transaction open.
    let session = Duration::from_secs(3);
    let zombie = JobProcess::spawn(&address, APP, "a", session, ZOMBIE_IDLE);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&admin, APP).await < 500 {
        assert!(Instant::now() < deadline, "instance a never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let producer = paced_input(&client, rest);
    tokio::time::sleep(Duration::from_millis(300)).await;
    zombie.signal("-STOP");

    // B takes every task once A's session expires, and processes the input.
    let survivor = JobProcess::spawn(&address, APP, "b", session, ZOMBIE_IDLE);
    producer.await.unwrap();
    let (_, _) = committed_output(&client, &expected, Duration::from_secs(60)).await;
    // A wakes up believing it still owns its tasks, with its transaction open.
    zombie.signal("-CONT");
    // Give it several commit intervals to try (a window of time, not an event: the test
    // asserts that nothing happens in it).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (outputs, _) = committed_and_aborted(&client).await;
    drop(zombie);
    drop(survivor);

    assert_exactly_once(&outputs, &expected);
    broker.shutdown().await;
}
