//! Where a job's results go: a topic (with an encoder) or a callback.

use std::sync::Arc;

use serde::Serialize;

use crate::record::Record;

/// Encodes an output record as (key, value) bytes; `None` value is a tombstone.
pub type Encoder<K, V> =
    Arc<dyn Fn(&Record<K, V>) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), String> + Send + Sync>;

/// Receives output records in-process.
pub type Callback<K, V> = Arc<dyn Fn(Vec<Record<K, V>>) + Send + Sync>;

/// The output of a job.
pub enum Sink<K, V> {
    /// Produce to a topic (created with the sources' partition count if missing). Records are
    /// partitioned by their encoded key, as every Kafka client does.
    Topic {
        /// The topic.
        topic: String,
        /// How records become bytes.
        encode: Encoder<K, V>,
    },
    /// Hand batches of output records to a function (tests, in-process consumers).
    Callback(Callback<K, V>),
}

impl<K, V> Clone for Sink<K, V> {
    fn clone(&self) -> Self {
        match self {
            Sink::Topic { topic, encode } => Sink::Topic {
                topic: topic.clone(),
                encode: encode.clone(),
            },
            Sink::Callback(f) => Sink::Callback(f.clone()),
        }
    }
}

impl<K, V> std::fmt::Debug for Sink<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Topic { topic, .. } => {
                f.debug_struct("Sink::Topic").field("topic", topic).finish()
            }
            Sink::Callback(_) => f.write_str("Sink::Callback"),
        }
    }
}

impl<K, V> Sink<K, V> {
    /// A topic with a custom encoder.
    pub fn topic(
        topic: impl Into<String>,
        encode: impl Fn(&Record<K, V>) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), String>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Sink::Topic {
            topic: topic.into(),
            encode: Arc::new(encode),
        }
    }

    /// A function called with each batch of output records.
    pub fn callback(f: impl Fn(Vec<Record<K, V>>) + Send + Sync + 'static) -> Self {
        Sink::Callback(Arc::new(f))
    }

    pub(crate) fn topic_name(&self) -> Option<&str> {
        match self {
            Sink::Topic { topic, .. } => Some(topic),
            Sink::Callback(_) => None,
        }
    }
}

impl<K: Serialize, V: Serialize> Sink<K, V> {
    /// A topic of JSON: the key and the value each serialized with serde_json.
    pub fn json_topic(topic: impl Into<String>) -> Self {
        Sink::topic(topic, |record: &Record<K, V>| {
            let key = serde_json::to_vec(&record.key).map_err(|e| e.to_string())?;
            let value = serde_json::to_vec(&record.value).map_err(|e| e.to_string())?;
            Ok((Some(key), Some(value)))
        })
    }
}

impl<V: Serialize> Sink<String, V> {
    /// A topic with the key as plain UTF-8 bytes and the value as JSON: what the other
    /// Kafka tools (kcat, consoles) show most readably.
    pub fn json_values(topic: impl Into<String>) -> Self {
        Sink::topic(topic, |record: &Record<String, V>| {
            let value = serde_json::to_vec(&record.value).map_err(|e| e.to_string())?;
            Ok((Some(record.key.clone().into_bytes()), Some(value)))
        })
    }
}
