//! SQL over an export or sink directory with DataFusion (feature `sql`).
//!
//! The directory is registered as one table (default name `exports`) whose Hive partition
//! directories (`topic=`, `dt=`, `hour=`, field partitions) are columns, as strings, so
//! `WHERE dt = '2026-11-25'` prunes whole directories. The partition columns are read off
//! the path of the first Parquet file found; every file of a sink's output has the same ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

use crate::error::{ConnectorError, IoContext, Result};
use crate::parquet_sink::recovery::STATE_DIR;

/// The default table name.
pub const DEFAULT_TABLE: &str = "exports";

/// Runs `sql` over the Parquet files under `dir`, registered as `table`.
pub async fn query(dir: &Path, table: &str, sql: &str) -> Result<Vec<RecordBatch>> {
    let dir = std::fs::canonicalize(dir).io("opening", dir)?;
    let Some(first) = first_parquet_file(&dir)? else {
        return Err(ConnectorError::Config(format!(
            "no .parquet files under {}",
            dir.display()
        )));
    };
    let partition_columns = partition_columns(&dir, &first);
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            partition_columns
                .into_iter()
                .map(|name| (name, DataType::Utf8))
                .collect(),
        );
    let ctx = SessionContext::new();
    let mut url = dir.to_string_lossy().into_owned();
    if !url.ends_with('/') {
        // A trailing slash makes DataFusion treat the path as a directory to list.
        url.push('/');
    }
    ctx.register_listing_table(table, &url, options, None, None)
        .await?;
    // Read-only: `millrace sql` answers questions, it does not create tables or write files.
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, read_only).await?;
    Ok(frame.collect().await?)
}

/// Renders batches as a text table.
pub fn format_table(batches: &[RecordBatch]) -> Result<String> {
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

/// The `key` of each `key=value` directory between `root` and `file`.
fn partition_columns(root: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(root).unwrap_or(file);
    relative
        .parent()
        .map(|dir| {
            dir.components()
                .filter_map(|c| {
                    let text = c.as_os_str().to_string_lossy();
                    text.split_once('=').map(|(k, _)| k.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first `.parquet` file under `dir` in name order, skipping the sink's state directory
/// and hidden directories.
fn first_parquet_file(dir: &Path) -> Result<Option<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .io("listing", dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in &entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_file() && name.ends_with(".parquet") {
            return Ok(Some(path.clone()));
        }
    }
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() && name != STATE_DIR && !name.starts_with('.') {
            if let Some(found) = first_parquet_file(&path)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_columns_come_from_key_value_directories() {
        let root = Path::new("/lake");
        let file = Path::new("/lake/topic=t/dt=2026-11-25/hour=11/t+0+1+2.parquet");
        assert_eq!(partition_columns(root, file), vec!["topic", "dt", "hour"]);
    }
}
