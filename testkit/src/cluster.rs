//! A cluster of `millrace broker` processes on one machine, each with its own data dir and
//! ports, configured with Kafka's setting names through `-o KEY=VALUE`; every broker is also a
//! controller (a voter of the metadata quorum), as in Kafka's combined mode.
//!
//! Brokers are numbered by `node.id` from 1. Per broker the launcher can kill -9, pause
//! (SIGSTOP) and resume (SIGCONT), stop cleanly (SIGTERM) and restart on the same dir and ports.
//! Brokers can also run in the hosts of a [`crate::netns::NetnsLab`] (broker `i` in host
//! `i - 1`, on the host's address), for network faults.
//!
//! ```no_run
//! # fn example() -> anyhow::Result<()> {
//! use millrace_testkit::cluster::ClusterProcesses;
//!
//! let binary = ClusterProcesses::binary_from_env().expect("MILLRACE_BIN");
//! let mut cluster = ClusterProcesses::plan(binary, 3, &["min.insync.replicas=2"]);
//! cluster.start_all()?;
//! let bootstrap = cluster.bootstrap();
//! cluster.kill9(2)?;
//! cluster.start(2)?;
//! # Ok(())
//! # }
//! ```

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The environment variable naming the `millrace` binary for cluster tests.
pub const MILLRACE_BIN: &str = "MILLRACE_BIN";

/// How long a broker may take to log that it listens.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Stderr lines kept per broker process, for failure messages.
const KEPT_LINES: usize = 400;

/// Where one broker lives: its id, addresses and data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// `node.id`, from 1.
    pub id: i32,
    /// The client (`PLAINTEXT`) listener.
    pub client_addr: SocketAddr,
    /// The `CONTROLLER` listener, where the quorum talks.
    pub controller_addr: SocketAddr,
    /// `log.dirs`.
    pub data_dir: PathBuf,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
}

/// The `millrace` arguments that start `node` as a member of `nodes` (every one of them a
/// voter), followed by `overrides` (`KEY=VALUE`, given last so that they win).
pub fn broker_args(node: &NodeSpec, nodes: &[NodeSpec], overrides: &[String]) -> Vec<String> {
    let voters: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}@{}", n.id, n.controller_addr))
        .collect();
    let settings = [
        format!("node.id={}", node.id),
        "process.roles=broker,controller".to_string(),
        format!("controller.quorum.voters={}", voters.join(",")),
        format!(
            "listeners=PLAINTEXT://{},CONTROLLER://{}",
            node.client_addr, node.controller_addr
        ),
        "controller.listener.names=CONTROLLER".to_string(),
        "inter.broker.listener.name=PLAINTEXT".to_string(),
        format!("log.dirs={}", node.data_dir.display()),
    ];
    let mut args = vec!["broker".to_string()];
    for setting in settings.iter().chain(overrides) {
        args.push("-o".to_string());
        args.push(setting.clone());
    }
    args
}

/// One broker of a [`ClusterProcesses`]: where it lives, and its process while it runs.
#[derive(Debug)]
pub struct ClusterNode {
    /// Where it lives.
    pub spec: NodeSpec,
    process: Option<RunningNode>,
}

/// What the log reader of a broker process reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogEvent {
    /// The broker logged "broker listening".
    Listening,
    /// Its stderr closed: the process exited (every line is in `lines`).
    Closed,
}

#[derive(Debug)]
struct RunningNode {
    child: Child,
    /// Events from the log reader.
    events: mpsc::Receiver<LogEvent>,
    /// Its last stderr lines.
    lines: Arc<Mutex<Vec<String>>>,
}

impl ClusterNode {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    /// The last lines it wrote to stderr (its log), across restarts of this run.
    pub fn log_lines(&self) -> Vec<String> {
        self.process
            .as_ref()
            .map(|p| p.lines.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }
}

/// Brokers as processes; every one still running is killed (SIGKILL) when this is dropped,
/// and the data dirs are removed with it.
#[derive(Debug)]
pub struct ClusterProcesses {
    binary: PathBuf,
    overrides: Vec<String>,
    nodes: Vec<ClusterNode>,
    /// Holds every node's data dir.
    dir: tempfile::TempDir,
}

impl ClusterProcesses {
    /// The binary named by `MILLRACE_BIN`, if set; tests without it print SKIP and return.
    pub fn binary_from_env() -> Option<PathBuf> {
        match std::env::var_os(MILLRACE_BIN) {
            Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
            _ => {
                eprintln!(
                    "SKIP: no broker cluster ({MILLRACE_BIN} does not name the millrace binary)"
                );
                None
            }
        }
    }

