//! `millrace dashboard`: the web console for a cluster, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use millrace_dashboard::{Dashboard, DashboardConfig, TlsFiles, TOKEN_ENV};

use super::{key_value, ConnectArgs};

/// Options of `millrace dashboard`.
#[derive(clap::Args, Debug)]
pub struct DashboardArgs {
    /// Broker to bootstrap from (a comma-separated list is fine).
    #[arg(
        long,
        short = 'b',
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Address to serve HTTP (or HTTPS, with --tls-cert) on. Keep it on 127.0.0.1 unless a
    /// token or --login guards it.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Access token every request must carry (`Authorization: Bearer`, or `?token=` once in
    /// the browser). Also read from MILLRACE_DASHBOARD_TOKEN.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Allow admin actions (create and delete topics, reset group offsets).
    #[arg(long)]
    pub allow_admin: bool,
    /// A Parquet export or sink directory to query with SQL, as a table named after the
    /// directory (repeatable).
    #[arg(long = "parquet", value_name = "DIR")]
    pub parquet: Vec<PathBuf>,
    /// Where to scrape broker NODE_ID's metrics (repeatable), instead of the
    /// `metrics.listener` the broker names in its configs (for a console that reaches the
    /// brokers by other addresses).
    #[arg(long = "broker-metrics", value_name = "NODE_ID=http://HOST:PORT",
          value_parser = millrace_dashboard::broker_metrics::parse_endpoint_arg)]
    pub broker_metrics: Vec<(i32, String)>,
    /// A client setting with Kafka's name for the dashboard's connections, as every client
    /// command's `-X` (`-X security.protocol=SASL_SSL -X ssl.ca.location=ca.pem`).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = key_value)]
    pub properties: Vec<(String, String)>,
    /// A file of client settings, one `key=value` per line, as Kafka's `--command-config`.
    #[arg(long, value_name = "FILE")]
    pub command_config: Option<PathBuf>,
    /// People log in with a SASL user of the cluster (the mechanism from `sasl.mechanism`)
    /// and everything they do runs as that principal, so the broker's ACLs apply in the UI.
    #[arg(long)]
    pub login: bool,
    /// Serve HTTPS with this PEM certificate chain (which may also hold the key).
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert` (default: read it from the certificate's file).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Serves the dashboard until a signal.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    // Handlers first: a signal during start-up still stops cleanly.
    let mut stop = crate::StopSignals::install()?;
    // The same settings reader as every client command (`--command-config`, then `-X`).
    let client_settings = ConnectArgs {
        bootstrap: args.bootstrap.clone(),
        timeout: 30,
        properties: args.properties,
        command_config: args.command_config,
    }
    .settings()?;
    let config = DashboardConfig {
        bootstrap: args.bootstrap,
        http: args.http,
        // The environment keeps the token out of `ps` output; the flag wins when both are set.
        token: args
            .token
            .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())),
        allow_admin: args.allow_admin,
        parquet_dirs: args.parquet,
        client_settings,
        login: args.login,
        tls: args.tls_cert.map(|certificate| TlsFiles {
            certificate,
            key: args.tls_key,
        }),
    };
    let dashboard = args
        .broker_metrics
        .into_iter()
        .fold(Dashboard::new(config), |d, (id, url)| {
            d.with_broker_metrics(id, url)
        });
    let bound = dashboard.bind().await?;
    println!("dashboard: {}", bound.url());
    bound.serve(async move { stop.wait().await }).await?;
    Ok(())
}
