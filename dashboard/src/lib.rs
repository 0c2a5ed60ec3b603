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
pub mod broker_metrics;
pub mod error;
pub mod results;
pub mod sampler;
mod session;
pub mod sql;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use millrace_client::ClientConfig;
use millrace_connectors::metrics::SinkMetrics;
use millrace_streams::runtime::JobMetrics;
use tokio::sync::watch;

pub use error::{ApiError, DashboardError};

use crate::broker_metrics::BrokerMetricsCache;
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
    /// Kafka client settings for the dashboard's connections, with Kafka's names
    /// (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, `sasl.username`, ...), as
    /// `-X` gives them to every client command.
    pub client_settings: Vec<(String, String)>,
    /// Login mode: people log in with a SASL user of the cluster (`POST /api/login`) and
    /// everything they do runs as that principal, so the broker's ACLs decide what they see.
    /// The mechanism and the rest of the connection come from `client_settings`.
    pub login: bool,
    /// Serve HTTPS with this certificate chain and key instead of plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// The HTTPS certificate: a PEM chain and its private key. The key may sit in the chain's
/// file (as in the broker's `ssl.keystore.location`); then `key` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first (may also hold the key).
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); `None`: read it from `certificate`.
    pub key: Option<PathBuf>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            bootstrap: "127.0.0.1:9092".to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            allow_admin: false,
            parquet_dirs: Vec::new(),
            client_settings: Vec::new(),
            login: false,
            tls: None,
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

/// What every handler shares. A logged-in session has its own copy whose `cluster` is
/// sampled with the session's client (see [`session`]); handlers get the right one through
/// [`api::Ctx`].
pub(crate) struct AppState {
    pub(crate) config: DashboardConfig,
    pub(crate) cluster: Arc<ClusterCache>,
    /// The logged-in sessions (login mode).
    pub(crate) sessions: Arc<session::Sessions>,
    /// The user this state belongs to (a session's copy), `None` for the shared one.
    pub(crate) user: Option<String>,
    /// The client settings logins start from (their own user and password added).
    pub(crate) login_template: ClientConfig,
    /// When the session this state belongs to was last used (a session's copy only).
    pub(crate) activity: Option<Arc<session::Activity>>,
    pub(crate) jobs: Vec<JobEntry>,
    pub(crate) connectors: Vec<ConnectorEntry>,
    /// The jobs' recent results, read from their output topics.
    pub(crate) results: Arc<ResultsCache>,
    /// The brokers' own metrics endpoints, scraped.
    pub(crate) broker_metrics: Arc<BrokerMetricsCache>,
    /// Turns true when the server shuts down: live streams (SSE) end so shutdown completes.
    pub(crate) stop: watch::Receiver<bool>,
}

impl AppState {
    /// The state a logged-in session's requests see: everything shared, but the cluster as
    /// `user`'s client sees it, and live streams that end with the session.
    pub(crate) fn for_session(
        &self,
        user: &str,
        cluster: Arc<ClusterCache>,
        stop: watch::Receiver<bool>,
        activity: Arc<session::Activity>,
    ) -> AppState {
        AppState {
            config: self.config.clone(),
            cluster,
            sessions: self.sessions.clone(),
            user: Some(user.to_string()),
            login_template: self.login_template.clone(),
            activity: Some(activity),
            jobs: self.jobs.clone(),
            connectors: self.connectors.clone(),
            results: self.results.clone(),
            broker_metrics: self.broker_metrics.clone(),
            stop,
        }
    }
}

/// A dashboard being configured: add jobs and connectors, then [`Dashboard::bind`].
pub struct Dashboard {
    config: DashboardConfig,
    jobs: Vec<JobEntry>,
    connectors: Vec<ConnectorEntry>,
    results: Vec<ResultsTopic>,
    broker_metrics: std::collections::BTreeMap<i32, String>,
}

