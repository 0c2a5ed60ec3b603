//! Repartitioning: re-keying source records through the repartition topic, so that every
//! record of a key reaches the same task (Kafka Streams' repartition topics).

use std::sync::Arc;

use millrace_client::record::ConsumerRecord;
use millrace_client::ProducerRecord;

use crate::time::PartitionId;

use super::running::{Data, Running};

/// Computes a source record's new key (as bytes) for repartitioning.
pub(super) type Rekey = Arc<dyn Fn(&ConsumerRecord) -> Result<Vec<u8>, String> + Send + Sync>;

/// Records of the source topics are re-keyed and written to `topic` (partitioned by the new
/// key, as Kafka Streams' repartition topics), so that every record of a key reaches the
/// same task; the pipeline then reads `topic`.
#[derive(Clone)]
pub(super) struct Repartition {
    pub(super) topic: String,
    pub(super) source_topics: Vec<String>,
    pub(super) rekey: Rekey,
}

/// Header carrying a repartitioned record's original key.
pub(super) const ORIGINAL_KEY_HEADER: &str = "millrace.key";
/// Header carrying a repartitioned record's source position: `topic-index:partition:offset`.
/// The pipeline tracks progress (replay skipping, watermarks) by *source* partition and
/// offset, so a record forwarded twice (the source offset was not committed before a crash)
/// is recognised as a replay and not counted twice, and event time is tracked per source
/// partition, as if the task read the sources directly.
pub(super) const SOURCE_POSITION_HEADER: &str = "millrace.source";

/// Partition ids of source partitions inside a repartitioned task: topic index in the high
/// bits, partition in the low 20.
pub(super) fn source_partition_id(topic_index: usize, partition: i32) -> PartitionId {
    ((topic_index as PartitionId) << 20) | (partition as PartitionId & 0xF_FFFF)
}

/// The repartition topic of an application.
pub fn repartition_topic(application_id: &str) -> String {
    format!("{application_id}-repartition")
}

/// A source record re-keyed for the repartition topic: the new key, the original value,
/// headers and timestamp, and the original key in a header.
pub(super) fn repartitioned(
    topic: &str,
    original: &ConsumerRecord,
    topic_index: usize,
    key: Vec<u8>,
) -> ProducerRecord {
    let mut headers = original.headers.clone();
    headers.push((ORIGINAL_KEY_HEADER.to_string(), original.key.clone()));
    let position = format!("{topic_index}:{}:{}", original.partition, original.offset);
    headers.push((SOURCE_POSITION_HEADER.to_string(), Some(position.into())));
    ProducerRecord {
        topic: topic.to_string(),
        key: Some(key.into()),
        value: original.value.clone(),
        headers,
        timestamp: Some(original.timestamp),
        ..ProducerRecord::default()
    }
}

impl<K0: Data, V0: Data, K: Data, V: Data> Running<K0, V0, K, V> {
    /// Where a pipeline-topic record counts as read from: its own partition and offset, or
    /// for a repartitioned record its source partition and offset.
    pub(super) fn input_position(&self, record: &ConsumerRecord) -> Option<(PartitionId, i64)> {
        let pid = self.partition_id(&record.topic)?;
        if self.ingest.repartition.is_none() {
            return Some((pid, record.offset));
        }
        let (_, value) = record
            .headers
            .iter()
            .rev()
            .find(|(name, _)| name == SOURCE_POSITION_HEADER)?;
        let text = std::str::from_utf8(value.as_deref()?).ok()?;
        let mut parts = text.split(':');
        let topic_index: usize = parts.next()?.parse().ok()?;
        let partition: i32 = parts.next()?.parse().ok()?;
        let offset: i64 = parts.next()?.parse().ok()?;
        Some((source_partition_id(topic_index, partition), offset))
    }
}
