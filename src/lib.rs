//! The `millrace` package's library: the activity-tracking example that `millrace demo`,
//! `examples/activity_tracking.rs` and the end-to-end tests share. The command line itself
//! lives in the binary (`src/main.rs`).

pub mod activity;
