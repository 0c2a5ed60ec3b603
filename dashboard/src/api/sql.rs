//! `POST /api/sql` and `GET /api/tables`: the SQL console's endpoints (see [`crate::sql`]).

use axum::extract::rejection::JsonRejection;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::sql::{QueryResult, DEFAULT_ROWS, MAX_ROWS};

/// The body of `POST /api/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One read-only statement.
    pub sql: String,
    /// Rows to return at most (default 1,000, at most 10,000).
    pub limit: Option<usize>,
}

/// `POST /api/sql {"sql": "..."}` -> `{"columns": [...], "rows": [[...]], "truncated", "elapsed_ms"}`.
pub async fn query(
    Ctx(state): Ctx,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> ApiResult<Json<QueryResult>> {
    let Json(request) = body?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::bad_request("the query is empty"));
    }
    let limit = request.limit.unwrap_or(DEFAULT_ROWS);
    if limit == 0 || limit > MAX_ROWS {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_ROWS}"
        )));
    }
    let result = crate::sql::run(
        &state.jobs,
        &state.results,
        &state.config.parquet_dirs,
        &request.sql,
        limit,
    )
    .await?;
    Ok(Json(result))
}

/// `GET /api/tables`: the tables a query can use.
pub async fn tables(Ctx(state): Ctx) -> Json<Value> {
    Json(json!({
        "tables": crate::sql::tables(&state.jobs, &state.results, &state.config.parquet_dirs),
    }))
}
