//! The client subcommands of the built `millrace` binary (`topics`, `produce`, `consume`,
//! `groups`, `bench`) against a real broker process: each one's happy path, and its failures
//! exiting non-zero with an `error: ...` line that names the problem. Every child runs under a
//! deadline: a hang fails the test (and the child is killed) instead of blocking it.
#![allow(clippy::unwrap_used)]

mod common;

use common::cli::{
    cli, cli_ok, fast_group_broker, json_lines, millrace, run_at, send_signal, sorted,
    wait_with_deadline, COMMAND_LIMIT,
};
use millrace_testkit::{free_port, BrokerProcess};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// The longest a command may take to give up on a bootstrap address nobody listens on.
const REFUSED_LIMIT: Duration = Duration::from_secs(20);

/// Asserts that `output` (of `millrace ARGS`) is a failure: a non-zero exit that is not a
/// panic, nothing on stdout, and an `error: ` line on stderr containing every one of `needles`.
/// Returns stderr.
fn assert_failed(args: &[&str], output: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let code = output.status.code();
    assert!(
        matches!(code, Some(c) if c != 0 && c != 101),
        "millrace {args:?} should fail cleanly, got {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "millrace {args:?}: {stderr}");
    assert!(
        stdout.trim().is_empty(),
        "millrace {args:?} printed results on failure: {stdout}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && needles.iter().all(|n| l.contains(n))),
        "millrace {args:?}: no `error: ` line with {needles:?} in:\n{stderr}"
    );
    stderr
}

/// Runs `millrace ARGS` against `broker`; it must fail with an `error: ` line naming `needles`.
fn cli_err(broker: &BrokerProcess, args: &[&str], stdin: &str, needles: &[&str]) -> String {
    let output = cli(broker, args, stdin);
    assert_failed(args, &output, needles)
}

/// What `topics describe` printed.
#[derive(Debug)]
struct TopicDescription {
    /// Partition id to (start, end) offsets.
    partitions: BTreeMap<i32, (i64, i64)>,
    /// The `KEY=VALUE` lines under `configs:`.
    configs: Vec<String>,
}

fn describe_topic(broker: &BrokerProcess, topic: &str, all_configs: bool) -> TopicDescription {
    let mut args = vec!["topics", "describe", topic];
    if all_configs {
        args.push("--all-configs");
    }
    let lines = cli_ok(broker, &args, "");
    assert!(
        lines[0].starts_with(&format!("topic {topic}  id ")),
        "{lines:?}"
    );
    // The first six columns are as before; leader epoch and offline replicas follow.
    assert_eq!(
        lines[1],
        "partition\tleader\treplicas\tisr\tstart\tend\tepoch\toffline"
    );
    let mut partitions = BTreeMap::new();
    let mut configs = Vec::new();
    let mut in_configs = false;
    for line in &lines[2..] {
        if line == "configs:" {
            in_configs = true;
        } else if in_configs {
            configs.push(line.strip_prefix("  ").unwrap().to_string());
        } else {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 8, "{line}");
            // One broker: it is the only replica and in sync; the epoch is a number.
            assert_eq!(fields[2], format!("[{}]", fields[1]), "{line}");
            assert_eq!(fields[3], fields[2], "{line}");
            assert!(fields[6].parse::<i32>().unwrap() >= 0, "{line}");
            assert_eq!(fields[7], "[]", "{line}");
            partitions.insert(
                fields[0].parse().unwrap(),
                (fields[4].parse().unwrap(), fields[5].parse().unwrap()),
            );
        }
    }
    TopicDescription {
        partitions,
        configs,
    }
}

/// What `groups describe` printed.
#[derive(Debug)]
struct GroupDescription {
    state: String,
    /// (topic, partition) to (committed, log end, lag, consumer).
    rows: BTreeMap<(String, i32), (i64, i64, i64, String)>,
    /// The lines under `members:`.
    members: Vec<String>,
}

fn describe_group(broker: &BrokerProcess, group: &str) -> GroupDescription {
    let lines = cli_ok(broker, &["groups", "describe", group], "");
    let state = lines[0]
        .strip_prefix(&format!("group {group}  state "))
        .unwrap_or_else(|| panic!("{lines:?}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        lines[1],
        "topic\tpartition\tcommitted\tlog-end\tlag\tconsumer"
    );
    let mut rows = BTreeMap::new();
    let mut members = Vec::new();
    let mut in_members = false;
    for line in &lines[2..] {
        if line == "members:" {
            in_members = true;
        } else if in_members {
            members.push(line.trim().to_string());
        } else {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 6, "{line}");
            rows.insert(
                (f[0].to_string(), f[1].parse().unwrap()),
                (
                    number_or_dash(f[2]),
                    number_or_dash(f[3]),
                    number_or_dash(f[4]),
                    f[5].to_string(),
                ),
            );
        }
    }
    GroupDescription {
        state,
        rows,
        members,
    }
}

