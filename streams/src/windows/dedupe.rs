//! Duplicate removal by id within an event-time horizon.
//!
//! The first record with a given id passes; a later one whose event time is within `horizon`
//! of the first is dropped (and counted). Remembered ids expire once the watermark passes
//! `first + horizon`, so state stays bounded by the ids seen in one horizon.
//!
//! A record older than the watermark whose id is not remembered cannot be judged: its id may
//! have been seen and already expired. Such a record is late: counted and handed back as a side
//! output, not silently passed or dropped. Pick the pipeline's out-of-orderness so that normal
//! disorder stays ahead of the watermark.
//!
//! An end of input ([`crate::Pipeline::end_of_input`]) closes windows by moving the
//! watermark to the end of time and then setting it back. Dedupe has nothing to emit then,
//! and forgetting every id would let a duplicate arriving afterwards pass a second time, or
//! would force reporting every new id within a horizon of the end as late. So remembered ids
//! outlive an end of input and expire as the (set back) watermark passes their horizon; being
//! ordinary state, they are checkpointed and restored like any other. The rules above then
//! hold across an end of input and a restart unchanged: a duplicate is dropped, and an
//! unknown id older than the watermark (which the checkpoint keeps) is late.

use std::collections::BTreeSet;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{Context, Operator, ReplayGuard, TaskMeta};
use crate::record::Record;
use crate::state::backend::{snapshot_failed, StateBackend, SNAPSHOT_ROW_CAP};
use crate::state::keyed::KeyedState;
use crate::state::store::{Change, KeyValueStore};
use crate::state::time_index::TimeIndex;
use crate::time::Timestamp;

/// Extracts the id that identifies duplicates (a click id, an event UUID).
pub type IdFn<K, V, I> = Box<dyn Fn(&K, &V) -> I + Send>;

/// What the state says about a record.
enum Verdict {
    /// A new id, or one seen outside the horizon: passes.
    New,
    /// Seen within the horizon: dropped.
    Duplicate,
    /// Unknown and older than the watermark: cannot be judged.
    Late,
}

/// The dedupe operator: passes the first record per id within the horizon.
///
/// Each remembered id is one entry (`id` -> first event time) of its [`KeyedState`], in
/// memory or on disk (see [`crate::state::backend`]).
pub struct Dedupe<K, V, I> {
    name: String,
    horizon: i64,
    id: IdFn<K, V, I>,
    state: KeyedState<I, (), Timestamp>,
    /// Ids by expiry time (`first + horizon`); on disk when the state is, so that memory does
    /// not grow with the remembered ids. An id seen again after its horizon keeps its old
    /// entry here, which is ignored when it fires.
    expiry: TimeIndex<I>,
    guard: ReplayGuard,
}

impl<K, V, I> Dedupe<K, V, I>
where
    I: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
{
    /// A dedupe step named `name` (its store's name) remembering ids for `horizon_ms`, in
    /// memory and mirrored to `store` at checkpoints.
    pub fn new(
        name: impl Into<String>,
        horizon_ms: i64,
        id: IdFn<K, V, I>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        let name = name.into();
        let state = KeyedState::in_memory(&name, store);
        Self::with(
            name,
            horizon_ms,
            id,
            (state, TimeIndex::Memory(BTreeSet::new())),
        )
    }

    /// A dedupe step with its state where `backend` says.
    pub fn with_backend(
        name: impl Into<String>,
        horizon_ms: i64,
        id: IdFn<K, V, I>,
        backend: &StateBackend,
    ) -> Self {
        let name = name.into();
        let mut state = KeyedState::new(&name, backend);
        let expiry = TimeIndex::for_state(&name, backend, &mut state);
        Self::with(name, horizon_ms, id, (state, expiry))
    }

    fn with(
        name: String,
        horizon_ms: i64,
        id: IdFn<K, V, I>,
        (state, expiry): (KeyedState<I, (), Timestamp>, TimeIndex<I>),
    ) -> Self {
        Self {
            name,
            horizon: horizon_ms.max(0),
            id,
            state,
            expiry,
            guard: ReplayGuard::default(),
        }
    }

    /// Forgets the ids whose horizon the watermark passed.
    fn expire(&mut self, watermark: Timestamp) -> Result<(), StreamsError> {
        if watermark == Timestamp::MAX {
            // The end of time only comes from an end of input (or the end of a bounded
            // input): keep the ids, see the module documentation.
            return Ok(());
        }
        if watermark == Timestamp::MIN {
            return Ok(());
        }
        // Entries expire once the watermark is past them.
        while let Some((expires, ids)) = self.expiry.pop_due(watermark.saturating_sub(1))? {
            let horizon = self.horizon;
            for id in ids {
                // Only expire the sighting this entry was made for.
                self.state.update(&id, |g| {
                    if g.get(&())
                        .is_some_and(|first| first.saturating_add(horizon) == expires)
                    {
                        g.remove(&());
                    }
                })?;
            }
        }
        Ok(())
    }
}

