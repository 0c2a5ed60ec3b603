//! Global tables for stream-table joins (Kafka Streams' `GlobalKTable`).
//!
//! A [`GlobalTable`] is the latest value per key of a compacted topic, held in memory by
//! every instance of a job: each instance reads *all* partitions of the topic, so a stream
//! record can be joined with any key whatever task it is in, and the stream needs no
//! repartitioning by the lookup key. The runtime loads the topic up to its end offsets before
//! the job processes its first stream record, then keeps applying updates as they arrive; a
//! tombstone (a record without a value) deletes its key.
//!
//! Joins are not synchronised with event time: a stream record sees the table as it is when
//! the record is processed (as in Kafka Streams). The topic itself is the table's durable
//! form, so there is no changelog: a restarted instance reads the topic again.
//!
//! Outside the runtime (tests, in-process pipelines) fill the table with
//! [`GlobalTable::insert`] and [`GlobalTable::remove`].

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;

/// Decodes a table record's key and value bytes (`None` value: a tombstone).
pub type TableDecoder<K, V> =
    Arc<dyn Fn(&[u8], Option<&[u8]>) -> Result<(K, Option<V>), String> + Send + Sync>;

/// The latest value per key of a compacted topic, shared by every task of a job (and by every
/// clone of the handle).
pub struct GlobalTable<K, V> {
    topic: String,
    decode: TableDecoder<K, V>,
    map: Arc<RwLock<HashMap<K, V>>>,
}

impl<K, V> Clone for GlobalTable<K, V> {
    fn clone(&self) -> Self {
        GlobalTable {
            topic: self.topic.clone(),
            decode: self.decode.clone(),
            map: self.map.clone(),
        }
    }
}

impl<K, V> fmt::Debug for GlobalTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalTable")
            .field("topic", &self.topic)
            .finish()
    }
}

impl<K, V> GlobalTable<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// An empty table of `topic`, decoding its records with `decode`.
    pub fn new(
        topic: impl Into<String>,
        decode: impl Fn(&[u8], Option<&[u8]>) -> Result<(K, Option<V>), String> + Send + Sync + 'static,
    ) -> Self {
        GlobalTable {
            topic: topic.into(),
            decode: Arc::new(decode),
            map: Arc::default(),
        }
    }

    /// The topic the table is read from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: K, value: V) {
        self.write().insert(key, value);
    }

    /// Deletes `key` (what a tombstone does).
    pub fn remove(&self, key: &K) {
        self.write().remove(key);
    }

    /// A copy of the value of `key`.
    pub fn get(&self, key: &K) -> Option<V>
    where
        V: Clone,
    {
        self.read().get(key).cloned()
    }

    /// Calls `f` with the value of `key` (no copy), under the table's read lock.
    pub fn with<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        f(self.read().get(key))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes one record of the topic and applies it.
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match (self.decode)(key, value)? {
            (key, Some(value)) => self.insert(key, value),
            (key, None) => self.remove(&key),
        }
        Ok(())
    }

    // A panic while holding the lock cannot leave the map half-updated (each operation is
    // one insert or remove), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<K, V>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<K, V>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K, V> GlobalTable<K, V>
where
    K: Hash + Eq + DeserializeOwned + Send + Sync + 'static,
    V: DeserializeOwned + Send + Sync + 'static,
{
    /// A table of a topic with JSON keys and JSON values. A key that is not valid JSON is
    /// read as a JSON string of its UTF-8 text, so plain-text keys (`item-7`, as most Kafka
    /// tools write them) work for `String` keys too.
    pub fn json(topic: impl Into<String>) -> Self {
        GlobalTable::new(topic, |key: &[u8], value: Option<&[u8]>| {
            let key: K = match serde_json::from_slice(key) {
                Ok(key) => key,
                Err(error) => {
                    let text = std::str::from_utf8(key)
                        .map_err(|_| format!("table key is neither JSON nor UTF-8: {error}"))?;
                    serde_json::from_value(serde_json::Value::String(text.to_string()))
                        .map_err(|_| format!("invalid table key: {error}"))?
                }
            };
            let value = value
                .map(serde_json::from_slice)
                .transpose()
                .map_err(|e| format!("invalid table value: {e}"))?;
            Ok((key, value))
        })
    }
}

/// A table as the runtime sees it: a topic whose records it applies.
pub(crate) trait TableUpdates: Send + Sync {
    /// The topic.
    fn topic(&self) -> &str;
    /// Applies one record.
    fn apply(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;
    /// Identifies the shared map (clones of one handle are one table).
    fn id(&self) -> usize;
    /// Number of keys.
    fn len(&self) -> usize;
}

impl<K, V> TableUpdates for GlobalTable<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn topic(&self) -> &str {
        &self.topic
    }
    fn apply(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        GlobalTable::apply(self, key, value)
    }
    fn id(&self) -> usize {
        Arc::as_ptr(&self.map) as *const () as usize
    }
    fn len(&self) -> usize {
        GlobalTable::len(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_table_applies_updates_and_tombstones() {
        let table: GlobalTable<String, u32> = GlobalTable::json("t");
        table.apply(b"\"a\"", Some(b"1")).unwrap();
        table.apply(b"b", Some(b"2")).unwrap();
        table.apply(b"a", Some(b"3")).unwrap();
        assert_eq!(
            (table.get(&"a".into()), table.get(&"b".into())),
            (Some(3), Some(2))
        );
        table.apply(b"b", None).unwrap();
        assert_eq!((table.get(&"b".into()), table.len()), (None, 1));
    }

    #[test]
    fn bad_values_are_reported_and_leave_the_table_unchanged() {
        let table: GlobalTable<String, u32> = GlobalTable::json("t");
        assert!(table.apply(b"a", Some(b"{not json")).is_err());
        assert!(table.is_empty());
    }

    #[test]
    fn clones_share_one_table() {
        let a: GlobalTable<u8, u8> = GlobalTable::json("t");
        let b = a.clone();
        a.insert(1, 2);
        assert_eq!(
            (b.get(&1), TableUpdates::id(&a) == TableUpdates::id(&b)),
            (Some(2), true)
        );
    }
}
