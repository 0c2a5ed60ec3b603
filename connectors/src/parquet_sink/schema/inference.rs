//! Schema inference: the columns a topic's first records imply, fixed once for the topic.
//!
//! A sink without declared columns collects a topic's first valid records (`infer_records`
//! of them, or what arrived within `rolling.max_open_ms`), infers the narrowest schema they
//! all fit, and saves it before it writes any of them; from then on the topic's records are
//! checked against it as against a declared schema. Tasks that infer at the same time agree
//! through the [`SchemaStore`]: the first schema saved wins.

use serde_json::{Map, Value};

use super::{ColumnSpec, ColumnType, SchemaConfig, SchemaStore, SinkSchema};
use crate::error::Result;

impl ColumnType {
    /// The narrowest type for one JSON value seen during inference (`None` for null).
    fn of(value: &Value) -> Option<ColumnType> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(ColumnType::Boolean),
            Value::Number(n) if n.is_i64() => Some(ColumnType::Int64),
            Value::Number(_) => Some(ColumnType::Float64),
            Value::String(_) => Some(ColumnType::String),
            Value::Array(_) | Value::Object(_) => Some(ColumnType::Json),
        }
    }

    /// The type both `self` and `other` fit: integers widen to floats, anything else that
    /// disagrees becomes JSON text (nothing a record holds is lost).
    fn widen(self, other: ColumnType) -> ColumnType {
        use ColumnType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Int64, Float64) | (Float64, Int64) => Float64,
            _ => Json,
        }
    }
}

impl SinkSchema {
    /// Infers a schema from sample records: one nullable column per field, in order of first
    /// appearance, of the narrowest type every sample fits. Fields that were only ever null
    /// become JSON text.
    pub fn infer<'a>(samples: impl IntoIterator<Item = &'a Map<String, Value>>) -> SinkSchema {
        let mut columns: Vec<(String, Option<ColumnType>)> = Vec::new();
        for record in samples {
            for (name, value) in record {
                let seen = ColumnType::of(value);
                match columns.iter_mut().find(|(n, _)| n == name) {
                    Some((_, kind)) => {
                        *kind = match (*kind, seen) {
                            (Some(a), Some(b)) => Some(a.widen(b)),
                            (a, b) => a.or(b),
                        }
                    }
                    None => columns.push((name.clone(), seen)),
                }
            }
        }
        SinkSchema {
            columns: columns
                .into_iter()
                .map(|(name, kind)| ColumnSpec {
                    name,
                    kind: kind.unwrap_or(ColumnType::Json),
                    nullable: true,
                })
                .collect(),
        }
    }
}

/// The schema of `topic`'s files when it is known before any record arrives: the declared
/// columns (without the partition fields, which live in the path), or the schema an earlier
/// inference saved. `None` when the topic's schema is still to be inferred.
pub(crate) fn schema_before_records(
    config: &SchemaConfig,
    partition_fields: &[String],
    store: &SchemaStore,
    topic: &str,
) -> Result<Option<SinkSchema>> {
    match &config.columns {
        Some(columns) => Ok(Some(SinkSchema {
            columns: columns
                .iter()
                .filter(|c| !partition_fields.contains(&c.name))
                .cloned()
                .collect(),
        })),
        None => store.load(topic),
    }
}

/// Fixes `topic`'s schema from its collected records: infers it and saves it, or adopts the
/// schema another task saved first, so that every file of a topic has one schema.
pub(crate) fn settle_inferred<'a>(
    store: &SchemaStore,
    topic: &str,
    samples: impl IntoIterator<Item = &'a Map<String, Value>>,
) -> Result<SinkSchema> {
    let inferred = SinkSchema::infer(samples);
    let schema = store.save(topic, &inferred)?;
    if schema == inferred {
        tracing::info!(topic, columns = schema.columns.len(), "schema inferred");
    } else {
        tracing::info!(
            topic,
            "schema inferred by another task first; using that one"
        );
    }
    Ok(schema)
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
    fn inference_widens_integers_to_floats_and_conflicts_to_json() {
        let samples = [
            obj(json!({"a": 1, "b": "x", "c": 1, "d": null})),
            obj(json!({"a": 2.5, "b": 3, "c": 2, "e": {"k": 1}})),
        ];
        let schema = SinkSchema::infer(&samples);
        let kinds: Vec<(&str, ColumnType)> = schema
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("a", ColumnType::Float64),
                ("b", ColumnType::Json),
                ("c", ColumnType::Int64),
                ("d", ColumnType::Json),
                ("e", ColumnType::Json),
            ]
        );
    }

    #[test]
    fn a_declared_schema_leaves_the_partition_fields_to_the_path() {
        let out = tempfile::tempdir().unwrap();
        let store = SchemaStore::new(out.path());
        let config = SchemaConfig {
            columns: Some(SinkSchema::infer(&[obj(json!({"id": 1, "country": "DE"}))]).columns),
            ..SchemaConfig::default()
        };
        let schema = schema_before_records(&config, &["country".into()], &store, "views")
            .unwrap()
            .unwrap();
        let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["id"]);
    }

    #[test]
    fn the_first_inferred_schema_saved_is_the_topics_schema() {
        let out = tempfile::tempdir().unwrap();
        let store = SchemaStore::new(out.path());
        let config = SchemaConfig::default();
        assert_eq!(
            schema_before_records(&config, &[], &store, "views").unwrap(),
            None
        );
        let first = settle_inferred(&store, "views", &[obj(json!({"a": 1}))]).unwrap();
        let second = settle_inferred(&store, "views", &[obj(json!({"b": "x"}))]).unwrap();
        assert_eq!(second, first);
        assert_eq!(
            schema_before_records(&config, &[], &store, "views").unwrap(),
            Some(first)
        );
    }
}
