//! `millrace cluster status|up`: what a cluster looks like, and a local cluster of broker
//! processes to try it with.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use millrace_client::admin::ClusterDescription;
use millrace_client::network::metadata::PartitionInfo;
use millrace_client::{Admin, ClientConfig};
use serde::Serialize;
use tokio::sync::mpsc;

use super::ConnectArgs;

/// Cluster overview and a local cluster.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Brokers (alive or fenced), the active controller, and partitions that are
    /// under-replicated (fewer in-sync replicas than replicas) or offline (no leader).
    Status {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start N `millrace broker` processes on this machine as one cluster, until Ctrl-C or
    /// SIGTERM.
    Up(UpArgs),
}

/// `cluster up` options.
#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// How many brokers (node ids 1..=N). The first three are also the controller quorum's
    /// voters; the rest are brokers only (`process.roles=broker`) that follow the quorum.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=99))]
    pub brokers: u16,
    /// Where each broker keeps its data (`DIR/broker-<id>`) and log (`DIR/broker-<id>.log`).
    #[arg(long, value_name = "DIR", default_value = "millrace-cluster")]
    pub data_dir: PathBuf,
    /// Client port of broker 1; broker i listens on P+i-1, its controller on P+100+i-1.
    #[arg(long, value_name = "P", default_value_t = 9092)]
    pub base_port: u16,
}

/// Runs a `cluster status` (the `up` subcommand runs through [`up`]).
pub async fn status(connect: &ConnectArgs, json: bool) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    let cluster = admin.describe_cluster().await?;
    let names: Vec<String> = admin
        .list_topics(true)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let topics = if refs.is_empty() {
        Vec::new()
    } else {
        admin.describe_topics(&refs).await?
    };
    let report = StatusReport::new(
        &cluster,
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p))),
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// What `cluster status` reports.
#[derive(Debug, Serialize, PartialEq)]
pub struct StatusReport {
    /// Cluster id.
    pub cluster_id: String,
    /// Node id of the active controller (-1: none known).
    pub controller_id: i32,
    /// Brokers by id.
    pub brokers: Vec<BrokerStatus>,
    /// Partitions with fewer in-sync replicas than replicas.
    pub under_replicated: Vec<PartitionStatus>,
    /// Partitions without a leader.
    pub offline: Vec<PartitionStatus>,
    /// How many partitions there are in all.
    pub partitions: usize,
}

/// One broker in [`StatusReport`].
#[derive(Debug, Serialize, PartialEq)]
pub struct BrokerStatus {
    /// Node id.
    pub id: i32,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// `alive` or `fenced`.
    pub state: &'static str,
    /// Whether it is the active controller.
    pub controller: bool,
}

/// One partition in [`StatusReport`].
#[derive(Debug, Serialize, PartialEq)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Leader node id (-1: none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
}

impl StatusReport {
    /// Builds the report from the cluster description and every partition.
    pub fn new<'a>(
        cluster: &ClusterDescription,
        partitions: impl Iterator<Item = (&'a str, &'a PartitionInfo)>,
    ) -> Self {
        let brokers = cluster
            .brokers
            .iter()
            .map(|b| BrokerStatus {
                id: b.id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
                state: if b.fenced { "fenced" } else { "alive" },
                controller: b.id == cluster.controller_id,
            })
            .collect();
        let mut report = StatusReport {
            cluster_id: cluster.cluster_id.clone(),
            controller_id: cluster.controller_id,
            brokers,
            under_replicated: Vec::new(),
            offline: Vec::new(),
            partitions: 0,
        };
        for (topic, p) in partitions {
            report.partitions += 1;
            let status = || PartitionStatus {
                topic: topic.to_string(),
                partition: p.id,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
            };
            if p.offline() {
                report.offline.push(status());
            }
            if p.under_replicated() {
                report.under_replicated.push(status());
            }
        }
        report
    }

    /// The text form.
    pub fn text(&self) -> String {
        let mut out = format!("cluster {}\n", self.cluster_id);
        let controller = if self.controller_id >= 0 {
            self.controller_id.to_string()
        } else {
            "none".to_string()
        };
        out += &format!("controller {controller}\n");
        out += "broker\taddress\track\tstate\n";
        for b in &self.brokers {
            out += &format!(
                "{}\t{}:{}\t{}\t{}{}\n",
                b.id,
                b.host,
                b.port,
                b.rack.as_deref().unwrap_or("-"),
                b.state,
                if b.controller { " (controller)" } else { "" }
            );
        }
        for (title, list) in [
            ("under-replicated partitions", &self.under_replicated),
            ("offline partitions", &self.offline),
        ] {
            if list.is_empty() {
                out += &format!("{title}: none (of {})\n", self.partitions);
            } else {
                out += &format!("{title}: {}\n", list.len());
                for p in list {
                    out += &format!(
                        "  {}-{}\tleader {}\tepoch {}\treplicas {:?}\tisr {:?}\n",
                        p.topic, p.partition, p.leader, p.leader_epoch, p.replicas, p.isr
                    );
                }
            }
        }
        out
    }
}