/// A number, or -1 for the `-` printed where nothing is known yet.
fn number_or_dash(field: &str) -> i64 {
    if field == "-" {
        -1
    } else {
        field.parse().unwrap()
    }
}

/// The `(committed, log end, lag)` of each partition of `topic` in `group`.
fn group_offsets(broker: &BrokerProcess, group: &str, topic: &str) -> Vec<(i64, i64, i64)> {
    describe_group(broker, group)
        .rows
        .into_iter()
        .filter(|((t, _), _)| t == topic)
        .map(|(_, (committed, end, lag, _))| (committed, end, lag))
        .collect()
}

fn produce_to(broker: &BrokerProcess, topic: &str, partition: i32, values: &[&str]) {
    let mut input = values.join("\n");
    input.push('\n');
    cli_ok(
        broker,
        &["produce", "-t", topic, "-p", &partition.to_string()],
        &input,
    );
}

// ---- topics ----

#[test]
fn topics_create_list_describe_alter_delete() {
    let (broker, _dir) = fast_group_broker();
    let out = cli_ok(
        &broker,
        &[
            "topics",
            "create",
            "events",
            "--partitions",
            "3",
            "--config",
            "retention.ms=60000",
            "--config",
            "max.message.bytes=2000000",
        ],
        "",
    );
    assert_eq!(out, ["created topic events"]);
    cli_ok(&broker, &["topics", "create", "other", "-p", "1"], "");

    let listed = cli_ok(&broker, &["topics", "list"], "");
    assert_eq!(listed, ["events\t3 partitions", "other\t1 partitions"]);

    produce_to(&broker, "events", 1, &["a", "b"]);
    let described = describe_topic(&broker, "events", false);
    assert_eq!(
        described.partitions,
        BTreeMap::from([(0, (0, 0)), (1, (0, 2)), (2, (0, 0))])
    );
    // Without --all-configs: the overrides only.
    assert_eq!(
        sorted(described.configs),
        ["max.message.bytes=2000000", "retention.ms=60000"]
    );
    // With it: the defaults too, the overrides with their topic values.
    let all = describe_topic(&broker, "events", true).configs;
    assert!(all.contains(&"retention.ms=60000".to_string()), "{all:?}");
    assert!(
        all.contains(&"max.message.bytes=2000000".to_string()),
        "{all:?}"
    );
    assert!(
        all.iter().any(|c| c.starts_with("segment.bytes=")),
        "{all:?}"
    );
    assert!(all.len() > 2, "{all:?}");

    let out = cli_ok(
        &broker,
        &[
            "topics",
            "alter",
            "events",
            "--config",
            "retention.ms=120000",
            "--partitions",
            "5",
        ],
        "",
    );
    assert_eq!(
        out,
        ["altered settings of events", "events now has 5 partitions"]
    );
    let described = describe_topic(&broker, "events", false);
    assert_eq!(
        described.partitions.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(described.partitions[&1], (0, 2), "records kept");
    assert_eq!(
        sorted(described.configs),
        ["max.message.bytes=2000000", "retention.ms=120000"]
    );
    assert!(cli_ok(&broker, &["topics", "list"], "").contains(&"events\t5 partitions".into()));

    // --delete-config reverts to the default: no longer an override.
    cli_ok(
        &broker,
        &[
            "topics",
            "alter",
            "events",
            "--delete-config",
            "retention.ms",
        ],
        "",
    );
    assert_eq!(
        describe_topic(&broker, "events", false).configs,
        ["max.message.bytes=2000000"]
    );

    let out = cli_ok(&broker, &["topics", "delete", "events", "other"], "");
    assert_eq!(out, ["deleted topic events", "deleted topic other"]);
    let listed = cli_ok(&broker, &["topics", "list"], "");
    assert!(listed.is_empty(), "{listed:?}");
    cli_err(&broker, &["topics", "describe", "events"], "", &["events"]);
}

#[test]
fn topics_errors_exit_non_zero_naming_the_problem() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(&broker, &["topics", "create", "taken", "-p", "2"], "");

    cli_err(
        &broker,
        &["topics", "create", "taken"],
        "",
        &["taken", "already exists"],
    );
    cli_err(
        &broker,
        &["topics", "describe", "missing"],
        "",
        &["missing", "UnknownTopicOrPartition"],
    );
    cli_err(
        &broker,
        &["topics", "delete", "missing"],
        "",
        &["unknown topic `missing`"],
    );
    cli_err(
        &broker,
        &["topics", "create", "zero", "--partitions", "0"],
        "",
        &["zero", "partitions must be positive, got 0"],
    );
    cli_err(
        &broker,
        &[
            "topics",
            "create",
            "badcfg",
            "--config",
            "no.such.setting=1",
        ],
        "",
        &["unknown topic config `no.such.setting`"],
    );
    cli_err(
        &broker,
        &[
            "topics",
            "create",
            "badval",
            "--config",
            "retention.ms=soon",
        ],
        "",
        &["retention.ms", "soon"],
    );
    cli_err(
        &broker,
        &["topics", "create", "nokv", "--config", "retention.ms"],
        "",
        &["`retention.ms` is not KEY=VALUE"],
    );
    cli_err(
        &broker,
        &["topics", "create", "bad name"],
        "",
        &["topic name `bad name`"],
    );
    // None of the failed creates made a topic.
    assert_eq!(
        cli_ok(&broker, &["topics", "list"], ""),
        ["taken\t2 partitions"]
    );

    cli_err(
        &broker,
        &["topics", "alter", "taken"],
        "",
        &["nothing to change"],
    );
    cli_err(
        &broker,
        &["topics", "alter", "taken", "--partitions", "1"],
        "",
        &["taken", "has 2 partitions", "must be larger"],
    );
    cli_err(
        &broker,
        &["topics", "alter", "taken", "--config", "no.such.setting=1"],
        "",
        &["unknown topic config `no.such.setting`"],
    );
    cli_err(
        &broker,
        &["topics", "alter", "missing", "--partitions", "4"],
        "",
        &["unknown topic `missing`"],
    );
    // Still as it was.
    let described = describe_topic(&broker, "taken", false);
    assert_eq!(described.partitions.len(), 2);
    assert!(described.configs.is_empty(), "{:?}", described.configs);

    // Deleting a known and an unknown topic at once: the error names the unknown one, and
    // (as in Kafka, where DeleteTopics succeeds or fails per topic) the known one is gone.
    let args = ["topics", "delete", "taken", "missing"];
    let output = cli(&broker, &args, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("unknown topic `missing`")),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), "deleted topic taken", "{stdout}");
    assert!(cli_ok(&broker, &["topics", "list"], "").is_empty());
}

