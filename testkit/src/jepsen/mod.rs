//! Jepsen-style safety checking for fault tests, after Jepsen's Kafka workload.
//!
//! A fault test runs a [`workload`] (producers with acks=all and idempotence writing unique
//! values, consumers polling, some of them in a group) while it injects faults, recording
//! everything into a [`history::History`]; after the faults heal it reads every partition back
//! ([`workload::final_read`], and per replica through
//! [`history::History::record_replica_read`]), then [`check`] names what went wrong:
//! lost-write, duplicate, inconsistent-offsets, nonmonotonic-poll, poll-skip and divergence.

pub mod checker;
pub mod history;

#[cfg(test)]
mod checker_tests;

pub use checker::{
    check, check_with, Anomaly, AnomalyKind, CheckOptions, CheckReport, Counts, Observer,
};
pub use history::{
    FinalRead, History, PolledRecord, ReadSource, Recorder, ReplicaRecord, Send, SendOutcome,
};
