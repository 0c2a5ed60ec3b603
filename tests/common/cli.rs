//! Running the built `millrace` binary from tests: every child under a deadline, so a hang
//! fails the test instead of blocking it.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use millrace_testkit::{BrokerProcess, FAST_GROUPS};

use super::MILLRACE_BIN;

/// The longest any one command may run.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The built binary.
pub fn millrace() -> Command {
    Command::new(MILLRACE_BIN)
}

/// A broker process with a group join that does not wait for more members.
pub fn fast_group_broker() -> (BrokerProcess, tempfile::TempDir) {
    let dir = millrace_testkit::temp_dir();
    let broker = BrokerProcess::start(MILLRACE_BIN, dir.path(), 0, &["-o", FAST_GROUPS]);
    (broker, dir)
}

/// Sends signal `name` (`INT`, `TERM`, `KILL`) to process `pid`.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits for `child` and collects its output; kills it and fails if it outlives `limit`.
pub fn wait_with_deadline(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            send_signal(pid, "KILL");
            panic!("millrace (pid {pid}) still running after {limit:?}");
        }
    }
}

/// Runs `millrace ARGS -b BOOTSTRAP` with `stdin` as input; kills it and fails after `limit`.
pub fn run_at(bootstrap: &str, args: &[&str], stdin: &str, limit: Duration) -> Output {
    let mut child = millrace()
        .args(args)
        .args(["-b", bootstrap])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_string();
    // From a thread: a child that does not read stdin must not block the test.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let output = wait_with_deadline(child, limit);
    writer.join().unwrap();
    output
}

/// Runs `millrace ARGS` against `broker`, under [`COMMAND_LIMIT`].
pub fn cli(broker: &BrokerProcess, args: &[&str], stdin: &str) -> Output {
    run_at(&broker.addr.to_string(), args, stdin, COMMAND_LIMIT)
}

/// Like [`cli`], but the command must succeed; returns its stdout lines.
pub fn cli_ok(broker: &BrokerProcess, args: &[&str], stdin: &str) -> Vec<String> {
    let output = cli(broker, args, stdin);
    assert!(
        output.status.success(),
        "millrace {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `lines`, sorted.
pub fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// Each line parsed as JSON.
pub fn json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}
