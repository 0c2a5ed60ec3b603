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

use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{stateful_operator, Context, Operator, StatefulStep, StepParts};
use crate::record::Record;
use crate::state::backend::StateBackend;
use crate::state::keyed::KeyedState;
use crate::state::store::KeyValueStore;
use crate::state::time_index::TimeIndex;
use crate::time::Timestamp;

/// Extracts the id that identifies duplicates (a click id, an event UUID).
pub type IdFn<K, V, I> = Box<dyn Fn(&K, &V) -> I + Send>;

/// The remembered ids, each with the event time of its first sighting.
type Ids<I> = KeyedState<I, (), Timestamp>;

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
    horizon: i64,
    id: IdFn<K, V, I>,
    /// The ids; their index is the ids by expiry time (`first + horizon`), on disk when the
    /// state is, so that memory does not grow with the remembered ids. An id seen again after
    /// its horizon keeps its old index entry, which is ignored when it fires.
    parts: StepParts<Ids<I>, TimeIndex<I>>,
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
        Self::with(horizon_ms, id, StepParts::in_memory(name.into(), store))
    }

    /// A dedupe step with its state where `backend` says.
    pub fn with_backend(
        name: impl Into<String>,
        horizon_ms: i64,
        id: IdFn<K, V, I>,
        backend: &StateBackend,
    ) -> Self {
        Self::with(
            horizon_ms,
            id,
            StepParts::with_backend(name.into(), backend),
        )
    }

    fn with(horizon_ms: i64, id: IdFn<K, V, I>, parts: StepParts<Ids<I>, TimeIndex<I>>) -> Self {
        Self {
            horizon: horizon_ms.max(0),
            id,
            parts,
        }
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

    stateful_operator!(K, V);
}

impl<K, V, I> StatefulStep<K, V> for Dedupe<K, V, I>
where
    K: Send,
    V: Send,
    I: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
{
    type State = Ids<I>;
    type Index = TimeIndex<I>;

    fn parts(&self) -> &StepParts<Ids<I>, TimeIndex<I>> {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut StepParts<Ids<I>, TimeIndex<I>> {
        &mut self.parts
    }

    fn apply(
        &mut self,
        record: Record<K, V>,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<K, V>>,
    ) -> Result<Option<Record<K, V>>, StreamsError> {
        let id = (self.id)(&record.key, &record.value);
        let t = record.timestamp;
        let horizon = self.horizon.unsigned_abs();
        let late = t < cx.watermark;
        let verdict = self.parts.state.update(&id, |g| {
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
        })?;
        match verdict {
            Verdict::New => {
                self.parts
                    .index
                    .insert(t.saturating_add(self.horizon), id)?;
                out.push(record);
                Ok(None)
            }
            Verdict::Duplicate => {
                cx.metrics.duplicates_dropped += 1;
                Ok(None)
            }
            Verdict::Late => Ok(Some(record)),
        }
    }

    /// Forgets the ids whose horizon the watermark passed.
    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        _out: &mut Vec<Record<K, V>>,
    ) -> Result<(), StreamsError> {
        let watermark = cx.watermark;
        if watermark == Timestamp::MAX {
            // The end of time only comes from an end of input (or the end of a bounded
            // input): keep the ids, see the module documentation.
            return Ok(());
        }
        if watermark == Timestamp::MIN {
            return Ok(());
        }
        // Entries expire once the watermark is past them.
        let parts = &mut self.parts;
        while let Some((expires, ids)) = parts.index.pop_due(watermark.saturating_sub(1))? {
            let horizon = self.horizon;
            for id in ids {
                // Only expire the sighting this entry was made for.
                parts.state.update(&id, |g| {
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

    fn restoring(
        &mut self,
    ) -> (
        impl FnMut(&mut TimeIndex<I>, &I, &(), &Timestamp) -> Result<(), StreamsError>,
        &mut StepParts<Ids<I>, TimeIndex<I>>,
    ) {
        let horizon = self.horizon;
        let index_id = move |expiry: &mut TimeIndex<I>, id: &I, _: &(), first: &Timestamp| {
            expiry.insert(first.saturating_add(horizon), id.clone())
        };
        (index_id, &mut self.parts)
    }

    /// One row per remembered id: `id`, `first_seen`, `expires` (on disk at most
    /// [`SNAPSHOT_ROW_CAP`](crate::state::SNAPSHOT_ROW_CAP) ids, see
    /// [`crate::state::backend`]).
    fn row(&self, id: &I, _: &(), first: &Timestamp) -> serde_json::Value {
        serde_json::json!({
            "id": serde_json::to_value(id).unwrap_or(serde_json::Value::Null),
            "first_seen": first,
            "expires": first.saturating_add(self.horizon),
        })
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