#[test]
fn unreachable_bootstrap_fails_promptly_for_every_command() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let commands: [&[&str]; 8] = [
        &["topics", "list"],
        &["topics", "create", "t", "-p", "1"],
        &["topics", "describe", "t"],
        &["produce", "-t", "t"],
        &["consume", "-t", "t", "-e"],
        &["groups", "list"],
        &["groups", "describe", "g"],
        &["bench", "produce", "--records", "10", "--json"],
    ];
    for args in commands {
        let started = Instant::now();
        // The deadline kills the command and fails the test if it hangs.
        let output = run_at(&bootstrap, args, "a record\n", REFUSED_LIMIT);
        assert_failed(args, &output, &["no broker", &bootstrap]);
        assert!(started.elapsed() < REFUSED_LIMIT);
    }
}

#[test]
fn silent_bootstrap_times_out_instead_of_hanging() {
    // Accepts connections (the kernel does, from the backlog) but never answers a request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bootstrap = silent.local_addr().unwrap().to_string();
    let args = ["topics", "list"];
    let output = run_at(&bootstrap, &args, "", COMMAND_LIMIT);
    assert_failed(&args, &output, &["timed out", &bootstrap]);
    drop(silent);
}

// ---- produce / consume ----

#[test]
fn produce_keys_values_and_headers_read_back_as_json() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(&broker, &["topics", "create", "kv", "-p", "3"], "");
    let output = cli(
        &broker,
        &[
            "produce",
            "-t",
            "kv",
            "-K",
            ":",
            "-H",
            "a=b",
            "-H",
            "source=cli",
        ],
        "k1:v1\nk2:v2:with:colons\nunkeyed\nk1:v3\n",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert!(stderr.contains("4 records delivered to kv"), "{stderr}");

    let records = json_lines(&cli_ok(
        &broker,
        &["consume", "-t", "kv", "-e", "--format", "json"],
        "",
    ));
    assert_eq!(records.len(), 4, "{records:?}");
    let mut got: Vec<(Option<String>, String)> = Vec::new();
    let mut by_key: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    for r in &records {
        assert_eq!(r["topic"], "kv");
        assert_eq!(
            r["headers"],
            serde_json::json!([["a", "b"], ["source", "cli"]]),
            "{r}"
        );
        let key = r["key"].as_str().map(str::to_string);
        let value = r["value"].as_str().unwrap().to_string();
        if let Some(k) = &key {
            by_key.entry(k.clone()).or_default().push((
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
                value.clone(),
            ));
        }
        got.push((key, value));
    }
    got.sort();
    assert_eq!(
        got,
        [
            (None, "unkeyed".to_string()),
            (Some("k1".to_string()), "v1".to_string()),
            (Some("k1".to_string()), "v3".to_string()),
            (Some("k2".to_string()), "v2:with:colons".to_string()),
        ]
    );
    // One key, one partition, in the order produced.
    let k1 = &by_key["k1"];
    assert_eq!(k1[0].0, k1[1].0, "{k1:?}");
    assert!(k1[0].1 < k1[1].1, "{k1:?}");
    assert_eq!((k1[0].2.as_str(), k1[1].2.as_str()), ("v1", "v3"));
}

