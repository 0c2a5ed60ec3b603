//! `millrace bench failover`: how long a partition is unwritable after kill -9 of its leader.
//!
//! The benchmark owns its cluster (three `millrace broker` processes with `cluster up`'s
//! settings), because it must kill a broker and start it again between runs. Each run creates
//! a topic of 3 partitions with replication factor 3 (so every broker leads one), writes to the
//! partition of the chosen leader at a fixed rate with acks=all and idempotence, kill -9s that
//! leader and measures the time from the kill to the acknowledgement of the first record
//! *sent after* the kill (the first write its successor accepted). The killed broker is then
//! restarted and the next run waits until all three brokers are alive again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use millrace_client::admin::NewTopic;
use millrace_client::network::metadata::PartitionInfo;
use millrace_client::{Acks, Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::watch;

use crate::commands::cluster::{died_message, free_base_port, plan, BrokerPlan};

const BROKERS: u16 = 3;
/// Partitions per run's topic: one led by each broker.
const PARTITIONS: i32 = BROKERS as i32;
/// Longest wait for the cluster to be whole again (start-up, restart, a topic's ISR).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// Which broker a run kills.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Victim {
    /// The leader of a partition, chosen among the brokers that are not the active
    /// controller: the partition waits for the broker's session to time out.
    Leader,
    /// The leader of a partition that is also the active controller: a controller election
    /// comes first.
    Controller,
}

impl Victim {
    fn name(self) -> &'static str {
        match self {
            Victim::Leader => "leader",
            Victim::Controller => "controller",
        }
    }
}

/// Options of `millrace bench failover` (it ignores `-b`: it starts its own brokers).
#[derive(clap::Args, Debug, Clone)]
pub struct FailoverBench {
    /// Kills to time; each run uses a new topic and restarts the killed broker afterwards.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Which broker to kill.
    #[arg(long, value_enum, default_value_t = Victim::Leader)]
    pub kill: Victim,
    /// Records per second written (acks=all, 100 bytes, one partition) around the kill.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,
    /// How long to write before the kill, in ms.
    #[arg(long, default_value_t = 2000)]
    pub warmup_ms: u64,
    /// The topics' `min.insync.replicas` (their replication factor is 3).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=3))]
    pub min_insync_replicas: u16,
    /// Longest wait for the first acknowledged write after a kill, in ms.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// A setting for every broker, on top of `cluster up`'s (repeatable), e.g.
    /// `-o broker.session.timeout.ms=1000`.
    #[arg(long = "broker-setting", short = 'o', value_name = "KEY=VALUE",
          value_parser = crate::commands::key_value)]
    pub broker_settings: Vec<(String, String)>,
    /// Where the brokers keep their data and logs (default: a temporary directory, removed
    /// at the end).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client port of broker 1 (broker i on P+i-1, controllers on P+100+i-1); default: free
    /// ports.
    #[arg(long, value_name = "P")]
    pub base_port: Option<u16>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
struct RunResult {
    run: u32,
    killed_broker: i32,
    killed_was_controller: bool,
    /// When the kill was sent, in ms since the Unix epoch (to find it in the brokers' logs).
    killed_at_unix_ms: u128,
    partition: i32,
    /// kill -9 to the acknowledgement of the first record sent after it.
    failover_ms: f64,
    /// kill -9 to the first acknowledgement of any record (records in flight at the kill
    /// are retried on the successor too).
    first_ack_ms: f64,
    acked: u64,
    failed_writes: u64,
    /// Resident memory of the three brokers together, just before the kill.
    brokers_rss_mb: f64,
}

/// Runs the benchmark.
pub async fn run(args: FailoverBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.timeout_ms > 0, "--timeout-ms must be positive");
    let mut brokers = Brokers::new(&args)?;
    for id in 1..=BROKERS {
        brokers.start(id)?;
    }
    brokers.wait_until_whole(None).await?;
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let result = one_run(&mut brokers, &args, run).await?;
        if !args.json {
            eprintln!(
                "run {run}: killed broker {} ({}), first write acknowledged after {:.0} ms",
                result.killed_broker,
                if result.killed_was_controller {
                    "controller"
                } else {
                    "not the controller"
                },
                result.failover_ms
            );
        }
        results.push(result);
    }
    print_report(&args, &results)
}

