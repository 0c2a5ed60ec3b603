//! Where the state stores of a job live: in memory (the default) or on disk.
//!
//! Kafka Streams users set `state.dir` once for the application and every store of every
//! task is a RocksDB store under it, with `Materialized` overriding one store. The same
//! shape here: [`StateBackend`] is chosen for a whole pipeline ([`crate::Pipeline::with_backend`],
//! or [`crate::runtime::StreamsConfig::state_dir`] for a job) and can be overridden per step
//! ([`crate::Stream::state_backend`], or `.on_disk(dir)` / `.in_memory()` on a windowed
//! stream).
//!
//! Either way the compacted changelog topic is the durable copy of the state and its format
//! does not depend on the backend, so a job can switch backends between runs without a reset.
//!
//! - **In memory**: every stateful step keeps typed state (hash maps) and mirrors what changed
//!   to an [`InMemoryStore`] at each commit. Fastest; all state must fit in memory.
//! - **On disk**: every stateful step reads and writes its values through a
//!   [`DiskStore`] (a redb file per store and task, removed when the task goes), so memory
//!   holds the store's write buffer (the keys written since the last commit) and some
//!   steps' time index (what closes or expires next): fixed windows keep their open window
//!   starts (one per window, not per key), an anomaly detector with `expire_after` one
//!   `(time, series)` entry per live series. Sessions, sliding windows, joins and dedupe
//!   keep theirs on disk too, in a second file per store that is never changelogged (a
//!   restore rebuilds it). Slower per record.
//!
//! Live queries ([`crate::query`]) see the state of both backends as the same rows. With the
//! disk backend a snapshot is read from the store file in chunks (never the whole store in
//! memory) and stops at [`SNAPSHOT_ROW_CAP`] rows per store: fixed windows publish their
//! newest windows first (the store is laid out by window start, so that costs nothing), the
//! other steps their first entries in store key order (by the encoded key, not the key's own
//! order). The runtime publishes snapshots once per snapshot interval (a second), and at the
//! end of each end-of-input round, whichever the backend; a snapshot runs on the task's
//! thread, so a large on-disk store costs up to one capped scan per store and interval.
//!
//! The ready-made analytics operators that keep keyed state, the anomaly detector
//! ([`crate::operators::AnomalyDetector`]) and "also viewed"
//! ([`crate::operators::AlsoViewed`]), follow the backend like the built-in steps: added
//! with [`crate::Stream::operator`], they adopt the stream's backend
//! ([`crate::Operator::adopt_backend`]) unless built with their own (`with_backend`). An
//! operator of your own receives the same call and may ignore it.
//!
//! With the disk backend an I/O error cannot be returned from processing a record: the step
//! stops processing, and the next checkpoint returns the error, which fails the commit before
//! any input offset is committed. The restarted task restores from the changelog.

use std::path::PathBuf;

/// The most rows an on-disk store publishes per snapshot (see the module documentation).
///
/// The disk backend is chosen for state larger than memory, so a snapshot of it must not
/// read the whole store: the memory one snapshot takes is bounded by this many rows plus one
/// scan chunk. In-memory state is published whole (it is in memory already).
pub const SNAPSHOT_ROW_CAP: usize = 100_000;

/// Entries read per store scan by an on-disk snapshot.
pub(crate) const SNAPSHOT_CHUNK: usize = 4_096;

/// Logs a snapshot that stopped at a store error: the rows read so far are published, and
/// the error itself surfaces (if it persists) at the step's next write or checkpoint.
pub(crate) fn snapshot_failed(store: &str, error: &StreamsError) {
    tracing::warn!(store, %error, "state snapshot stopped early");
}

use crate::error::StreamsError;
use crate::state::disk::DiskStore;
use crate::state::store::{InMemoryStore, KeyValueStore};

/// Where the stateful steps of a pipeline keep their state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// Typed in-memory state mirrored to an in-memory store at commits (the default).
    #[default]
    InMemory,
    /// State read and written through a [`DiskStore`] file per store in this directory
    /// (created if missing), for state larger than memory.
    OnDisk(PathBuf),
}

impl StateBackend {
    /// The on-disk backend with its files in `dir`.
    pub fn on_disk(dir: impl Into<PathBuf>) -> Self {
        StateBackend::OnDisk(dir.into())
    }

    /// Whether state lives on disk.
    pub fn is_on_disk(&self) -> bool {
        matches!(self, StateBackend::OnDisk(_))
    }

    /// Opens a fresh store named `name` (an empty working copy, filled by a restore).
    pub fn open(&self, name: &str) -> Result<Box<dyn KeyValueStore>, StreamsError> {
        Ok(match self {
            StateBackend::InMemory => Box::new(InMemoryStore::new()),
            StateBackend::OnDisk(dir) => Box::new(DiskStore::create(dir, name)?),
        })
    }
}
