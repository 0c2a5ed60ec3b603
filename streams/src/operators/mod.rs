//! Ready-made operators for the three analytics use cases, plus the sketches they rest on.
//!
//! Each plugs into the DSL the way that fits it, and keeps its state in a
//! [`KeyValueStore`](crate::KeyValueStore) backed by a changelog, like the built-in steps,
//! in memory or on disk as the [`StateBackend`](crate::StateBackend) of the pipeline or
//! stream says (see [`crate::state::backend`]); the changelog's format does not depend on it:
//! - [`anomaly`]: per-key baselines (EWMA mean and variance, or median and MAD over the last
//!   values) scoring each value and emitting [`Anomaly`] alerts; an
//!   [`Operator`](crate::Operator) built by a [`Detector`] and added with
//!   [`Stream::operator`](crate::Stream::operator);
//! - [`recommend`]: "also viewed" from item co-occurrence in user sessions, with time decay and
//!   a bounded neighbour list per item; a session aggregate followed by the [`AlsoViewed`]
//!   operator, wired by [`also_viewed`];
//! - [`ads`]: impressions, clicks, CTR and distinct users per campaign per window after
//!   duplicate removal; an aggregate accumulator ([`AdCounters`]) wired by [`ad_stats`];
//! - [`quantiles`]: p50/p99 per key and window; an aggregate accumulator ([`QuantileSketch`]);
//! - [`distinct`]: distinct counts with HyperLogLog; an aggregate accumulator
//!   ([`DistinctCount`]).

pub mod ads;
pub mod anomaly;
pub mod distinct;
pub mod quantiles;
pub mod recommend;

pub use ads::{ad_stats, AdCounters, AdEvent, AdEventKind, AdStats};
pub use anomaly::{Anomaly, AnomalyDetector, AnomalyEmit, Baseline, Detector, Direction};
pub use distinct::DistinctCount;
pub use quantiles::{QuantileSketch, QuantileSummary};
pub use recommend::{also_viewed, AlsoViewed, Related, SessionItems};
