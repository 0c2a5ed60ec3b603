//! `millrace connect`: runs the connectors a TOML file declares until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use millrace_connectors::{run_connectors, ConnectConfig};

/// Options of `millrace connect`.
#[derive(clap::Args, Debug)]
pub struct ConnectCommandArgs {
    /// The connectors to run (see the README's Connectors section for the format).
    #[arg(long, value_name = "FILE.toml")]
    pub config: PathBuf,
}

/// Runs the file's connectors; on a signal they close and commit their files, then exit.
pub async fn run(args: ConnectCommandArgs) -> anyhow::Result<()> {
    let config = ConnectConfig::from_file(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    // Handlers before anything starts: a signal during start-up still means a clean stop.
    let mut stop = crate::StopSignals::install()?;
    run_connectors(config, async move { stop.wait().await }).await?;
    Ok(())
}
