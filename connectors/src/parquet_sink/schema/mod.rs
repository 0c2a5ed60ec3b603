//! The table schema of a sink: declared in the configuration, or inferred from the first JSON
//! records, and the check that decides whether a record fits it.
//!
//! This file holds the column types and the check; `inference.rs` fixes a schema from a
//! topic's first records ([`SinkSchema::infer`]), and `store.rs` keeps an inferred schema on
//! disk so that restarts and the other tasks of a sink write files of that same schema.
//!
//! A record that does not fit is never written with guessed values: it goes to the dead-letter
//! topic with the reason (see [`Mismatch`]). Columns are a small, flat set of types that every
//! warehouse tool reads the same way; nested JSON is kept as its text in a `json` column.

mod inference;
mod store;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) use inference::{schema_before_records, settle_inferred};
pub(crate) use store::SchemaStore;

/// Name of the Kafka partition column added with `kafka_metadata = true`.
pub const KAFKA_PARTITION_COLUMN: &str = "_kafka_partition";
/// Name of the Kafka offset column added with `kafka_metadata = true`.
pub const KAFKA_OFFSET_COLUMN: &str = "_kafka_offset";
/// Name of the Kafka timestamp column added with `kafka_metadata = true`.
pub const KAFKA_TIMESTAMP_COLUMN: &str = "_kafka_timestamp";

/// The type of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// JSON `true`/`false`.
    Boolean,
    /// A JSON integer that fits 32 bits.
    Int32,
    /// A JSON integer that fits 64 bits.
    Int64,
    /// Any JSON number, as a 32-bit float.
    Float32,
    /// Any JSON number, as a 64-bit float.
    Float64,
    /// A JSON string.
    String,
    /// Milliseconds since the epoch (a JSON integer) or an RFC 3339 string, stored as a UTC
    /// timestamp in milliseconds.
    TimestampMs,
    /// A `YYYY-MM-DD` string.
    Date,
    /// Any JSON value, stored as its JSON text (objects and arrays land here).
    Json,
}

impl ColumnType {
    /// The Arrow type the column is written as.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            // An offset rather than the name "UTC": arrow parses named zones only with
            // chrono-tz, and every reader treats "+00:00" as UTC all the same.
            ColumnType::TimestampMs => {
                DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
            }
            ColumnType::Date => DataType::Date32,
        }
    }

    /// Whether a non-null JSON value can be stored in this column.
    fn accepts(self, value: &Value) -> bool {
        match self {
            ColumnType::Boolean => value.is_boolean(),
            ColumnType::Int32 => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            ColumnType::Int64 => value.is_i64(),
            ColumnType::Float32 | ColumnType::Float64 => value.is_number(),
            ColumnType::String => value.is_string(),
            ColumnType::TimestampMs => {
                value.is_i64()
                    || value
                        .as_str()
                        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
            }
            ColumnType::Date => value
                .as_str()
                .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
            ColumnType::Json => true,
        }
    }
}

/// One column of a declared or inferred schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// The JSON field and column name.
    pub name: String,
    /// The column type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Whether the field may be missing or null (default true).
    #[serde(default = "default_true")]
    pub nullable: bool,
}

fn default_true() -> bool {
    true
}

/// What to do with a record field that the schema has no column for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraFields {
    /// Send the record to the dead-letter topic, so no data is dropped silently (default).
    #[default]
    DeadLetter,
    /// Write the record without the extra fields.
    Ignore,
}

/// The `[schema]` part of a sink's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// The declared columns. Without them the schema is inferred from the first records.
    #[serde(default)]
    pub columns: Option<Vec<ColumnSpec>>,
    /// How many valid records inference looks at before it fixes the schema (default 1000).
    #[serde(default = "default_infer_records")]
    pub infer_records: usize,
    /// Policy for fields the schema has no column for.
    #[serde(default)]
    pub extra_fields: ExtraFields,
}

fn default_infer_records() -> usize {
    1000
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            columns: None,
            infer_records: default_infer_records(),
            extra_fields: ExtraFields::default(),
        }
    }
}

