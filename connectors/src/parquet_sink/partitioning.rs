//! Where a record's file goes: Hive-style directories from the topic, the event time (UTC)
//! and optional record fields, e.g. `topic=page-views/dt=2026-11-25/hour=11/country=DE/`,
//! and the file name, which carries the Kafka topic, partition and offset range.
//!
//! Hive-style `key=value` directories are what pyarrow, DuckDB, DataFusion, Spark and Trino
//! recognise as partition columns without configuration. Time comes first so that dropping
//! old data is removing whole `dt=` directories.

use chrono::{DateTime, Datelike, Timelike};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Hive's directory value for a missing or null partition field.
pub const NULL_PARTITION_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";

/// How finely paths are split by event time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimePartitioning {
    /// No time directories.
    None,
    /// `dt=YYYY-MM-DD/`.
    Day,
    /// `dt=YYYY-MM-DD/hour=HH/` (default).
    #[default]
    Hour,
}

/// Builds partition directories for records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioner {
    time: TimePartitioning,
    fields: Vec<String>,
}

impl Partitioner {
    /// A partitioner by event time at `time` granularity, then by `fields` in order.
    pub fn new(time: TimePartitioning, fields: Vec<String>) -> Self {
        Partitioner { time, fields }
    }

    /// The record fields that become directories (and so are not stored in the files).
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The directory (relative to the output root, `/`-separated, no trailing slash) for a
    /// record of `topic` with event time `event_ms` (ms since the epoch, UTC). `None` when the
    /// time is outside what a calendar date can represent.
    pub fn directory(
        &self,
        topic: &str,
        event_ms: i64,
        record: &Map<String, Value>,
    ) -> Option<String> {
        let mut dir = format!("topic={}", escape(topic));
        if self.time != TimePartitioning::None {
            let time = DateTime::from_timestamp_millis(event_ms)?;
            dir.push_str(&format!(
                "/dt={:04}-{:02}-{:02}",
                time.year(),
                time.month(),
                time.day()
            ));
            if self.time == TimePartitioning::Hour {
                dir.push_str(&format!("/hour={:02}", time.hour()));
            }
        }
        for field in &self.fields {
            let value = match record.get(field) {
                None | Some(Value::Null) => NULL_PARTITION_VALUE.to_string(),
                Some(Value::String(s)) if s.is_empty() => NULL_PARTITION_VALUE.to_string(),
                Some(Value::String(s)) => escape(s),
                Some(other) => escape(&other.to_string()),
            };
            dir.push_str(&format!("/{}={value}", escape(field)));
        }
        Some(dir)
    }
}

/// The name of a committed file: `<topic>+<partition>+<first offset>+<last offset>.parquet`,
/// offsets zero-padded to 19 digits so that names sort in offset order.
pub fn file_name(topic: &str, partition: i32, first_offset: i64, last_offset: i64) -> String {
    format!("{topic}+{partition}+{first_offset:019}+{last_offset:019}.parquet")
}

/// Percent-escapes what may not appear in a path segment or would confuse a Hive partition
/// parser (`/`, `=`, `%`, control characters, ...), the way Hive does.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ' | ':' | '@' | '+') {
            out.push(c);
        } else if c.is_ascii() {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            // Non-ASCII letters are fine in file names and readers decode them as they are.
            out.push(c);
        }
    }
    if out == "." || out == ".." {
        // Not a valid directory name of its own.
        return out.replace('.', "%2E");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn rec(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn hourly_paths_use_the_utc_date_and_hour_of_the_event() {
        let p = Partitioner::new(TimePartitioning::Hour, vec![]);
        // 2026-11-25T11:30:00Z
        let dir = p.directory("page-views", 1_795_606_200_000, &rec(json!({})));
        assert_eq!(dir.unwrap(), "topic=page-views/dt=2026-11-25/hour=11");
    }

    #[test]
    fn field_partitions_follow_the_time_directories() {
        let p = Partitioner::new(TimePartitioning::Day, vec!["country".into(), "n".into()]);
        let dir = p.directory("t", 0, &rec(json!({"country": "DE", "n": 7})));
        assert_eq!(dir.unwrap(), "topic=t/dt=1970-01-01/country=DE/n=7");
    }

    #[test]
    fn missing_fields_get_the_hive_default_partition() {
        let p = Partitioner::new(TimePartitioning::None, vec!["country".into()]);
        let dir = p.directory("t", 0, &rec(json!({"country": null})));
        assert_eq!(dir.unwrap(), "topic=t/country=__HIVE_DEFAULT_PARTITION__");
    }

    #[test]
    fn slashes_and_equals_signs_in_values_are_escaped() {
        let p = Partitioner::new(TimePartitioning::None, vec!["path".into()]);
        let dir = p.directory("t", 0, &rec(json!({"path": "a/b=c%"})));
        assert_eq!(dir.unwrap(), "topic=t/path=a%2Fb%3Dc%25");
    }

    #[test]
    fn file_names_sort_in_offset_order() {
        let a = file_name("t", 3, 9, 99);
        let b = file_name("t", 3, 100, 150);
        assert_eq!(a, "t+3+0000000000000000009+0000000000000000099.parquet");
        assert!(a < b);
    }
}
