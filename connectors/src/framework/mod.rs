//! The connector framework, in the manner of Kafka Connect but in-process: a connector is a
//! [`Source`] (external -> topic) or a [`Sink`] (topic -> external), and the framework does
//! the Kafka side for it.
//!
//! * A **sink** is run by [`run_sink_task`] as one member of the connector's consumer group;
//!   `tasks = N` runs N members, and instances on other machines with the same group share the
//!   partitions with them (scale out). The framework subscribes, hands the sink its assigned
//!   partitions and asks where each resumes (the sink tracks its own progress, so a wiped or
//!   expired group loses nothing), feeds it records, delivers its dead letters before every
//!   commit, commits the group's offsets after the sink's own commit (so lag shows in
//!   `millrace groups describe`), and keeps [`SinkMetrics`](crate::metrics::SinkMetrics).
//! * A **source** gets a [`SourceContext`] whose [`SourceContext::send`] produces a batch with
//!   acks=all and returns only when every record is acknowledged, so the source can record its
//!   position after that and a restart does not send again what the cluster already has
//!   ([`PositionFile`] is a durable place for that position).
//!
//! Failures of a whole task end the connector (and, under `millrace connect`, stop the others
//! cleanly): bad *records* never do; they go to a dead-letter topic with the reason.

pub mod dead_letter;
pub mod position;
pub mod sink_task;
pub mod source;

use std::future::Future;
use std::time::Instant;

use millrace_client::record::ConsumerRecord;
use millrace_client::TopicPartition;
use tokio::sync::watch;

pub use dead_letter::{DeadLetter, DeadLetterQueue};
pub use position::PositionFile;
pub use sink_task::{run_sink_task, SinkTaskSettings, StartFrom};
pub use source::{run_source, RejectedInput, SourceContext};

use crate::error::{ConnectorError, Result};

/// One task of a sink connector: what a member of the sink's consumer group does with the
/// records of the partitions assigned to it. Calls come from one task at a time, in this
/// order per partition: `open`, then `put`/`tick`/`commit` any number of times, then `close`
/// and `commit` (a clean hand-over) or just `release` (partitions lost).
pub trait Sink: Send {
    /// Takes over `partition` and says where to resume: the offset after the last record the
    /// sink has made durable, or `None` when it has no record of this partition (the task
    /// then starts where the connector's `start` says; the group's offsets are not trusted,
    /// because the sink's output may have been wiped since they were committed).
    fn open(&mut self, partition: &TopicPartition) -> Result<Option<i64>>;

    /// Takes records of open partitions, in offset order per partition. Records the sink
    /// cannot write are kept for [`Self::take_dead_letters`], not returned as errors.
    fn put(&mut self, records: Vec<ConsumerRecord>) -> Result<()>;

    /// Time-based work (closing files by age); called after every poll.
    fn tick(&mut self, _now: Instant) -> Result<()> {
        Ok(())
    }

    /// Records that cannot be written, to be produced to the dead-letter topic. The task
    /// delivers them before the next [`Self::commit`].
    fn take_dead_letters(&mut self) -> Vec<DeadLetter>;

    /// Whether [`Self::commit`] has anything to do.
    fn wants_commit(&self) -> bool;

    /// Makes what was put durable and final in the external system, and returns the new
    /// resume point of every partition that moved (committed to the group afterwards).
    fn commit(&mut self) -> Result<Vec<(TopicPartition, i64)>>;

    /// Finishes what is in progress for `partitions` before they are handed over (a
    /// revocation, or the end of the run); a [`Self::commit`] follows.
    fn close(&mut self, partitions: &[TopicPartition]) -> Result<()>;

    /// Forgets `partitions` (after `close` and `commit`, or when they were lost to another
    /// member): anything not committed is dropped, and the next owner replays it.
    fn release(&mut self, partitions: &[TopicPartition]);
}

/// An external system whose data a connector produces to topics.
pub trait Source: Send + 'static {
    /// Runs until `shutdown` is triggered (then finishes what it acknowledged and returns
    /// `Ok`) or it fails.
    fn run(self, ctx: SourceContext, shutdown: Shutdown)
        -> impl Future<Output = Result<()>> + Send;
}

/// The stop signal every task of a connector watches. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    /// A signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Whether the stop was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when the stop is triggered (or its trigger is dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

impl ShutdownTrigger {
    /// Tells every holder of the matching [`Shutdown`] to stop.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    /// Whether [`Self::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs `tasks` (spawned on the runtime, so they run in parallel) until `shutdown` completes
/// or one of them fails; either way all are told to stop through `trigger` and awaited. The
/// first error is returned.
pub(crate) async fn supervise(
    mut tasks: tokio::task::JoinSet<Result<()>>,
    trigger: ShutdownTrigger,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    let mut first_error = None;
    loop {
        tokio::select! {
            _ = &mut shutdown, if !trigger.is_triggered() => trigger.trigger(),
            joined = tasks.join_next() => match joined {
                None => break,
                Some(result) => {
                    let result = result.unwrap_or_else(|e| {
                        Err(ConnectorError::Task(e.to_string()))
                    });
                    if let Err(error) = result {
                        tracing::error!(%error, "connector task failed; stopping the others");
                        first_error.get_or_insert(error);
                        trigger.trigger();
                    }
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
