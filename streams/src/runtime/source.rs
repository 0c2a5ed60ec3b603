//! Where a job's records come from: topics and how to decode their records.

use std::sync::Arc;

use millrace_client::record::ConsumerRecord;
use serde::de::DeserializeOwned;

use crate::time::Timestamp;
use crate::windows::join::Side;

/// Turns a consumed record into the job's key, value and event time, or says why it cannot.
pub type Decoder<K, V> =
    Arc<dyn Fn(&ConsumerRecord) -> Result<(K, V, Timestamp), String> + Send + Sync>;

/// The input of a job: one or more topics (read as one consumer group) and a decoder.
///
/// Topics read together should be co-partitioned (same partition count, same keys on the same
/// partitions): partition `p` of every source topic goes to the same task.
pub struct Source<K, V> {
    pub(crate) topics: Vec<String>,
    pub(crate) decode: Decoder<K, V>,
}

impl<K, V> Clone for Source<K, V> {
    fn clone(&self) -> Self {
        Source {
            topics: self.topics.clone(),
            decode: self.decode.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for Source<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("topics", &self.topics)
            .finish()
    }
}

impl<K, V> Source<K, V> {
    /// Topics read with a custom decoder. `topics` is any list of names: `&["views"]`, a
    /// `Vec<String>`, an iterator of `&str`.
    pub fn new<I>(
        topics: I,
        decode: impl Fn(&ConsumerRecord) -> Result<(K, V, Timestamp), String> + Send + Sync + 'static,
    ) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut topics: Vec<String> = topics.into_iter().map(|t| t.as_ref().to_string()).collect();
        topics.sort();
        topics.dedup();
        Source {
            topics,
            decode: Arc::new(decode),
        }
    }

    /// The source topics, sorted (a topic's position is its partition id inside a task).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }
}

impl<K: 'static, L: 'static, R: 'static> Source<K, Side<L, R>> {
    /// The two inputs of a windowed join read as one source: records of `left`'s topics
    /// become [`Side::Left`], records of `right`'s topics [`Side::Right`], each decoded by its
    /// own source's decoder. The topics of both should be co-partitioned (same partition
    /// count, same keys on the same partitions), or be regrouped with `Job::group_by`. A
    /// topic in both sources is read as left.
    pub fn sides(left: Source<K, L>, right: Source<K, R>) -> Self {
        let left_topics = left.topics.clone();
        let mut topics: Vec<&str> = left.topics.iter().map(String::as_str).collect();
        topics.extend(right.topics.iter().map(String::as_str));
        let (decode_left, decode_right) = (left.decode, right.decode);
        Source::new(&topics, move |record: &ConsumerRecord| {
            if left_topics.iter().any(|t| **t == *record.topic) {
                decode_left(record).map(|(k, v, t)| (k, Side::Left(v), t))
            } else {
                decode_right(record).map(|(k, v, t)| (k, Side::Right(v), t))
            }
        })
    }
}

impl<V: DeserializeOwned + 'static> Source<String, V> {
    /// Topics of JSON values. The key is the record key as UTF-8 (empty when there is none);
    /// event time comes from the value (for example its `ts` field).
    pub fn json<I>(topics: I, event_time: impl Fn(&V) -> Timestamp + Send + Sync + 'static) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Source::new(topics, move |record: &ConsumerRecord| {
            let bytes = record
                .value
                .as_deref()
                .ok_or_else(|| "record has no value (tombstone)".to_string())?;
            let value: V =
                serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON value: {e}"))?;
            let key = record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let timestamp = event_time(&value);
            Ok((key, value, timestamp))
        })
    }
}
