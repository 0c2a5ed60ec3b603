//! A state store that may have failed.
//!
//! An I/O error of an on-disk store cannot be returned from `Operator::process`, so the
//! operator stops processing and the next checkpoint returns the error, which fails the
//! commit before any input offset is committed; the restarted task restores from the
//! changelog. An error opening the store is reported the same way, by the first restore or
//! checkpoint.

use crate::error::StreamsError;
use crate::operator::{ReplayGuard, TaskMeta};
use crate::state::store::{Change, KeyValueStore};

/// A state store, or the error that stopped it.
pub(crate) struct StoreCell {
    name: String,
    store: Option<Box<dyn KeyValueStore>>,
    /// The first error, until a checkpoint or restore reports it.
    error: Option<StreamsError>,
    failed: bool,
}

impl StoreCell {
    /// Wraps `store` (or the error opening it) of the step named `name`.
    pub(crate) fn new(name: &str, store: Result<Box<dyn KeyValueStore>, StreamsError>) -> Self {
        let mut cell = StoreCell {
            name: name.to_string(),
            store: None,
            error: None,
            failed: false,
        };
        match store {
            Ok(store) => cell.store = Some(store),
            Err(error) => cell.fail(error),
        }
        cell
    }

    /// Whether the store failed: the step must not process records any more.
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    /// Records `error`; the step stops and its next checkpoint or restore returns it.
    pub(crate) fn fail(&mut self, error: StreamsError) {
        tracing::error!(store = %self.name, %error, "state store failed; the task stops at its next commit");
        self.failed = true;
        self.store = None;
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    fn failure(&mut self) -> StreamsError {
        self.error
            .take()
            .unwrap_or_else(|| StreamsError::Store(format!("{} failed earlier", self.name)))
    }

    /// The store for a read through `&self` (a snapshot), unless it failed.
    pub(crate) fn peek(&self) -> Option<&(dyn KeyValueStore + 'static)> {
        if self.failed {
            return None;
        }
        self.store.as_deref()
    }

    /// The store, or the error that stopped it.
    pub(crate) fn get(&mut self) -> Result<&mut (dyn KeyValueStore + 'static), StreamsError> {
        if self.failed {
            return Err(self.failure());
        }
        match self.store.as_deref_mut() {
            Some(store) => Ok(store),
            None => Err(StreamsError::Store(format!("{} has no store", self.name))),
        }
    }

    /// Writes `meta`, flushes and takes the changelog batch (the end of every checkpoint).
    pub(crate) fn checkpoint(
        &mut self,
        guard: &mut ReplayGuard,
        meta: &TaskMeta,
    ) -> Result<Vec<Change>, StreamsError> {
        let store = self.get()?;
        guard.checkpoint(store, meta)?;
        Ok(store.take_changes())
    }
}