    /// Plans `brokers` brokers on 127.0.0.1 (two free ports each, a data dir each), with
    /// `overrides` (`KEY=VALUE`) for all of them. Starts nothing.
    pub fn plan(binary: impl Into<PathBuf>, brokers: usize, overrides: &[&str]) -> Self {
        let dir = crate::temp_dir();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let nodes = (1..=brokers as i32)
            .map(|id| NodeSpec {
                id,
                client_addr: SocketAddr::new(localhost, crate::free_port()),
                controller_addr: SocketAddr::new(localhost, crate::free_port()),
                data_dir: dir.path().join(format!("node-{id}")),
                netns: None,
            })
            .collect();
        Self::from_specs(binary, nodes, overrides, dir)
    }

    /// Plans one broker per host of `lab` (broker `i` in host `i - 1`, listening on the host's
    /// address: 9092 for clients, 9093 for the quorum), with `overrides` for all. Starts
    /// nothing. The lab must outlive the cluster.
    pub fn plan_in_lab(
        binary: impl Into<PathBuf>,
        lab: &crate::netns::NetnsLab,
        overrides: &[&str],
    ) -> Self {
        let dir = crate::temp_dir();
        let nodes = (0..lab.hosts())
            .map(|i| {
                let addr = IpAddr::V4(lab.host_addr(i));
                NodeSpec {
                    id: i as i32 + 1,
                    client_addr: SocketAddr::new(addr, 9092),
                    controller_addr: SocketAddr::new(addr, 9093),
                    data_dir: dir.path().join(format!("node-{}", i + 1)),
                    netns: Some(lab.host_ns(i)),
                }
            })
            .collect();
        Self::from_specs(binary, nodes, overrides, dir)
    }

    fn from_specs(
        binary: impl Into<PathBuf>,
        specs: Vec<NodeSpec>,
        overrides: &[&str],
        dir: tempfile::TempDir,
    ) -> Self {
        ClusterProcesses {
            binary: binary.into(),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            nodes: specs
                .into_iter()
                .map(|spec| ClusterNode {
                    spec,
                    process: None,
                })
                .collect(),
            dir,
        }
    }

    /// Every broker's plan.
    pub fn specs(&self) -> Vec<NodeSpec> {
        self.nodes.iter().map(|n| n.spec.clone()).collect()
    }

    /// The directory holding every data dir.
    pub fn root_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Broker `id`.
    pub fn node(&self, id: i32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.spec.id == id)
            .unwrap_or_else(|| panic!("no broker {id} in a cluster of {}", self.nodes.len()))
    }

    fn node_mut(&mut self, id: i32) -> anyhow::Result<&mut ClusterNode> {
        let count = self.nodes.len();
        self.nodes
            .iter_mut()
            .find(|n| n.spec.id == id)
            .with_context(|| format!("no broker {id} in a cluster of {count}"))
    }

