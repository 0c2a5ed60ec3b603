//! The whole pipeline in one process: an embedded broker, the activity generator, the stream
//! jobs, the Parquet export of the raw topics and the dashboard. Every part is the same code
//! that runs standalone; they talk to each other over the Kafka protocol on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use millrace_broker::server::RunningBroker;
use millrace_broker::BrokerConfig;
use millrace_client::ClientConfig;
use millrace_connectors::parquet_sink::{ParquetSink, ParquetSinkConfig};
use millrace_dashboard::{Dashboard, DashboardConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::generator::{Generator, GeneratorConfig, GeneratorStats};
use super::jobs::{self, JobContext, RunningJob};
use super::topics;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// An existing cluster to use instead of the embedded broker (any Kafka).
    pub bootstrap: Option<String>,
    /// Data directory (the embedded broker's data under `broker/`, the Parquet export under
    /// `export/`); a temporary one (removed at the end) when `None`.
    pub data_dir: Option<PathBuf>,
    /// Where the (first) broker listens; further brokers take the next ports.
    pub listen: SocketAddr,
    /// Embedded brokers: 1, or a cluster of this many (every one a voter of the metadata
    /// quorum; topics replicated to all of them, `min.insync.replicas` 2).
    pub brokers: u16,
    /// Where the dashboard listens.
    pub http: SocketAddr,
    /// Generated events per second of wall time.
    pub rate: f64,
    /// Generator seed.
    pub seed: u64,
    /// Event time runs this many times faster than the wall clock.
    pub speedup: f64,
    /// Stop generating after this many events.
    pub events: Option<u64>,
    /// Partitions per topic.
    pub partitions: i32,
    /// How often jobs and the sink commit.
    pub commit_interval: Duration,
    /// Run the embedded brokers with a SASL_SSL listener (a throw-away CA and certificate,
    /// a PLAIN user) and every part of the pipeline as a client of it.
    pub secure: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            bootstrap: None,
            data_dir: None,
            listen: millrace_broker::config::default_listen(),
            brokers: 1,
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate: 2_000.0,
            seed: 42,
            speedup: 10.0,
            events: None,
            partitions: 3,
            commit_interval: Duration::from_secs(2),
            secure: false,
        }
    }
}

/// A step of [`Demo::start_reporting`], for telling the user what happens during the first
/// seconds (the jobs take a while to join their groups; nothing is visible meanwhile).
#[derive(Debug, Clone, PartialEq)]
pub enum StartupStep {
    /// The embedded brokers are up (or the given cluster is used).
    Brokers {
        /// Their addresses, comma-separated.
        bootstrap: String,
        /// How many were started here (0: an existing cluster).
        started: usize,
    },
    /// Every topic exists.
    TopicsCreated {
        /// Raw, output and bookkeeping topics.
        topics: usize,
        /// Partitions of each.
        partitions: i32,
    },
    /// The stream jobs run; each now joins its consumer group and waits for partitions.
    JobsStarted {
        /// How many.
        jobs: usize,
    },
    /// The Parquet export of the raw topics runs.
    ExportStarted {
        /// Where its files go.
        dir: PathBuf,
    },
    /// The dashboard answers.
    DashboardListening {
        /// Its address.
        url: String,
    },
    /// The generator produces events.
    Generating {
        /// Events per second asked for.
        rate: f64,
    },
}

impl std::fmt::Display for StartupStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartupStep::Brokers { bootstrap, started } if *started == 0 => {
                write!(f, "using the cluster at {bootstrap}")
            }
            StartupStep::Brokers { bootstrap, started } => {
                let s = if *started == 1 { "" } else { "s" };
                write!(f, "{started} broker{s} started on {bootstrap}")
            }
            StartupStep::TopicsCreated { topics, partitions } => {
                write!(f, "{topics} topics ready ({partitions} partitions each)")
            }
            StartupStep::JobsStarted { jobs } => write!(
                f,
                "{jobs} stream jobs started; each joins its consumer group and waits for partitions"
            ),
            StartupStep::ExportStarted { dir } => {
                write!(f, "Parquet export started into {}", dir.display())
            }
            StartupStep::DashboardListening { url } => write!(f, "dashboard listening on {url}"),
            StartupStep::Generating { rate } => write!(f, "generating {rate} events/s"),
        }
    }
}

