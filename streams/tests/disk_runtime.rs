//! A job with its state on disk (`StreamsConfig::state_dir`) against a broker on a free port:
//! a dedupe step and a windowed count over out-of-order input with duplicates, stopped
//! mid-way (cleanly, or dropped without a commit) and restarted with the same state
//! directory and application id, give exactly the batch answer; the store files are under
//! the state directory while the job runs and gone once it stopped. And a window emitted at an end of input stays closed across such a
//! restart: the step's seal comes back from its changelog.
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka::{channel_sink, drain_now, produce_json, spawn_job};
use millrace_client::ClientConfig;
use millrace_streams::runtime::{EndOfInput, Job, JobMetrics, Source, StreamsConfig};
use millrace_streams::{EmitMode, Record, Windowed, Windows};
use millrace_testkit::{create_topic, start_broker_in, FAST_GROUPS};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;

const WINDOW_MS: i64 = 10_000;
const BASE: i64 = 1_800_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct View {
    /// Copies of one view (at-least-once producers) share it.
    id: u64,
    page: String,
    ts: i64,
}

type Counts = BTreeMap<(String, i64), u64>;
type Output = Record<Windowed<String>, u64>;

/// `count` views of 5 pages over `span_ms` from `start`, ids from `first_id`, keyed by page:
/// every 5th up to 2.4 s out of order (within the job's out-of-orderness), every 11th sent
/// twice (a copy a few records ahead of it).
fn views(count: usize, first_id: u64, start: i64, span_ms: i64) -> Vec<(String, Option<View>)> {
    let mut out: Vec<(String, Option<View>)> = Vec::with_capacity(count + count / 10);
    for i in 0..count {
        let mut ts = start + (i as i64) * span_ms / count as i64;
        if i % 5 == 2 {
            ts -= 400 + (i as i64 % 3) * 1_000;
        }
        let page = format!("/p/{}", (i * 3) % 5);
        let view = View {
            id: first_id + i as u64,
            page: page.clone(),
            ts,
        };
        out.push((page.clone(), Some(view.clone())));
        if i % 11 == 4 {
            let at = out.len().saturating_sub(3);
            out.insert(at, (page, Some(view)));
        }
    }
    out
}

/// Views per (page, window start), each id counted once.
fn batch(input: &[(String, Option<View>)]) -> Counts {
    let mut seen = BTreeSet::new();
    let mut counts = BTreeMap::new();
    for view in input.iter().filter_map(|(_, v)| v.as_ref()) {
        if seen.insert(view.id) {
            let start = view.ts - view.ts.rem_euclid(WINDOW_MS);
            *counts.entry((view.page.clone(), start)).or_insert(0) += 1;
        }
    }
    counts
}

fn config(client: &ClientConfig, app: &str, state: &Path) -> StreamsConfig {
    StreamsConfig::new(app, client.clone())
        .commit_interval(Duration::from_millis(300))
        // A long idle timeout: only event time and the end of input close windows.
        .event_time(Duration::from_secs(3), Some(Duration::from_secs(600)))
        .session_timeout(Duration::from_secs(6))
        .state_dir(state)
}

/// Dedupe by view id, then count views per page in 10 s windows, all on disk.
fn job(
    config: StreamsConfig,
) -> (
    Job<String, View, Windowed<String>, u64>,
    UnboundedReceiver<Output>,
) {
    let (sink, rx) = channel_sink();
    let job = Job::new(
        config,
        Source::json(&["views"], |v: &View| v.ts),
        |views| {
            views
                .dedupe(Duration::from_secs(60), |_, v: &View| v.id)
                .window(
                    Windows::tumbling(Duration::from_millis(WINDOW_MS as u64))
                        .grace(Duration::from_secs(1)),
                )
                .emit(EmitMode::Final)
                .named("counts")
                .count()
        },
        sink,
    );
    (job, rx)
}

/// A running job and what it needs to be watched and stopped.
struct Running {
    end: EndOfInput,
    metrics: Arc<JobMetrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), millrace_streams::StreamsError>>,
    rx: UnboundedReceiver<Output>,
}

fn start(config: StreamsConfig) -> Running {
    let (job, rx) = job(config);
    let end = job.end_of_input();
    let metrics = job.metrics();
    let (stop, handle) = spawn_job(|stopped| {
        job.run(async move {
            let _ = stopped.await;
        })
    });
    Running {
        end,
        metrics,
        stop,
        handle,
        rx,
    }
}

impl Running {
    /// Stops the job (it commits first) and returns what it emitted.
    async fn stop(mut self) -> Vec<Output> {
        self.stop.send(()).unwrap();
        self.handle.await.unwrap().unwrap();
        drain_now(&mut self.rx)
    }

    /// Drops the job without a commit or leaving the group (a crash); returns what it
    /// emitted.
    async fn crash(mut self) -> Vec<Output> {
        self.handle.abort();
        let _ = self.handle.await;
        drain_now(&mut self.rx)
    }

    /// Signals the end of input and waits until the job drained it.
    async fn drain(&mut self) {
        self.end.signal();
        tokio::time::timeout(Duration::from_secs(60), self.end.drained())
            .await
            .expect("end of input not drained");
    }
}

