//! Fault tests of a cluster of real `millrace broker` processes, judged by the Jepsen-style
//! checker (`millrace_testkit::jepsen`): producers with acks=all and idempotence write unique
//! values while consumers poll; a fault is injected and healed; everything is read back from
//! every replica; the checker must find no lost-write, duplicate, inconsistent-offsets,
//! nonmonotonic-poll, poll-skip, divergence or nonmonotonic-send.
//!
//! One idea per file; `common` holds what they share. Scenarios run one at a time (see
//! [`common::run`]).
#![allow(clippy::unwrap_used)]

mod common;

mod corrupt_follower;
mod fast_leader_change;
mod isolated_leader;
mod kill_controller;
mod kill_leader;
mod paused_followers;
mod rolling_restart;
mod transactions;
mod zombie_leader;