#[test]
fn produce_errors_exit_non_zero_and_write_nothing() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(&broker, &["topics", "create", "two", "-p", "2"], "");

    cli_err(
        &broker,
        &["produce", "-t", "two", "-p", "99"],
        "x\n",
        &["partition 99 of two does not exist (it has 2)"],
    );
    cli_err(
        &broker,
        &["produce", "-t", "two", "--acks", "2"],
        "x\n",
        &["acks must be 0, 1 or all", "\"2\""],
    );
    cli_err(
        &broker,
        &["produce", "-t", "two", "--acks", "most"],
        "x\n",
        &["acks", "\"most\""],
    );
    cli_err(
        &broker,
        &["produce", "-t", "two", "-z", "brotli"],
        "x\n",
        &["unknown compression \"brotli\""],
    );
    cli_err(
        &broker,
        &["produce", "-t", "two", "-H", "novalue"],
        "x\n",
        &["--header", "`novalue` is not KEY=VALUE"],
    );
    let out = cli_ok(&broker, &["consume", "-t", "two", "-e"], "");
    assert!(out.is_empty(), "a failed produce wrote {out:?}");

    // Every codec the help names works, and the records read back.
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        cli_ok(
            &broker,
            &["produce", "-t", "two", "-p", "0", "-z", codec],
            &format!("{codec}\n"),
        );
    }
    let out = cli_ok(&broker, &["consume", "-t", "two", "-p", "0", "-e"], "");
    assert_eq!(out, ["none", "gzip", "snappy", "lz4", "zstd"]);
}

// ---- groups ----

