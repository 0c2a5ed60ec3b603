//! The `millrace` binary itself: argument errors, the data-dir lock, clean shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use common::cli::{
    cli, cli_ok, fast_group_broker, json_lines, millrace, send_signal, sorted, wait_with_deadline,
    COMMAND_LIMIT,
};
use common::MILLRACE_BIN;
use millrace_testkit::{free_port, BrokerProcess};

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::Stdio;

#[test]
fn unknown_setting_exits_non_zero_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let output = millrace()
        .args([
            "broker",
            "--listen",
            "127.0.0.1:0",
            "-o",
            "num.partition=3",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown setting `num.partition`"),
        "{stderr}"
    );
}

#[test]
fn bad_value_and_bad_config_file_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let output = millrace()
        .args(["broker", "-o", "log.segment.bytes=tiny", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("log.segment.bytes"));

    let file = dir.path().join("broker.toml");
    std::fs::write(&file, "num.partitions = [unclosed").unwrap();
    let output = millrace()
        .args(["broker", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("broker.toml"));
}

#[test]
fn second_broker_on_the_same_data_dir_is_refused_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let first = BrokerProcess::start(MILLRACE_BIN, dir.path(), 0, &[]);

    let output = millrace()
        .args([
            "broker",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("locked by another running broker"));

    let (status, lines) = first.terminate();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
    assert!(
        lines.iter().any(|l| l.contains("broker stopped")),
        "{lines:?}"
    );
}

#[test]
fn config_file_settings_apply() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("broker.toml");
    std::fs::write(
        &file,
        format!(
            "listeners = \"PLAINTEXT://127.0.0.1:{port}\"\n[log]\ndirs = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = millrace()
        .args(["broker", "--config"])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("broker listening")))
        .expect("broker exited before listening")
        .unwrap();
    assert!(
        listening.contains(&format!("127.0.0.1:{port}")),
        "{listening}"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(dir.path().join("data/.lock").exists());
    child.kill().unwrap();
    child.wait().unwrap();
}

// `millrace consume` against a real broker process. Every child runs under a deadline: a hang
// fails the test instead of blocking it.

/// `k<i mod 4>:v<i>` for i in `range`: keyed lines for `produce -K :`.
fn keyed_lines(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("k{}:v{i}", i % 4)).collect()
}

