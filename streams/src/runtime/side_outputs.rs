//! Records that do not become output: bad records (to the dead letter topic, skipped, or
//! failing the job) and late records (to the late topic), both forwarded as they were read.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use millrace_client::record::ConsumerRecord;
use millrace_client::ProducerRecord;

use crate::error::StreamsError;
use crate::time::PartitionId;

use super::running::{Data, Running};

impl<K0: Data, V0: Data, K: Data, V: Data> Running<K0, V0, K, V> {
    /// A record that cannot be decoded or encoded: fails the job, goes to the dead letter
    /// topic, or is skipped, as configured (counted either way).
    pub(super) async fn bad_record(
        &mut self,
        record: &ConsumerRecord,
        reason: String,
    ) -> Result<(), StreamsError> {
        self.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
        if self.config.fail_on_bad_record {
            return Err(StreamsError::BadRecord {
                topic: record.topic.to_string(),
                partition: record.partition,
                offset: record.offset,
                reason,
            });
        }
        match self.config.dead_letter_topic.clone() {
            Some(topic) => {
                let forwarded = forward(&topic, record).header("millrace.error", reason);
                self.send(forwarded).await?;
            }
            None => tracing::warn!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                %reason,
                "bad record skipped"
            ),
        }
        Ok(())
    }

    /// Routes the late records of this batch: the original bytes, found in `records`, to
    /// the late topic (they are counted either way).
    pub(super) async fn route_late(
        &mut self,
        records: &[ConsumerRecord],
    ) -> Result<(), StreamsError> {
        // Late records: route the original bytes, found in this batch, to the late topic.
        let mut late = Vec::new();
        for task in self.tasks.values_mut() {
            late.extend(task.pipeline.take_late());
        }
        if !late.is_empty() {
            self.metrics
                .late_records
                .fetch_add(late.len() as u64, Ordering::Relaxed);
            if let Some(topic) = self.config.late_topic.clone() {
                let by_position: HashMap<(PartitionId, i64), &ConsumerRecord> = records
                    .iter()
                    .filter_map(|r| self.input_position(r).map(|position| (position, r)))
                    .collect();
                for entry in late {
                    if let Some(original) = by_position.get(&(entry.partition, entry.offset)) {
                        let record = forward(&topic, original)
                            .header("millrace.late.operator", entry.operator.clone())
                            .header("millrace.watermark", entry.watermark.to_string());
                        self.send(record).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The original record's key, value and headers, bound for `topic`, with where it came from.
pub(super) fn forward(topic: &str, original: &ConsumerRecord) -> ProducerRecord {
    let mut record = ProducerRecord {
        topic: topic.to_string(),
        key: original.key.clone(),
        value: original.value.clone(),
        headers: original.headers.clone(),
        timestamp: Some(original.timestamp),
        ..ProducerRecord::default()
    };
    record = record
        .header("millrace.topic", original.topic.to_string())
        .header("millrace.partition", original.partition.to_string())
        .header("millrace.offset", original.offset.to_string());
    record
}
