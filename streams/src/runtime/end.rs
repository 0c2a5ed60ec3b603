//! End of input: telling a running job that its input is complete for now.
//!
//! A bounded run (the demo's `--events N`, a backfill, a test) needs final results for every
//! window, including the ones whose end the watermark would only pass once more input came.
//! [`EndOfInput::signal`] asks the job to process what exists, close every window and commit;
//! [`EndOfInput::drained`] waits until it did.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_client::consumer::Consumer;
use millrace_client::{OffsetSpec, TopicPartition};
use tokio::sync::watch;

use crate::error::StreamsError;

use super::running::{now_ms, Data, Running};

/// A handle to a job's end of input; clone it freely. Get it with
/// [`Job::end_of_input`](super::Job::end_of_input) before calling `run`.
///
/// After [`signal`](EndOfInput::signal), each of the instance's tasks processes its input up
/// to the end offsets the source topics had at the signal (for a `Job::group_by` job: until
/// every source record has been forwarded through the repartition topic, by whichever
/// instance reads its partition, and the repartition topic has been read up to that point
/// too), then moves its watermark past everything: every open window closes and its final
/// result is emitted. Outputs are acknowledged and offsets committed, then
/// [`drained`](EndOfInput::drained) resolves. The job keeps running until shut down: state
/// stays queryable, and records produced later are processed as usual.
///
/// Signalling again starts another round (with the end offsets of that moment).
#[derive(Debug, Clone)]
pub struct EndOfInput {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// How many times the input was ended.
    signalled: watch::Sender<u64>,
    /// The latest signal this instance has finished draining.
    drained: watch::Sender<u64>,
}

impl Default for EndOfInput {
    fn default() -> Self {
        Self::new()
    }
}

impl EndOfInput {
    /// A handle that has not been signalled.
    pub(crate) fn new() -> Self {
        EndOfInput {
            inner: Arc::new(Inner {
                signalled: watch::Sender::new(0),
                drained: watch::Sender::new(0),
            }),
        }
    }

    /// Ends the input: the job processes what the source topics hold now, then closes every
    /// window and commits. Returns at once; await [`drained`](EndOfInput::drained) for the
    /// outcome.
    pub fn signal(&self) {
        self.inner.signalled.send_modify(|n| *n += 1);
        tracing::info!("end of input signalled");
    }

    /// Resolves once this instance has processed its input up to the ends taken at the latest
    /// [`signal`](EndOfInput::signal) (waiting for a first signal if there was none), closed
    /// every window, and committed the results.
    pub async fn drained(&self) {
        let wanted = (*self.inner.signalled.borrow()).max(1);
        let mut done = self.inner.drained.subscribe();
        // The sender lives in `inner`, which this handle keeps alive: the wait cannot fail.
        let _ = done.wait_for(|&n| n >= wanted).await;
    }

    /// The signal count now.
    pub(crate) fn signalled(&self) -> u64 {
        *self.inner.signalled.borrow()
    }

    /// Records that the round started by signal number `round` is complete.
    pub(crate) fn mark_drained(&self, round: u64) {
        self.inner.drained.send_modify(|n| *n = (*n).max(round));
        tracing::info!(round, "end of input drained");
    }
}

/// Progress of an end of input (see [`EndOfInput`]).
pub(super) enum EndPhase {
    /// None under way.
    Idle,
    /// `group_by` jobs: the source partitions must all be forwarded up to `ends`, by this
    /// instance or another one; the group's committed offsets say when they are, because an
    /// instance commits a source offset only after the forwarded records are acknowledged.
    Forwarding {
        ends: HashMap<TopicPartition, i64>,
        next_check: Instant,
        last_commit: Option<Instant>,
    },
    /// The pipeline topics must be read up to `ends` by this instance's tasks.
    Reading { ends: HashMap<TopicPartition, i64> },
}

/// How often a `group_by` end of input checks whether every source partition is forwarded.
const END_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Whether a partition read up to `position` has reached `end`.
fn reached(position: Option<i64>, end: i64) -> bool {
    end <= 0 || position.is_some_and(|p| p >= end)
}

