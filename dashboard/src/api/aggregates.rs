//! Live aggregates: the state stores of the jobs handed to the dashboard, as tables with
//! hints for charting them (a label column and a numeric column), whatever their shape.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::JobEntry;

/// Rows per table when the request does not say.
pub const DEFAULT_ROWS: usize = 500;
/// The most rows per table a request may ask for.
pub const MAX_ROWS: usize = 10_000;

/// Query parameters of `GET /api/aggregates`.
#[derive(Debug, Deserialize)]
pub struct AggregateParams {
    /// Rows per table (default [`DEFAULT_ROWS`], at most [`MAX_ROWS`]).
    pub limit: Option<usize>,
}

/// `GET /api/aggregates`: per job, its counters and each state table (newest windows and
/// largest values first).
pub async fn aggregates(
    Ctx(state): Ctx,
    params: Result<Query<AggregateParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) = params?;
    let limit = params.limit.unwrap_or(DEFAULT_ROWS);
    if limit == 0 || limit > MAX_ROWS {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_ROWS}"
        )));
    }
    Ok(Json(aggregates_json(&state.jobs, limit)))
}

/// The aggregates document (also sent on the event stream).
pub(crate) fn aggregates_json(jobs: &[JobEntry], limit: usize) -> Value {
    json!({
        "jobs": jobs.iter().map(|job| {
            let tables: Vec<Value> = job
                .state
                .stores()
                .into_iter()
                .map(|store| table_json(job, &store, limit))
                .collect();
            json!({
                "name": job.name,
                "metrics": job.metrics.snapshot(),
                "tables": tables,
            })
        }).collect::<Vec<_>>(),
    })
}

fn table_json(job: &JobEntry, store: &str, limit: usize) -> Value {
    let mut rows = job.state.rows(store);
    let columns = columns(&rows);
    let windowed = columns.iter().any(|c| c == "window_start");
    let label = label_column(&columns, &rows);
    let value = value_column(&columns, &rows, label.as_deref());
    // Newest windows first, then the largest values: the rows a person looks at first, and
    // the ones kept when the table is cut to `limit`.
    rows.sort_by(|a, b| {
        let window = |r: &Value| r.get("window_start").and_then(Value::as_i64);
        let number = |r: &Value| {
            value
                .as_deref()
                .and_then(|c| r.get(c))
                .and_then(Value::as_f64)
                .unwrap_or(f64::NEG_INFINITY)
        };
        window(b)
            .cmp(&window(a))
            .then(number(b).total_cmp(&number(a)))
    });
    let total = rows.len();
    rows.truncate(limit);
    json!({
        "store": store,
        "table": millrace_streams::query::table_name(store),
        "updated_ms": job.state.updated_ms(store),
        "columns": columns,
        "rows": rows,
        "total_rows": total,
        "truncated": total > limit,
        "windowed": windowed,
        "label_column": label,
        "value_column": value,
    })
}

/// Values above this (1973 in ms since the epoch) are taken for timestamps.
const EPOCH_MS_FLOOR: f64 = 1e11;

/// Column names: `key` and the window bounds first, then the rest by name (the rows are
/// JSON objects, whose field order is not kept).
fn columns(rows: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for row in rows {
        if let Value::Object(fields) = row {
            for name in fields.keys() {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
        }
    }
    let rank = |c: &str| match c {
        "key" => 0,
        "window_start" => 1,
        "window_end" => 2,
        _ => 3,
    };
    out.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    out
}

fn is_window(column: &str) -> bool {
    column == "window_start" || column == "window_end"
}

fn first_value<'a>(rows: &'a [Value], column: &str) -> Option<&'a Value> {
    rows.iter()
        .filter_map(|r| r.get(column))
        .find(|v| !v.is_null())
}

/// The column naming a row on a chart: the first text column that is not a window bound,
/// preferring a named field over the generic `key` (the flattened key repeats it).
fn label_column(columns: &[String], rows: &[Value]) -> Option<String> {
    let text: Vec<&String> = columns
        .iter()
        .filter(|c| !is_window(c))
        .filter(|c| matches!(first_value(rows, c), Some(Value::String(_))))
        .collect();
    text.iter()
        .find(|c| c.as_str() != "key")
        .or_else(|| text.first())
        .map(|c| c.to_string())
}

/// The number charted: of the numeric columns other than the window bounds and the label,
/// the one with the largest total, which is the main count of most tables (views before
/// unique users, impressions before clicks); the UI lets a person pick another.
fn value_column(columns: &[String], rows: &[Value], label: Option<&str>) -> Option<String> {
    columns
        .iter()
        .filter(|c| !is_window(c) && Some(c.as_str()) != label)
        .filter(|c| matches!(first_value(rows, c), Some(Value::Number(_))))
        // Epoch-millisecond columns (`last_seen`) are times, not measures, and their huge
        // totals would always win.
        .filter(|c| {
            !rows
                .iter()
                .filter_map(|r| r.get(c.as_str()).and_then(Value::as_f64))
                .all(|v| v > EPOCH_MS_FLOOR)
        })
        .map(|c| {
            let total: f64 = rows
                .iter()
                .filter_map(|r| r.get(c.as_str()).and_then(Value::as_f64))
                .map(f64::abs)
                .sum();
            (c, total)
        })
        // On equal totals the first column by name wins, so the choice is stable.
        .fold(None::<(&String, f64)>, |best, (c, total)| match best {
            Some((_, t)) if t >= total => best,
            _ => Some((c, total)),
        })
        .map(|(c, _)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_columns_are_picked_from_the_row_shapes() {
        let rows = vec![
            json!({"key": "/a", "page": "/a", "window_start": 0, "window_end": 60_000, "views": 3, "unique_users": 2}),
            json!({"key": "/b", "page": "/b", "window_start": 0, "window_end": 60_000, "views": 5, "unique_users": 1}),
        ];
        let columns = columns(&rows);
        let label = label_column(&columns, &rows);
        assert_eq!(label.as_deref(), Some("page"));
        assert_eq!(
            value_column(&columns, &rows, label.as_deref()).as_deref(),
            Some("views")
        );
        let baselines = vec![
            json!({"key": "u1", "baseline": 1.5, "last_seen": 1_795_707_539_999_i64, "observations": 3}),
        ];
        let columns = super::columns(&baselines);
        assert_eq!(
            value_column(&columns, &baselines, Some("key")).as_deref(),
            Some("observations")
        );
        let counts = vec![json!({"key": "/a", "window_start": 0, "window_end": 1, "value": 4})];
        let columns = super::columns(&counts);
        assert_eq!(label_column(&columns, &counts).as_deref(), Some("key"));
        assert_eq!(
            value_column(&columns, &counts, Some("key")).as_deref(),
            Some("value")
        );
    }
}
