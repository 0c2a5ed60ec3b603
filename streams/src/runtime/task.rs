//! Tasks: one input partition index across the source topics, with its pipeline; created
//! (and restored from the changelog) on assignment, dropped on revocation.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use millrace_client::TopicPartition;

use crate::dsl::Pipeline;
use crate::error::StreamsError;
use crate::time::{PartitionId, Timestamp};

use super::changelog::changelog_topic;
use super::repartition::source_partition_id;
use super::running::{now_ms, Data, Running};

/// One input partition index across the source topics, with its pipeline.
pub(super) struct Task<K0, V0, K, V> {
    pub(super) pipeline: Pipeline<K0, V0, K, V>,
    /// Repartitioned tasks: the next source offset expected per source partition. A source
    /// record forwarded twice (its offset was not committed before a crash) arrives again
    /// after records forwarded later, so replays are skipped here by source position; each
    /// source record is forwarded to exactly one task, so this is exact.
    pub(super) next_source_offset: HashMap<PartitionId, i64>,
}

impl<K0: Data, V0: Data, K: Data, V: Data> Running<K0, V0, K, V> {
    /// Creates tasks for newly assigned partitions, restoring their state and positions.
    pub(super) async fn assigned(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<(), StreamsError> {
        let mut new_tasks: Vec<i32> = partitions
            .iter()
            .filter(|tp| self.partition_id(&tp.topic).is_some())
            .map(|tp| tp.partition)
            .collect();
        new_tasks.sort_unstable();
        new_tasks.dedup();
        for task in new_tasks {
            if self.tasks.contains_key(&task) {
                continue;
            }
            let build = self.build.clone();
            let backend = self.config.state_backend.clone();
            let mut pipeline = Pipeline::with_backend(backend, move |s| build(s))
                .event_time(self.config.max_out_of_orderness, self.config.idle_timeout);
            // Processing time first: idleness is measured from it.
            pipeline.advance(now_ms());
            let mut batches = Vec::with_capacity(self.stores.len());
            let started = Instant::now();
            for store in &self.stores {
                let topic = changelog_topic(&self.config.application_id, store);
                batches.push(
                    self.reader
                        .read(store, &topic, task, self.config.restore_timeout)
                        .await?,
                );
            }
            let restored_entries: usize = batches.iter().map(|b| b.changes.len()).sum();
            let resume = pipeline.restore(batches)?;
            // Repartitioned tasks track source positions; the repartition topic itself
            // resumes from the group's committed offset (never ahead of the restored state,
            // and replays behind it are skipped by source position).
            let repartitioned = self.ingest.repartition.is_some();
            for (pid, offset) in resume.iter().filter(|_| !repartitioned) {
                if let Some(topic) = self.ingest.pipeline_topics.get(*pid as usize) {
                    let tp = TopicPartition::new(topic, task);
                    if partitions.contains(&tp) {
                        self.consumer
                            .seek(&tp, *offset)
                            .map_err(|e| StreamsError::client(format!("seeking {tp}"), e))?;
                    }
                }
            }
            if repartitioned {
                // Every source partition may send this task records: each holds the task's
                // watermark back until it does (or goes idle), so a backlog read from one
                // source partition first does not make the others' records late.
                for (index, count) in self.source_partitions.iter().enumerate() {
                    for partition in 0..*count {
                        pipeline.assign(source_partition_id(index, partition));
                    }
                }
            } else {
                for tp in self.task_partitions(task) {
                    if let Some(pid) = self.partition_id(&tp.topic) {
                        pipeline.assign(pid);
                    }
                }
            }
            tracing::info!(
                task,
                restored_entries,
                ?resume,
                elapsed = ?started.elapsed(),
                "task restored"
            );
            let next_source_offset = if repartitioned {
                resume.into_iter().collect()
            } else {
                HashMap::new()
            };
            self.tasks.insert(
                task,
                Task {
                    pipeline,
                    next_source_offset,
                },
            );
        }
        self.metrics
            .tasks
            .store(self.tasks.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes every task's live state for queries.
    pub(super) fn publish_state(&self, now: Timestamp) {
        for (&task, state) in &self.tasks {
            self.state.publish(task, state.pipeline.snapshot(), now);
        }
    }

    /// Drops the tasks of revoked or lost partitions (with their published state).
    pub(super) fn drop_tasks(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if self.partition_id(&tp.topic).is_some() {
                self.tasks.remove(&tp.partition);
                self.state.remove_task(tp.partition);
            }
            self.forwarded.remove(tp);
        }
        self.metrics
            .tasks
            .store(self.tasks.len() as u64, Ordering::Relaxed);
    }
}
