//! The Kafka runtime: runs a [`Pipeline`](crate::Pipeline) per input partition ("task") against a cluster.
//!
//! Instances of a job with the same application id form one consumer group; partition `p` of
//! every source topic is task `p`, which moves between instances with its state. Each task's
//! state stores are backed by compacted changelog topics (`<app>-<store>-changelog`,
//! partition `p`). A commit, every `commit_interval` and before partitions are given up:
//!
//! 1. flushes each task's state changes, ending with its input offsets and event-time
//!    progress, to the changelog topics;
//! 2. waits until those and every output record produced so far are acknowledged;
//! 3. commits the input offsets to the consumer group.
//!
//! On assignment a task restores its stores from the changelog (complete commits only) and
//! resumes reading at the offsets stored *with* that state, so restored state and resume
//! position always agree: after a crash, input is replayed from the last commit, and records
//! the restored state already counts are skipped. Final window results are never double
//! counted.
//!
//! Delivery of output records depends on [`ProcessingGuarantee`]. With `exactly_once_v2`
//! (the default) everything an instance writes in a commit interval, and the input offsets
//! of that interval, commit in one transaction (`exactly_once`): a crash or fencing aborts
//! it, the tasks restore from the last commit, and read_committed consumers of the output
//! see each result once. With `at_least_once` a window emitted after the last commit may be
//! emitted again after a crash, with the same value.

//! Where each part lives:
//! - [`StreamsConfig`] (`config`), [`Job`] (`job`: set-up and start), [`JobMetrics`]
//!   (`metrics`);
//! - `running`: the loop that polls the consumer and feeds the tasks; `task`: creating
//!   (restoring) and dropping tasks; `commit`: the commit above; `exactly_once`: the
//!   transactional producer and recovering from an aborted transaction;
//! - `repartition`: `Job::group_by`'s repartition topic; `side_outputs`: dead letters and
//!   late records; `end`: [`EndOfInput`];
//! - [`Source`], [`Sink`], the changelog reader and the global-table loaders.

mod changelog;
mod commit;
mod config;
mod end;
mod exactly_once;
mod job;
mod metrics;
mod repartition;
mod running;
mod side_outputs;
mod sink;
mod source;
mod table;
mod task;

pub use changelog::changelog_topic;
pub use config::{ProcessingGuarantee, StreamsConfig};
pub use end::EndOfInput;
pub use job::Job;
pub use metrics::{JobMetrics, MetricsSnapshot};
pub use repartition::repartition_topic;
pub use sink::{Callback, Encoder, Sink};
pub use source::{Decoder, Source};
