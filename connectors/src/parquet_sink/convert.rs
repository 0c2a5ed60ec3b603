//! JSON rows to Arrow record batches, with arrow's JSON decoder.
//!
//! Rows have passed [`SinkSchema::check`](super::schema::SinkSchema::check) already, so a
//! batch normally converts in one go. Should the decoder still reject a batch (a corner the
//! check does not model, such as a float that overflows `float32`), the rows are decoded one by
//! one so that only the guilty rows are rejected and the rest are written.

use arrow::datatypes::SchemaRef;
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use crate::error::Result;

/// A row the decoder refused, by its index in the input, with the decoder's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// Index of the row in the slice given to [`rows_to_batch`].
    pub index: usize,
    /// Why it was refused.
    pub reason: String,
}

/// Converts `rows` to one batch of `schema`. Rows the decoder refuses are left out and
/// reported; the batch holds the others in order.
pub fn rows_to_batch(
    schema: &SchemaRef,
    rows: &[Map<String, Value>],
) -> Result<(RecordBatch, Vec<RejectedRow>)> {
    match decode(schema, rows) {
        Ok(batch) => Ok((batch, Vec::new())),
        Err(_) => {
            // Slow path, only for batches with a bad row: find the rows that decode alone.
            let mut good = Vec::with_capacity(rows.len());
            let mut rejected = Vec::new();
            for (index, row) in rows.iter().enumerate() {
                match decode(schema, std::slice::from_ref(row)) {
                    Ok(_) => good.push(row.clone()),
                    Err(error) => rejected.push(RejectedRow {
                        index,
                        reason: format!("does not convert to the schema: {error}"),
                    }),
                }
            }
            Ok((decode(schema, &good)?, rejected))
        }
    }
}

/// Decodes all of `rows` or fails.
fn decode(
    schema: &SchemaRef,
    rows: &[Map<String, Value>],
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::parquet_sink::schema::{ColumnSpec, ColumnType, SinkSchema};
    use arrow::array::{Array, Float32Array, Int64Array, StringArray, TimestampMillisecondArray};
    use serde_json::json;

    fn schema() -> SinkSchema {
        SinkSchema {
            columns: vec![
                ColumnSpec {
                    name: "user".into(),
                    kind: ColumnType::String,
                    nullable: true,
                },
                ColumnSpec {
                    name: "n".into(),
                    kind: ColumnType::Int64,
                    nullable: true,
                },
                ColumnSpec {
                    name: "ts".into(),
                    kind: ColumnType::TimestampMs,
                    nullable: true,
                },
                ColumnSpec {
                    name: "extra".into(),
                    kind: ColumnType::Json,
                    nullable: true,
                },
            ],
        }
    }

    fn row(value: Value) -> Map<String, Value> {
        schema().prepare_row(value.as_object().unwrap().clone())
    }

    #[test]
    fn json_rows_become_typed_columns() {
        let arrow_schema = schema().arrow_schema(false);
        let rows = vec![
            row(json!({"user": "ann", "n": 1, "ts": 1000, "extra": {"a": [1, 2]}})),
            row(json!({"user": null, "n": 2, "ts": "1970-01-01T00:00:02Z"})),
        ];
        let (batch, rejected) = rows_to_batch(&arrow_schema, &rows).unwrap();
        assert!(rejected.is_empty());
        assert_eq!(batch.num_rows(), 2);
        let users = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(users.value(0), "ann");
        assert!(users.is_null(1));
        let n = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(n.values().to_vec(), vec![1, 2]);
        let ts = batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(ts.values().to_vec(), vec![1000, 2000]);
        let extra = batch
            .column(3)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(extra.value(0), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn a_row_the_decoder_refuses_is_rejected_alone() {
        let arrow_schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("f", arrow::datatypes::DataType::Float32, true),
        ]));
        let rows: Vec<Map<String, Value>> = [json!({"f": 1.5}), json!({"f": "x"}), json!({"f": 2})]
            .iter()
            .map(|v| v.as_object().unwrap().clone())
            .collect();
        let (batch, rejected) = rows_to_batch(&arrow_schema, &rows).unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].index, 1);
        let f = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        assert_eq!(f.values().to_vec(), vec![1.5, 2.0]);
    }
}
