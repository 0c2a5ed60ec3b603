//! Jepsen-style safety checking for fault tests, after Jepsen's Kafka workload.
//!
//! A fault test runs a [`workload`] (producers with acks=all and idempotence writing unique
//! values, consumers polling, some of them in a group) while it injects faults, recording
//! everything into a [`history::History`]; after the faults heal it reads every partition back
//! ([`workload::final_read`] through the client, and per broker with
//! [`replica_read::record_broker_reads`] or any reader feeding
//! [`history::History::record_replica_read`]; [`topology`] finds leaders, in-sync replicas and
//! brokers), then [`check`] names what went wrong:
//! lost-write, duplicate, inconsistent-offsets, nonmonotonic-poll, poll-skip, divergence and
//! nonmonotonic-send.
//!
//! ```no_run
//! # async fn example(bootstrap: String) -> anyhow::Result<()> {
//! use std::time::Duration;
//! use millrace_testkit::jepsen::{check, workload::{final_read, Workload}, Recorder};
//!
//! let recorder = Recorder::new();
//! let mut running = Workload::new(&bootstrap, "jepsen", 3).start(recorder.clone());
//! assert!(running.wait_for_acks(100, Duration::from_secs(30)).await);
//! // ... inject faults, heal ...
//! let summary = running.stop().await?;
//! final_read(&bootstrap, "jepsen", 3, &recorder).await?;
//! check(&recorder.snapshot()).assert_valid();
//! # Ok(())
//! # }
//! ```

pub mod checker;
pub mod history;
pub mod replica_read;
pub mod topology;
pub mod transactions;
pub mod workload;

#[cfg(test)]
mod checker_tests;

pub use checker::{
    check, check_with, Anomaly, AnomalyKind, CheckOptions, CheckReport, Counts, Observer,
};
pub use history::{
    Event, FinalRead, History, PolledRecord, ReadSource, Recorder, ReplicaRecord, Send, SendOutcome,
};
