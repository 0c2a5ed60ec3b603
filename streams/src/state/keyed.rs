//! Keyed state of the stateful steps other than fixed windows: sessions, sliding windows,
//! dedupe and window joins, each written once against [`KeyedState`], which keeps the state
//! in memory or in its store (see [`crate::state::backend`]).
//!
//! The state is a set of *groups* (a record key, or a dedupe id), each holding ordered
//! *entries* (the sessions of a key by start, the records of a key by time, ...). Every entry
//! is one store entry under `(group, entry)`, so a commit writes only the entries that
//! changed, and the changelog has the same format whichever backend wrote it.
//!
//! - In memory, groups live in a hash map; a checkpoint writes the changed entries and
//!   deletes the removed ones.
//! - On disk, a group is read from the store (one prefix scan) when a record or the
//!   watermark needs it and its changed entries are written back right after: nothing but
//!   the store's write buffer stays in memory.
//!
//! Operators keep their time index (what closes or expires next) themselves and rebuild it
//! from the entries at a restore: in memory, or, for sessions on disk, in a [`TimeIndex`]
//! store of its own that is never changelogged.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::ops::{Bound, RangeBounds};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{ReplayGuard, TaskMeta, DATA_PREFIX, META_KEY};
use crate::state::backend::{StateBackend, SNAPSHOT_CHUNK};
use crate::state::cell::StoreCell;
use crate::state::store::{
    decode, decode_prefix, decode_time, encode, encode_into, encode_time, scan_in_chunks, Change,
    KeyValueStore,
};
use crate::time::Timestamp;

/// The part of a store key that orders the entries of one group.
pub(crate) trait EntryKey: Ord + Clone {
    /// Appends the encoding (in an order-preserving form) to `buf`.
    fn encode(&self, buf: &mut Vec<u8>);
    /// Decodes what [`EntryKey::encode`] wrote (the whole of `bytes`).
    fn decode(bytes: &[u8]) -> Result<Self, StreamsError>;
}

impl EntryKey for () {
    fn encode(&self, _buf: &mut Vec<u8>) {}
    fn decode(bytes: &[u8]) -> Result<Self, StreamsError> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(StreamsError::Decode(
                "unexpected bytes after a state key".into(),
            ))
        }
    }
}

impl EntryKey for Timestamp {
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&encode_time(*self));
    }
    fn decode(bytes: &[u8]) -> Result<Self, StreamsError> {
        Ok(decode_time(bytes)?.0)
    }
}

impl EntryKey for (u8, Timestamp, u64) {
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(self.0);
        buf.extend_from_slice(&encode_time(self.1));
        buf.extend_from_slice(&self.2.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, StreamsError> {
        let (&tag, rest) = bytes
            .split_first()
            .ok_or_else(|| StreamsError::Decode("empty state key".into()))?;
        let (t, rest) = decode_time(rest)?;
        let seq = rest
            .try_into()
            .map_err(|_| StreamsError::Decode("bad sequence in state key".into()))?;
        Ok((tag, t, u64::from_be_bytes(seq)))
    }
}

/// One entry plus what the changelog knows about it.
#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    /// Changed since it was last written to the store.
    dirty: bool,
    /// Present in the store (so removing it needs a tombstone).
    persisted: bool,
}

/// The entries of one group, recording what changed for the store.
///
/// A sorted deque rather than a tree: groups are mostly small (one session, one id), where
/// a tree node per group would cost several times the entry, and entries mostly come and go
/// at the ends (new records at the back, expired ones at the front).
#[derive(Debug)]
pub(crate) struct Group<S, T> {
    entries: VecDeque<(S, Entry<T>)>,
    /// Removed entries the store has: deleted at the next write.
    removed: Vec<S>,
}

impl<S, T> Default for Group<S, T> {
    fn default() -> Self {
        Group {
            entries: VecDeque::new(),
            removed: Vec::new(),
        }
    }
}

