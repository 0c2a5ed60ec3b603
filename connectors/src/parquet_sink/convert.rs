//! JSON rows to Arrow record batches.
//!
//! Rows have passed [`SinkSchema::check`](super::schema::SinkSchema::check) already, so a
//! batch normally converts in one go. The common case is built column by column straight from
//! the JSON values ([`build_direct`]): booleans, integers, floats, strings and timestamps given
//! as ms. Anything else in a batch (a timestamp as RFC 3339 text, a date, a float that
//! overflows `float32`) sends the whole batch through arrow's JSON decoder instead, which
//! defines the rules. Should the decoder reject a batch, the rows are decoded one by one so
//! that only the guilty rows are rejected and the rest are written.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
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
    if let Some(batch) = build_direct(schema, rows) {
        return Ok((batch, Vec::new()));
    }
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

/// Builds the batch from the values without the decoder, or `None` when some value needs the
/// decoder's rules (see the [module documentation](self)). For the values it takes, the result
/// is what the decoder would build; a test checks that.
pub fn build_direct(schema: &SchemaRef, rows: &[Map<String, Value>]) -> Option<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let values = rows.iter().map(|row| match row.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value),
        });
        let n = rows.len();
        let array: ArrayRef = match field.data_type() {
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(n);
                for v in values {
                    b.append_option(typed(v, Value::as_bool)?);
                }
                Arc::new(b.finish())
            }
            DataType::Int32 => {
                let mut b = Int32Builder::with_capacity(n);
                for v in values {
                    let x = match v {
                        None => None,
                        Some(v) => Some(i32::try_from(v.as_i64()?).ok()?),
                    };
                    b.append_option(x);
                }
                Arc::new(b.finish())
            }
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(n);
                for v in values {
                    b.append_option(typed(v, Value::as_i64)?);
                }
                Arc::new(b.finish())
            }
            DataType::Float32 => {
                let mut b = Float32Builder::with_capacity(n);
                for v in values {
                    let x = match v {
                        None => None,
                        Some(v) => {
                            let x = v.as_f64()? as f32;
                            // Out of float32's range: the decoder's call.
                            if !x.is_finite() {
                                return None;
                            }
                            Some(x)
                        }
                    };
                    b.append_option(x);
                }
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(n);
                for v in values {
                    b.append_option(typed(v, Value::as_f64)?);
                }
                Arc::new(b.finish())
            }
            DataType::Utf8 => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                for v in values {
                    b.append_option(typed(v, Value::as_str)?);
                }
                Arc::new(b.finish())
            }
            DataType::Timestamp(TimeUnit::Millisecond, tz) => {
                let mut b = TimestampMillisecondBuilder::with_capacity(n);
                for v in values {
                    // RFC 3339 text is parsed by the decoder, not here.
                    b.append_option(typed(v, Value::as_i64)?);
                }
                Arc::new(b.finish().with_timezone_opt(tz.clone()))
            }
            _ => return None,
        };
        columns.push(array);
    }
    // Fails on a null in a non-nullable column: the decoder reports that row by row.
    RecordBatch::try_new(schema.clone(), columns).ok()
}

/// A missing or null value as `Some(None)`, a value `get` takes as `Some(Some(x))`, and `None`
/// for a value it does not take (so `?` leaves the direct path).
fn typed<'a, T>(
    value: Option<&'a Value>,
    get: impl Fn(&'a Value) -> Option<T>,
) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(value) => get(value).map(Some),
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
    fn the_direct_path_builds_what_the_decoder_builds() {
        let mut columns = schema().columns;
        for (name, kind, nullable) in [
            ("b", ColumnType::Boolean, true),
            ("i", ColumnType::Int32, false),
            ("f", ColumnType::Float32, true),
            ("d", ColumnType::Float64, true),
        ] {
            columns.push(ColumnSpec {
                name: name.into(),
                kind,
                nullable,
            });
        }
        let schema = SinkSchema { columns };
        let arrow_schema = schema.arrow_schema(true);
        let rows: Vec<Map<String, Value>> = (0..50)
            .map(|i| {
                let mut row = schema.prepare_row(
                    json!({
                        "user": if i % 3 == 0 { Value::Null } else { json!(format!("u{i}")) },
                        "n": i * 1_000_000_007_i64,
                        "ts": 1_795_600_800_000_i64 + i,
                        "extra": {"k": [i, "x"]},
                        "b": i % 2 == 0,
                        "i": -i,
                        "f": i as f64 / 8.0,
                        "d": if i % 5 == 0 { json!(i) } else { json!(i as f64 * 0.1) },
                    })
                    .as_object()
                    .unwrap()
                    .clone(),
                );
                row.insert("_kafka_partition".into(), json!(3));
                row.insert("_kafka_offset".into(), json!(i));
                row.insert("_kafka_timestamp".into(), json!(1000 + i));
                row
            })
            .collect();
        let direct = build_direct(&arrow_schema, &rows).expect("direct path taken");
        assert_eq!(direct, decode(&arrow_schema, &rows).unwrap());
        // Text timestamps and nulls in a required column go to the decoder.
        let mut text_ts = rows.clone();
        text_ts[7].insert("ts".into(), json!("2026-11-25T10:00:00Z"));
        assert!(build_direct(&arrow_schema, &text_ts).is_none());
        assert_eq!(
            rows_to_batch(&arrow_schema, &text_ts).unwrap().0.num_rows(),
            50
        );
        let mut null_required = rows;
        null_required[3].remove("i");
        assert!(build_direct(&arrow_schema, &null_required).is_none());
        let (batch, rejected) = rows_to_batch(&arrow_schema, &null_required).unwrap();
        assert_eq!((batch.num_rows(), rejected.len()), (49, 1));
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
