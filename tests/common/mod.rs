//! Helpers of the root package's tests for what needs the built `millrace` binary (see
//! [`cli`]). Brokers, ports, records and the wire client come from `millrace-testkit`.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cli;
pub mod cluster;

/// The built `millrace` binary (cargo builds it for the root package's integration tests).
pub const MILLRACE_BIN: &str = env!("CARGO_BIN_EXE_millrace");