impl<K, V, I> Operator<K, V> for Dedupe<K, V, I>
where
    K: Send,
    V: Send,
    I: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
{
    type OutKey = K;
    type OutValue = V;

    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        record: Record<K, V>,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<K, V>>,
    ) -> Option<Record<K, V>> {
        if self.state.failed() {
            return None;
        }
        if self.guard.is_replay(&record) {
            cx.metrics.replays_skipped += 1;
            return None;
        }
        let id = (self.id)(&record.key, &record.value);
        let t = record.timestamp;
        let horizon = self.horizon.unsigned_abs();
        let late = t < cx.watermark;
        let verdict = self.state.update(&id, |g| {
            if g.get(&())
                .is_some_and(|first| t.abs_diff(*first) <= horizon)
            {
                return Verdict::Duplicate;
            }
            if late {
                return Verdict::Late;
            }
            // A new id, or one whose previous sighting is outside the horizon: this record
            // starts a new horizon.
            g.insert((), t);
            Verdict::New
        });
        match verdict {
            Ok(Verdict::New) => {
                if let Err(error) = self.expiry.insert(t.saturating_add(self.horizon), id) {
                    self.state.fail(error);
                    return None;
                }
                out.push(record);
                None
            }
            Ok(Verdict::Duplicate) => {
                cx.metrics.duplicates_dropped += 1;
                None
            }
            Ok(Verdict::Late) => {
                cx.metrics.late_records += 1;
                Some(record)
            }
            Err(error) => {
                self.state.fail(error);
                None
            }
        }
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, _out: &mut Vec<Record<K, V>>) {
        if self.state.failed() {
            return;
        }
        if let Err(error) = self.expire(cx.watermark) {
            self.state.fail(error);
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        self.expiry.checkpoint()?;
        self.state.checkpoint(&mut self.guard, meta)
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        self.expiry.clear()?;
        let horizon = self.horizon;
        let expiry = &mut self.expiry;
        let mut failed = None;
        let meta =
            self.state
                .restore(changes, &mut self.guard, |id: &I, _, first: &Timestamp| {
                    if failed.is_none() {
                        failed = expiry
                            .insert(first.saturating_add(horizon), id.clone())
                            .err();
                    }
                })?;
        match failed {
            Some(error) => Err(error),
            None => Ok(meta),
        }
    }

    fn state_len(&self) -> usize {
        self.state.len()
    }

    /// One row per remembered id: `id`, `first_seen`, `expires` (on disk at most
    /// [`SNAPSHOT_ROW_CAP`] ids, see [`crate::state::backend`]).
    fn snapshot(&self) -> Vec<serde_json::Value> {
        let mut rows = Vec::new();
        let horizon = self.horizon;
        let result = self
            .state
            .snapshot(SNAPSHOT_ROW_CAP, |id: &I, _, first: &Timestamp| {
                rows.push(serde_json::json!({
                    "id": serde_json::to_value(id).unwrap_or(serde_json::Value::Null),
                    "first_seen": first,
                    "expires": first.saturating_add(horizon),
                }));
            });
        if let Err(error) = result {
            snapshot_failed(&self.name, &error);
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::dsl::{Pipeline, Stream};

    fn dedupe(ooo_ms: u64) -> Pipeline<String, u32, String, u32> {
        Pipeline::new(|s: Stream<String, u32>| {
            s.dedupe(Duration::from_secs(10), |id: &String, _| id.clone())
        })
        .event_time(Duration::from_millis(ooo_ms), None)
    }

    fn passed(p: &mut Pipeline<String, u32, String, u32>) -> Vec<u32> {
        p.take_output().into_iter().map(|r| r.value).collect()
    }

    #[test]
    fn duplicate_within_horizon_is_dropped() {
        let mut p = dedupe(0);
        p.push(Record::new("x".into(), 1, 1_000));
        p.push(Record::new("x".into(), 2, 5_000));
        assert_eq!(
            (passed(&mut p), p.metrics().duplicates_dropped),
            (vec![1], 1)
        );
    }

    #[test]
    fn same_id_after_horizon_passes_again() {
        let mut p = dedupe(0);
        p.push(Record::new("x".into(), 1, 1_000));
        p.push(Record::new("x".into(), 2, 11_001));
        assert_eq!(passed(&mut p), vec![1, 2]);
    }

    #[test]
    fn out_of_order_duplicate_within_horizon_is_dropped() {
        let mut p = dedupe(5_000);
        p.push(Record::new("x".into(), 1, 9_000));
        p.push(Record::new("x".into(), 2, 6_000));
        assert_eq!(passed(&mut p), vec![1]);
    }

    #[test]
    fn ids_expire_once_watermark_passes_their_horizon() {
        let mut p = dedupe(0);
        p.push(Record::new("x".into(), 1, 1_000));
        p.push(Record::new("y".into(), 1, 11_001));
        assert_eq!(p.state_len(), 1);
    }

    #[test]
    fn unknown_id_older_than_watermark_is_reported_late() {
        let mut p = dedupe(0);
        p.push(Record::new("x".into(), 1, 50_000));
        p.push(Record::new("y".into(), 1, 1_000));
        assert_eq!((passed(&mut p), p.take_late().len()), (vec![1], 1));
    }

    #[test]
    fn restored_dedupe_still_drops_duplicates() {
        let mut p = dedupe(0);
        p.push(Record::new("x".into(), 1, 1_000));
        let cp = p.commit().unwrap();
        let mut q = dedupe(0);
        q.restore(cp.stores).unwrap();
        q.push(Record::new("x".into(), 2, 2_000));
        assert!(passed(&mut q).is_empty());
    }
}