#[test]
fn groups_list_describe_reset_offsets_and_delete() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(&broker, &["topics", "create", "orders", "-p", "2"], "");
    produce_to(&broker, "orders", 0, &["a0", "a1", "a2"]);
    produce_to(&broker, "orders", 1, &["b0", "b1"]);

    let read = cli_ok(
        &broker,
        &["consume", "-t", "orders", "--group", "G", "-e"],
        "",
    );
    assert_eq!(sorted(read), ["a0", "a1", "a2", "b0", "b1"]);

    let listed = cli_ok(&broker, &["groups", "list"], "");
    assert_eq!(listed, ["G\tEmpty\tconsumer"]);
    let described = describe_group(&broker, "G");
    assert_eq!(described.state, "Empty");
    assert!(described.members.is_empty(), "{described:?}");
    assert_eq!(
        group_offsets(&broker, "G", "orders"),
        [(3, 3, 0), (2, 2, 0)]
    );

    // New records show as lag; the committed offsets stay.
    produce_to(&broker, "orders", 1, &["b2", "b3"]);
    let described = describe_group(&broker, "G");
    assert_eq!(
        described.rows[&("orders".to_string(), 1)],
        (2, 4, 2, "-".to_string())
    );
    assert_eq!(
        group_offsets(&broker, "G", "orders"),
        [(3, 3, 0), (2, 4, 2)]
    );

    // Without --execute: the plan, and nothing changes.
    let plan = cli_ok(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "G",
            "-t",
            "orders",
            "--to-earliest",
        ],
        "",
    );
    assert_eq!(
        plan,
        [
            "topic\tpartition\tcurrent\tnew",
            "orders\t0\t3\t0",
            "orders\t1\t2\t0",
            "(dry run: add --execute to apply)",
        ]
    );
    assert_eq!(
        group_offsets(&broker, "G", "orders"),
        [(3, 3, 0), (2, 4, 2)]
    );

    let applied = cli_ok(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "G",
            "-t",
            "orders",
            "--to-earliest",
            "--execute",
        ],
        "",
    );
    assert_eq!(applied.last().unwrap(), "offsets reset");
    assert_eq!(
        group_offsets(&broker, "G", "orders"),
        [(0, 3, 3), (0, 4, 4)]
    );
    let again = cli_ok(&broker, &["consume", "-t", "orders", "-g", "G", "-e"], "");
    assert_eq!(sorted(again), ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]);
    assert_eq!(
        group_offsets(&broker, "G", "orders"),
        [(3, 3, 0), (4, 4, 0)]
    );

    // A negative shift moves back from the committed offsets.
    cli_ok(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "G",
            "-t",
            "orders",
            "--shift-by",
            "-1",
            "--execute",
        ],
        "",
    );
    assert_eq!(
        group_offsets(&broker, "G", "orders"),
        [(2, 3, 1), (3, 4, 1)]
    );
    let last = cli_ok(&broker, &["consume", "-t", "orders", "-g", "G", "-e"], "");
    assert_eq!(sorted(last), ["a2", "b3"]);

    let out = cli_ok(&broker, &["groups", "delete", "G"], "");
    assert_eq!(out, ["deleted group G"]);
    let listed = cli_ok(&broker, &["groups", "list"], "");
    assert!(listed.is_empty(), "{listed:?}");
    cli_err(
        &broker,
        &["groups", "describe", "G"],
        "",
        &["group `G` does not exist"],
    );
    // Deleted means forgotten: the group starts again from the beginning.
    let fresh = cli_ok(&broker, &["consume", "-t", "orders", "-g", "G", "-e"], "");
    assert_eq!(fresh.len(), 7, "{fresh:?}");
}

#[test]
fn groups_errors_exit_non_zero_naming_the_problem() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(&broker, &["topics", "create", "orders", "-p", "1"], "");
    produce_to(&broker, "orders", 0, &["x", "y"]);
    cli_ok(&broker, &["consume", "-t", "orders", "-g", "G", "-e"], "");

    cli_err(
        &broker,
        &["groups", "describe", "nobody"],
        "",
        &["group `nobody` does not exist"],
    );
    cli_err(
        &broker,
        &["groups", "delete", "nobody"],
        "",
        &["nobody", "GroupIdNotFound"],
    );
    cli_err(
        &broker,
        &["groups", "reset-offsets", "G", "-t", "orders"],
        "",
        &["give one of --to-earliest, --to-latest, --to-offset, --to-time, --shift-by"],
    );
    cli_err(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "G",
            "-t",
            "orders",
            "--to-earliest",
            "--to-latest",
        ],
        "",
        &["--to-earliest", "--to-latest"],
    );
    cli_err(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "G",
            "-t",
            "missing",
            "--to-earliest",
            "--execute",
        ],
        "",
        &["missing", "UnknownTopicOrPartition"],
    );
    // None of that touched the group.
    assert_eq!(group_offsets(&broker, "G", "orders"), [(2, 2, 0)]);
}

#[test]
fn groups_describe_shows_an_active_member_and_changes_are_refused_while_it_runs() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(&broker, &["topics", "create", "live", "-p", "1"], "");
    produce_to(&broker, "live", 0, &["r0", "r1", "r2"]);

    let mut child = millrace()
        .args(["consume", "-t", "live", "-g", "active"])
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
    let deadline = Instant::now() + COMMAND_LIMIT;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                send_signal(child.id(), "KILL");
                panic!("the member printed only {seen:?}");
            }
        }
    }
    assert_eq!(seen, ["r0", "r1", "r2"]);

    // The member has printed its records, so it has joined and owns the partition.
    let described = describe_group(&broker, "active");
    assert_eq!(described.state, "Stable", "{described:?}");
    assert_eq!(described.members.len(), 1, "{described:?}");
    assert!(
        described.members[0].contains("millrace-cli") && described.members[0].contains("live-0"),
        "{described:?}"
    );
    // An assigned partition shows before the member's first commit (committed `-`).
    let (_, log_end, _, owner) = &described.rows[&("live".to_string(), 0)];
    assert_eq!(owner, "millrace-cli", "{described:?}");
    assert_eq!(*log_end, 3, "{described:?}");
    let listed = cli_ok(&broker, &["groups", "list"], "");
    assert_eq!(listed, ["active\tStable\tconsumer"]);

    let reset = [
        "groups",
        "reset-offsets",
        "active",
        "-t",
        "live",
        "--to-earliest",
        "--execute",
    ];
    let output = cli(&broker, &reset, "");
    // The plan is printed before the refusal; the error says why.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "reset of an active group: {stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("still active")),
        "{stderr}"
    );
    cli_err(&broker, &["groups", "delete", "active"], "", &["active"]);

    send_signal(child.id(), "INT");
    let output = wait_with_deadline(child, COMMAND_LIMIT);
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    reader.join().unwrap();
    // The refused reset changed nothing: the member's commit on exit stands.
    assert_eq!(group_offsets(&broker, "active", "live"), [(3, 3, 0)]);
}