async fn one_run(
    brokers: &mut Brokers,
    args: &FailoverBench,
    run: u32,
) -> anyhow::Result<RunResult> {
    let topic = format!("millrace-bench-failover-{}-{run}", std::process::id());
    let admin = brokers.admin().await?;
    admin
        .create_topic(
            NewTopic::new(&topic, PARTITIONS)
                .replication_factor(BROKERS as i16)
                .config("min.insync.replicas", args.min_insync_replicas.to_string()),
        )
        .await
        .with_context(|| format!("creating topic `{topic}`"))?;
    brokers.wait_until_whole(Some(&topic)).await?;
    let (partition, victim, controller) = choose_victim(&admin, &topic, args.kill).await?;
    let victim_id = u16::try_from(victim)
        .ok()
        .filter(|id| (1..=BROKERS).contains(id))
        .with_context(|| {
            format!("partition {partition} is led by broker {victim}, not one of this benchmark's")
        })?;

    let producer = Producer::connect(
        ProducerConfig::builder(brokers.client_config()?)
            .acks(Acks::All)
            .linger_ms(0)
            .build()?,
    )
    .await?;
    // The first write sets up metadata and the connection before the clock matters.
    producer
        .send(ProducerRecord::new(&topic, vec![0u8; 100]).partition(partition))
        .await?
        .await?;
    let load = Load::start(producer, topic.clone(), partition, args.rate);
    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
    let rss_mb = brokers.rss_kb() as f64 / 1024.0;

    let killed = brokers.kill9(victim_id)?;
    let killed_at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let waited = load
        .first_ack_sent_after(killed, Duration::from_millis(args.timeout_ms))
        .await;
    let outcome = load.stop().await;
    let failover = waited.with_context(|| {
        format!(
            "no write was acknowledged within {} ms of the kill of broker {victim} \
             (logs in {})",
            args.timeout_ms,
            brokers.log_dir()
        )
    })?;
    let first_ack = outcome
        .first_ack_after(killed)
        .unwrap_or(failover)
        .min(failover);

    brokers.start(victim_id)?;
    brokers.wait_until_whole(Some(&topic)).await?;
    Ok(RunResult {
        run,
        killed_broker: victim,
        killed_was_controller: victim == controller,
        killed_at_unix_ms,
        partition,
        failover_ms: ms(failover),
        first_ack_ms: ms(first_ack),
        acked: outcome.acked,
        failed_writes: outcome.failed,
        brokers_rss_mb: rss_mb,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The partition to write to and its leader, by `kind`, with the active controller's id.
async fn choose_victim(
    admin: &Admin,
    topic: &str,
    kind: Victim,
) -> anyhow::Result<(i32, i32, i32)> {
    let controller = admin.describe_cluster().await?.controller_id;
    let partitions: Vec<PartitionInfo> = admin
        .describe_topics(&[topic])
        .await?
        .into_iter()
        .flat_map(|t| t.partitions)
        .collect();
    let chosen = partitions.iter().find(|p| {
        p.leader >= 0
            && match kind {
                Victim::Leader => p.leader != controller,
                Victim::Controller => p.leader == controller,
            }
    });
    match chosen {
        Some(p) => Ok((p.id, p.leader, controller)),
        None => anyhow::bail!(
            "no partition of `{topic}` is led by {} (controller {controller}, leaders {:?})",
            match kind {
                Victim::Leader => "a broker other than the controller",
                Victim::Controller => "the controller",
            },
            partitions.iter().map(|p| p.leader).collect::<Vec<_>>()
        ),
    }
}

/// Writes at a fixed rate on its own tasks; the collector notes when each record was acked.
struct Load {
    stop: Arc<AtomicBool>,
    latest: watch::Receiver<Option<(Instant, Instant)>>,
    sender: tokio::task::JoinHandle<anyhow::Result<()>>,
    collector: tokio::task::JoinHandle<Outcome>,
}

/// What the collector saw.
#[derive(Default)]
struct Outcome {
    acked: u64,
    failed: u64,
    /// Acknowledgement times, in order.
    acks: Vec<Instant>,
}

impl Outcome {
    fn first_ack_after(&self, killed: Instant) -> Option<Duration> {
        self.acks
            .iter()
            .find(|at| **at > killed)
            .map(|at| at.duration_since(killed))
    }
}

type Pending = (Instant, millrace_client::DeliveryFuture);

impl Load {
    fn start(producer: Producer, topic: String, partition: i32, rate: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Pending>();
        // Latest acknowledged record: (sent, acknowledged).
        let (latest_tx, latest) = watch::channel(None);
        let sender = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let value = super::random_payload(100);
                let base = Instant::now();
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let due = base + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate);
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                    let sent = Instant::now();
                    let future = producer
                        .send(ProducerRecord::new(&topic, value.clone()).partition(partition))
                        .await?;
                    if tx.send((sent, future)).is_err() {
                        break;
                    }
                    i += 1;
                }
                drop(tx);
                // Bounded: the records in flight are retried until the delivery timeout.
                let _ = tokio::time::timeout(Duration::from_secs(30), producer.flush()).await;
                producer.close().await;
                anyhow::Ok(())
            })
        };
        let collector = tokio::spawn(async move {
            let mut outcome = Outcome::default();
            while let Some((sent, future)) = rx.recv().await {
                match future.await {
                    Ok(_) => {
                        let at = Instant::now();
                        outcome.acked += 1;
                        outcome.acks.push(at);
                        let _ = latest_tx.send(Some((sent, at)));
                    }
                    Err(error) => {
                        tracing::debug!(%error, "write failed");
                        outcome.failed += 1;
                    }
                }
            }
            outcome
        });
        Load {
            stop,
            latest,
            sender,
            collector,
        }
    }

    /// Time from `killed` to the acknowledgement of the first record sent after it.
    async fn first_ack_sent_after(&self, killed: Instant, limit: Duration) -> Option<Duration> {
        let mut latest = self.latest.clone();
        let wait = async {
            loop {
                if let Some((sent, acked)) = *latest.borrow_and_update() {
                    if sent > killed {
                        return Some(acked.duration_since(killed));
                    }
                }
                if latest.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.ok().flatten()
    }

    async fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::Release);
        match self.sender.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the writer stopped early"),
            Err(error) => tracing::warn!(%error, "the writer task failed"),
        }
        self.collector.await.unwrap_or_default()
    }
}

