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
        self.directory_with(topic, event_ms, |i| record.get(self.fields.get(i)?))
    }

    /// [`Self::directory`] with the partition fields' values given by position in
    /// [`Self::fields`] (`None` when missing), for callers that hold no JSON map.
    pub fn directory_with<'v>(
        &self,
        topic: &str,
        event_ms: i64,
        value: impl Fn(usize) -> Option<&'v Value>,
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
        for (i, field) in self.fields.iter().enumerate() {
            let value = match value(i) {
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

/// The directory of the last record, reused while records keep the same topic, time bucket
/// and partition values (formatting a path for every record costs as much as decoding a
/// small one).
#[derive(Debug, Default)]
pub struct DirectoryCache {
    topic: String,
    bucket: Option<i64>,
    values: Vec<Option<Value>>,
    directory: String,
}

impl DirectoryCache {
    /// The directory of a record of `topic` at `event_ms` whose partition fields' values are
    /// `value(i)`: what [`Partitioner::directory_with`] returns, from the cache when only the
    /// time within the bucket changed.
    pub fn directory<'v>(
        &mut self,
        partitioner: &Partitioner,
        topic: &str,
        event_ms: i64,
        value: impl Fn(usize) -> Option<&'v Value>,
    ) -> Option<&str> {
        // Every ms of one UTC hour (or day) has the same `dt=`/`hour=`: the Unix time scale
        // has no leap seconds. Out-of-range times never reach the cache.
        DateTime::from_timestamp_millis(event_ms)?;
        let bucket = match partitioner.time {
            TimePartitioning::None => 0,
            TimePartitioning::Day => event_ms.div_euclid(86_400_000),
            TimePartitioning::Hour => event_ms.div_euclid(3_600_000),
        };
        let hit = self.bucket == Some(bucket)
            && self.topic == topic
            && self.values.len() == partitioner.fields.len()
            && self
                .values
                .iter()
                .enumerate()
                .all(|(i, cached)| cached.as_ref() == value(i));
        if !hit {
            self.directory = partitioner.directory_with(topic, event_ms, &value)?;
            self.bucket = Some(bucket);
            topic.clone_into(&mut self.topic);
            self.values.clear();
            self.values
                .extend((0..partitioner.fields.len()).map(|i| value(i).cloned()));
        }
        Some(&self.directory)
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
    fn the_cache_gives_what_the_partitioner_gives() {
        let p = Partitioner::new(TimePartitioning::Hour, vec!["country".into()]);
        let mut cache = DirectoryCache::default();
        let hour = 3_600_000;
        let cases = [
            ("t", 1_795_606_200_000, json!({"country": "DE"})),
            ("t", 1_795_606_200_000 + 10, json!({"country": "DE"})),
            ("t", 1_795_606_200_000 + hour, json!({"country": "DE"})),
            ("t", 1_795_606_200_000 + hour, json!({"country": "FR"})),
            ("u", 1_795_606_200_000 + hour, json!({"country": "FR"})),
            ("u", 1_795_606_200_000 + hour, json!({})),
            ("u", -1, json!({})),
            ("u", i64::MAX, json!({})),
        ];
        for (topic, ms, fields) in cases {
            let fields = rec(fields);
            let expected = p.directory(topic, ms, &fields);
            let got = cache
                .directory(&p, topic, ms, |i| fields.get(&p.fields()[i]))
                .map(str::to_string);
            assert_eq!(got, expected, "{topic} {ms}");
        }
    }

    #[test]
    fn file_names_sort_in_offset_order() {
        let a = file_name("t", 3, 9, 99);
        let b = file_name("t", 3, 100, 150);
        assert_eq!(a, "t+3+0000000000000000009+0000000000000000099.parquet");
        assert!(a < b);
    }
}