/// Polls `done` (the job's progress has no event to await) until it holds.
async fn wait_until(what: &str, metrics: &JobMetrics, done: impl Fn(&JobMetrics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(metrics) {
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}",
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The redb store files under `dir`, at any depth.
fn store_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "redb") {
                files.push(path);
            }
        }
    }
    files
}

/// Final counts by (page, window start); a window emitted twice (at-least-once) must carry
/// the same count both times.
fn merge(into: &mut Counts, outputs: Vec<Output>) {
    for r in outputs {
        let key = (r.key.key, r.key.window_start);
        if let Some(old) = into.insert(key.clone(), r.value) {
            assert_eq!(old, r.value, "{key:?} emitted with two counts");
        }
    }
}

/// Runs the first half of the input, stops the job (`crash`: drops it without a commit or
/// leaving the group) and finishes the input with a new instance on the same state directory.
async fn restarted_mid_way(app: &str, crash: bool) {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(&dir.path().join("broker"), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    let state = dir.path().join("state");
    create_topic(&client, "views", 3).await;
    let first = views(1_200, 0, BASE, 60_000);
    let mut second = views(1_200, 10_000, BASE + 60_000, 60_000);
    // Copies of first-half views in the second half: the restored dedupe state drops them.
    for (i, copy) in first.iter().rev().take(40).enumerate() {
        second.insert(i * 7, copy.clone());
    }
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let expected = batch(&all);

    produce_json(&client, "views", &first).await;
    let mut run = start(config(&client, app, &state));
    wait_until("first half read", &run.metrics, |m| {
        m.snapshot().records_in >= first.len() as u64
    })
    .await;
    // Every task has its dedupe store, dedupe's expiry index and its window store on disk
    // while it runs.
    let files = store_files(&state);
    let tasks = run.metrics.snapshot().tasks;
    assert_eq!(tasks, 3);
    assert_eq!(files.len(), 3 * tasks as usize, "{files:?}");
    assert!(files.iter().all(|f| f.starts_with(state.join(app))));
    // Some windows closed before the stop: the restarted job must not emit them with other
    // counts, nor lose the open ones.
    let mut got = Counts::new();
    if crash {
        // At least one commit with state in it, then no more.
        wait_until("two commits", &run.metrics, |m| m.snapshot().commits >= 2).await;
        merge(&mut got, run.crash().await);
    } else {
        merge(&mut got, drain_now(&mut run.rx));
        merge(&mut got, run.stop().await);
    }
    assert!(!got.is_empty(), "no window closed before the stop");
    assert!(
        got.len() < expected.len(),
        "every window closed before the stop"
    );
    assert!(
        store_files(&state).is_empty(),
        "store files left after the stop"
    );

    produce_json(&client, "views", &second).await;
    let mut run = start(config(&client, app, &state));
    run.drain().await;
    let snapshot = run.metrics.snapshot();
    merge(&mut got, run.stop().await);
    assert_eq!(got, expected);
    // Every copy was dropped, those of first-half views by restored state.
    assert_eq!(snapshot.late_records, 0);
    assert!(snapshot.duplicates_dropped >= 40, "{snapshot:?}");
    if !crash {
        // The restarted job read on from the committed offsets.
        assert!(
            snapshot.records_in <= second.len() as u64 + 30,
            "{snapshot:?}"
        );
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_disk_job_stopped_mid_way_and_restarted_gives_the_batch_answer() {
    restarted_mid_way("disk-restart", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_disk_job_crashed_mid_way_and_restarted_gives_the_batch_answer() {
    restarted_mid_way("disk-crash", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_emitted_at_end_of_input_stays_closed_after_a_restart_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(&dir.path().join("broker"), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    let state = dir.path().join("state");
    create_topic(&client, "views", 1).await;
    let input = views(200, 0, BASE, 30_000);
    let expected = batch(&input);

    produce_json(&client, "views", &input).await;
    let mut run = start(config(&client, "disk-sealed", &state));
    run.drain().await;
    let mut got = Counts::new();
    merge(&mut got, drain_now(&mut run.rx));
    assert_eq!(got, expected);
    merge(&mut got, run.stop().await);

    // A new view in the last window, which the end of input emitted, at the furthest event
    // time so far: not late for the watermark (set back there) nor for dedupe, so only the
    // window step's restored seal makes it late.
    let last = input
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .map(|v| v.ts)
        .max()
        .unwrap();
    let late = View {
        id: 1_000_000,
        page: "/p/0".into(),
        ts: last + 1,
    };
    assert_eq!(
        late.ts - late.ts.rem_euclid(WINDOW_MS),
        last - last.rem_euclid(WINDOW_MS)
    );
    produce_json(&client, "views", &[(late.page.clone(), Some(late))]).await;
    let mut run = start(config(&client, "disk-sealed", &state));
    run.drain().await;
    let snapshot = run.metrics.snapshot();
    let again = run.stop().await;
    assert!(again.is_empty(), "emitted again: {again:?}");
    assert_eq!((snapshot.records_in, snapshot.late_records), (1, 1));
    broker.shutdown().await;
}
