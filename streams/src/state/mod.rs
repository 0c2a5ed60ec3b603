//! Where the stateful steps keep their state, and how it reaches the changelog:
//!
//! - [`store`]: byte key-value stores that record their changes for the changelog
//!   ([`KeyValueStore`], [`InMemoryStore`]);
//! - [`disk`]: the on-disk store ([`DiskStore`]), for state larger than memory;
//! - [`backend`]: where each step keeps its state, in memory or on disk ([`StateBackend`]);
//! - `keyed`: the keyed state of sessions, sliding windows, joins, dedupe and the anomaly
//!   detector, written once against either backend;
//! - `time_index`: what those steps close or expire next;
//! - `cell`: a store that may have failed (an I/O error stops the step until its next
//!   checkpoint reports it).

pub mod backend;
pub(crate) mod cell;
pub mod disk;
pub(crate) mod keyed;
pub mod store;
pub(crate) mod time_index;

pub use backend::{StateBackend, SNAPSHOT_ROW_CAP};
pub use disk::DiskStore;
pub use store::{InMemoryStore, KeyValueStore};
