//! `millrace export`, `millrace sql` and `millrace connect` as a user runs them: the built
//! binary against an in-process broker on a free port.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use millrace_client::admin::NewTopic;
use millrace_client::{Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};

/// Runs the binary off the async runtime (the broker lives on it).
async fn millrace(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_millrace"))
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
    let (broker, _data) = common::start_broker().await;
    let bootstrap = broker.local_addr().to_string();
    let client = ClientConfig::new(&bootstrap);
    Admin::connect(client.clone())
        .await
        .unwrap()
        .create_topic(NewTopic::new("views", 2))
        .await
        .unwrap();
    let producer = Producer::connect(ProducerConfig::new(client))
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..60 {
        let country = ["DE", "FR", "US"][i % 3];
        // 2026-11-25T10:00:00Z plus i minutes.
        let ts = 1_795_600_800_000_i64 + i as i64 * 60_000;
        let value = format!(r#"{{"id":{i},"ts":{ts},"country":"{country}"}}"#);
        deliveries.push(
            producer
                .send(ProducerRecord::new("views", value))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
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