impl<S: EntryKey, T> Group<S, T> {
    fn find(&self, s: &S) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(s))
    }

    /// The index range of the entries in `range`.
    fn span<R: RangeBounds<S>>(&self, range: &R) -> std::ops::Range<usize> {
        let start = match range.start_bound() {
            Bound::Included(s) => self.entries.partition_point(|(k, _)| k < s),
            Bound::Excluded(s) => self.entries.partition_point(|(k, _)| k <= s),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(s) => self.entries.partition_point(|(k, _)| k <= s),
            Bound::Excluded(s) => self.entries.partition_point(|(k, _)| k < s),
            Bound::Unbounded => self.entries.len(),
        };
        start..end.max(start)
    }

    /// The entry at `s`.
    pub(crate) fn get(&self, s: &S) -> Option<&T> {
        let i = self.find(s).ok()?;
        self.entries.get(i).map(|(_, e)| &e.value)
    }

    /// The entry at `s`, for changing (it is written back).
    pub(crate) fn get_mut(&mut self, s: &S) -> Option<&mut T> {
        let i = self.find(s).ok()?;
        self.entries.get_mut(i).map(|(_, e)| {
            e.dirty = true;
            &mut e.value
        })
    }

    /// Stores `value` at `s`.
    pub(crate) fn insert(&mut self, s: S, value: T) {
        // An entry removed and put back between two writes is an update, not a delete
        // and a put (and the removed list does not grow with every record).
        let was_removed = match self.removed.iter().position(|r| *r == s) {
            Some(i) => {
                self.removed.swap_remove(i);
                true
            }
            None => false,
        };
        match self.find(&s) {
            Ok(i) => {
                if let Some((_, e)) = self.entries.get_mut(i) {
                    e.value = value;
                    e.dirty = true;
                    e.persisted |= was_removed;
                }
            }
            Err(i) => {
                if self.entries.is_empty() {
                    // Most groups hold one entry: no room for more until needed.
                    self.entries.reserve_exact(1);
                }
                let entry = Entry {
                    value,
                    dirty: true,
                    persisted: was_removed,
                };
                self.entries.insert(i, (s, entry));
            }
        }
    }

    /// Removes the entry at `s`.
    pub(crate) fn remove(&mut self, s: &S) -> Option<T> {
        let i = self.find(s).ok()?;
        let (s, entry) = self.entries.remove(i)?;
        if entry.persisted {
            self.removed.push(s);
        }
        Some(entry.value)
    }

    /// Removes every entry before `s`.
    pub(crate) fn remove_before(&mut self, s: &S) {
        let end = self.entries.partition_point(|(k, _)| k < s);
        for (s, entry) in self.entries.drain(..end) {
            if entry.persisted {
                self.removed.push(s);
            }
        }
    }

    /// Entries in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&S, &T)> {
        self.entries.iter().map(|(s, e)| (s, &e.value))
    }

    /// Entries in `range`, in order.
    pub(crate) fn range<R: RangeBounds<S>>(&self, range: R) -> impl Iterator<Item = (&S, &T)> {
        self.entries
            .range(self.span(&range))
            .map(|(s, e)| (s, &e.value))
    }

    /// Calls `f` on each entry in `range`; entries for which it returns true changed.
    pub(crate) fn update_range<R: RangeBounds<S>>(
        &mut self,
        range: R,
        mut f: impl FnMut(&S, &mut T) -> bool,
    ) {
        let span = self.span(&range);
        for (s, e) in self.entries.range_mut(span) {
            if f(s, &mut e.value) {
                e.dirty = true;
            }
        }
    }

    /// Whether there is an entry at `s`.
    pub(crate) fn contains(&self, s: &S) -> bool {
        self.find(s).is_ok()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the group has no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry read from the store (entries come in key order).
    fn push_persisted(&mut self, s: S, value: T) {
        let entry = Entry {
            value,
            dirty: false,
            persisted: true,
        };
        match self.find(&s) {
            Ok(i) => {
                if let Some(slot) = self.entries.get_mut(i) {
                    *slot = (s, entry);
                }
            }
            Err(i) => self.entries.insert(i, (s, entry)),
        }
    }
}

/// Where the groups are.
enum Groups<G, S, T> {
    /// In a hash map; `evicted` holds store keys of removed groups' entries to delete at the
    /// next checkpoint.
    Memory {
        groups: HashMap<G, Group<S, T>>,
        evicted: Vec<Vec<u8>>,
    },
    /// In the store only.
    Stored,
}

