//! The consumer.

pub(crate) mod protocol;
