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

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{Context, Operator, ReplayGuard, TaskMeta, DATA_PREFIX};
use crate::record::Record;
use crate::store::{decode, encode, encode_into, Change, KeyValueStore};
use crate::time::Timestamp;

/// Extracts the id that identifies duplicates (a click id, an event UUID).
pub type IdFn<K, V, I> = Box<dyn Fn(&K, &V) -> I + Send>;

/// What is remembered about an id.
#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Timestamp,
    dirty: bool,
    persisted: bool,
}

/// The dedupe operator: passes the first record per id within the horizon.
pub struct Dedupe<K, V, I> {
    name: String,
    horizon: i64,
    id: IdFn<K, V, I>,
    seen: HashMap<I, Seen>,
    /// Ids by expiry time (`first + horizon`).
    expiry: BTreeMap<Timestamp, Vec<I>>,
    evicted: Vec<Vec<u8>>,
    store: Box<dyn KeyValueStore>,
    guard: ReplayGuard,
}

impl<K, V, I> Dedupe<K, V, I>
where
    I: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
{
    /// A dedupe step named `name` (its store's name) remembering ids for `horizon_ms`.
    pub fn new(
        name: impl Into<String>,
        horizon_ms: i64,
        id: IdFn<K, V, I>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        Self {
            name: name.into(),
            horizon: horizon_ms.max(0),
            id,
            seen: HashMap::new(),
            expiry: BTreeMap::new(),
            evicted: Vec::new(),
            store,
            guard: ReplayGuard::default(),
        }
    }

    fn store_key(id: &I) -> Result<Vec<u8>, StreamsError> {
        let mut buf = vec![DATA_PREFIX];
        encode_into(id, &mut buf)?;
        Ok(buf)
    }

    fn remember(&mut self, id: I, first: Timestamp, persisted: bool, dirty: bool) {
        self.expiry
            .entry(first.saturating_add(self.horizon))
            .or_default()
            .push(id.clone());
        self.seen.insert(
            id,
            Seen {
                first,
                dirty,
                persisted,
            },
        );
    }
}

impl<K, V, I> Operator<K, V> for Dedupe<K, V, I>
where
    K: Send,
    V: Send,
    I: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
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
        if self.guard.is_replay(&record) {
            cx.metrics.replays_skipped += 1;
            return None;
        }
        let id = (self.id)(&record.key, &record.value);
        let t = record.timestamp;
        let previous = self.seen.get(&id).copied();
        if let Some(seen) = previous {
            if t.abs_diff(seen.first) <= self.horizon.unsigned_abs() {
                cx.metrics.duplicates_dropped += 1;
                return None;
            }
        }
        if t < cx.watermark {
            cx.metrics.late_records += 1;
            return Some(record);
        }
        // A new id, or one whose previous sighting is outside the horizon: this record starts
        // a new horizon. The old expiry entry stays behind and is ignored when it fires.
        let persisted = previous.is_some_and(|s| s.persisted);
        self.remember(id, t, persisted, true);
        out.push(record);
        None
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, _out: &mut Vec<Record<K, V>>) {
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() >= cx.watermark {
                break;
            }
            let expires = *entry.key();
            for id in entry.remove() {
                // Only expire the sighting this entry was made for.
                let current = self
                    .seen
                    .get(&id)
                    .is_some_and(|s| s.first.saturating_add(self.horizon) == expires);
                if !current {
                    continue;
                }
                if let Some(seen) = self.seen.remove(&id) {
                    if seen.persisted {
                        match Self::store_key(&id) {
                            Ok(k) => self.evicted.push(k),
                            Err(error) => tracing::warn!(%error, "cannot encode expired id"),
                        }
                    }
                }
            }
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        for key in self.evicted.drain(..) {
            self.store.delete(&key)?;
        }
        for (id, seen) in self.seen.iter_mut().filter(|(_, s)| s.dirty) {
            self.store.put(Self::store_key(id)?, encode(&seen.first)?)?;
            seen.dirty = false;
            seen.persisted = true;
        }
        self.guard.checkpoint(self.store.as_mut(), meta)?;
        Ok(self.store.take_changes())
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        self.store.restore(changes)?;
        self.seen.clear();
        self.expiry.clear();
        self.evicted.clear();
        for (k, v) in self.store.prefix(&[DATA_PREFIX])? {
            let id: I = decode(&k[1..])?;
            let first: Timestamp = decode(&v)?;
            self.remember(id, first, true, false);
        }
        self.guard.restore(self.store.as_ref())
    }

    fn state_len(&self) -> usize {
        self.seen.len()
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