/// Entries read per store scan while restoring on disk.
pub(crate) const RESTORE_CHUNK: usize = 4_096;

/// The keyed state of one operator (see the module documentation).
pub(crate) struct KeyedState<G, S, T> {
    groups: Groups<G, S, T>,
    cell: StoreCell,
    /// Entries over all groups.
    entries: usize,
}

fn group_prefix<G: Serialize>(g: &G) -> Result<Vec<u8>, StreamsError> {
    let mut buf = vec![DATA_PREFIX];
    encode_into(g, &mut buf)?;
    Ok(buf)
}

fn entry_key<G: Serialize, S: EntryKey>(g: &G, s: &S) -> Result<Vec<u8>, StreamsError> {
    let mut buf = group_prefix(g)?;
    s.encode(&mut buf);
    Ok(buf)
}

/// Writes a group's changes to `store`: tombstones for removed entries, then changed ones.
fn write_group<G: Serialize, S: EntryKey, T: Serialize>(
    store: &mut dyn KeyValueStore,
    g: &G,
    group: &mut Group<S, T>,
) -> Result<(), StreamsError> {
    for s in group.removed.drain(..) {
        store.delete(&entry_key(g, &s)?)?;
    }
    for (s, e) in group.entries.iter_mut().filter(|(_, e)| e.dirty) {
        store.put(entry_key(g, s)?, encode(&e.value)?)?;
        e.dirty = false;
        e.persisted = true;
    }
    Ok(())
}

