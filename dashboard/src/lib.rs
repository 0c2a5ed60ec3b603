//! Web console for a Millrace (or any Kafka) cluster: topics, consumer lag, a message browser,
//! the live state of running stream jobs, and SQL over that state and Parquet exports.
//!
//! The dashboard talks to the cluster only through `millrace-client`; a background task
//! samples topics, offsets, sizes and groups once a second (see [`sampler`]), and the HTTP
//! API reads that cache. Stream jobs and connectors running in the same process are handed
//! in with [`Dashboard::with_job`] and [`Dashboard::with_connector`].
//!
//! ```no_run
//! # async fn run() -> Result<(), millrace_dashboard::DashboardError> {
//! use millrace_dashboard::{Dashboard, DashboardConfig};
//!
//! let config = DashboardConfig {
//!     bootstrap: "127.0.0.1:9092".to_string(),
//!     ..DashboardConfig::default()
//! };
//! let bound = Dashboard::new(config).bind().await?;
//! println!("dashboard at {}", bound.url());
//! bound.serve(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```
//!
//! Where to start reading: `api` (the routes, one module per page of the API), then
//! [`sampler`] (the cache) and [`sql`] (queries, with their limits).

mod api;
mod assets;
mod auth;
pub mod error;
pub mod results;
pub mod sampler;
pub mod sql;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use millrace_client::ClientConfig;
use millrace_connectors::metrics::SinkMetrics;
use millrace_streams::runtime::JobMetrics;
use tokio::sync::watch;

pub use error::{ApiError, DashboardError};

use crate::results::{ResultsCache, ResultsTopic};
use crate::sampler::ClusterCache;

/// Environment variable read by the `millrace dashboard` command for the access token.
pub const TOKEN_ENV: &str = "MILLRACE_DASHBOARD_TOKEN";

/// How the dashboard is started.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Kafka bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    pub bootstrap: String,
    /// The HTTP address to listen on (default 127.0.0.1:8080; port 0 picks a free port).
    pub http: SocketAddr,
    /// When set, every route needs this token (`Authorization: Bearer`, `?token=`, or the
    /// cookie the dashboard sets after a `?token=` visit).
    pub token: Option<String>,
    /// Allow admin actions (create and delete topics, reset group offsets); otherwise they
    /// answer 403.
    pub allow_admin: bool,
    /// Parquet export or sink directories, each a SQL table named after the directory.
    pub parquet_dirs: Vec<PathBuf>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            bootstrap: "127.0.0.1:9092".to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            allow_admin: false,
            parquet_dirs: Vec::new(),
        }
    }
}

/// A running stream job whose state and counters the dashboard shows.
#[derive(Clone)]
pub(crate) struct JobEntry {
    pub(crate) name: String,
    pub(crate) state: millrace_streams::query::QueryableState,
    pub(crate) metrics: Arc<JobMetrics>,
}

/// A running connector whose counters the dashboard shows.
#[derive(Clone)]
pub(crate) struct ConnectorEntry {
    pub(crate) name: String,
    pub(crate) metrics: Arc<SinkMetrics>,
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) config: DashboardConfig,
    pub(crate) cluster: Arc<ClusterCache>,
    pub(crate) jobs: Vec<JobEntry>,
    pub(crate) connectors: Vec<ConnectorEntry>,
    /// The jobs' recent results, read from their output topics.
    pub(crate) results: Arc<ResultsCache>,
    /// Turns true when the server shuts down: live streams (SSE) end so shutdown completes.
    pub(crate) stop: watch::Receiver<bool>,
}

/// A dashboard being configured: add jobs and connectors, then [`Dashboard::bind`].
pub struct Dashboard {
    config: DashboardConfig,
    jobs: Vec<JobEntry>,
    connectors: Vec<ConnectorEntry>,
    results: Vec<ResultsTopic>,
}

