//! Millrace stream jobs: event-time windows, keyed state, operators.
//!
//! A complete job: page views per page and minute, from a topic keyed by user to a topic of
//! final per-window counts, with its state in a changelog topic and its instances in one
//! consumer group (run it twice and the partitions, with their state, are shared).
//!
//! ```no_run
//! # async fn run() -> Result<(), millrace_streams::StreamsError> {
//! use std::time::Duration;
//! use millrace_client::ClientConfig;
//! use millrace_streams::runtime::{Job, Sink, Source, StreamsConfig};
//! use millrace_streams::{EmitMode, Windows};
//!
//! #[derive(serde::Deserialize)]
//! struct PageView { page: String, ts: i64 }
//!
//! let config = StreamsConfig::new("page-views-per-minute", ClientConfig::new("127.0.0.1:9092"));
//! // page-views is keyed by user; group by page (through the repartition topic).
//! let job = Job::group_by(
//!     config,
//!     Source::json(&["page-views"], |v: &PageView| v.ts),
//!     |_user, view| view.page.clone(),
//!     |views| {
//!         views
//!             .window(Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(10)))
//!             .emit(EmitMode::Final)
//!             .count()
//!             .map(|w, views| (w.key.clone(), serde_json::json!({
//!                 "page": w.key, "window_start": w.window_start,
//!                 "window_end": w.window_end, "views": views })))
//!     },
//!     Sink::json_values("page-views-per-minute"),
//! );
//! job.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Underneath is the deterministic engine of a stream job: records go in with their event
//! time and input position, results come out, and state can be checkpointed to (and restored
//! from) changelog batches. It does no I/O; the Kafka runtime ([`runtime`]: consumer group,
//! changelog topics, commits) drives it, and it runs on its own in tests:
//!
//! ```
//! use std::time::Duration;
//! use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windows};
//!
//! // Clicks per campaign per minute, emitted once per window, duplicates removed.
//! let build = |clicks: Stream<String, String>| {
//!     clicks
//!         .dedupe(Duration::from_secs(600), |click_id, _campaign| click_id.clone())
//!         .key_by(|_click_id, campaign| campaign.clone())
//!         .window(Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(5)))
//!         .emit(EmitMode::Final)
//!         .count()
//! };
//! let mut job = Pipeline::new(build).event_time(Duration::from_secs(2), None);
//! let clicks = [("c1", "spring", 1_000), ("c2", "spring", 30_000), ("c1", "spring", 31_000),
//!               ("c3", "autumn", 59_000), ("c4", "spring", 70_000)];
//! for (offset, (id, campaign, t)) in clicks.into_iter().enumerate() {
//!     job.push(Record::new(id.to_string(), campaign.to_string(), t).at(0, offset as i64));
//! }
//! // The record at 70 s moves the watermark to 68 s (2 s out-of-orderness), past the first
//! // minute's end plus grace (65 s): that window emits its final counts. The repeated click
//! // c1 was dropped by dedupe.
//! let out = job.take_output();
//! let got: Vec<_> = out.iter().map(|r| (r.key.key.as_str(), r.key.window_start, r.value)).collect();
//! assert_eq!(got, vec![("autumn", 0, 1), ("spring", 0, 2)]);
//!
//! // A commit yields the changelog batches and offsets; a fresh pipeline restores from them.
//! let checkpoint = job.commit()?;
//! let mut restored = Pipeline::new(build).event_time(Duration::from_secs(2), None);
//! let resume = restored.restore(checkpoint.stores)?;
//! assert_eq!(resume.get(&0), Some(&5));
//! # Ok::<(), millrace_streams::StreamsError>(())
//! ```
//!
//! Where to start reading: [`dsl`] (the job API), then [`windows`] and [`time`]. The layout:
//!
//! ```text
//! dsl/        Stream, windowed streams, joins, the Pipeline, and the node chain they build
//! windows/    window definitions; the stateful steps: fixed (tumbling and hopping) windows,
//!             session, sliding, window join, dedupe
//! operator/   the Operator trait, checkpoint metadata and replay skipping, and the
//!             scaffolding every stateful step shares
//! state/      stores (in memory, on disk), the backend choice, keyed state, time indexes
//! operators/  ready-made analytics: anomaly alerts, "also viewed", ad counters, sketches
//! runtime/    the Kafka runtime: config, job, running loop, tasks, commit, repartition,
//!             side outputs, end of input, changelogs, sources and sinks
//! time.rs     event time, watermarks;  record.rs  records;  table.rs  global tables;
//! query.rs    live state as Arrow batches and DataFusion tables;  error.rs  errors
//! ```
//!
//! - [`time`]: event time, per-partition watermarks, idle partitions;
//! - [`windows::definition`]: tumbling, hopping, sliding and session windows with explicit
//!   grace;
//! - [`windows::fixed`] (tumbling and hopping), [`windows::session`], [`windows::sliding`],
//!   [`windows::join`] (windowed stream-stream joins), [`windows::dedupe`]: the stateful
//!   steps;
//! - [`state::store`]: byte key-value stores that record their changelog ([`state::disk`]:
//!   on disk, for state larger than memory);
//! - [`state::backend`]: where each stateful step keeps its state, in memory or on disk
//!   ([`StateBackend`], per pipeline, job or step);
//! - [`operator`]: the stateful step trait, checkpoint metadata and replay skipping;
//! - [`table`]: global tables for stream-table joins;
//! - [`operators`]: ready-made analytics operators (anomaly alerts, "also viewed"
//!   recommendations, ad counters, quantile and distinct-count sketches);
//! - [`dsl`]: `Stream`, windowed streams, and the `Pipeline` that runs them;
//! - [`runtime`]: jobs against a Kafka cluster; [`query`]: live state for queries.

#![warn(missing_docs)]

pub mod dsl;
mod error;
pub mod operator;
pub mod operators;
pub mod query;
pub mod record;
pub mod runtime;
pub mod state;
pub mod table;
pub mod time;
pub mod windows;

pub use dsl::{
    Checkpoint, Pipeline, SessionWindowedStream, SlidingWindowedStream, StoreChanges,
    StoreSnapshot, Stream, WindowJoinBuilder, WindowedStream,
};
pub use error::StreamsError;
pub use operator::{Metrics, Operator};
pub use record::{LateRecord, Record, Windowed};
pub use state::{DiskStore, InMemoryStore, KeyValueStore, StateBackend};
pub use table::GlobalTable;
pub use time::{PartitionId, Timestamp, WatermarkTracker};
pub use windows::{EmitMode, JoinWindows, SessionWindows, Side, SlidingWindows, Window, Windows};