/// One broker process of `cluster up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPlan {
    /// Node id (1-based).
    pub id: u16,
    /// Client (PLAINTEXT) port.
    pub port: u16,
    /// Controller port, for the controller quorum's voters.
    pub controller_port: Option<u16>,
    /// Port of the metrics and health endpoint (`metrics.listener`).
    pub metrics_port: u16,
    /// Data directory.
    pub dir: PathBuf,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// The arguments after the executable.
    pub args: Vec<String>,
}

/// Plans the `n` brokers: ports, directories and the settings each gets, with Kafka's
/// names. The first min(n, 3) brokers are the controller quorum's voters and run as broker
/// and controller; the rest are brokers only.
pub fn plan(n: u16, data_dir: &Path, base_port: u16) -> anyhow::Result<Vec<BrokerPlan>> {
    let voters = n.min(3);
    let port = |offset: u16| {
        base_port
            .checked_add(offset)
            .with_context(|| format!("--base-port {base_port} leaves no room for {n} brokers"))
    };
    let mut quorum = Vec::new();
    for id in 1..=voters {
        quorum.push(format!("{id}@127.0.0.1:{}", port(100 + id - 1)?));
    }
    let quorum = quorum.join(",");
    let mut plans = Vec::new();
    for id in 1..=n {
        let client_port = port(id - 1)?;
        let controller_port = if id <= voters {
            Some(port(100 + id - 1)?)
        } else {
            None
        };
        let metrics_port = port(200 + id - 1)?;
        let dir = data_dir.join(format!("broker-{id}"));
        let (roles, listeners) = match controller_port {
            Some(c) => (
                "broker,controller",
                format!("PLAINTEXT://127.0.0.1:{client_port},CONTROLLER://127.0.0.1:{c}"),
            ),
            None => ("broker", format!("PLAINTEXT://127.0.0.1:{client_port}")),
        };
        let settings = [
            format!("node.id={id}"),
            format!("process.roles={roles}"),
            format!("controller.quorum.voters={quorum}"),
            format!("listeners={listeners}"),
            "controller.listener.names=CONTROLLER".to_string(),
            "inter.broker.listener.name=PLAINTEXT".to_string(),
            format!("log.dirs={}", dir.display()),
            format!("metrics.listener=http://127.0.0.1:{metrics_port}"),
        ];
        let mut args = vec!["broker".to_string()];
        for setting in settings {
            args.push("-o".to_string());
            args.push(setting);
        }
        plans.push(BrokerPlan {
            id,
            port: client_port,
            controller_port,
            metrics_port,
            log: data_dir.join(format!("broker-{id}.log")),
            dir,
            args,
        });
    }
    Ok(plans)
}

/// Fails with a clear message when a port of the plan is taken.
fn check_ports(plans: &[BrokerPlan]) -> anyhow::Result<()> {
    for plan in plans {
        let ports = std::iter::once((plan.port, "client"))
            .chain(plan.controller_port.map(|p| (p, "controller")))
            .chain(std::iter::once((plan.metrics_port, "metrics")));
        for (port, what) in ports {
            TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                format!(
                    "port {port} ({what} port of broker {}) is in use; choose another --base-port",
                    plan.id
                )
            })?;
        }
    }
    Ok(())
}