// ---- bench ----

/// Parses a `--json` benchmark report: one JSON object on stdout with positive figures.
fn bench_report(
    lines: &[String],
    extra_keys: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    assert_eq!(lines.len(), 1, "one JSON object expected: {lines:?}");
    let value: serde_json::Value =
        serde_json::from_str(&lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]));
    let object = value.as_object().unwrap().clone();
    let keys = [
        "records_per_sec",
        "mb_per_sec",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
    ];
    for key in keys.iter().chain(extra_keys) {
        let figure = object
            .get(*key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("no number `{key}` in {object:?}"));
        assert!(figure > 0.0, "`{key}` is {figure} in {object:?}");
    }
    let f = |key: &str| object[key].as_f64().unwrap();
    assert!(
        f("p50_ms") <= f("p99_ms") && f("p99_ms") <= f("p999_ms") && f("p999_ms") <= f("max_ms"),
        "percentiles out of order: {object:?}"
    );
    object
}

#[test]
fn bench_produce_then_consume_report_json() {
    let (broker, _dir) = fast_group_broker();
    let produced = bench_report(
        &cli_ok(
            &broker,
            &[
                "bench",
                "produce",
                "-t",
                "perf",
                "--records",
                "20000",
                "--json",
            ],
            "",
        ),
        &["overhead_bytes_per_record"],
    );
    assert_eq!(produced["records"], 20000);
    // The topic was created with the default 6 partitions and holds exactly those records.
    let described = describe_topic(&broker, "perf", false);
    assert_eq!(described.partitions.len(), 6);
    let stored: i64 = described
        .partitions
        .values()
        .map(|(start, end)| end - start)
        .sum();
    assert_eq!(stored, 20000);

    let consumed = bench_report(
        &cli_ok(
            &broker,
            &[
                "bench",
                "consume",
                "-t",
                "perf",
                "--records",
                "20000",
                "--json",
            ],
            "",
        ),
        &[],
    );
    assert_eq!(consumed["records"], 20000);
    assert!(
        !consumed.contains_key("overhead_bytes_per_record"),
        "{consumed:?}"
    );
}

#[test]
fn bench_e2e_reports_json_at_the_asked_rate() {
    let (broker, _dir) = fast_group_broker();
    let report = bench_report(
        &cli_ok(
            &broker,
            &[
                "bench",
                "e2e",
                "-t",
                "e2e",
                "--records",
                "2000",
                "--throughput",
                "2000",
                "--json",
            ],
            "",
        ),
        &[],
    );
    assert_eq!(report["records"], 2000);
    // Paced: the last of 2000 records at 2000/s goes out about a second after the first.
    let seconds = report["seconds"].as_f64().unwrap();
    assert!(seconds >= 0.9, "{report:?}");
    let rate = report["records_per_sec"].as_f64().unwrap();
    assert!(rate <= 2200.0, "faster than --throughput: {report:?}");
}

