//! A `millrace cluster up` of the built binary for tests.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::Duration;

use millrace_testkit::free_port;

use super::cli::millrace;

/// A base port P with the ports of three brokers free now: P..P+2 for clients and
/// P+100..P+102 for their controllers.
pub fn free_base_port() -> u16 {
    loop {
        let port = free_port();
        if port < 65_000
            && (0..3).all(|i| {
                TcpListener::bind(("127.0.0.1", port + i)).is_ok()
                    && TcpListener::bind(("127.0.0.1", port + 100 + i)).is_ok()
                    // The metrics endpoints (`metrics.listener`).
                    && TcpListener::bind(("127.0.0.1", port + 200 + i)).is_ok()
            })
        {
            return port;
        }
    }
}

/// Starts `millrace cluster up ARGS` and waits (up to 60 s) for the bootstrap line.
pub fn cluster_up(args: &[&str]) -> (Child, String) {
    let mut child = millrace()
        .args(["cluster", "up"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if !line.is_empty() => (child, line.trim().to_string()),
        other => {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "no bootstrap line ({other:?}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// A running `cluster up`, stopped with SIGTERM when dropped (also when a test fails), so
/// that no broker outlives the test.
pub struct ClusterUp {
    child: Option<Child>,
    /// The bootstrap list it printed.
    pub bootstrap: String,
}

impl ClusterUp {
    /// `cluster up --brokers N` on free ports in `dir`.
    pub fn start(brokers: u16, dir: &std::path::Path) -> ClusterUp {
        let base = free_base_port();
        let (child, bootstrap) = cluster_up(&[
            "--brokers",
            &brokers.to_string(),
            "--data-dir",
            dir.to_str().unwrap(),
            "--base-port",
            &base.to_string(),
        ]);
        ClusterUp {
            child: Some(child),
            bootstrap,
        }
    }
}

impl Drop for ClusterUp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // No assertion here: this may run while a failing test unwinds. `cluster up`
            // bounds its own shutdown (SIGKILL to brokers still there after 10 s).
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}