/// A base port P for `n` brokers whose client (P+i), controller (P+100+i) and metrics
/// (P+200+i) ports are all free now. Chosen below Linux's ephemeral range (32768-60999 by
/// default) so no outgoing connection can take one before its broker binds it.
pub fn free_base_port(n: u16) -> anyhow::Result<u16> {
    use rand::{Rng, SeedableRng};
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_768;
    let span = HIGH
        .checked_sub(LOW + 200 + n)
        .filter(|span| *span > 0)
        .with_context(|| format!("no room below port {HIGH} for {n} brokers"))?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..500 {
        let base = LOW + rng.random_range(0..span);
        let all_free = (0..n)
            .flat_map(|i| [base + i, base + 100 + i, base + 200 + i])
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    anyhow::bail!("found no free ports for {n} brokers; give --base-port")
}

/// The last `lines` lines of a broker's log, for an error that says why it died.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read it: {error})"),
    }
}

/// A running child: its id and pid.
struct Running {
    id: u16,
    pid: u32,
    log: PathBuf,
}

/// Runs `cluster up`: starts the brokers, prints the bootstrap list once all answer, and
/// stops them on Ctrl-C or SIGTERM; fails when one dies unexpectedly.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let plans = plan(args.brokers, &args.data_dir, args.base_port)?;
    check_ports(&plans)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let exe = std::env::current_exe().context("finding the millrace executable")?;
    let mut stop = crate::StopSignals::install()?;
    let (exits, mut exited) = mpsc::unbounded_channel::<(u16, std::io::Result<ExitStatus>)>();
    let mut running = Vec::new();
    for plan in &plans {
        match spawn(&exe, plan, &plan.args, &exits) {
            Ok(child) => running.push(child),
            Err(error) => {
                // None of the brokers started so far may outlive this command.
                stop_all(&running, &mut exited).await;
                return Err(error);
            }
        }
    }
    let bootstrap: Vec<String> = plans
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.port))
        .collect();
    // Up when every broker answers ApiVersions (and Metadata): connecting an admin client
    // does both. A child that dies meanwhile ends the wait at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    for plan in &plans {
        loop {
            tokio::select! {
                // A stop request wins over whatever else is ready.
                biased;
                _ = stop.wait() => {
                    stop_all(&running, &mut exited).await;
                    return Ok(());
                }
                ready = answers(plan.port) => {
                    if ready {
                        break;
                    }
                    if Instant::now() >= deadline {
                        stop_all(&running, &mut exited).await;
                        anyhow::bail!(
                            "broker {} did not answer on 127.0.0.1:{} within 60 s; its log: {}",
                            plan.id, plan.port, plan.log.display()
                        );
                    }
                }
                Some((id, status)) = exited.recv() => {
                    running.retain(|r| r.id != id);
                    stop_all(&running, &mut exited).await;
                    anyhow::bail!("{}", died(id, status, &plans));
                }
            }
        }
    }
    println!("{}", bootstrap.join(","));
    // stdout stays the bootstrap list alone (scripts read it); the endpoints go to stderr.
    for plan in &plans {
        eprintln!(
            "broker {}: metrics http://127.0.0.1:{port}/metrics, health http://127.0.0.1:{port}/health/ready",
            plan.id,
            port = plan.metrics_port
        );
    }
    tokio::select! {
        biased;
        _ = stop.wait() => {
            eprintln!("stopping the brokers");
            stop_all(&running, &mut exited).await;
            Ok(())
        }
        Some((id, status)) = exited.recv() => {
            running.retain(|r| r.id != id);
            stop_all(&running, &mut exited).await;
            anyhow::bail!("{}", died(id, status, &plans));
        }
    }
}

fn died(id: u16, status: std::io::Result<ExitStatus>, plans: &[BrokerPlan]) -> String {
    let status = match status {
        Ok(status) => status.to_string(),
        Err(error) => error.to_string(),
    };
    match plans.iter().find(|p| p.id == id) {
        Some(plan) => died_message(id, &status, &plan.log),
        None => format!("broker {id} exited unexpectedly ({status})"),
    }
}

/// "broker N exited unexpectedly", with where its log is and how it ends.
pub fn died_message(id: u16, status: &str, log: &Path) -> String {
    format!(
        "broker {id} exited unexpectedly ({status}); its log: {}, ending:\n{}",
        log.display(),
        log_tail(log, 20)
    )
}

