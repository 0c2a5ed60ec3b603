//! `millrace dashboard`: the web console for a cluster, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use millrace_dashboard::{Dashboard, DashboardConfig, TOKEN_ENV};

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
    /// Address to serve HTTP on. Keep it on 127.0.0.1 unless a token is set.
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
}

/// Serves the dashboard until a signal.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    // Handlers first: a signal during start-up still stops cleanly.
    let mut stop = crate::StopSignals::install()?;
    let config = DashboardConfig {
        bootstrap: args.bootstrap,
        http: args.http,
        // The environment keeps the token out of `ps` output; the flag wins when both are set.
        token: args
            .token
            .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())),
        allow_admin: args.allow_admin,
        parquet_dirs: args.parquet,
    };
    let bound = Dashboard::new(config).bind().await?;
    println!("dashboard: {}", bound.url());
    bound.serve(async move { stop.wait().await }).await?;
    Ok(())
}