/// The benchmark's broker processes.
struct Brokers {
    exe: PathBuf,
    plans: Vec<BrokerPlan>,
    extra: Vec<String>,
    children: BTreeMap<u16, Child>,
    root: PathBuf,
    // Dropped after the children are killed (field order and `Drop` below).
    _temp: Option<tempfile::TempDir>,
}

impl Brokers {
    fn new(args: &FailoverBench) -> anyhow::Result<Brokers> {
        let (root, temp) = match &args.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("millrace-bench-failover-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let base = match args.base_port {
            Some(port) => port,
            None => free_base_port(BROKERS)?,
        };
        let plans = plan(BROKERS, &root, base)?;
        let extra = args
            .broker_settings
            .iter()
            .flat_map(|(k, v)| ["-o".to_string(), format!("{k}={v}")])
            .collect();
        Ok(Brokers {
            exe: std::env::current_exe().context("finding the millrace executable")?,
            plans,
            extra,
            children: BTreeMap::new(),
            root,
            _temp: temp,
        })
    }

    fn plan(&self, id: u16) -> anyhow::Result<&BrokerPlan> {
        self.plans
            .iter()
            .find(|p| p.id == id)
            .with_context(|| format!("no broker {id}"))
    }

    fn log_dir(&self) -> String {
        self.root.display().to_string()
    }

