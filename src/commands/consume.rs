//! `millrace consume`: records to stdout, in the manner of kcat -C.

use super::ConnectArgs;

/// Options of `millrace consume`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long, short = 't')]
    pub topic: String,
}

/// Reads records and prints them.
pub async fn run(_connect: &ConnectArgs, _args: ConsumeArgs) -> anyhow::Result<()> {
    anyhow::bail!("millrace consume is not implemented yet")
}
