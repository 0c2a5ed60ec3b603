//! The quorum's durable Raft log and vote, in a redb database.
//!
//! Openraft's storage contract: a vote is on disk before `save_vote` returns, and the
//! `LogFlushed` callback of an append fires only once its entries are on disk. redb's default
//! durability (`Immediate`) fsyncs on commit, so every write here is one committed transaction
//! before anything is reported. The committed index is the one exception: it is advisory (it
//! only lets a restart re-apply committed entries before the first election), so it rides on
//! the next durable commit instead of paying an fsync of its own.
//!
//! Entries are stored as JSON (the same encoding as the wire, see [`super::wire`]), keyed by
//! index; the vote, committed index and last purged log id live in a small metadata table.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::type_config::{Entry, LogId, NodeId, StorageError, TypeConfig};
use super::QuorumError;

/// Log entries by index, each the JSON of an openraft entry.
const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("entries");
/// Small named values: the vote, the committed log id, the last purged log id.
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";

/// The durable Raft log. Cloning shares the database (openraft wants a separate log reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<OpenDatabase>,
}

/// The database and a signal that fires once it is closed. redb locks its file while open,
/// and openraft's tasks hold log readers for a moment after `Raft::shutdown` returns; a
/// restart in the same process waits for this signal rather than racing them.
struct OpenDatabase {
    // Declared first: fields drop in order, so the file is closed before the signal fires.
    db: Database,
    _closed: ClosedSignal,
}

struct ClosedSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for ClosedSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl std::ops::Deref for OpenDatabase {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

impl LogStore {
    /// Opens (or creates) the log database at `path`. The receiver completes once every
    /// clone of the store is gone and the database file is closed.
    pub fn open(path: &Path) -> Result<(Self, tokio::sync::oneshot::Receiver<()>), QuorumError> {
        let storage = |e: redb::Error| QuorumError::Storage(format!("{}: {e}", path.display()));
        let db = Database::create(path).map_err(|e| storage(e.into()))?;
        // Create both tables once, so that readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| storage(e.into()))?;
        {
            txn.open_table(ENTRIES).map_err(|e| storage(e.into()))?;
            txn.open_table(META).map_err(|e| storage(e.into()))?;
        }
        txn.commit().map_err(|e| storage(e.into()))?;
        let (tx, closed) = tokio::sync::oneshot::channel();
        let db = OpenDatabase {
            db,
            _closed: ClosedSignal(Some(tx)),
        };
        Ok((LogStore { db: Arc::new(db) }, closed))
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let Some(value) = table.get(key)? else {
            return Ok(None);
        };
        // A value we wrote ourselves that no longer parses is disk corruption.
        let parsed = serde_json::from_slice(value.value())
            .map_err(|e| redb::Error::Corrupted(format!("metadata value {key}: {e}")))?;
        Ok(Some(parsed))
    }

    /// Writes one metadata value in its own transaction, with the given durability.
    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), redb::Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| redb::Error::Corrupted(format!("encoding {key}: {e}")))?;
        self.write(move |txn| {
            txn.set_durability(durability)?;
            let mut table = txn.open_table(META)?;
            table.insert(key, bytes.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Runs `f` in a write transaction and commits it, off the async threads: a commit fsyncs.
    async fn write<F>(&self, f: F) -> Result<(), redb::Error>
    where
        F: FnOnce(&mut redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut txn = db.begin_write()?;
            f(&mut txn)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| redb::Error::Io(io::Error::other(e)))?
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, redb::Error> {
        let last_purged: Option<LogId> = self.read_meta(PURGED_KEY)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let last = match table.last()? {
            Some((_, value)) => Some(decode_entry(value.value())?.log_id),
            None => None,
        };
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let mut out = Vec::new();
        for item in table.range::<u64>(range)? {
            let (_, value) = item?;
            out.push(decode_entry(value.value())?);
        }
        Ok(out)
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, redb::Error> {
    serde_json::from_slice(bytes).map_err(|e| redb::Error::Corrupted(format!("log entry: {e}")))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range)
            .map_err(|e| StorageIOError::read_logs(any(e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state()
            .map_err(|e| StorageIOError::read_logs(any(e)).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(VOTE_KEY, vote, Durability::Immediate)
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE_KEY)
            .map_err(|e| StorageIOError::read_vote(any(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(COMMITTED_KEY, &committed, Durability::None)
            .await
            .map_err(|e| StorageIOError::write(any(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> = self
            .read_meta(COMMITTED_KEY)
            .map_err(|e| StorageIOError::read(any(e)))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, any(e)))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let result = self
            .write(move |txn| {
                let mut table = txn.open_table(ENTRIES)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        // The callback tells openraft the entries are durable: only after the commit returned.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(any(e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(
            from = log_id.index,
            "truncating conflicting metadata log suffix"
        );
        let since = log_id.index;
        self.write(move |txn| {
            let mut table = txn.open_table(ENTRIES)?;
            table.retain_in::<u64, _>(since.., |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(any(e)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(
            upto = log_id.index,
            "purging metadata log covered by a snapshot"
        );
        let bytes = serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write_logs(any(e)))?;
        let upto = log_id.index;
        // The purge mark and the deletion in one transaction: a crash leaves both or neither.
        self.write(move |txn| {
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(PURGED_KEY, bytes.as_slice())?;
            }
            let mut table = txn.open_table(ENTRIES)?;
            table.retain_in::<u64, _>(..=upto, |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(any(e)).into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metadata::quorum::type_config::MetadataBatch;
    use crate::metadata::records::MetadataRecord;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(MetadataBatch(vec![MetadataRecord::ProducerIds {
                next_block_start: index as i64,
            }])),
        }
    }

    #[tokio::test]
    async fn log_vote_and_purge_survive_reopen_and_truncate_drops_the_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let (mut store, _) = LogStore::open(&path).unwrap();
            assert_eq!(store.read_vote().await.unwrap(), None);
            assert_eq!(store.get_log_state().await.unwrap(), LogState::default());
            store
                .blocking_append((0..10).map(|i| entry(1, i)))
                .await
                .unwrap();
            store.save_vote(&Vote::new(3, 2)).await.unwrap();
            store
                .save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 5)))
                .await
                .unwrap();
            store
                .truncate(LogId::new(CommittedLeaderId::new(1, 1), 7))
                .await
                .unwrap();
            store
                .purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
                .await
                .unwrap();
        }
        let (mut store, closed) = LogStore::open(&path).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(6));
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        let entries = store.try_get_log_entries(0..100).await.unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![3, 4, 5, 6]);
        assert_eq!(entries[0], entry(1, 3));
        // The committed index rode on a later durable commit.
        assert_eq!(
            store.read_committed().await.unwrap().map(|l| l.index),
            Some(5)
        );
        let reader = store.get_log_reader().await;
        drop(store);
        drop(reader);
        closed.await.unwrap();
        // Closed means reopenable.
        LogStore::open(&path).unwrap();
    }
}