    fn bootstrap(&self) -> String {
        self.plans
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn client_config(&self) -> anyhow::Result<ClientConfig> {
        Ok(ClientConfig::builder(self.bootstrap().split(','))
            .client_id("millrace-bench-failover")
            .connect_timeout(Duration::from_secs(1))
            .build()?)
    }

    async fn admin(&self) -> anyhow::Result<Admin> {
        Ok(Admin::connect(self.client_config()?).await?)
    }

    /// Starts broker `id`, reaping its previous (killed) process first. Its log is appended
    /// to, so the log of the killed process stays readable.
    fn start(&mut self, id: u16) -> anyhow::Result<()> {
        if let Some(mut old) = self.children.remove(&id) {
            let _ = old.wait();
        }
        let plan = self.plan(id)?.clone();
        std::fs::create_dir_all(&plan.dir)
            .with_context(|| format!("creating {}", plan.dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&plan.log)
            .with_context(|| format!("opening {}", plan.log.display()))?;
        let stderr = log
            .try_clone()
            .with_context(|| format!("opening {}", plan.log.display()))?;
        // Same process group as the benchmark: Ctrl-C stops the brokers with it.
        let child = std::process::Command::new(&self.exe)
            .args(&plan.args)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting broker {id}"))?;
        tracing::info!(broker = id, pid = child.id(), "started");
        self.children.insert(id, child);
        Ok(())
    }

    /// kill -9 of broker `id`; returns when the signal was sent. The process is reaped when
    /// it is started again.
    fn kill9(&mut self, id: u16) -> anyhow::Result<Instant> {
        let child = self
            .children
            .get_mut(&id)
            .with_context(|| format!("broker {id} is not running"))?;
        let at = Instant::now();
        // `Child::kill` is SIGKILL on Unix.
        child
            .kill()
            .with_context(|| format!("killing broker {id}"))?;
        Ok(at)
    }

    /// VmRSS of the running brokers, summed, in kB (from /proc).
    fn rss_kb(&self) -> u64 {
        self.children
            .values()
            .filter_map(|child| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum()
    }

    /// Fails naming the log of a broker that exited by itself.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        let plans = &self.plans;
        for (id, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = plans.iter().find(|p| p.id == *id).map(|p| p.log.as_path());
                let log = log.unwrap_or(std::path::Path::new("?"));
                anyhow::bail!(died_message(*id, &status.to_string(), log));
            }
        }
        Ok(())
    }

    /// Waits until every broker is registered and unfenced and, with `topic`, every partition
    /// of it has a leader and all replicas in sync.
    async fn wait_until_whole(&mut self, topic: Option<&str>) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            self.check_alive()?;
            let last = match self.whole(topic).await {
                Ok(true) => return Ok(()),
                Ok(false) => "not all brokers alive or replicas in sync".to_string(),
                Err(error) => error.to_string(),
            };
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster was not whole within {} s ({last}); logs in {}",
                SETTLE_LIMIT.as_secs(),
                self.root.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn whole(&self, topic: Option<&str>) -> anyhow::Result<bool> {
        let admin = self.admin().await?;
        let cluster = admin.describe_cluster().await?;
        let alive = cluster.brokers.iter().filter(|b| !b.fenced).count();
        if cluster.controller_id < 0 || alive < usize::from(BROKERS) {
            return Ok(false);
        }
        let Some(topic) = topic else {
            return Ok(true);
        };
        let described = admin.describe_topics(&[topic]).await?;
        let partitions: Vec<&PartitionInfo> =
            described.iter().flat_map(|t| t.partitions.iter()).collect();
        Ok(partitions.len() == PARTITIONS as usize
            && partitions
                .iter()
                .all(|p| p.leader >= 0 && p.isr.len() == usize::from(BROKERS)))
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        // A benchmark's cluster holds nothing worth a clean shutdown.
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_report(args: &FailoverBench, results: &[RunResult]) -> anyhow::Result<()> {
    let failovers: Vec<f64> = results.iter().map(|r| r.failover_ms).collect();
    let first_acks: Vec<f64> = results.iter().map(|r| r.first_ack_ms).collect();
    let median_ms = median(failovers.clone());
    let min = failovers.iter().copied().fold(f64::INFINITY, f64::min);
    let max = failovers.iter().copied().fold(0.0, f64::max);
    let rss_max = results.iter().map(|r| r.brokers_rss_mb).fold(0.0, f64::max);
    let failed: u64 = results.iter().map(|r| r.failed_writes).sum();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "kill": args.kill.name(),
                "rate": args.rate,
                "min_insync_replicas": args.min_insync_replicas,
                "failover_ms_median": median_ms,
                "failover_ms_min": min,
                "failover_ms_max": max,
                "first_ack_ms_median": median(first_acks),
                "brokers_rss_mb_max": rss_max,
                "failed_writes": failed,
                "runs": results,
            })
        );
        return Ok(());
    }
    println!("run\tkilled\tcontroller\tfailover ms\tfirst ack ms\tacked\tfailed\tbrokers RSS MB");
    for r in results {
        println!(
            "{}\t{}\t{}\t{:.0}\t{:.0}\t{}\t{}\t{:.0}",
            r.run,
            r.killed_broker,
            if r.killed_was_controller { "yes" } else { "no" },
            r.failover_ms,
            r.first_ack_ms,
            r.acked,
            r.failed_writes,
            r.brokers_rss_mb
        );
    }
    println!(
        "kill -9 of a partition leader ({}) to the first acknowledged write after it: median \
         {median_ms:.0} ms, min {min:.0}, max {max:.0} over {} runs; writes failed: {failed}; \
         brokers' RSS together: at most {rss_max:.0} MB",
        args.kill.name(),
        results.len()
    );
    Ok(())
}
