//! `millrace bench` against a 3-broker `cluster up`: the replication options of produce and
//! e2e, and `bench failover` (its own cluster). Kept short: the figures are the README's, made
//! by `scripts/bench-cluster`; these only check that the modes run and what they print.
#![allow(clippy::unwrap_used)]

mod common;

use common::cli::{run_at, wait_with_deadline, COMMAND_LIMIT};
use common::cluster::ClusterUp;

use std::process::Stdio;
use std::time::Duration;

fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn assert_figures(report: &serde_json::Value, records: u64) {
    assert_eq!(report["records"], records, "{report}");
    for key in ["records_per_sec", "p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
}

#[test]
fn produce_and_e2e_create_replicated_topics_and_refuse_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClusterUp::start(3, dir.path());
    let bench = |args: &[&str]| run_at(&cluster.bootstrap, args, "", COMMAND_LIMIT);

    let produced = bench(&[
        "bench",
        "produce",
        "--topic",
        "rf3",
        "--records",
        "20000",
        "--acks",
        "all",
        "--replication-factor",
        "3",
        "--min-insync-replicas",
        "2",
        "--json",
    ]);
    assert_figures(&json(&produced), 20_000);

    let e2e = bench(&[
        "bench",
        "e2e",
        "--topic",
        "e2e-rf3",
        "--records",
        "2000",
        "--throughput",
        "2000",
        "--replication-factor",
        "3",
        "--min-insync-replicas",
        "2",
        "--json",
    ]);
    assert_figures(&json(&e2e), 2_000);

    // The topic exists with RF=3: figures for another RF would be wrong, so it is refused.
    for (option, value, says) in [
        (
            "--replication-factor",
            "1",
            "exists with replication factor 3",
        ),
        (
            "--min-insync-replicas",
            "1",
            "exists with min.insync.replicas=2",
        ),
    ] {
        let refused = bench(&[
            "bench",
            "produce",
            "--topic",
            "rf3",
            "--records",
            "10",
            option,
            value,
        ]);
        assert!(!refused.status.success(), "{refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }

    let impossible = bench(&[
        "bench",
        "produce",
        "--topic",
        "never",
        "--records",
        "10",
        "--replication-factor",
        "2",
        "--min-insync-replicas",
        "3",
    ]);
    assert!(!impossible.status.success());
    let stderr = String::from_utf8_lossy(&impossible.stderr);
    assert!(
        stderr.contains("--min-insync-replicas 3 is more than --replication-factor 2"),
        "{stderr}"
    );
}

#[test]
fn failover_kills_a_leader_and_times_the_first_acknowledged_write_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let child = common::cli::millrace()
        .args([
            "bench",
            "failover",
            "--runs",
            "1",
            "--warmup-ms",
            "500",
            "--json",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let report = json(&wait_with_deadline(child, Duration::from_secs(180)));

    assert_eq!(report["kill"], "leader");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{report}");
    let run = &runs[0];
    assert_eq!(run["killed_was_controller"], false, "{report}");
    assert!(
        (1..=3).contains(&run["killed_broker"].as_i64().unwrap()),
        "{report}"
    );
    let failover = report["failover_ms_median"].as_f64().unwrap();
    assert!(failover > 0.0 && failover < 30_000.0, "{report}");
    assert!(run["acked"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["brokers_rss_mb_max"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["failed_writes"].is_u64(), "{report}");
    // The brokers were stopped with the benchmark; their logs stay in --data-dir.
    assert!(dir.path().join("broker-1.log").is_file());
}

#[test]
fn failover_refuses_bad_options_with_a_clear_error() {
    let output = common::cli::millrace()
        .args(["bench", "failover", "--min-insync-replicas", "4"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--min-insync-replicas"), "{stderr}");
}
