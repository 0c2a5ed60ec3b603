//! The cluster launcher's process handling, with a stand-in for the broker binary (a shell
//! script that logs the listening line and sleeps), and, when `MILLRACE_BIN` names the real
//! binary, one real broker started, killed and restarted through it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use millrace_client::{ProducerConfig, ProducerRecord};
use millrace_testkit::cluster::ClusterProcesses;
use millrace_testkit::faults::process_state;
use millrace_testkit::{create_topic, produce_all};

/// Writes an executable script into `dir` and returns its path.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A "broker" that records its arguments, says it listens, and sleeps (as the same pid).
fn fake_broker(dir: &Path) -> PathBuf {
    script(
        dir,
        "fake-millrace",
        &format!(
            "echo \"$@\" >> {}/args\n\
             echo 'INFO millrace_broker::server: broker listening local_addr=127.0.0.1:1' >&2\n\
             exec sleep 300",
            dir.display()
        ),
    )
}

/// Polls the state letter of `pid` until it is `want` (signals land asynchronously).
fn wait_state(pid: u32, want: char) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if process_state(pid) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn brokers_start_pause_resume_crash_and_restart() {
    let bin_dir = millrace_testkit::temp_dir();
    let binary = fake_broker(bin_dir.path());
    let mut cluster = ClusterProcesses::plan(&binary, 3, &["min.insync.replicas=2"]);
    cluster.start_all().unwrap();
    let args = std::fs::read_to_string(bin_dir.path().join("args")).unwrap();
    assert_eq!(args.lines().count(), 3, "{args}");
    for id in 1..=3 {
        assert!(args.contains(&format!("-o node.id={id} ")), "{args}");
        assert!(cluster.is_running(id));
        assert!(cluster.node(id).spec.data_dir.is_dir());
        assert!(cluster.node(id).log_lines()[0].contains("broker listening"));
    }

    let pid = cluster.pid(2).unwrap();
    cluster.sigstop(2).unwrap();
    assert!(wait_state(pid, 'T'));
    assert!(cluster.is_running(2), "a paused broker still runs");
    cluster.sigcont(2).unwrap();
    assert!(wait_state(pid, 'S'));

    cluster.kill9(2).unwrap();
    assert!(!cluster.is_running(2));
    assert_eq!(cluster.pid(2), None);
    assert!(cluster.sigstop(2).is_err());
    cluster.start(2).unwrap();
    let restarted = cluster.pid(2).unwrap();
    assert_ne!(restarted, pid);
    assert!(cluster.start(2).is_err(), "already running");

    cluster.restart(3).unwrap();
    let status = cluster.terminate(1).unwrap();
    assert!(!status.success());

    let pids: Vec<u32> = [2, 3].iter().map(|id| cluster.pid(*id).unwrap()).collect();
    drop(cluster);
    for pid in pids {
        assert_eq!(process_state(pid), None, "pid {pid} survived the drop");
    }
}

#[test]
fn a_broker_that_exits_at_start_is_reported_with_its_log() {
    let bin_dir = millrace_testkit::temp_dir();
    let binary = script(
        bin_dir.path(),
        "failing-millrace",
        "echo 'Error: controller.quorum.voters: node 2 is not a voter' >&2\nexit 2",
    );
    let mut cluster = ClusterProcesses::plan(&binary, 2, &[]);
    let error = format!("{:#}", cluster.start_all().unwrap_err());
    assert!(error.contains("broker 1 exited"), "{error}");
    assert!(error.contains("node 2 is not a voter"), "{error}");
    assert!(!cluster.is_running(1));
}

/// With `MILLRACE_BIN` set: one broker that is its own quorum, through the launcher, keeps an
/// acknowledged record across a kill -9 and restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_single_broker_survives_kill9_and_restart() {
    let Some(binary) = ClusterProcesses::binary_from_env() else {
        return;
    };
    let mut cluster = ClusterProcesses::plan(binary, 1, &[]);
    tokio::task::block_in_place(|| cluster.start_all()).unwrap();
    cluster
        .wait_for_brokers(Duration::from_secs(30))
        .await
        .unwrap();
    let client = millrace_client::ClientConfig::new(cluster.bootstrap());
    create_topic(&client, "launcher", 1).await;
    let placed = produce_all(
        ProducerConfig::new(client.clone()),
        vec![ProducerRecord::new("launcher", "kept")],
    )
    .await;
    assert_eq!(placed[0].offset, 0);
    tokio::task::block_in_place(|| cluster.restart(1)).unwrap();
    let placed = produce_all(
        ProducerConfig::new(client),
        vec![ProducerRecord::new("launcher", "after")],
    )
    .await;
    assert_eq!(placed[0].offset, 1, "the first record survived the crash");
}