#[test]
fn bench_errors_exit_non_zero_naming_the_problem() {
    let (broker, _dir) = fast_group_broker();
    cli_ok(
        &broker,
        &[
            "bench",
            "produce",
            "-t",
            "small",
            "--records",
            "100",
            "--json",
        ],
        "",
    );

    cli_err(
        &broker,
        &[
            "bench",
            "consume",
            "-t",
            "small",
            "--records",
            "101",
            "--json",
        ],
        "",
        &["`small` holds 100 records, fewer than --records 101"],
    );
    cli_err(
        &broker,
        &["bench", "consume", "-t", "absent", "--records", "10"],
        "",
        &["absent"],
    );
    for kind in ["produce", "consume", "e2e"] {
        cli_err(
            &broker,
            &["bench", kind, "-t", "small", "--records", "0", "--json"],
            "",
            &["--records must be positive"],
        );
    }
    cli_err(
        &broker,
        &[
            "bench",
            "produce",
            "-t",
            "small",
            "--records",
            "10",
            "--acks",
            "2",
        ],
        "",
        &["acks must be 0, 1 or all"],
    );
    cli_err(
        &broker,
        &[
            "bench",
            "e2e",
            "-t",
            "small",
            "--records",
            "10",
            "--record-size",
            "4",
        ],
        "",
        &["--record-size must be at least 8 bytes"],
    );
    // The failed runs wrote nothing.
    let stored: i64 = describe_topic(&broker, "small", false)
        .partitions
        .values()
        .map(|(start, end)| end - start)
        .sum();
    assert_eq!(stored, 100);
}

/// How many records a read_committed consumer reads from `topic` (2 partitions), waiting up
/// to 30 s for `expected`.
fn read_committed_count(broker: &BrokerProcess, topic: &str, expected: usize) -> usize {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use millrace_client::consumer::{Consumer, ConsumerConfig};
        use millrace_client::{ClientConfig, IsolationLevel, TopicPartition};
        let config = ConsumerConfig::builder(ClientConfig::new(broker.addr.to_string()))
            .isolation_level(IsolationLevel::ReadCommitted)
            .build()
            .unwrap();
        let mut consumer = Consumer::connect(config).await.unwrap();
        let partitions = [TopicPartition::new(topic, 0), TopicPartition::new(topic, 1)];
        consumer.assign(&partitions).unwrap();
        consumer.seek_to_beginning(&partitions).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut read = 0;
        while read < expected && Instant::now() < deadline {
            read += consumer
                .poll(Duration::from_millis(500))
                .await
                .unwrap()
                .len();
        }
        consumer.close().await.unwrap();
        read
    })
}