/// Why a record does not fit the schema (the text of the `millrace.error` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The columns a sink writes, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkSchema {
    /// The columns.
    pub columns: Vec<ColumnSpec>,
}

impl SinkSchema {
    /// The Arrow schema of the files, with the Kafka metadata columns last when asked for.
    pub fn arrow_schema(&self, kafka_metadata: bool) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.kind.arrow_type(), c.nullable))
            .collect();
        if kafka_metadata {
            fields.push(Field::new(KAFKA_PARTITION_COLUMN, DataType::Int32, false));
            fields.push(Field::new(KAFKA_OFFSET_COLUMN, DataType::Int64, false));
            fields.push(Field::new(
                KAFKA_TIMESTAMP_COLUMN,
                ColumnType::TimestampMs.arrow_type(),
                false,
            ));
        }
        Arc::new(Schema::new(fields))
    }

    /// Checks that `record` fits: every column's value has the column's type (or is null or
    /// missing where the column is nullable), and extra fields are allowed by `extra`.
    pub fn check(&self, record: &Map<String, Value>, extra: ExtraFields) -> Result<(), Mismatch> {
        for column in &self.columns {
            match record.get(&column.name) {
                None | Some(Value::Null) if column.nullable => {}
                None | Some(Value::Null) => {
                    return Err(Mismatch(format!(
                        "field `{}` is missing or null but the column is not nullable",
                        column.name
                    )))
                }
                Some(value) if column.kind.accepts(value) => {}
                Some(value) => {
                    return Err(Mismatch(format!(
                        "field `{}` is {} but the column is {:?}",
                        column.name,
                        json_kind(value),
                        column.kind
                    )))
                }
            }
        }
        if extra == ExtraFields::DeadLetter {
            if let Some(name) = record
                .keys()
                .find(|k| !self.columns.iter().any(|c| &c.name == *k))
            {
                return Err(Mismatch(format!("field `{name}` is not in the schema")));
            }
        }
        Ok(())
    }

    /// The row to hand to the Arrow JSON decoder for a record that passed [`Self::check`]:
    /// only the schema's columns, `json` columns as their text.
    pub fn prepare_row(&self, mut record: Map<String, Value>) -> Map<String, Value> {
        let mut row = Map::with_capacity(self.columns.len() + 3);
        for column in &self.columns {
            match record.remove(&column.name) {
                None | Some(Value::Null) => {}
                Some(value) if column.kind == ColumnType::Json => {
                    row.insert(column.name.clone(), Value::String(value.to_string()));
                }
                Some(value) => {
                    row.insert(column.name.clone(), value);
                }
            }
        }
        row
    }
}

/// "a string", "a number", ... for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_string_where_an_integer_is_declared_is_a_mismatch() {
        let schema = SinkSchema {
            columns: vec![ColumnSpec {
                name: "n".into(),
                kind: ColumnType::Int64,
                nullable: true,
            }],
        };
        let err = schema
            .check(&obj(json!({"n": "seven"})), ExtraFields::Ignore)
            .unwrap_err();
        assert_eq!(err.0, "field `n` is a string but the column is Int64");
    }

    #[test]
    fn a_missing_required_field_is_a_mismatch() {
        let schema = SinkSchema {
            columns: vec![ColumnSpec {
                name: "id".into(),
                kind: ColumnType::String,
                nullable: false,
            }],
        };
        assert!(schema.check(&obj(json!({})), ExtraFields::Ignore).is_err());
    }

    #[test]
    fn extra_fields_follow_the_policy() {
        let schema = SinkSchema::infer(&[obj(json!({"a": 1}))]);
        let record = obj(json!({"a": 1, "b": 2}));
        assert!(schema.check(&record, ExtraFields::Ignore).is_ok());
        assert!(schema.check(&record, ExtraFields::DeadLetter).is_err());
    }

    #[test]
    fn timestamps_accept_milliseconds_and_rfc3339() {
        let t = ColumnType::TimestampMs;
        assert!(t.accepts(&json!(1_764_068_400_000_i64)));
        assert!(t.accepts(&json!("2026-11-25T11:00:00Z")));
        assert!(!t.accepts(&json!("yesterday")));
    }
}