impl Dashboard {
    /// A dashboard with `config` and no jobs or connectors yet.
    pub fn new(config: DashboardConfig) -> Self {
        Dashboard {
            config,
            jobs: Vec::new(),
            connectors: Vec::new(),
            results: Vec::new(),
        }
    }

    /// Shows a running stream job: its state stores (live tables, queryable with SQL) and
    /// its counters.
    #[must_use]
    pub fn with_job(
        mut self,
        name: impl Into<String>,
        state: millrace_streams::query::QueryableState,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        self.jobs.push(JobEntry {
            name: name.into(),
            state,
            metrics,
        });
        self
    }

    /// Makes `job`'s output topic a SQL table of its recent results, `<topic>_results`
    /// (see [`results`]): what the job emitted, such as closed windows, beside its live state
    /// table of what is still open.
    #[must_use]
    pub fn with_results(mut self, job: impl Into<String>, topic: impl Into<String>) -> Self {
        self.results.push(ResultsTopic {
            job: job.into(),
            topic: topic.into(),
        });
        self
    }

    /// Shows a running connector's counters (on `/metrics` and the overview).
    #[must_use]
    pub fn with_connector(mut self, name: impl Into<String>, metrics: Arc<SinkMetrics>) -> Self {
        self.connectors.push(ConnectorEntry {
            name: name.into(),
            metrics,
        });
        self
    }

    /// Checks the configuration and binds the HTTP address (so port 0 works and the real
    /// address is known before serving). The cluster is not contacted yet.
    pub async fn bind(self) -> Result<BoundDashboard, DashboardError> {
        if self
            .config
            .bootstrap
            .split(',')
            .all(|s| s.trim().is_empty())
        {
            return Err(DashboardError::Config("bootstrap is empty".to_string()));
        }
        if let Some(token) = &self.config.token {
            auth::validate_token(token).map_err(DashboardError::Config)?;
        }
        let listener = tokio::net::TcpListener::bind(self.config.http)
            .await
            .map_err(|source| DashboardError::Bind {
                addr: self.config.http,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind {
                addr: self.config.http,
                source,
            })?;
        let client = ClientConfig::new(&self.config.bootstrap);
        Ok(BoundDashboard {
            listener,
            local_addr,
            config: self.config,
            jobs: self.jobs,
            connectors: self.connectors,
            results: self.results,
            client,
        })
    }
}

/// A dashboard with its HTTP address bound, ready to [`serve`](BoundDashboard::serve).
pub struct BoundDashboard {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    config: DashboardConfig,
    jobs: Vec<JobEntry>,
    connectors: Vec<ConnectorEntry>,
    results: Vec<ResultsTopic>,
    client: ClientConfig,
}

impl BoundDashboard {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The UI's URL, `http://HOST:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// Samples the cluster and serves HTTP until `shutdown` completes; then stops the
    /// sampler, ends live event streams and waits for requests in flight.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let results = Arc::new(ResultsCache::new(self.results));
        let results_reader =
            tokio::spawn(results.clone().run(self.client.clone(), stop_rx.clone()));
        let cluster = Arc::new(ClusterCache::new(self.client));
        let sampler = tokio::spawn(cluster.clone().run(stop_rx.clone()));
        let state = Arc::new(AppState {
            config: self.config,
            cluster,
            jobs: self.jobs,
            connectors: self.connectors,
            results,
            stop: stop_rx,
        });
        let router = api::router(state);
        tracing::info!(url = %format!("http://{}/", self.local_addr), "dashboard listening");
        let signal_stop = stop_tx.clone();
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                signal_stop.send_replace(true);
            })
            .await;
        // Also on a server error: the sampler must not outlive the server.
        stop_tx.send_replace(true);
        if let Err(error) = sampler.await {
            tracing::warn!(%error, "dashboard sampler ended abnormally");
        }
        if let Err(error) = results_reader.await {
            tracing::warn!(%error, "the results reader ended abnormally");
        }
        served.map_err(DashboardError::Serve)
    }
}
