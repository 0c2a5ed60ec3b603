//! `millrace cluster status` against a broker process, and `millrace cluster up` starting
//! broker processes of the same binary.
#![allow(clippy::unwrap_used)]

mod common;

use common::cli::{cli, cli_ok, fast_group_broker, millrace, send_signal, wait_with_deadline};
use common::cluster::{cluster_up, free_base_port};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

#[test]
fn cluster_status_shows_the_broker_the_controller_and_no_lagging_partitions() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(&broker, &["topics", "create", "events", "-p", "3"], "");

    let lines = cli_ok(&broker, &["cluster", "status"], "");

    let port = broker.addr.port();
    assert!(lines[0].starts_with("cluster "), "{lines:?}");
    assert_eq!(lines[2], "broker\taddress\track\tstate");
    let broker_line = lines
        .iter()
        .find(|l| l.contains(&format!("127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("no line for the broker: {lines:?}"));
    assert!(broker_line.ends_with("\talive (controller)"), "{lines:?}");
    let id = broker_line.split('\t').next().unwrap();
    assert_eq!(lines[1], format!("controller {id}"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("under-replicated partitions: none (of ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("offline partitions: none")),
        "{lines:?}"
    );
}

#[test]
fn cluster_status_json_has_brokers_controller_and_partition_lists() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(&broker, &["topics", "create", "events", "-p", "2"], "");

    let output = cli(&broker, &["cluster", "status", "--json"], "");

    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let brokers = report["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["state"], "alive");
    assert_eq!(brokers[0]["port"], i64::from(broker.addr.port()));
    assert_eq!(brokers[0]["controller"], true);
    assert_eq!(report["controller_id"], brokers[0]["id"]);
    assert_eq!(report["under_replicated"], serde_json::json!([]));
    assert_eq!(report["offline"], serde_json::json!([]));
    assert!(report["partitions"].as_u64().unwrap() >= 2, "{report}");
}

#[test]
fn cluster_up_with_one_broker_serves_clients_and_stops_on_sigterm() {
    one_broker_serves_clients_and_stops_on("TERM");
}

#[test]
fn cluster_up_stops_its_brokers_on_ctrl_c() {
    one_broker_serves_clients_and_stops_on("INT");
}

fn one_broker_serves_clients_and_stops_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port();
    let data = dir.path().join("cluster");
    let (child, bootstrap) = cluster_up(&[
        "--brokers",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
    ]);

    assert_eq!(bootstrap, format!("127.0.0.1:{base}"));
    let created = common::cli::run_at(
        &bootstrap,
        &["topics", "create", "up-topic", "-p", "2"],
        "",
        common::cli::COMMAND_LIMIT,
    );
    assert!(created.status.success(), "{created:?}");
    assert!(data.join("broker-1.log").is_file());
    assert!(data.join("broker-1").is_dir());

    send_signal(child.id(), signal);
    let output = wait_with_deadline(child, Duration::from_secs(30));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        TcpStream::connect(("127.0.0.1", base)).is_err(),
        "the broker stopped with cluster up"
    );
}

#[test]
fn cluster_up_with_four_brokers_reports_three_voters_and_a_broker_only_node_alive() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port();
    let (child, bootstrap) = cluster_up(&[
        "--brokers",
        "4",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--base-port",
        &base.to_string(),
    ]);
    assert_eq!(
        bootstrap,
        format!(
            "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            base + 1,
            base + 2,
            base + 3
        )
    );
    // The fourth is a broker only: a Kafka client bootstrapped from it alone sees them all.
    let fourth = format!("127.0.0.1:{}", base + 3);
    let created = common::cli::run_at(
        &fourth,
        &["topics", "create", "spread", "-p", "4", "-r", "3"],
        "",
        common::cli::COMMAND_LIMIT,
    );
    assert!(created.status.success(), "{created:?}");

    let status = common::cli::run_at(
        &bootstrap,
        &["cluster", "status", "--json"],
        "",
        common::cli::COMMAND_LIMIT,
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let states: Vec<&str> = report["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["alive", "alive", "alive", "alive"]);
    let controller = report["controller_id"].as_i64().unwrap();
    assert!((1..=3).contains(&controller), "a voter controls: {report}");
    // Every broker, the broker-only one too, serves its health and metrics endpoint.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for id in 0..4u16 {
        let endpoint = format!("127.0.0.1:{}", base + 200 + id);
        let ready = runtime.block_on(millrace_testkit::http::get(&endpoint, "/health/ready", &[]));
        assert_eq!(ready.status, 200, "broker {}: {}", id + 1, ready.text());
        let metrics = runtime.block_on(millrace_testkit::http::get(&endpoint, "/metrics", &[]));
        assert!(
            metrics
                .text()
                .contains("kafka_server_replicamanager_partitioncount"),
            "broker {}: {}",
            id + 1,
            metrics.text()
        );
    }

    send_signal(child.id(), "TERM");
    let output = wait_with_deadline(child, Duration::from_secs(30));
    assert!(output.status.success());
}

#[test]
fn cluster_up_refuses_a_taken_port_and_names_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();

    let output = wait_with_deadline(
        millrace()
            .args(["cluster", "up", "--brokers", "1", "--base-port"])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn cluster_up_fails_naming_the_broker_that_died_and_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    // Another broker holds broker 1's data directory: broker 1 cannot start.
    let holder = millrace_testkit::BrokerProcess::start(
        common::MILLRACE_BIN,
        &data.join("broker-1"),
        0,
        &[],
    );
    let base = free_base_port();

    let output = wait_with_deadline(
        millrace()
            .args(["cluster", "up", "--brokers", "1", "--base-port"])
            .arg(base.to_string())
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );

    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "no bootstrap list for a dead cluster"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broker 1 exited unexpectedly") && stderr.contains("broker-1.log"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(data.join("broker-1.log")).unwrap();
    assert!(log.contains("locked by another running broker"), "{log}");
    holder.kill9();
}