    /// The broker ids, in order.
    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.spec.id).collect()
    }

    /// `HOST:PORT,...` of every broker's client listener.
    pub fn bootstrap(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.spec.client_addr.to_string())
            .collect();
        addrs.join(",")
    }

    /// The command line (after the binary) of broker `id`.
    pub fn args(&self, id: i32) -> Vec<String> {
        let specs = self.specs();
        broker_args(&self.node(id).spec, &specs, &self.overrides)
    }

    /// The full command for broker `id`, inside its namespace if it has one.
    pub fn command(&self, id: i32) -> Command {
        let args = self.args(id);
        let mut command = match &self.node(id).spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        command.args(args);
        command
    }

    /// Starts every broker that is not running, all at once (a quorum needs a majority up
    /// before any broker can serve), then waits for each to listen.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            if self.node(id).process.is_none() {
                self.spawn(id)?;
            }
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for id in self.ids() {
            self.wait_listening(id, deadline)?;
        }
        Ok(())
    }

    /// Starts broker `id` (again) on its dir and ports and waits until it listens.
    pub fn start(&mut self, id: i32) -> anyhow::Result<()> {
        if self.node(id).process.is_some() {
            bail!("broker {id} is running already");
        }
        self.spawn(id)?;
        self.wait_listening(id, Instant::now() + START_TIMEOUT)
    }

    fn spawn(&mut self, id: i32) -> anyhow::Result<()> {
        let mut command = self.command(id);
        let node = self.node_mut(id)?;
        std::fs::create_dir_all(&node.spec.data_dir)
            .with_context(|| format!("creating {}", node.spec.data_dir.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting broker {id}: {command:?}"))?;
        let stderr = child
            .stderr
            .take()
            .context("the broker's stderr is piped")?;
        let (tx, events) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        // Reads the log to its end (the process's exit), so the pipe never fills up.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let listening = line.contains("broker listening");
                {
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == KEPT_LINES {
                        kept.remove(0);
                    }
                    kept.push(line);
                }
                if listening {
                    let _ = tx.send(LogEvent::Listening);
                }
            }
            let _ = tx.send(LogEvent::Closed);
        });
        node.process = Some(RunningNode {
            child,
            events,
            lines,
        });
        Ok(())
    }

    fn wait_listening(&mut self, id: i32, deadline: Instant) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        let Some(process) = node.process.as_mut() else {
            bail!("broker {id} is not running");
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let state = match process.events.recv_timeout(wait) {
            Ok(LogEvent::Listening) => return Ok(()),
            Ok(LogEvent::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                match process.child.wait() {
                    Ok(status) => format!("exited ({status}) before listening"),
                    Err(e) => format!("closed its log before listening ({e})"),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                "did not log \"broker listening\" in time".to_string()
            }
        };
        let log = node.log_lines();
        // A broker that did not come up is not left half-started: a retry starts afresh.
        if let Some(mut process) = node.process.take() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        let tail = &log[log.len().saturating_sub(20)..];
        bail!(
            "broker {id} {state}; its last log lines:\n{}",
            tail.join("\n")
        )
    }

    /// Waits until the cluster's metadata lists every broker of this launcher (listening is
    /// not yet being registered with the controller), polling every 100 ms.
    pub async fn wait_for_brokers(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let want = self.ids();
        let bootstrap = self.bootstrap();
        loop {
            let last = match crate::jepsen::topology::brokers(&bootstrap).await {
                Ok(brokers) => {
                    let mut ids: Vec<i32> = brokers.into_iter().map(|(id, _)| id).collect();
                    ids.sort_unstable();
                    if ids == want {
                        return Ok(());
                    }
                    format!("brokers {ids:?}")
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!("the cluster did not list brokers {want:?} within {within:?} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id of broker `id` while it runs.
    pub fn pid(&self, id: i32) -> Option<u32> {
        self.node(id).pid()
    }

    /// Kills broker `id` with SIGKILL and waits for it: a crash.
    pub fn kill9(&mut self, id: i32) -> anyhow::Result<ExitStatus> {
        let node = self.node_mut(id)?;
        let mut process = node
            .process
            .take()
            .with_context(|| format!("broker {id} is not running"))?;
        crate::faults::kill9(&mut process.child)
    }

    /// Stops broker `id` with SIGTERM (a controlled shutdown) and waits for it to exit.
    pub fn terminate(&mut self, id: i32) -> anyhow::Result<ExitStatus> {
        let node = self.node_mut(id)?;
        let mut process = node
            .process
            .take()
            .with_context(|| format!("broker {id} is not running"))?;
        crate::faults::sigterm(process.child.id())?;
        process
            .child
            .wait()
            .with_context(|| format!("waiting for broker {id} to exit"))
    }

    /// Pauses broker `id` (SIGSTOP): alive but silent, as in a long GC pause.
    pub fn sigstop(&self, id: i32) -> anyhow::Result<()> {
        let pid = self
            .pid(id)
            .with_context(|| format!("broker {id} is not running"))?;
        crate::faults::sigstop(pid)
    }

    /// Resumes broker `id` (SIGCONT).
    pub fn sigcont(&self, id: i32) -> anyhow::Result<()> {
        let pid = self
            .pid(id)
            .with_context(|| format!("broker {id} is not running"))?;
        crate::faults::sigcont(pid)
    }

    /// Kills broker `id` with SIGKILL and starts it again on the same dir and ports.
    pub fn restart(&mut self, id: i32) -> anyhow::Result<()> {
        self.kill9(id)?;
        self.start(id)
    }

    /// True while broker `id`'s process runs (a paused one runs).
    pub fn is_running(&mut self, id: i32) -> bool {
        self.node_mut(id)
            .ok()
            .and_then(|n| n.process.as_mut())
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }
}

/// Log lines per broker printed when a test panics with the cluster up.
const LINES_ON_PANIC: usize = 80;

impl Drop for ClusterProcesses {
    fn drop(&mut self) {
        // A failed test's brokers explain it: their last lines go to the test's output.
        if std::thread::panicking() {
            for node in &self.nodes {
                let lines = node.log_lines();
                let tail = &lines[lines.len().saturating_sub(LINES_ON_PANIC)..];
                eprintln!(
                    "--- broker {} (last {} log lines) ---\n{}",
                    node.spec.id,
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                // A stopped process dies of SIGKILL as well.
                let _ = process.child.kill();
                let _ = process.child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[String]) -> Vec<String> {
        assert_eq!(args[0], "broker");
        args[1..]
            .chunks(2)
            .map(|pair| {
                assert_eq!(pair[0], "-o", "{args:?}");
                pair[1].clone()
            })
            .collect()
    }

    #[test]
    fn each_broker_gets_kafkas_settings_for_a_three_voter_quorum() {
        let cluster = ClusterProcesses::plan("/bin/millrace", 3, &["min.insync.replicas=2"]);
        let specs = cluster.specs();
        let voters: Vec<String> = specs
            .iter()
            .map(|s| format!("{}@127.0.0.1:{}", s.id, s.controller_addr.port()))
            .collect();
        let voters = format!("controller.quorum.voters={}", voters.join(","));
        for spec in &specs {
            let got = settings(&cluster.args(spec.id));
            let want = vec![
                format!("node.id={}", spec.id),
                "process.roles=broker,controller".to_string(),
                voters.clone(),
                format!(
                    "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    spec.client_addr.port(),
                    spec.controller_addr.port()
                ),
                "controller.listener.names=CONTROLLER".to_string(),
                "inter.broker.listener.name=PLAINTEXT".to_string(),
                format!("log.dirs={}", spec.data_dir.display()),
                "min.insync.replicas=2".to_string(),
            ];
            assert_eq!(got, want);
        }
        assert_eq!(cluster.ids(), [1, 2, 3]);
    }

    #[test]
    fn brokers_have_their_own_ports_and_dirs() {
        let cluster = ClusterProcesses::plan("/bin/millrace", 3, &[]);
        let specs = cluster.specs();
        let mut ports: Vec<u16> = specs
            .iter()
            .flat_map(|s| [s.client_addr.port(), s.controller_addr.port()])
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6, "{specs:?}");
        let mut dirs: Vec<&PathBuf> = specs.iter().map(|s| &s.data_dir).collect();
        dirs.dedup();
        assert_eq!(dirs.len(), 3);
        assert!(specs
            .iter()
            .all(|s| s.data_dir.starts_with(cluster.root_dir())));
        let bootstrap: Vec<String> = specs.iter().map(|s| s.client_addr.to_string()).collect();
        assert_eq!(cluster.bootstrap(), bootstrap.join(","));
    }

    #[test]
    fn a_single_broker_is_its_own_only_voter() {
        let cluster = ClusterProcesses::plan("/bin/millrace", 1, &[]);
        let spec = &cluster.specs()[0];
        let got = settings(&cluster.args(1));
        assert!(got.contains(&format!(
            "controller.quorum.voters=1@{}",
            spec.controller_addr
        )));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn waits_until_the_metadata_lists_every_broker() {
        let broker = crate::TestBroker::start(&[]).await;
        let spec = |id: i32| NodeSpec {
            id,
            client_addr: broker.addr(),
            controller_addr: broker.addr(),
            data_dir: PathBuf::from("/nonexistent"),
            netns: None,
        };
        let one = ClusterProcesses::from_specs("/bin/false", vec![spec(1)], &[], crate::temp_dir());
        one.wait_for_brokers(Duration::from_secs(10))
            .await
            .expect("broker 1 is listed");
        let two = ClusterProcesses::from_specs(
            "/bin/false",
            vec![spec(1), spec(2)],
            &[],
            crate::temp_dir(),
        );
        let error = two
            .wait_for_brokers(Duration::from_millis(300))
            .await
            .expect_err("broker 2 is not there")
            .to_string();
        assert!(error.contains("[1, 2]"), "{error}");
        assert!(error.contains("last: brokers [1]"), "{error}");
        broker.shutdown().await;
    }

    #[test]
    fn the_command_runs_the_binary_or_enters_the_namespace() {
        let cluster = ClusterProcesses::plan("/bin/millrace", 2, &[]);
        let command = cluster.command(2);
        assert_eq!(command.get_program(), "/bin/millrace");
        assert_eq!(
            command.get_args().next().and_then(|a| a.to_str()),
            Some("broker")
        );

        let mut specs = cluster.specs();
        for (i, spec) in specs.iter_mut().enumerate() {
            spec.netns = Some(format!("mr-1-0-h{i}"));
        }
        let lab = ClusterProcesses::from_specs("/bin/millrace", specs, &[], crate::temp_dir());
        let command = lab.command(2);
        assert_eq!(command.get_program(), "ip");
        let args: Vec<&str> = command
            .get_args()
            .take(5)
            .map(|a| a.to_str().unwrap_or_default())
            .collect();
        assert_eq!(
            args,
            ["netns", "exec", "mr-1-0-h1", "/bin/millrace", "broker"]
        );
    }
}
