//! Sources and sinks, first of all a Parquet sink.
//!
//! Not built yet: see the open issues. This crate exists so the workspace has its final shape.
