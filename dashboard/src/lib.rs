//! Web console: cluster, topics, lag, live aggregates, SQL.
//!
//! Not built yet: see the open issues. This crate exists so the workspace has its final shape.
