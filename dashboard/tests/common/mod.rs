//! Helpers shared by the dashboard tests.

pub mod http;