impl Dashboard {
    /// A dashboard with `config` and no jobs or connectors yet.
    pub fn new(config: DashboardConfig) -> Self {
        Dashboard {
            config,
            jobs: Vec::new(),
            connectors: Vec::new(),
            results: Vec::new(),
            broker_metrics: std::collections::BTreeMap::new(),
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
    /// Scrapes broker `node_id`'s metrics at `url` (`http://HOST:PORT`) instead of the
    /// endpoint the broker names in its `metrics.listener` (for a console that reaches the
    /// brokers through other addresses).
    #[must_use]
    pub fn with_broker_metrics(mut self, node_id: i32, url: impl Into<String>) -> Self {
        self.broker_metrics.insert(node_id, url.into());
        self
    }

    #[must_use]
    pub fn with_connector(mut self, name: impl Into<String>, metrics: Arc<SinkMetrics>) -> Self {
        self.connectors.push(ConnectorEntry {
            name: name.into(),
            metrics,
        });
        self
    }

    /// Checks the configuration (client settings, login mode, the HTTPS certificate) and
    /// binds the HTTP address (so port 0 works and the real address is known before
    /// serving). The cluster is not contacted yet.
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
        let (template, service) = client_configs(&self.config)?;
        let tls = match &self.config.tls {
            Some(files) => Some(tls::server_config(files)?),
            None => None,
        };
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
        Ok(BoundDashboard {
            listener,
            local_addr,
            config: self.config,
            jobs: self.jobs,
            connectors: self.connectors,
            results: self.results,
            broker_metrics: self.broker_metrics,
            template,
            service,
            tls,
        })
    }
}

/// The client settings logins start from, and the dashboard's own client (`None` in login
/// mode when the settings name no user: then only logged-in sessions talk to the cluster).
fn client_configs(
    config: &DashboardConfig,
) -> Result<(ClientConfig, Option<ClientConfig>), DashboardError> {
    let mut template = ClientConfig::new(&config.bootstrap);
    template.client_id = "millrace-dashboard".to_string();
    for (name, value) in &config.client_settings {
        template
            .security
            .set(name, value)
            .map_err(|e| DashboardError::Config(format!("client setting: {e}")))?;
    }
    // Validation is the builder's: a config that builds is one the client accepts.
    let validated = ClientConfig::builder(template.bootstrap_servers.clone())
        .client_id(template.client_id.clone())
        .security(template.security.clone())
        .build();
    if config.login {
        if !template.security.protocol.uses_sasl() {
            return Err(DashboardError::Config(
                "login mode needs a SASL connection: set security.protocol=SASL_PLAINTEXT or \
                 SASL_SSL (and sasl.mechanism) in the client settings"
                    .to_string(),
            ));
        }
        let has_user = template.security.sasl_username.is_some();
        match validated {
            Ok(service) if has_user => Ok((template, Some(service))),
            Ok(_) => Ok((template, None)),
            // Without a user of its own the settings cannot validate; a login adds one.
            Err(_) if !has_user => Ok((template, None)),
            Err(e) => Err(DashboardError::Config(format!("client settings: {e}"))),
        }
    } else {
        let service =
            validated.map_err(|e| DashboardError::Config(format!("client settings: {e}")))?;
        Ok((template, Some(service)))
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
    broker_metrics: std::collections::BTreeMap<i32, String>,
    /// What logins start from.
    template: ClientConfig,
    /// The dashboard's own client; `None` in login mode without a user of its own.
    service: Option<ClientConfig>,
    /// HTTPS, when configured.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl BoundDashboard {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The UI's URL, `http://HOST:PORT/` (`https://` when serving HTTPS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.local_addr)
    }

    /// Samples the cluster and serves HTTP until `shutdown` completes; then stops the
    /// sampler, ends live event streams and waits for requests in flight.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        let url = self.url();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let results = Arc::new(ResultsCache::new(self.results));
        // Without a client of its own (login mode, no user in the settings) the dashboard
        // samples nothing itself: each session samples what its principal may see.
        let shared_client = self
            .service
            .clone()
            .unwrap_or_else(|| self.template.clone());
        let results_reader = self
            .service
            .clone()
            .map(|client| tokio::spawn(results.clone().run(client, stop_rx.clone())));
        let cluster = Arc::new(ClusterCache::new(shared_client));
        let sampler = self
            .service
            .is_some()
            .then(|| tokio::spawn(cluster.clone().run(stop_rx.clone())));
        if self.service.is_none() {
            tracing::info!(
                "no client identity of the dashboard's own: the cluster is sampled per logged-in user"
            );
        }
        let broker_metrics = Arc::new(BrokerMetricsCache::new(&self.broker_metrics));
        // The scraper finds the brokers through the shared sample, so it needs one too.
        let scraper = self
            .service
            .is_some()
            .then(|| tokio::spawn(broker_metrics.clone().run(cluster.clone(), stop_rx.clone())));
        let sessions = Arc::new(session::Sessions::new(self.tls.is_some()));
        let reaper = tokio::spawn(sessions.clone().expire_idle(stop_rx.clone()));
        let state = Arc::new(AppState {
            config: self.config,
            cluster,
            sessions: sessions.clone(),
            user: None,
            login_template: self.template,
            activity: None,
            jobs: self.jobs,
            connectors: self.connectors,
            results,
            broker_metrics,
            stop: stop_rx,
        });
        let router = api::router(state);
        tracing::info!(%url, "dashboard listening");
        let signal_stop = stop_tx.clone();
        let graceful = async move {
            shutdown.await;
            signal_stop.send_replace(true);
        };
        let served = match self.tls {
            Some(tls) => {
                let listener = tls::TlsListener::new(self.listener, self.local_addr, tls);
                axum::serve(listener, router)
                    .with_graceful_shutdown(graceful)
                    .await
            }
            None => {
                axum::serve(self.listener, router)
                    .with_graceful_shutdown(graceful)
                    .await
            }
        };
        // Also on a server error: the sampler must not outlive the server.
        stop_tx.send_replace(true);
        sessions.end_all().await;
        if let Err(error) = reaper.await {
            tracing::warn!(%error, "the session reaper ended abnormally");
        }
        if let Some(sampler) = sampler {
            if let Err(error) = sampler.await {
                tracing::warn!(%error, "dashboard sampler ended abnormally");
            }
        }
        if let Some(results_reader) = results_reader {
            if let Err(error) = results_reader.await {
                tracing::warn!(%error, "the results reader ended abnormally");
            }
        }
        if let Some(scraper) = scraper {
            if let Err(error) = scraper.await {
                tracing::warn!(%error, "the broker metrics scraper ended abnormally");
            }
        }
        served.map_err(DashboardError::Serve)
    }
}
