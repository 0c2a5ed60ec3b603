//! A job process killed with SIGKILL mid-stream and restarted: final window counts equal the
//! batch answer (no record lost, none counted twice), at-least-once duplicates of a window
//! carry the same count.
//!
//! The job runs in a child process: this test binary started again with only
//! `job_process` selected and the broker's address in [`CHILD_ENV`]. The broker runs in the
//! parent, so the kill takes the job down alone, in the middle of reading, forwarding,
//! changelog writes and commits.
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;
#[path = "common/page_views.rs"]
mod page_views;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka::produce_json;
use millrace_client::{Admin, ClientConfig};
use millrace_streams::runtime::StreamsConfig;
use millrace_testkit::{create_topic, start_broker_in, FAST_GROUPS};
use page_views::{
    assert_exact, batch, committed, end_markers, page_count_job, read_json, views, PageCount,
};

/// Set in the child process: the broker address.
const CHILD_ENV: &str = "MILLRACE_KILL9_BROKER";
const APP: &str = "kill9";
/// The job, when this binary runs as the child; a no-op test otherwise.
#[test]
fn job_process() {
    let Ok(address) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let config = StreamsConfig::new(APP, ClientConfig::new(&address))
            .at_least_once()
            .commit_interval(Duration::from_millis(150))
            .event_time(Duration::from_secs(3), Some(Duration::from_secs(2)))
            .session_timeout(Duration::from_secs(6));
        let job = page_count_job(config);
        // Runs until killed.
        job.run(std::future::pending()).await.unwrap();
    });
}

/// The job's process; killed when dropped, so a failing test leaves none behind.
struct JobProcess(Child);

impl Drop for JobProcess {
    fn drop(&mut self) {
        // SIGKILL: no shutdown, no final commit, no leaving the group.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(address: &str) -> JobProcess {
    JobProcess(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "job_process", "--test-threads=1"])
            .env(CHILD_ENV, address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_stream_restarts_with_exact_window_counts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let address = broker.local_addr().to_string();
    let client = ClientConfig::new(&address);
    create_topic(&client, "views", 3).await;
    let admin = Admin::connect(client.clone()).await.unwrap();
    let input = views(6_000, 180_000);
    let expected = batch(&input);
    let (first, rest) = input.split_at(2_000);

    produce_json(&client, "views", first).await;
    let child = spawn_child(&address);
    // Kill once the job has committed part of the way, while more input is arriving.
    let producer = {
        let client = client.clone();
        let rest = rest.to_vec();
        tokio::spawn(async move {
            // Paced input (about 4 s of it), so that the kill lands mid-stream.
            for chunk in rest.chunks(100) {
                produce_json(&client, "views", chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            produce_json(&client, "views", &end_markers()).await;
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&admin, APP).await < 3_000 {
        assert!(Instant::now() < deadline, "the job never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(child);
    let at_kill = committed(&admin, APP).await;
    assert!(
        at_kill < (input.len() + 30) as i64,
        "killed too late to be mid-stream: {:?}",
        admin.list_group_offsets(APP).await
    );

    // A new process of the same application restores and finishes.
    let child = spawn_child(&address);
    producer.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let outputs = loop {
        let outputs: Vec<PageCount> = read_json(&client, "counts").await;
        let windows: BTreeSet<(String, i64)> = outputs
            .iter()
            .map(|c| (c.page.clone(), c.window_start))
            .collect();
        if windows.len() >= expected.len() {
            break outputs;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} windows emitted",
            windows.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(child);

    assert_exact(&outputs, &expected);
    broker.shutdown().await;
}