/// Creates `topic` with `partitions` and produces `lines` into it with `-K :`.
fn topic_with(broker: &BrokerProcess, topic: &str, partitions: u32, lines: &[String]) {
    cli_ok(
        broker,
        &[
            "topics",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
        "",
    );
    if !lines.is_empty() {
        produce(broker, topic, lines);
    }
}

fn produce(broker: &BrokerProcess, topic: &str, lines: &[String]) {
    let mut input = lines.join("\n");
    input.push('\n');
    cli_ok(broker, &["produce", "-t", topic, "-K", ":"], &input);
}

#[test]
fn consume_from_beginning_prints_every_record_once_and_exits_at_end() {
    let (broker, _dir) = fast_group_broker();
    let lines = keyed_lines(0..30);
    topic_with(&broker, "clicks", 3, &lines);

    let kv = cli_ok(
        &broker,
        &[
            "consume",
            "-t",
            "clicks",
            "--from",
            "beginning",
            "-e",
            "--format",
            "kv",
        ],
        "",
    );
    assert_eq!(sorted(kv), sorted(lines.clone()));

    // The default start is the beginning; JSON shows where each record came from.
    let records = json_lines(&cli_ok(
        &broker,
        &["consume", "-t", "clicks", "-e", "--format", "json"],
        "",
    ));
    assert_eq!(records.len(), lines.len());
    let mut offsets: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    let mut values_by_key: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    for r in &records {
        assert_eq!(r["topic"], "clicks");
        assert!(r["timestamp"].as_i64().unwrap() > 0, "{r}");
        assert_eq!(r["headers"], serde_json::json!([]));
        let partition = r["partition"].as_i64().unwrap();
        offsets
            .entry(partition)
            .or_default()
            .push(r["offset"].as_i64().unwrap());
        let value = r["value"].as_str().unwrap();
        values_by_key
            .entry(r["key"].as_str().unwrap().to_string())
            .or_default()
            .push(value.trim_start_matches('v').parse().unwrap());
    }
    // Within a partition: offset order, none skipped or repeated.
    for (partition, seen) in &offsets {
        let expected: Vec<i64> = (0..seen.len() as i64).collect();
        assert_eq!(seen, &expected, "partition {partition}");
    }
    // One key lives in one partition, so its values come in the order produced.
    assert_eq!(values_by_key.len(), 4);
    for (key, values) in &values_by_key {
        let mut in_order = values.clone();
        in_order.sort_unstable();
        assert_eq!(values, &in_order, "key {key}");
    }
}

#[test]
fn consume_count_from_an_offset_of_one_partition() {
    let (broker, _dir) = fast_group_broker();
    topic_with(&broker, "letters", 3, &[]);
    cli_ok(
        &broker,
        &["produce", "-t", "letters", "--partition", "0"],
        "a\nb\nc\nd\ne\n",
    );

    // No -e: the count alone ends the run.
    let records = json_lines(&cli_ok(
        &broker,
        &[
            "consume",
            "-t",
            "letters",
            "--format",
            "json",
            "--count",
            "2",
            "--partition",
            "0",
            "--from",
            "1",
        ],
        "",
    ));
    let got: Vec<(i64, i64, &str)> = records
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
                r["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(0, 1, "b"), (0, 2, "c")]);
    assert!(records.iter().all(|r| r["key"].is_null()), "{records:?}");

    // The end, an offset past the end, and a time after every record: nothing to print.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000;
    for from in ["end".to_string(), "100".to_string(), format!("@{later}")] {
        let out = cli_ok(
            &broker,
            &["consume", "-t", "letters", "-p", "0", "--from", &from, "-e"],
            "",
        );
        assert!(out.is_empty(), "--from {from}: {out:?}");
    }
    // A time before every record: all of them.
    let out = cli_ok(
        &broker,
        &["consume", "-t", "letters", "-p", "0", "--from", "@0", "-e"],
        "",
    );
    assert_eq!(out, ["a", "b", "c", "d", "e"]);
}

#[test]
fn consume_in_a_group_resumes_from_committed_offsets() {
    let (broker, _dir) = fast_group_broker();
    let lines = keyed_lines(0..30);
    topic_with(&broker, "orders", 3, &lines);

    let first = cli_ok(
        &broker,
        &["consume", "-t", "orders", "--group", "g", "-e", "-K", ":"],
        "",
    );
    assert_eq!(sorted(first), sorted(lines));

    let more = keyed_lines(30..33);
    produce(&broker, "orders", &more);
    let second = cli_ok(
        &broker,
        &["consume", "-t", "orders", "--group", "g", "-e", "-K", ":"],
        "",
    );
    assert_eq!(sorted(second), sorted(more));

    let third = cli_ok(&broker, &["consume", "-t", "orders", "-g", "g", "-e"], "");
    assert!(third.is_empty(), "{third:?}");
}

#[test]
fn consume_in_a_group_commits_only_what_count_let_through() {
    let (broker, _dir) = fast_group_broker();
    let lines = keyed_lines(0..30);
    topic_with(&broker, "orders", 3, &lines);

    let first = cli_ok(
        &broker,
        &["consume", "-t", "orders", "-g", "g", "-c", "5", "-K", ":"],
        "",
    );
    assert_eq!(first.len(), 5);
    let rest = cli_ok(
        &broker,
        &["consume", "-t", "orders", "-g", "g", "-e", "-K", ":"],
        "",
    );
    assert_eq!(rest.len(), 25, "{rest:?}");
    let mut all = first;
    all.extend(rest);
    assert_eq!(sorted(all), sorted(lines));
}

#[test]
fn consume_errors_exit_non_zero() {
    let (broker, _dir) = fast_group_broker();
    topic_with(&broker, "known", 3, &keyed_lines(0..3));

    let output = cli(&broker, &["consume", "-t", "no-such-topic", "-e"], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-topic"), "{stderr}");
    let listed = cli_ok(&broker, &["topics", "list"], "");
    assert!(
        !listed.iter().any(|l| l.contains("no-such-topic")),
        "consume must not create the topic: {listed:?}"
    );

    let output = cli(
        &broker,
        &[
            "consume", "-t", "known", "-e", "--group", "g", "--from", "5",
        ],
        "",
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--from"));

    let output = cli(
        &broker,
        &["consume", "-t", "known", "-e", "--from", "nonsense"],
        "",
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nonsense"));

    let output = cli(
        &broker,
        &["consume", "-t", "known", "-e", "--partition", "9"],
        "",
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("partition 9"));
}

#[test]
fn consume_exits_quietly_when_stdout_is_closed() {
    use std::io::BufRead;
    let (broker, _dir) = fast_group_broker();
    // Far more than a pipe holds, so the consumer must meet the closed pipe.
    let lines: Vec<String> = (0..20_000).map(|i| format!("k:{i:0>100}")).collect();
    topic_with(&broker, "big", 1, &lines);

    let mut child = millrace()
        .args(["consume", "-t", "big", "-e", "-b", &broker.addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert_eq!(first.trim_end().len(), 100, "{first}");
    drop(reader);

    let output = wait_with_deadline(child, COMMAND_LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sigint_stops_a_tailing_group_consumer_which_commits_on_the_way_out() {
    let (broker, _dir) = fast_group_broker();
    let lines = keyed_lines(0..30);
    topic_with(&broker, "tail", 3, &lines);

    let mut child = millrace()
        .args(["consume", "-t", "tail", "-g", "tailers", "-K", ":"])
        .args(["-b", &broker.addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines arrive through a thread so that waiting for them has a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + COMMAND_LIMIT;
    let mut seen = Vec::new();
    while seen.len() < lines.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                send_signal(child.id(), "KILL");
                panic!("got {} of {} lines: {seen:?}", seen.len(), lines.len());
            }
        }
    }
    assert_eq!(sorted(seen), sorted(lines));

    send_signal(child.id(), "INT");
    let output = wait_with_deadline(child, COMMAND_LIMIT);
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    reader.join().unwrap();
    // Closing committed the positions: the group has nothing left to read.
    let after = cli_ok(
        &broker,
        &["consume", "-t", "tail", "-g", "tailers", "-e"],
        "",
    );
    assert!(after.is_empty(), "{after:?}");
}
