//! The `millrace` binary itself: argument errors, the data-dir lock, clean shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use common::BrokerProcess;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn millrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let first = BrokerProcess::start(dir.path(), 0, &[]);

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