/// Starts one broker with its output going to its log; its exit is reported on `exits`.
fn spawn(
    exe: &Path,
    plan: &BrokerPlan,
    args: &[String],
    exits: &mpsc::UnboundedSender<(u16, std::io::Result<ExitStatus>)>,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&plan.dir)
        .with_context(|| format!("creating {}", plan.dir.display()))?;
    let log =
        File::create(&plan.log).with_context(|| format!("creating {}", plan.log.display()))?;
    let stderr = log
        .try_clone()
        .with_context(|| format!("opening {}", plan.log.display()))?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        // Its own process group: Ctrl-C in the terminal reaches `cluster up` alone, which
        // stops the brokers itself, so a broker stopping on the keypress is never taken
        // for one that died.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting broker {}", plan.id))?;
    let pid = child.id();
    let exits = exits.clone();
    let id = plan.id;
    // A thread per child blocks in wait(): the exit is an event the runtime is told of
    // (tokio's own process support is a feature this workspace does not build).
    std::thread::Builder::new()
        .name(format!("broker-{id}-wait"))
        .spawn(move || {
            let status = child.wait();
            let _ = exits.send((id, status));
        })
        .with_context(|| format!("watching broker {id}"))?;
    tracing::info!(broker = id, pid, "started");
    Ok(Running {
        id,
        pid,
        log: plan.log.clone(),
    })
}

/// Whether a broker on 127.0.0.1:`port` answers ApiVersions and Metadata.
async fn answers(port: u16) -> bool {
    let Ok(config) = ClientConfig::builder([format!("127.0.0.1:{port}")])
        .client_id("millrace-cluster-up")
        .connect_timeout(Duration::from_secs(1))
        .build()
    else {
        return false;
    };
    match Admin::connect(config).await {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(port, %error, "not up yet");
            // The connect attempt failed at once (refused); pace the next one.
            tokio::time::sleep(Duration::from_millis(200)).await;
            false
        }
    }
}

