//! Queryable state: the live state stores of a running job as Arrow record batches and as
//! DataFusion tables, for SQL over live aggregates (the dashboard's `/api/sql`).
//!
//! The runtime publishes each task's store snapshots (see [`crate::Pipeline::snapshot`]) to
//! a [`QueryableState`] about once a second; readers take consistent copies without blocking
//! the job for more than a map clone.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use serde_json::{Map, Value};

use crate::dsl::StoreSnapshot;
use crate::error::StreamsError;

/// Rows of every store, per task, as last published.
#[derive(Debug, Default)]
struct Published {
    stores: BTreeMap<String, BTreeMap<i32, Vec<Value>>>,
    /// When each store was last published (ms since the epoch).
    updated_ms: BTreeMap<String, i64>,
}

/// A shared, cheaply cloneable view of a job's live state.
#[derive(Debug, Clone, Default)]
pub struct QueryableState {
    inner: Arc<RwLock<Published>>,
}

impl QueryableState {
    /// An empty view (a job fills it while it runs).
    pub fn new() -> Self {
        QueryableState::default()
    }

    /// Replaces task `task`'s rows of every store in `snapshots`.
    pub fn publish(&self, task: i32, snapshots: Vec<StoreSnapshot>, now_ms: i64) {
        let mut published = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for snapshot in snapshots {
            published.updated_ms.insert(snapshot.store.clone(), now_ms);
            published
                .stores
                .entry(snapshot.store)
                .or_default()
                .insert(task, snapshot.rows);
        }
    }

    /// Forgets a task's rows (its partition moved to another instance).
    pub fn remove_task(&self, task: i32) {
        let mut published = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for tasks in published.stores.values_mut() {
            tasks.remove(&task);
        }
    }

    /// The stores published so far, by name.
    pub fn stores(&self) -> Vec<String> {
        let published = self.inner.read().unwrap_or_else(|p| p.into_inner());
        published.stores.keys().cloned().collect()
    }

    /// When `store` was last published (ms since the epoch).
    pub fn updated_ms(&self, store: &str) -> Option<i64> {
        let published = self.inner.read().unwrap_or_else(|p| p.into_inner());
        published.updated_ms.get(store).copied()
    }

    /// Every row of `store` over this instance's tasks, flattened (see [`flatten_row`]).
    pub fn rows(&self, store: &str) -> Vec<Value> {
        let published = self.inner.read().unwrap_or_else(|p| p.into_inner());
        published
            .stores
            .get(store)
            .map(|tasks| tasks.values().flatten().map(flatten_row).collect())
            .unwrap_or_default()
    }

    /// `store` as one Arrow record batch (`None` while it holds no rows: no schema yet).
    pub fn record_batch(&self, store: &str) -> Result<Option<RecordBatch>, StreamsError> {
        rows_to_record_batch(&self.rows(store))
    }

    /// Registers (or replaces) every store with rows as a DataFusion table named after the
    /// store, with `-` and `.` turned into `_` (`page-counts` is `page_counts`). Tables are
    /// snapshots: call again before each query for fresh data.
    pub fn register(&self, ctx: &datafusion::prelude::SessionContext) -> Result<(), StreamsError> {
        for store in self.stores() {
            let Some(batch) = self.record_batch(&store)? else {
                continue;
            };
            let name = table_name(&store);
            ctx.deregister_table(name.as_str())
                .map_err(|e| StreamsError::Query(e.to_string()))?;
            ctx.register_batch(&name, batch)
                .map_err(|e| StreamsError::Query(e.to_string()))?;
        }
        Ok(())
    }
}

/// The SQL table name of a store.
pub fn table_name(store: &str) -> String {
    store.replace(['-', '.'], "_")
}

/// Lifts the fields of an object `key` and `value` to the top level, so a row
/// `{"key": "/home", "window_start": 0, "window_end": 60000, "value": {"views": 3}}` becomes
/// `{"key": "/home", "window_start": 0, "window_end": 60000, "views": 3}`; a field that would
/// collide keeps a `key_`/`value_` prefix.
pub fn flatten_row(row: &Value) -> Value {
    let Value::Object(fields) = row else {
        return serde_json::json!({ "value": row });
    };
    let mut out = Map::new();
    let mut nested = Vec::new();
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("key" | "value", Value::Object(inner)) => nested.push((name.clone(), inner)),
            _ => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    for (prefix, inner) in nested {
        for (name, value) in inner {
            let column = if out.contains_key(name) {
                format!("{prefix}_{name}")
            } else {
                name.clone()
            };
            out.insert(column, value.clone());
        }
    }
    Value::Object(out)
}

