//! The commit: flush state to the changelogs, wait until it and every output are
//! acknowledged, then commit the input offsets.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use millrace_client::{ClientError, ProducerRecord, ResponseError, TopicPartition};

use crate::error::StreamsError;

use super::changelog::changelog_topic;
use super::running::Running;

impl<K0, V0, K, V> Running<K0, V0, K, V>
where
    K0: Send + 'static,
    V0: Send + 'static,
    K: Send + 'static,
    V: Send + 'static,
{
    /// Flushes state to the changelogs, waits for every delivery, then commits offsets.
    pub(super) async fn commit(&mut self) -> Result<(), StreamsError> {
        let started = Instant::now();
        let mut offsets = HashMap::new();
        let mut changelog = Vec::new();
        for (&task, state) in self.tasks.iter_mut() {
            let checkpoint = state.pipeline.commit()?;
            for batch in checkpoint.stores {
                let topic = changelog_topic(&self.config.application_id, &batch.store);
                for change in batch.changes {
                    changelog.push(ProducerRecord {
                        topic: topic.clone(),
                        partition: Some(task),
                        key: Some(change.key.into()),
                        value: change.value.map(Into::into),
                        ..ProducerRecord::default()
                    });
                }
            }
            if self.ingest.repartition.is_none() {
                for (pid, offset) in checkpoint.offsets {
                    if let Some(topic) = self.ingest.pipeline_topics.get(pid as usize) {
                        offsets.insert(TopicPartition::new(topic, task), offset);
                    }
                }
            }
        }
        if self.ingest.repartition.is_some() {
            // Everything the consumer handed out has been pushed into the pipelines.
            let tasks: Vec<i32> = self.tasks.keys().copied().collect();
            for task in tasks {
                for tp in self.task_partitions(task) {
                    if let Some(position) = self.consumer.position(&tp) {
                        offsets.insert(tp, position);
                    }
                }
            }
        }
        offsets.extend(self.forwarded.iter().map(|(tp, o)| (tp.clone(), *o)));
        for record in changelog {
            self.send(record).await?;
        }
        for delivery in std::mem::take(&mut self.pending) {
            delivery
                .await
                .map_err(|e| StreamsError::client("waiting for output and changelog acks", e))?;
        }
        let assigned = self.consumer.assignment();
        offsets.retain(|tp, _| assigned.contains(tp));
        if !offsets.is_empty() {
            if let Err(error) = self.consumer.commit_offsets(&offsets).await {
                // Not fatal: a rebalance is under way (the next owner restores from the
                // changelog, which is already written) or the coordinator moved.
                if !error.is_retriable() && !is_generation_error(&error) {
                    return Err(StreamsError::client("committing offsets", error));
                }
                tracing::info!(%error, "offset commit skipped");
            }
        }
        self.metrics.commits.fetch_add(1, Ordering::Relaxed);
        self.metrics.last_commit_micros.store(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(())
    }
}

/// Whether an offset commit failed because the group is rebalancing or this member's
/// generation ended.
fn is_generation_error(error: &ClientError) -> bool {
    matches!(
        error.kafka_error(),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
        )
    )
}
