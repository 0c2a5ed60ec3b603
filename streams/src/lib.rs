//! Stream jobs: event-time windows, keyed state, operators.
//!
//! Not built yet: see the open issues. This crate exists so the workspace has its final shape.