/// JSON objects as one Arrow record batch, with the schema inferred from the rows (`None`
/// for no rows).
///
/// Values Arrow cannot type (arrays mixing strings and numbers, such as `(item, score)`
/// pairs, or fields whose shape changes between rows) make every nested column of the batch
/// JSON text instead, so one odd store never makes the others unqueryable.
pub fn rows_to_record_batch(rows: &[Value]) -> Result<Option<RecordBatch>, StreamsError> {
    if rows.is_empty() {
        return Ok(None);
    }
    match typed_record_batch(rows) {
        Ok(batch) => Ok(Some(batch)),
        Err(_) => {
            let texts: Vec<Value> = rows.iter().map(nested_as_text).collect();
            typed_record_batch(&texts).map(Some)
        }
    }
}

/// A row with every array or object field replaced by its JSON text.
fn nested_as_text(row: &Value) -> Value {
    match row {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        Value::Array(_) | Value::Object(_) => Value::String(value.to_string()),
                        other => other.clone(),
                    };
                    (name.clone(), value)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn typed_record_batch(rows: &[Value]) -> Result<RecordBatch, StreamsError> {
    let schema: Schema =
        arrow::json::reader::infer_json_schema_from_iterator(rows.iter().map(Ok::<_, _>))
            .map_err(|e| StreamsError::Query(format!("cannot infer a schema: {e}")))?;
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::new(schema))
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(|e| StreamsError::Query(e.to_string()))?;
    decoder
        .serialize(rows)
        .map_err(|e| StreamsError::Query(format!("cannot convert rows: {e}")))?;
    decoder
        .flush()
        .map_err(|e| StreamsError::Query(e.to_string()))?
        .ok_or_else(|| StreamsError::Query("no rows decoded".to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn untypable_nested_values_become_json_text() {
        let rows = vec![
            serde_json::json!({"key": "/a", "related": [["/b", 1.5], ["/c", 0.5]]}),
            serde_json::json!({"key": "/b", "related": [["/a", 1.5]]}),
        ];
        let batch = rows_to_record_batch(&rows).unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let related = batch
            .column_by_name("related")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(related.value(1), r#"[["/a",1.5]]"#);
    }

    #[test]
    fn object_values_are_lifted_and_collisions_prefixed() {
        let row = serde_json::json!({
            "key": {"campaign": "spring", "window_start": 5},
            "window_start": 0,
            "window_end": 60_000,
            "value": {"clicks": 3, "impressions": 10},
        });
        let flat = flatten_row(&row);
        assert_eq!(flat["campaign"], "spring");
        assert_eq!(flat["window_start"], 0);
        assert_eq!(flat["key_window_start"], 5);
        assert_eq!(flat["clicks"], 3);
    }

    #[test]
    fn published_rows_become_a_record_batch_over_all_tasks() {
        let state = QueryableState::new();
        let rows = |page: &str, views: u64| StoreSnapshot {
            store: "page-counts".to_string(),
            rows: vec![serde_json::json!({
                "key": page, "window_start": 0, "window_end": 60_000, "value": views,
            })],
        };
        state.publish(0, vec![rows("/a", 3)], 1);
        state.publish(1, vec![rows("/b", 5)], 1);
        let batch = state.record_batch("page-counts").unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.schema().field_with_name("value").is_ok());
        state.remove_task(0);
        assert_eq!(state.rows("page-counts").len(), 1);
        assert!(state.record_batch("unknown").unwrap().is_none());
    }

    #[tokio::test]
    async fn stores_are_queryable_with_sql() {
        let state = QueryableState::new();
        state.publish(
            0,
            vec![StoreSnapshot {
                store: "page-counts".to_string(),
                rows: (0..5)
                    .map(|i| serde_json::json!({"key": format!("/p{i}"), "value": i}))
                    .collect(),
            }],
            1,
        );
        let ctx = datafusion::prelude::SessionContext::new();
        state.register(&ctx).unwrap();
        let frame = ctx
            .sql("SELECT key FROM page_counts WHERE value >= 3 ORDER BY key")
            .await
            .unwrap();
        let batches = frame.collect().await.unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 2);
        // Registering again replaces the table instead of failing.
        state.register(&ctx).unwrap();
    }
}