impl<G, S, T> KeyedState<G, S, T>
where
    G: Hash + Eq + Clone + Serialize + DeserializeOwned,
    S: EntryKey,
    T: Serialize + DeserializeOwned,
{
    /// Keyed state named `name` (its store's name) where `backend` says.
    pub(crate) fn new(name: &str, backend: &StateBackend) -> Self {
        let groups = if backend.is_on_disk() {
            Groups::Stored
        } else {
            Groups::Memory {
                groups: HashMap::new(),
                evicted: Vec::new(),
            }
        };
        KeyedState {
            groups,
            cell: StoreCell::new(name, backend.open(name)),
            entries: 0,
        }
    }

    /// Keyed state in memory, mirrored to `store` at checkpoints.
    pub(crate) fn in_memory(name: &str, store: Box<dyn KeyValueStore>) -> Self {
        KeyedState {
            groups: Groups::Memory {
                groups: HashMap::new(),
                evicted: Vec::new(),
            },
            cell: StoreCell::new(name, Ok(store)),
            entries: 0,
        }
    }

    /// Whether the store failed (the operator must stop processing).
    pub(crate) fn failed(&self) -> bool {
        self.cell.failed()
    }

    /// Records a store error: the next checkpoint returns it.
    pub(crate) fn fail(&mut self, error: StreamsError) {
        self.cell.fail(error);
    }

    /// Number of entries over all groups.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Runs `f` on group `g` (empty if new); the group's changes are kept (in memory) or
    /// written to the store (on disk), and an emptied group is removed.
    pub(crate) fn update<R>(
        &mut self,
        g: &G,
        f: impl FnOnce(&mut Group<S, T>) -> R,
    ) -> Result<R, StreamsError> {
        match &mut self.groups {
            Groups::Memory { groups, evicted } => {
                // Look up before inserting so the common path clones no key.
                let group = match groups.get_mut(g) {
                    Some(group) => group,
                    None => groups.entry(g.clone()).or_default(),
                };
                let before = group.len();
                let result = f(group);
                self.entries = (self.entries + group.len()).saturating_sub(before);
                if group.is_empty() {
                    if let Some(mut group) = groups.remove(g) {
                        for s in group.removed.drain(..) {
                            evicted.push(entry_key(g, &s)?);
                        }
                    }
                }
                Ok(result)
            }
            Groups::Stored => {
                let store = self.cell.get()?;
                let prefix = group_prefix(g)?;
                let mut group = Group::default();
                for (k, v) in store.prefix(&prefix)? {
                    group.push_persisted(S::decode(&k[prefix.len()..])?, decode(&v)?);
                }
                let before = group.len();
                let result = f(&mut group);
                self.entries = (self.entries + group.len()).saturating_sub(before);
                write_group(store, g, &mut group)?;
                Ok(result)
            }
        }
    }

    /// Writes what changed and `meta`; returns the changelog batch.
    pub(crate) fn checkpoint(
        &mut self,
        guard: &mut ReplayGuard,
        meta: &TaskMeta,
    ) -> Result<Vec<Change>, StreamsError> {
        if let Groups::Memory { groups, evicted } = &mut self.groups {
            let store = self.cell.get()?;
            for key in evicted.drain(..) {
                store.delete(&key)?;
            }
            for (g, group) in groups.iter_mut() {
                write_group(store, g, group)?;
            }
        }
        self.cell.checkpoint(guard, meta)
    }

    /// Replays a changelog batch, calling `visit` with every entry (for the operator's time
    /// index); returns the task metadata it held.
    pub(crate) fn restore(
        &mut self,
        changes: Vec<Change>,
        guard: &mut ReplayGuard,
        mut visit: impl FnMut(&G, &S, &T),
    ) -> Result<Option<TaskMeta>, StreamsError> {
        let store = self.cell.get()?;
        store.restore(changes)?;
        self.entries = 0;
        let decode_entry = decode_entry::<G, S, T>;
        match &mut self.groups {
            Groups::Memory { groups, evicted } => {
                groups.clear();
                evicted.clear();
                for (k, v) in store.prefix(&[DATA_PREFIX])? {
                    let (g, s, value) = decode_entry(&k, &v)?;
                    visit(&g, &s, &value);
                    groups.entry(g).or_default().push_persisted(s, value);
                    self.entries += 1;
                }
            }
            Groups::Stored => {
                // In chunks: the state may not fit in memory.
                let mut from = vec![DATA_PREFIX];
                let mut included = true;
                loop {
                    let lower = if included {
                        Bound::Included(from.as_slice())
                    } else {
                        Bound::Excluded(from.as_slice())
                    };
                    let chunk = store.scan(lower, Bound::Excluded(META_KEY), RESTORE_CHUNK)?;
                    let Some((last, _)) = chunk.last() else {
                        break;
                    };
                    let next = last.clone();
                    for (k, v) in &chunk {
                        let (g, s, value) = decode_entry(k, v)?;
                        visit(&g, &s, &value);
                        self.entries += 1;
                    }
                    from = next;
                    included = false;
                }
            }
        }
        guard.restore(store)
    }

    /// Calls `f` with every entry, for a snapshot: all of them in memory; on disk at most
    /// `cap`, the first in store key order, read in chunks so that memory holds one chunk
    /// besides what `f` keeps (the store may be larger than memory).
    pub(crate) fn snapshot(
        &self,
        cap: usize,
        mut f: impl FnMut(&G, &S, &T),
    ) -> Result<(), StreamsError> {
        match &self.groups {
            Groups::Memory { groups, .. } => {
                for (g, group) in groups {
                    for (s, value) in group.iter() {
                        f(g, s, value);
                    }
                }
            }
            Groups::Stored => {
                let Some(store) = self.cell.peek() else {
                    return Ok(());
                };
                scan_in_chunks(
                    store,
                    &[DATA_PREFIX],
                    Bound::Excluded(META_KEY),
                    cap,
                    SNAPSHOT_CHUNK,
                    |k, v| {
                        let (g, s, value) = decode_entry::<G, S, T>(k, v)?;
                        f(&g, &s, &value);
                        Ok(())
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Splits a data key `(prefix, group, entry)` and decodes it and its value.
fn decode_entry<G: DeserializeOwned, S: EntryKey, T: DeserializeOwned>(
    k: &[u8],
    v: &[u8],
) -> Result<(G, S, T), StreamsError> {
    let body = k
        .get(1..)
        .ok_or_else(|| StreamsError::Decode("empty state key".into()))?;
    let (g, rest): (G, _) = decode_prefix(body)?;
    Ok((g, S::decode(rest)?, decode(v)?))
}
