//! `millrace sql`: SQL (DataFusion) over a Parquet export or sink directory.

use std::path::PathBuf;

use millrace_connectors::sql::{format_table, query, DEFAULT_TABLE};

/// Options of `millrace sql`.
#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT country, count(*) FROM exports GROUP BY country".
    pub query: String,
    /// Directory written by `millrace export` or a Parquet sink. Its `key=value`
    /// directories (topic, dt, hour, ...) are columns.
    #[arg(long, value_name = "DIR")]
    pub parquet: PathBuf,
    /// Name of the table the directory is registered as.
    #[arg(long, default_value = DEFAULT_TABLE)]
    pub table: String,
}

/// Runs the query and prints the result as a table.
pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let batches = query(&args.parquet, &args.table, &args.query).await?;
    println!("{}", format_table(&batches)?);
    Ok(())
}