impl<K0: Data, V0: Data, K: Data, V: Data> Running<K0, V0, K, V> {
    /// Moves an end of input along (see [`EndOfInput`]); called once per loop turn.
    pub(super) async fn end_of_input_step(&mut self) -> Result<(), StreamsError> {
        let signalled = self.end.signalled();
        if signalled > self.end_round {
            // A new signal (possibly during an earlier round): take the ends of now.
            self.end_round = signalled;
            self.end_phase = match self.ingest.repartition.clone() {
                Some(repartition) => EndPhase::Forwarding {
                    ends: Self::end_offsets(&self.consumer, &repartition.source_topics).await?,
                    next_check: Instant::now(),
                    last_commit: None,
                },
                None => EndPhase::Reading {
                    ends: Self::end_offsets(&self.consumer, &self.ingest.pipeline_topics).await?,
                },
            };
            tracing::info!(
                round = self.end_round,
                "end of input: reading up to the ends"
            );
        }
        // Taken out while it is worked on (the checks need the rest of `self`), put back
        // unless it is complete.
        let phase = std::mem::replace(&mut self.end_phase, EndPhase::Idle);
        self.end_phase = match phase {
            EndPhase::Idle => EndPhase::Idle,
            EndPhase::Forwarding {
                ends,
                next_check,
                last_commit,
            } => self.end_forwarding(ends, next_check, last_commit).await?,
            EndPhase::Reading { ends } => {
                let done = self.consumer.group_generation().is_some()
                    && self
                        .consumer
                        .assignment()
                        .iter()
                        .filter(|tp| self.partition_id(&tp.topic).is_some())
                        .all(|tp| {
                            ends.get(tp)
                                .is_none_or(|&end| reached(self.consumer.position(tp), end))
                        });
                if done {
                    for task in self.tasks.values_mut() {
                        task.pipeline.end_of_input();
                    }
                    self.drain().await?;
                    self.commit().await?;
                    self.publish_state(now_ms());
                    self.end.mark_drained(self.end_round);
                    EndPhase::Idle
                } else {
                    EndPhase::Reading { ends }
                }
            }
        };
        Ok(())
    }

    /// The forwarding phase of a `group_by` end of input: returns the next phase.
    pub(super) async fn end_forwarding(
        &mut self,
        ends: HashMap<TopicPartition, i64>,
        next_check: Instant,
        mut last_commit: Option<Instant>,
    ) -> Result<EndPhase, StreamsError> {
        let waiting = |last_commit| EndPhase::Forwarding {
            ends: ends.clone(),
            next_check: Instant::now() + END_CHECK_INTERVAL,
            last_commit,
        };
        if Instant::now() < next_check {
            return Ok(EndPhase::Forwarding {
                ends,
                next_check,
                last_commit,
            });
        }
        // Outside a group generation the assignment is not settled yet (or is moving): an
        // empty one would look done.
        let own_done = self.consumer.group_generation().is_some()
            && self
                .consumer
                .assignment()
                .iter()
                .filter_map(|tp| ends.get(tp).map(|&end| (tp, end)))
                .all(|(tp, end)| reached(self.consumer.position(tp), end));
        if !own_done {
            return Ok(waiting(last_commit));
        }
        // This instance's forwarded records acknowledged and its source offsets committed:
        // the group's commits then show its part is done (once a second at most, while
        // waiting for other instances).
        if last_commit.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            last_commit = Some(Instant::now());
            self.commit().await?;
        }
        let partitions: Vec<TopicPartition> = ends.keys().cloned().collect();
        let committed = self
            .consumer
            .committed(&partitions)
            .await
            .map_err(|e| StreamsError::client("end of input: reading commits", e))?;
        let all_forwarded = ends
            .iter()
            .all(|(tp, &end)| reached(committed.get(tp).copied(), end));
        if !all_forwarded {
            return Ok(waiting(last_commit));
        }
        let topic = self
            .ingest
            .repartition
            .as_ref()
            .map(|r| r.topic.clone())
            .unwrap_or_default();
        let ends = Self::end_offsets(&self.consumer, &[topic]).await?;
        tracing::info!(
            round = self.end_round,
            "end of input: sources forwarded, reading the repartition topic"
        );
        Ok(EndPhase::Reading { ends })
    }

    /// The end offsets of every partition of `topics` now.
    // Takes the consumer, not `&self`: a future holding `&self` across an await would need
    // the tasks' pipelines to be `Sync`, and `run` must stay `Send` for `tokio::spawn`.
    pub(super) async fn end_offsets(
        consumer: &Consumer,
        topics: &[String],
    ) -> Result<HashMap<TopicPartition, i64>, StreamsError> {
        let mut partitions = Vec::new();
        for topic in topics {
            let ids = consumer.partitions_for(topic).await.map_err(|e| {
                StreamsError::client(format!("end of input: partitions of {topic}"), e)
            })?;
            partitions.extend(ids.into_iter().map(|p| TopicPartition::new(topic, p)));
        }
        let listed = consumer
            .offsets_for(&partitions, OffsetSpec::Latest)
            .await
            .map_err(|e| StreamsError::client("end of input: listing end offsets", e))?;
        Ok(listed
            .into_iter()
            .map(|(tp, listed)| (tp, listed.offset))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_the_signalled_round() {
        let end = EndOfInput::new();
        let waiter = {
            let end = end.clone();
            tokio::spawn(async move { end.drained().await })
        };
        end.signal();
        assert_eq!(end.signalled(), 1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        end.mark_drained(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("drained() did not resolve")
            .expect("waiter panicked");
    }

    #[tokio::test]
    async fn drained_before_any_signal_waits_for_the_first() {
        let end = EndOfInput::new();
        let mut drained = std::pin::pin!(end.drained());
        assert!(futures_poll_once(drained.as_mut()).await.is_none());
        end.signal();
        end.mark_drained(1);
        drained.await;
    }

    /// Polls a future once without waiting.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(std::time::Duration::ZERO, f)
            .await
            .ok()
    }
}
