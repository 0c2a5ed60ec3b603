//! `millrace export`, `millrace sql` and `millrace connect` as a user runs them: the built
//! binary against an in-process broker on a free port.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use millrace_client::admin::NewTopic;
use millrace_client::{Admin, ClientConfig, ProducerConfig, ProducerRecord};
use millrace_testkit::{
    create_topic, free_port, produce_all, start_broker_in, TestBroker, FAST_GROUPS,
};

/// Runs the binary off the async runtime (the broker lives on it).
async fn millrace(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(common::MILLRACE_BIN)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_sql_counts_the_records_per_partition_column() {
    let TestBroker { broker, dir: _data } = TestBroker::start(&[]).await;
    let bootstrap = broker.local_addr().to_string();
    let client = ClientConfig::new(&bootstrap);
    create_topic(&client, "views", 2).await;
    let records = (0..60).map(|i| {
        let country = ["DE", "FR", "US"][i % 3];
        // 2026-11-25T10:00:00Z plus i minutes.
        let ts = 1_795_600_800_000_i64 + i as i64 * 60_000;
        let value = format!(r#"{{"id":{i},"ts":{ts},"country":"{country}"}}"#);
        ProducerRecord::new("views", value)
    });
    let records = records.collect();
    produce_all(ProducerConfig::new(client), records).await;
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().display().to_string();

    let export = millrace(
        [
            "export",
            "--bootstrap",
            &bootstrap,
            "--topic",
            "views",
            "--out",
            &out_dir,
            "--time-field",
            "ts",
            "--partition-by",
            "country",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    assert!(
        text(&export.stdout).starts_with("exported 60 records to "),
        "{}",
        text(&export.stdout)
    );

    let sql = millrace(
        [
            "sql",
            "SELECT country, hour, count(*) AS n FROM exports GROUP BY country, hour ORDER BY country, hour",
            "--parquet",
            &out_dir,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert!(sql.status.success(), "{}", text(&sql.stderr));
    let table = text(&sql.stdout);
    for line in [
        "| DE      | 10   | 20 |",
        "| FR      | 10   | 20 |",
        "| US      | 10   | 20 |",
    ] {
        assert!(table.contains(line), "{line} missing from\n{table}");
    }

    let bad = millrace(
        ["sql", "SELEKT * FROM exports", "--parquet", &out_dir]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("SELEKT"),
        "{}",
        text(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rejects_a_config_with_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connect.toml");
    std::fs::write(
        &file,
        "[[parquet_sink]]\nname = \"a\"\nbootstrap = \"127.0.0.1:1\"\ntopics = [\"t\"]\nout = \"x\"\ncodex = \"zstd\"\n",
    )
    .unwrap();
    let output = millrace(vec![
        "connect".into(),
        "--config".into(),
        file.display().to_string(),
    ])
    .await;
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("connect.toml") && stderr.contains("codex"),
        "{stderr}"
    );
}

/// One HTTP/1.1 POST on a fresh connection; returns the status line and the body.
fn post(port: u16, path: &str, body: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_runs_a_file_source_an_ingest_endpoint_and_a_sink_from_one_file() {
    use std::time::{Duration, Instant};

    let data = tempfile::tempdir().unwrap();
    let broker = start_broker_in(data.path(), &[FAST_GROUPS]).await;
    let bootstrap = broker.local_addr().to_string();
    let client = ClientConfig::new(&bootstrap);
    let admin = Admin::connect(client.clone()).await.unwrap();
    admin
        .create_topic(NewTopic::new("imports", 1))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, "user,amount\nana,1.5\nbo,2\ncy,3.25\n").unwrap();
    let out = dir.path().join("lake");
    let port = free_port();
    let config = dir.path().join("connect.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[file_source]]
name = "people"
bootstrap = "{bootstrap}"
topic = "imports"
path = "{csv}"
format = "csv"
poll_interval_ms = 50

[[http_source]]
name = "ingest"
bootstrap = "{bootstrap}"
listen = "127.0.0.1:{port}"
topics = ["imports"]

[[parquet_sink]]
name = "lake"
bootstrap = "{bootstrap}"
topics = ["imports"]
out = "{out}"
time_partitioning = "none"
[parquet_sink.rolling]
max_open_ms = 200
[parquet_sink.schema]
columns = [{{ name = "user", type = "string" }}, {{ name = "amount", type = "float64" }}]
"#,
            csv = csv.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let child = common::cli::millrace()
        .args(["connect", "--config", &config.display().to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The endpoint is up once its port accepts connections.
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ingest endpoint never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = tokio::task::spawn_blocking(move || {
        post(port, "/topics/imports", r#"{"user":"web","amount":4.5}"#)
    })
    .await
    .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    // The sink commits the group's offsets after its files: all four records are in files.
    loop {
        let committed = admin.list_group_offsets("millrace-parquet-lake").await;
        if committed.is_ok_and(|c| c.values().sum::<i64>() == 4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink did not commit 4 records"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::cli::send_signal(pid, "TERM");
    let output = tokio::task::spawn_blocking(move || {
        common::cli::wait_with_deadline(child, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));

    let sql = millrace(vec![
        "sql".into(),
        "SELECT user, amount FROM exports ORDER BY user".into(),
        "--parquet".into(),
        out.display().to_string(),
    ])
    .await;
    assert!(sql.status.success(), "{}", text(&sql.stderr));
    let table = text(&sql.stdout);
    for row in [
        "| ana  | 1.5    |",
        "| bo   | 2.0    |",
        "| cy   | 3.25   |",
        "| web  | 4.5    |",
    ] {
        assert!(table.contains(row), "{row} missing from\n{table}");
    }
    // The file source's position survived the stop.
    assert!(dir.path().join("people.csv.millrace-position").exists());
}