/// SIGTERM to every child, up to 10 s for them to exit, then SIGKILL to the rest.
async fn stop_all(
    running: &[Running],
    exited: &mut mpsc::UnboundedReceiver<(u16, std::io::Result<ExitStatus>)>,
) {
    let mut left: Vec<u16> = running.iter().map(|r| r.id).collect();
    for r in running {
        signal(r.pid, "TERM");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !left.is_empty() {
        match tokio::time::timeout_at(deadline, exited.recv()).await {
            Ok(Some((id, _))) => left.retain(|l| *l != id),
            Ok(None) | Err(_) => break,
        }
    }
    for r in running.iter().filter(|r| left.contains(&r.id)) {
        tracing::warn!(broker = r.id, log = %r.log.display(), "did not stop within 10 s; killing it");
        signal(r.pid, "KILL");
    }
}

/// Sends a signal with `kill` (the workspace forbids the `unsafe` a direct call needs).
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        tracing::debug!(pid, signal = name, "kill failed (already exited?)");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(plan: &BrokerPlan) -> Vec<&str> {
        plan.args[1..]
            .chunks(2)
            .map(|pair| {
                assert_eq!(pair[0], "-o");
                pair[1].as_str()
            })
            .collect()
    }

    #[test]
    fn three_brokers_are_all_voters_with_their_own_ports_and_dirs() {
        let plans = plan(3, Path::new("/data"), 9092).unwrap();
        assert_eq!(plans.len(), 3);
        let voters = "controller.quorum.voters=1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194";
        for (i, p) in plans.iter().enumerate() {
            let id = i as u16 + 1;
            assert_eq!(p.args[0], "broker");
            assert_eq!(p.port, 9092 + i as u16);
            assert_eq!(p.controller_port, Some(9192 + i as u16));
            assert_eq!(p.dir, Path::new(&format!("/data/broker-{id}")));
            assert_eq!(p.log, Path::new(&format!("/data/broker-{id}.log")));
            let dir = format!("log.dirs=/data/broker-{id}");
            let metrics = format!("metrics.listener=http://127.0.0.1:{}", 9292 + i);
            let listeners = format!(
                "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                9092 + i,
                9192 + i
            );
            assert_eq!(
                settings(p),
                vec![
                    format!("node.id={id}").as_str(),
                    "process.roles=broker,controller",
                    voters,
                    &listeners,
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    &dir,
                    &metrics,
                ]
            );
        }
    }

    #[test]
    fn a_free_base_port_is_below_the_ephemeral_range_with_every_port_free() {
        let base = free_base_port(3).unwrap();
        assert!((20_000..32_768 - 203).contains(&base), "{base}");
        for port in [
            base,
            base + 2,
            base + 100,
            base + 102,
            base + 200,
            base + 202,
        ] {
            assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "{port}");
        }
    }

    #[test]
    fn the_death_of_a_broker_is_reported_with_the_end_of_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("broker-2.log");
        let lines: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        std::fs::write(&log, lines.join("\n")).unwrap();
        let message = died_message(2, "exit status: 1", &log);
        assert!(message.starts_with("broker 2 exited unexpectedly (exit status: 1)"));
        assert!(
            message.contains("line 29") && message.contains("line 10"),
            "{message}"
        );
        assert!(!message.contains("line 9\n"), "{message}");
    }

    #[test]
    fn brokers_past_the_third_are_brokers_only() {
        let plans = plan(5, Path::new("d"), 20000).unwrap();
        let fifth = &plans[4];
        assert_eq!(fifth.port, 20004);
        assert_eq!(fifth.controller_port, None);
        let s = settings(fifth);
        assert!(s.contains(&"process.roles=broker"), "{s:?}");
        assert!(
            s.contains(&"listeners=PLAINTEXT://127.0.0.1:20004"),
            "{s:?}"
        );
        assert!(
            s.contains(
                &"controller.quorum.voters=1@127.0.0.1:20100,2@127.0.0.1:20101,3@127.0.0.1:20102"
            ),
            "{s:?}"
        );
    }

    #[test]
    fn fewer_than_three_brokers_are_all_voters() {
        let plans = plan(2, Path::new("d"), 30000).unwrap();
        assert!(plans.iter().all(|p| p.controller_port.is_some()));
        assert!(settings(&plans[1])
            .contains(&"controller.quorum.voters=1@127.0.0.1:30100,2@127.0.0.1:30101"));
        let single = plan(1, Path::new("d"), 30000).unwrap();
        assert!(settings(&single[0]).contains(&"controller.quorum.voters=1@127.0.0.1:30100"));
    }

    #[test]
    fn ports_beyond_65535_are_an_error() {
        let error = plan(3, Path::new("d"), 65_500).unwrap_err();
        assert!(error.to_string().contains("--base-port 65500"), "{error}");
    }

    #[test]
    fn a_taken_port_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        // Only the client port is taken; the plan may still be checked on a high base.
        let plans = plan(1, Path::new("d"), port).unwrap();
        let error = check_ports(&plans).unwrap_err();
        assert!(
            error.to_string().contains(&format!("port {port}"))
                && error.to_string().contains("broker 1"),
            "{error}"
        );
    }

    fn partition(id: i32, leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionInfo {
        PartitionInfo {
            id,
            leader,
            leader_epoch: 4,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            offline_replicas: Vec::new(),
            error_code: 0,
        }
    }

    #[test]
    fn status_lists_under_replicated_and_offline_partitions_and_fenced_brokers() {
        let broker = |id: i32, fenced: bool| millrace_client::network::metadata::BrokerInfo {
            id,
            host: "h".into(),
            port: 9000 + id,
            rack: None,
            fenced,
        };
        let cluster = ClusterDescription {
            cluster_id: "c".into(),
            controller_id: 1,
            brokers: vec![broker(1, false), broker(2, true)],
        };
        let partitions = [
            partition(0, 1, &[1, 2], &[1, 2]),
            partition(1, 1, &[1, 2], &[1]),
            partition(2, -1, &[2], &[]),
        ];

        let report = StatusReport::new(&cluster, partitions.iter().map(|p| ("t", p)));

        assert_eq!(report.partitions, 3);
        assert_eq!(
            report
                .under_replicated
                .iter()
                .map(|p| p.partition)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(report.offline.len(), 1);
        assert_eq!(report.offline[0].partition, 2);
        assert_eq!(report.brokers[1].state, "fenced");
        assert!(report.brokers[0].controller);
        let text = report.text();
        assert!(text.contains("1\th:9001\t-\talive (controller)"), "{text}");
        assert!(text.contains("2\th:9002\t-\tfenced"), "{text}");
        assert!(text.contains("offline partitions: 1"), "{text}");
    }
}