/// A running demo.
pub struct Demo {
    brokers: Vec<RunningBroker>,
    _temp_dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    bootstrap: String,
    dashboard_url: String,
    /// The Kafka client settings of the demo's clients (empty unless secured).
    client_settings: BTreeMap<String, String>,
    /// The secured demo's client settings file.
    client_properties: Option<PathBuf>,
    jobs: Vec<RunningJob>,
    shutdown: watch::Sender<bool>,
    stop_generating: Arc<AtomicBool>,
    /// Behind a lock so that waiting for it needs only `&self` (and can be one branch of a
    /// `select!` beside others that read the demo).
    generator: tokio::sync::Mutex<Option<JoinHandle<anyhow::Result<u64>>>>,
    generator_stats: Arc<GeneratorStats>,
    sink: JoinHandle<anyhow::Result<()>>,
    dashboard: JoinHandle<anyhow::Result<()>>,
}

impl Demo {
    /// Starts the broker, creates the topics, starts the jobs, the sink, the dashboard and
    /// the generator.
    pub async fn start(options: DemoOptions) -> anyhow::Result<Demo> {
        Demo::start_reporting(options, |_| {}).await
    }

    /// [`Demo::start`], calling `report` after each step.
    pub async fn start_reporting(
        options: DemoOptions,
        mut report: impl FnMut(StartupStep),
    ) -> anyhow::Result<Demo> {
        let (temp_dir, data_dir) = match &options.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("millrace-demo-")
                    .tempdir()
                    .context("creating a temporary data directory")?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let broker_dir = data_dir.join("broker");
        let export_dir = data_dir.join("export");
        let security = match (options.secure, &options.bootstrap) {
            (true, None) => Some(super::secure::DemoSecurity::create(
                &data_dir.join("security"),
                &options.listen.ip().to_string(),
            )?),
            (true, Some(_)) => anyhow::bail!(
                "a secured demo runs its own brokers; give --security or a cluster, not both"
            ),
            (false, _) => None,
        };
        let client_settings = security
            .as_ref()
            .map(|s| s.client_settings())
            .unwrap_or_default();
        let (brokers, bootstrap) = match &options.bootstrap {
            Some(bootstrap) => (Vec::new(), bootstrap.clone()),
            None => {
                let brokers = start_brokers(&options, &broker_dir, security.as_ref()).await?;
                let bootstrap = brokers
                    .iter()
                    .map(|b| b.local_addr().to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                (brokers, bootstrap)
            }
        };
        report(StartupStep::Brokers {
            bootstrap: bootstrap.clone(),
            started: brokers.len(),
        });
        let mut builder =
            ClientConfig::builder(bootstrap.split(',').map(str::trim)).client_id("millrace-demo");
        for (name, value) in &client_settings {
            builder = builder.set(name, value).context("client settings")?;
        }
        let client = builder.build().context("client settings")?;
        let topics = super::create_topics(&client, options.partitions).await?;
        report(StartupStep::TopicsCreated {
            topics,
            partitions: options.partitions,
        });

        let start_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut generator = Generator::connect(
            client.clone(),
            GeneratorConfig {
                seed: options.seed,
                rate: options.rate,
                speedup: options.speedup,
                events: options.events,
                start_ms,
            },
        )
        .await?;
        generator.write_items().await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let jobs = jobs::start_all(&JobContext {
            client: client.clone(),
            commit_interval: options.commit_interval,
            shutdown: shutdown_rx.clone(),
        });
        report(StartupStep::JobsStarted { jobs: jobs.len() });

        let sink_config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
            "name": "activity-export",
            "bootstrap": bootstrap,
            "topics": topics::RAW,
            "out": export_dir,
            "time_field": "ts",
            "time_partitioning": "hour",
            "rolling": { "max_records": 200_000, "event_time_interval_ms": 600_000 },
            "client": client_settings,
        }))
        .context("Parquet sink settings")?;
        let sink = ParquetSink::new(sink_config).context("Parquet sink")?;
        let sink_metrics = sink.metrics();
        let mut sink_shutdown = shutdown_rx.clone();
        let sink = tokio::spawn(async move {
            sink.run(async move {
                let _ = sink_shutdown.wait_for(|stop| *stop).await;
            })
            .await
            .context("Parquet sink")
        });
        report(StartupStep::ExportStarted {
            dir: export_dir.clone(),
        });

        let mut dashboard = Dashboard::new(DashboardConfig {
            bootstrap: bootstrap.clone(),
            client_settings: client_settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            http: options.http,
            // One SQL table per exported topic, named after it (`page_views`).
            parquet_dirs: topics::RAW
                .iter()
                .map(|topic| export_dir.join(format!("topic={topic}")))
                .collect(),
            ..DashboardConfig::default()
        });
        for job in &jobs {
            // Each job writes the topic named after it: its emitted results are a SQL table
            // too (`page_views_per_minute_results`), beside its live state.
            dashboard = dashboard
                .with_job(job.name, job.state.clone(), job.metrics.clone())
                .with_results(job.name, job.name);
        }
        dashboard = dashboard.with_connector("activity-export", sink_metrics);
        let dashboard = dashboard
            .bind()
            .await
            .with_context(|| format!("starting the dashboard on {}", options.http))?;
        let dashboard_url = dashboard.url();
        report(StartupStep::DashboardListening {
            url: dashboard_url.clone(),
        });
        let mut dashboard_shutdown = shutdown_rx.clone();
        let dashboard = tokio::spawn(async move {
            dashboard
                .serve(async move {
                    let _ = dashboard_shutdown.wait_for(|stop| *stop).await;
                })
                .await
                .context("dashboard")
        });

        let generator_stats = generator.stats();
        let stop_generating = Arc::new(AtomicBool::new(false));
        let generator = tokio::spawn(generator.run(stop_generating.clone()));
        report(StartupStep::Generating { rate: options.rate });

        Ok(Demo {
            brokers,
            _temp_dir: temp_dir,
            data_dir,
            bootstrap,
            dashboard_url,
            client_settings,
            client_properties: security.as_ref().map(|s| s.client_properties.clone()),
            jobs,
            shutdown,
            stop_generating,
            generator: tokio::sync::Mutex::new(Some(generator)),
            generator_stats,
            sink,
            dashboard,
        })
    }

    /// The Kafka client settings of the demo's clients: empty, or the secured demo's
    /// `security.protocol`, `ssl.ca.location` and SASL user.
    pub fn client_settings(&self) -> &BTreeMap<String, String> {
        &self.client_settings
    }

    /// The secured demo's client settings file (`--command-config`), if secured.
    pub fn client_properties(&self) -> Option<&Path> {
        self.client_properties.as_deref()
    }

    /// The broker's address.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The dashboard's URL.
    pub fn dashboard_url(&self) -> &str {
        &self.dashboard_url
    }

    /// Each broker's Prometheus metrics URL (`metrics.listener`).
    pub fn metrics_urls(&self) -> Vec<String> {
        self.brokers
            .iter()
            .filter_map(|b| b.metrics_addr())
            .map(|addr| format!("http://{addr}/metrics"))
            .collect()
    }

    /// Where the broker's data and the Parquet export live.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The generator's counters.
    pub fn generator_stats(&self) -> Arc<GeneratorStats> {
        self.generator_stats.clone()
    }

    /// The running jobs.
    pub fn jobs(&self) -> &[RunningJob] {
        &self.jobs
    }

    /// Waits until every job has been assigned partitions (it has at least one task), or
    /// fails when one stops first.
    pub async fn wait_jobs_assigned(&self) -> anyhow::Result<()> {
        // The jobs publish their task count as a metric only: look at it a few times a second.
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            if let Some(stopped) = self.jobs.iter().find(|j| j.task.is_finished()) {
                anyhow::bail!(
                    "job {} stopped before it was assigned partitions",
                    stopped.name
                );
            }
            if self.jobs.iter().all(|j| j.metrics.snapshot().tasks > 0) {
                return Ok(());
            }
        }
    }

    /// Waits until the generator has produced its `--events` and all are acknowledged;
    /// returns how many it produced. Without an event limit this waits for [`Self::shutdown`].
    /// Cancel safe: the generator keeps running if this is dropped.
    pub async fn wait_generated(&self) -> anyhow::Result<u64> {
        let mut generator = self.generator.lock().await;
        match generator.as_mut() {
            Some(handle) => {
                let result = handle.await;
                *generator = None;
                result.context("the generator panicked")?
            }
            None => Ok(0),
        }
    }

    /// Tells every job that the input has ended and waits until each has closed and emitted
    /// all its windows. Fails if a job stops meanwhile (its error is in the log and comes
    /// back from [`Self::shutdown`]).
    pub async fn end_input(&self) -> anyhow::Result<()> {
        for job in &self.jobs {
            job.end_of_input.signal();
        }
        for job in &self.jobs {
            let drained = job.end_of_input.drained();
            tokio::pin!(drained);
            loop {
                tokio::select! {
                    () = &mut drained => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {
                        if let Some(stopped) = self.jobs.iter().find(|j| j.task.is_finished()) {
                            anyhow::bail!(
                                "job {} stopped before its input was drained",
                                stopped.name
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops everything: generator, jobs (which commit), sink (which commits its open files),
    /// dashboard, broker.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_generating.store(true, Ordering::Relaxed);
        let mut first_error = None;
        if let Some(generator) = self.generator.get_mut().take() {
            if let Err(error) = generator.await.context("the generator panicked")? {
                first_error.get_or_insert(error);
            }
        }
        let _ = self.shutdown.send(true);
        for job in self.jobs.drain(..) {
            match job.task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(anyhow::Error::new(error).context(job.name));
                }
                Err(panic) => {
                    first_error
                        .get_or_insert(anyhow::anyhow!("job {} panicked: {panic}", job.name));
                }
            }
        }
        for (what, task) in [("sink", &mut self.sink), ("dashboard", &mut self.dashboard)] {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(panic) => {
                    first_error.get_or_insert(anyhow::anyhow!("{what} panicked: {panic}"));
                }
            }
        }
        for broker in std::mem::take(&mut self.brokers) {
            broker.shutdown().await;
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Starts the embedded broker, or a cluster of `options.brokers` brokers on consecutive ports
/// from `options.listen` (controller listeners 100 ports above), each in `broker_dir/<id>`.
async fn start_brokers(
    options: &DemoOptions,
    broker_dir: &Path,
    security: Option<&super::secure::DemoSecurity>,
) -> anyhow::Result<Vec<RunningBroker>> {
    // Every member of the demo's groups starts at once: no need to wait for more.
    let mut common = vec![
        (
            "group.initial.rebalance.delay.ms".to_string(),
            "0".to_string(),
        ),
        // Every broker serves /metrics and /health on a port of its own (printed at start).
        (
            "metrics.listener".to_string(),
            format!("http://{}:0", options.listen.ip()),
        ),
    ];
    if let Some(security) = security {
        // The client listener (named PLAINTEXT, as without security) speaks SASL_SSL.
        common.extend(security.broker_settings("PLAINTEXT"));
    }
    if options.brokers <= 1 {
        let settings: BTreeMap<String, String> = common.into_iter().collect();
        let broker_config = BrokerConfig::from_settings(
            &settings,
            Some(options.listen),
            Some(broker_dir.to_path_buf()),
        )
        .context("broker settings")?;
        let broker = millrace_broker::start(broker_config)
            .await
            .with_context(|| format!("starting the broker on {}", options.listen))?;
        return Ok(vec![broker]);
    }
    let n = options.brokers;
    let host = options.listen.ip();
    let port = |offset: u16| -> anyhow::Result<u16> {
        options
            .listen
            .port()
            .checked_add(offset)
            .context("--listen port too high for the cluster's ports")
    };
    let mut voters = Vec::new();
    for id in 1..=n {
        voters.push(format!(
            "{id}@{}",
            SocketAddr::new(host, port(100 + id - 1)?)
        ));
    }
    common.extend([
        ("controller.quorum.voters".to_string(), voters.join(",")),
        (
            "controller.listener.names".to_string(),
            "CONTROLLER".to_string(),
        ),
        ("default.replication.factor".to_string(), n.to_string()),
        ("min.insync.replicas".to_string(), n.min(2).to_string()),
    ]);
    let mut starting = Vec::new();
    for id in 1..=n {
        let mut settings: BTreeMap<String, String> = common.iter().cloned().collect();
        settings.insert("node.id".to_string(), id.to_string());
        settings.insert(
            "listeners".to_string(),
            format!(
                "PLAINTEXT://{},CONTROLLER://{}",
                SocketAddr::new(host, port(id - 1)?),
                SocketAddr::new(host, port(100 + id - 1)?)
            ),
        );
        let config =
            BrokerConfig::from_settings(&settings, None, Some(broker_dir.join(id.to_string())))
                .context("broker settings")?;
        // Each on its own task: the quorum needs a majority before any start completes.
        starting.push(tokio::spawn(millrace_broker::start(config)));
    }
    let mut brokers = Vec::new();
    for (index, started) in starting.into_iter().enumerate() {
        let broker = started
            .await
            .context("a broker's start task")?
            .with_context(|| format!("starting broker {}", index + 1))?;
        brokers.push(broker);
    }
    Ok(brokers)
}
