//! A broker as a separate process: the real `millrace` binary, for crash and signal tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `millrace broker` process; killed with SIGKILL when dropped.
pub struct BrokerProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its remaining stderr lines, collected until it exits.
    pub stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl BrokerProcess {
    /// Starts `binary broker` (the `millrace` binary: `env!("CARGO_BIN_EXE_millrace")` in
    /// the root package's tests) on `port` (0 picks one) over `dir` with extra arguments, and
    /// waits for its "broker listening" log line.
    pub fn start(binary: impl AsRef<Path>, dir: &Path, port: u16, extra: &[&str]) -> Self {
        let mut child = Command::new(binary.as_ref())
            .args([
                "broker",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("the broker binary starts");
        let stderr = child.stderr.take().expect("the broker's stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let line = lines
            .find(|l| l.as_ref().is_ok_and(|l| l.contains("broker listening")))
            .expect("broker exited before listening")
            .expect("a log line");
        let addr = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("local_addr="))
            .expect("the listening line names local_addr")
            .parse()
            .expect("local_addr is a socket address");
        let stderr = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        BrokerProcess {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// SIGKILL: a crash, with no chance to flush.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL is sent");
        self.child.wait().expect("the broker exits");
    }

    /// SIGTERM, then the exit status and the log lines written until exit.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs")
            .success());
        let status = self.child.wait().expect("the broker exits");
        let lines = self
            .stderr
            .take()
            .map(|h| h.join().expect("the stderr reader finishes"))
            .unwrap_or_default();
        (status, lines)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
