//! SQL (DataFusion) over the live state tables of the jobs, their recent results (one table
//! per output topic, see [`crate::results`]) and the configured Parquet directories,
//! read-only, with a time limit and a row limit.
//!
//! Each query gets a fresh session: the state tables are snapshots taken just before it
//! runs (see `QueryableState::register`), and each Parquet directory is a listing table
//! whose Hive `key=value` directories are string columns, as in `millrace sql`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::json::writer::JsonArray;
use axum::http::StatusCode;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::results::{results_table_name, ResultsCache};
use crate::JobEntry;

/// The longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most rows a query returns (a request may ask for fewer).
pub const MAX_ROWS: usize = 10_000;
/// Rows returned when the request does not say.
pub const DEFAULT_ROWS: usize = 1_000;

/// A query's answer.
#[derive(Debug, Serialize)]
pub struct QueryResult {
    /// Column names in order.
    pub columns: Vec<String>,
    /// One array per row, values in column order.
    pub rows: Vec<Vec<Value>>,
    /// True when the result had more rows than the limit (only the first ones are here).
    pub truncated: bool,
    /// How long the query took.
    pub elapsed_ms: u64,
}

/// A table a query can use.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// The SQL name.
    pub name: String,
    /// `job` (live state: what is still open), `results` (what a job emitted, read from its
    /// output topic) or `parquet`.
    pub kind: &'static str,
    /// The job name, the output topic or the directory.
    pub source: String,
    /// The job whose output a `results` table holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// The Parquet directories as `(table name, directory)`: each named after its last path
/// component (`/data/page-views` and `/data/topic=page-views` are `page_views`), made unique with a suffix when two
/// directories share a name.
pub fn parquet_tables(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        let base = dir
            .file_name()
            .map(|n| {
                // A topic directory of an export (`topic=page-views`) is named after the topic.
                let n = n.to_string_lossy();
                millrace_streams::query::table_name(n.strip_prefix("topic=").unwrap_or(&n))
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "exports".to_string());
        let mut name = base.clone();
        let mut n = 2;
        while out.iter().any(|(taken, _)| *taken == name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        out.push((name, dir.clone()));
    }
    out
}

/// Every table a query can use right now.
pub(crate) fn tables(
    jobs: &[JobEntry],
    results: &ResultsCache,
    parquet_dirs: &[PathBuf],
) -> Vec<TableInfo> {
    let mut out: Vec<TableInfo> = jobs
        .iter()
        .flat_map(|job| {
            job.state.stores().into_iter().map(|store| TableInfo {
                name: millrace_streams::query::table_name(&store),
                kind: "job",
                source: job.name.clone(),
                job: None,
            })
        })
        .collect();
    out.extend(results.topics().iter().map(|entry| TableInfo {
        name: results_table_name(&entry.topic),
        kind: "results",
        source: entry.topic.clone(),
        job: Some(entry.job.clone()),
    }));
    out.extend(
        parquet_tables(parquet_dirs)
            .into_iter()
            .map(|(name, dir)| TableInfo {
                name,
                kind: "parquet",
                source: dir.display().to_string(),
                job: None,
            }),
    );
    out
}

/// Runs `sql` (read-only) with at most `limit` rows and [`QUERY_TIMEOUT`].
pub(crate) async fn run(
    jobs: &[JobEntry],
    results: &ResultsCache,
    parquet_dirs: &[PathBuf],
    sql: &str,
    limit: usize,
) -> Result<QueryResult, ApiError> {
    let started = Instant::now();
    let ctx = SessionContext::new();
    // A job whose state cannot be read, or a directory that cannot be registered (missing,
    // no files yet), must not break queries over the other tables; its name then fails as an
    // unknown table, with the reason noted.
    let mut skipped = Vec::new();
    for job in jobs {
        if let Err(error) = job.state.register(&ctx) {
            tracing::warn!(job = %job.name, %error, "job state not registered for SQL");
            skipped.push(format!("state of job {} ({error})", job.name));
        }
    }
    skipped.extend(results.register(&ctx, sql));
    for (name, dir) in parquet_tables(parquet_dirs) {
        if let Err(error) = register_parquet(&ctx, &name, &dir).await {
            tracing::debug!(table = %name, %error, "Parquet directory not registered");
            skipped.push(format!("{name} ({error})"));
        }
    }
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let plan_error = |e: datafusion::error::DataFusionError| {
        let mut message = e.to_string();
        if !skipped.is_empty() && message.contains("not found") {
            message.push_str(&format!("; unavailable tables: {}", skipped.join(", ")));
        }
        ApiError::bad_request(message)
    };
    // The query runs as its own task, so the time limit holds even if the handler's future
    // is not polled promptly, and abandoning it (abort) frees its resources.
    let sql = sql.to_string();
    let task = tokio::spawn(async move {
        let frame = ctx.sql_with_options(&sql, read_only).await?;
        // One row beyond the limit tells a complete answer from a truncated one.
        let frame = frame.limit(0, Some(limit + 1))?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame.collect().await?;
        Ok::<_, datafusion::error::DataFusionError>((schema, batches))
    });
    let abort = task.abort_handle();
    let (schema, batches) = match tokio::time::timeout(QUERY_TIMEOUT, task).await {
        Err(_) => {
            abort.abort();
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the query ran longer than the {} s limit",
                    QUERY_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(join)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the query failed: {join}"),
            ))
        }
        Ok(Ok(Err(e))) => return Err(plan_error(e)),
        Ok(Ok(Ok(done))) => done,
    };
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = batches_to_rows(&columns, &batches)?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    Ok(QueryResult {
        columns,
        rows,
        truncated,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Registers `dir` as a Parquet listing table with its Hive partition columns.
async fn register_parquet(
    ctx: &SessionContext,
    name: &str,
    dir: &Path,
) -> datafusion::error::Result<()> {
    let dir = std::fs::canonicalize(dir)?;
    let mut url = dir.to_string_lossy().into_owned();
    if !url.ends_with('/') {
        // A trailing slash makes DataFusion list the path as a directory.
        url.push('/');
    }
    let table_url = ListingTableUrl::parse(&url)?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    // DataFusion reads the `key=value` directory names off the files it lists; it skips
    // `_`-prefixed directories such as the sink's `_millrace` state.
    let partitions = options.infer_partitions(&ctx.state(), &table_url).await?;
    let options = options.with_table_partition_cols(
        partitions
            .into_iter()
            .map(|column| (column, DataType::Utf8))
            .collect(),
    );
    ctx.register_listing_table(name, &url, options, None, None)
        .await
}

/// Record batches as rows of JSON values in `columns` order.
fn batches_to_rows(
    columns: &[String],
    batches: &[RecordBatch],
) -> Result<Vec<Vec<Value>>, ApiError> {
    let mut buffer = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut buffer);
        for batch in batches {
            writer.write(batch).map_err(internal)?;
        }
        writer.finish().map_err(internal)?;
    }
    if buffer.is_empty() {
        return Ok(Vec::new());
    }
    let objects: Vec<serde_json::Map<String, Value>> =
        serde_json::from_slice(&buffer).map_err(internal)?;
    Ok(objects
        .into_iter()
        .map(|mut object| {
            columns
                .iter()
                .map(|c| object.remove(c).unwrap_or(Value::Null))
                .collect()
        })
        .collect())
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot convert the result: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_tables_are_named_after_their_directories() {
        let dirs = vec![
            PathBuf::from("/lake/page-views"),
            PathBuf::from("/other/page-views"),
            PathBuf::from("/"),
        ];
        let names: Vec<String> = parquet_tables(&dirs).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["page_views", "page_views_2", "exports"]);
    }
}