#[test]
fn bench_produce_in_transactions_commits_every_record() {
    let (broker, _dir) = fast_group_broker();
    // Commits awaited, then each commit overlapping the next transaction's sends.
    for (topic, extra) in [
        ("txn-bench", None),
        ("txn-bench-overlap", Some("--overlap-commits")),
    ] {
        let mut args = vec![
            "bench",
            "produce",
            "-t",
            topic,
            "--partitions",
            "2",
            "--records",
            "2500",
            "--transactional",
            "1000",
            "--json",
        ];
        args.extend(extra);
        let report = cli_ok(&broker, &args, "");
        let report: serde_json::Value = serde_json::from_str(&report.join("\n")).unwrap();
        assert_eq!(report["records"], 2500, "{report}");
        // Three transactions (1,000 + 1,000 + 500), all committed: a read_committed consumer
        // reads every record, and nothing is left open to hold the last stable offset back.
        assert_eq!(
            read_committed_count(&broker, topic, 2500),
            2500,
            "{extra:?}"
        );
    }
    let refused = cli(
        &broker,
        &["bench", "produce", "--transactional", "10", "--acks", "1"],
        "",
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--transactional needs --acks all"));
}

#[test]
fn transactions_list_describe_and_describe_producers_show_an_open_transaction() {
    use millrace_client::admin::NewTopic;
    use millrace_client::{Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
    let (broker, _dir) = fast_group_broker();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A transaction left open after two records: what holds a last stable offset back.
    let producer = runtime.block_on(async {
        let client = ClientConfig::new(broker.addr.to_string());
        let admin = Admin::connect(client.clone()).await.unwrap();
        admin
            .create_topic(NewTopic::new("txn-open", 1))
            .await
            .unwrap();
        let config = ProducerConfig::builder(client)
            .transactional_id("open-txn")
            .build()
            .unwrap();
        let producer = Producer::connect(config).await.unwrap();
        producer.begin_transaction().unwrap();
        for value in ["a", "b"] {
            let _delivery = producer
                .send(ProducerRecord::new("txn-open", value.as_bytes().to_vec()).partition(0))
                .await
                .unwrap();
        }
        producer.flush().await;
        producer
    });

    let listed = cli_ok(&broker, &["transactions", "list"], "");
    let row = listed
        .iter()
        .find(|l| l.starts_with("open-txn\t"))
        .unwrap_or_else(|| panic!("open-txn not listed: {listed:?}"));
    let fields: Vec<&str> = row.split('\t').collect();
    assert_eq!(fields[1], "1", "coordinator: {row}");
    assert_eq!(fields[3], "Ongoing", "{row}");
    let producer_id = fields[2].to_string();
    let only_complete = cli_ok(
        &broker,
        &["transactions", "list", "--state", "CompleteCommit"],
        "",
    );
    assert!(
        !only_complete.iter().any(|l| l.starts_with("open-txn")),
        "{only_complete:?}"
    );

    let described = cli_ok(
        &broker,
        &["transactions", "describe", "--transactional-id", "open-txn"],
        "",
    )
    .join("\n");
    assert!(
        described.contains("State:             Ongoing"),
        "{described}"
    );
    assert!(
        described.contains("Partitions:        txn-open-0"),
        "{described}"
    );
    assert!(
        described.contains(&format!("ProducerId:        {producer_id}")),
        "{described}"
    );

    let producers = cli_ok(
        &broker,
        &[
            "transactions",
            "describe-producers",
            "-t",
            "txn-open",
            "-p",
            "0",
        ],
        "",
    );
    let row = producers
        .iter()
        .find(|l| l.starts_with(&format!("{producer_id}\t")))
        .unwrap_or_else(|| panic!("producer {producer_id} not shown: {producers:?}"));
    assert!(
        row.ends_with("\t0"),
        "the open transaction starts at offset 0: {row}"
    );

    // Committed: nothing open any more.
    runtime.block_on(async { producer.commit_transaction().await.unwrap() });
    let described = cli_ok(
        &broker,
        &["transactions", "describe", "--transactional-id", "open-txn"],
        "",
    )
    .join("\n");
    assert!(
        described.contains("State:             CompleteCommit"),
        "{described}"
    );
    let producers = cli_ok(
        &broker,
        &[
            "transactions",
            "describe-producers",
            "-t",
            "txn-open",
            "-p",
            "0",
        ],
        "",
    );
    assert!(
        producers
            .iter()
            .any(|l| l.starts_with(&format!("{producer_id}\t")) && l.ends_with("\tNone")),
        "{producers:?}"
    );

    // An id nobody used: a clear error, not an empty answer.
    let args = ["transactions", "describe", "--transactional-id", "nobody"];
    let output = cli(&broker, &args, "");
    assert_failed(&args, &output, &["nobody"]);
}

#[test]
fn quotas_alter_and_describe_as_kafka_configs_does() {
    let (broker, _dir) = fast_group_broker();
    let out = cli_ok(
        &broker,
        &[
            "quotas",
            "alter",
            "--client-id",
            "slow",
            "--add-config",
            "producer_byte_rate=1024,consumer_byte_rate=2048",
        ],
        "",
    );
    assert_eq!(out, vec!["quotas changed"]);
    cli_ok(
        &broker,
        &[
            "quotas",
            "alter",
            "--user-default",
            "--add-config",
            "request_percentage=50",
        ],
        "",
    );
    let described = cli_ok(&broker, &["quotas", "describe", "--client-id", "slow"], "");
    assert_eq!(
        described,
        vec!["client-id=slow\tconsumer_byte_rate=2048,producer_byte_rate=1024"]
    );
    let all = sorted(cli_ok(&broker, &["quotas", "describe"], ""));
    assert_eq!(
        all,
        vec![
            "client-id=slow\tconsumer_byte_rate=2048,producer_byte_rate=1024",
            "user=<default>\trequest_percentage=50",
        ]
    );
    // Refused: an unknown quota (by the controller), no entity, a value that is no number.
    let args = [
        "quotas",
        "alter",
        "--client-id",
        "x",
        "--add-config",
        "bytes_per_fortnight=1",
    ];
    assert_failed(&args, &cli(&broker, &args, ""), &["bytes_per_fortnight"]);
    let args = ["quotas", "alter", "--add-config", "producer_byte_rate=1"];
    assert_failed(&args, &cli(&broker, &args, ""), &["name an entity"]);
    let args = [
        "quotas",
        "alter",
        "--client-id",
        "x",
        "--add-config",
        "producer_byte_rate=lots",
    ];
    assert_failed(&args, &cli(&broker, &args, ""), &["lots"]);
    cli_ok(
        &broker,
        &[
            "quotas",
            "alter",
            "--client-id",
            "slow",
            "--delete-config",
            "producer_byte_rate,consumer_byte_rate",
        ],
        "",
    );
    let described = cli_ok(&broker, &["quotas", "describe", "--client-id", "slow"], "");
    assert!(described.is_empty(), "{described:?}");
}
