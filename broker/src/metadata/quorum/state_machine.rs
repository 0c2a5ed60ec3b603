//! The quorum's state machine: committed [`MetadataBatch`]es applied into a [`MetadataImage`].
//!
//! The image lives in memory. On start it is the last durable snapshot's (or empty), and
//! openraft re-applies the committed log after it; so the image after a restart is the one
//! before it. Every apply publishes the new image on a watch channel before openraft answers
//! the proposer, so a `propose` that returned is visible in `image()` on the leader.

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use tokio::sync::watch;

use super::snapshot::{SnapshotFile, StoredSnapshot};
use super::type_config::{
    Entry, LogId, LogIndex, MetadataBatch, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use super::wire::MetadataUpdate;
use super::{AppliedImage, QuorumError};
use crate::metadata::image::MetadataImage;

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// What the state machine has applied.
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Shared copy-on-write with readers of the watch channel.
    image: Arc<MetadataImage>,
    /// The latest applied entries, contiguous, for observers that are a little behind (an
    /// entry without records, a blank or membership one, is kept empty to keep the indexes
    /// contiguous).
    recent: VecDeque<(LogIndex, Arc<MetadataBatch>)>,
}

/// How many applied entries are kept for observers; one further behind gets the whole image.
const RECENT_ENTRIES: usize = 1000;

/// Most entries in one answer to an observer, so that an answer stays well inside a frame.
const ENTRIES_PER_FETCH: usize = 200;

struct Shared {
    applied: Mutex<Applied>,
    /// The newest durable snapshot, served to followers that need it.
    current: Mutex<Option<StoredSnapshot>>,
    /// Serializes snapshot writes (a build and an install may race) so the newest one wins.
    snapshot_write: tokio::sync::Mutex<()>,
    file: SnapshotFile,
    published: watch::Sender<AppliedImage>,
    builds: AtomicU64,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the state is only
/// replaced whole, never left half-updated.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state machine openraft drives; cloning shares it.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl StateMachineStore {
    /// Opens the state machine of a quorum dir: the image of its last snapshot, if any.
    pub fn open(file: SnapshotFile) -> Result<(Self, watch::Receiver<AppliedImage>), QuorumError> {
        let stored = file
            .load()
            .map_err(|e| QuorumError::Storage(e.to_string()))?;
        let (applied, current) = match stored {
            Some(snapshot) => {
                let image: MetadataImage = serde_json::from_slice(&snapshot.data)
                    .map_err(|e| QuorumError::Storage(format!("snapshot image: {e}")))?;
                let applied = Applied {
                    last_applied: snapshot.meta.last_log_id,
                    membership: snapshot.meta.last_membership.clone(),
                    image: Arc::new(image),
                    recent: VecDeque::new(),
                };
                (applied, Some(snapshot))
            }
            None => (
                Applied {
                    last_applied: None,
                    membership: StoredMembership::default(),
                    image: Arc::new(MetadataImage::default()),
                    recent: VecDeque::new(),
                },
                None,
            ),
        };
        let (published, rx) = watch::channel(AppliedImage {
            image: applied.image.clone(),
            index: applied.last_applied.map(|l| l.index),
        });
        let store = StateMachineStore {
            shared: Arc::new(Shared {
                applied: Mutex::new(applied),
                current: Mutex::new(current),
                snapshot_write: tokio::sync::Mutex::new(()),
                file,
                published,
                builds: AtomicU64::new(0),
            }),
        };
        Ok((store, rx))
    }

    /// The applied image as it changes.
    pub fn subscribe(&self) -> watch::Receiver<AppliedImage> {
        self.shared.published.subscribe()
    }

    /// What an observer that has applied up to `after` is missing: the entries after it if
    /// they are all still kept here (at most [`ENTRIES_PER_FETCH`]), otherwise the whole image.
    pub fn updates_after(&self, after: Option<LogIndex>) -> MetadataUpdate {
        let applied = lock(&self.shared.applied);
        let Some(last) = applied.last_applied.map(|l| l.index) else {
            return MetadataUpdate::UpToDate { index: None };
        };
        // An observer ahead of this voter (it heard from a fresher one) waits for it here.
        if after.is_some_and(|after| after >= last) {
            return MetadataUpdate::UpToDate { index: Some(last) };
        }
        let first_wanted = after.map_or(0, |after| after + 1);
        let kept_from = applied.recent.front().map(|(index, _)| *index);
        if kept_from.is_some_and(|from| from <= first_wanted) {
            let entries = applied
                .recent
                .iter()
                .skip_while(|(index, _)| *index < first_wanted)
                .take(ENTRIES_PER_FETCH)
                .map(|(index, batch)| (*index, (**batch).clone()))
                .collect();
            return MetadataUpdate::Entries(entries);
        }
        MetadataUpdate::Image {
            index: last,
            image: Box::new((*applied.image).clone()),
        }
    }

    fn publish(&self, applied: &Applied) {
        self.shared.published.send_replace(AppliedImage {
            image: applied.image.clone(),
            index: applied.last_applied.map(|l| l.index),
        });
    }

    /// Makes `snapshot` the current one, durably, unless a newer one is already current.
    /// Returns whether it was installed.
    async fn store_snapshot(&self, snapshot: StoredSnapshot) -> Result<bool, StorageError> {
        let _writing = self.shared.snapshot_write.lock().await;
        let newer_exists = lock(&self.shared.current)
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id > snapshot.meta.last_log_id);
        if newer_exists {
            return Ok(false);
        }
        let file = self.shared.file.clone();
        let to_write = snapshot.clone();
        let signature = snapshot.meta.signature();
        tokio::task::spawn_blocking(move || file.save(&to_write))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), any(e)))?
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), any(e)))?;
        *lock(&self.shared.current) = Some(snapshot);
        Ok(true)
    }
}

/// Builds snapshots of the image as applied so far.
pub struct SnapshotBuilder {
    store: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (image, last_applied, membership) = {
            let applied = lock(&self.store.shared.applied);
            (
                applied.image.clone(),
                applied.last_applied,
                applied.membership.clone(),
            )
        };
        let data =
            serde_json::to_vec(&*image).map_err(|e| StorageIOError::read_state_machine(any(e)))?;
        let build = self.store.shared.builds.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{build}", l.leader_id.term, l.index),
            None => format!("none-{build}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        tracing::info!(snapshot = %meta, "built a metadata snapshot");
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.store.store_snapshot(stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = lock(&self.shared.applied);
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = lock(&self.shared.applied);
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let batch = match entry.payload {
                EntryPayload::Blank => MetadataBatch::default(),
                EntryPayload::Normal(batch) => {
                    // Copy-on-write: readers keep the image they were given.
                    let image = Arc::make_mut(&mut applied.image);
                    for record in &batch.0 {
                        image.apply(record);
                    }
                    batch
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    MetadataBatch::default()
                }
            };
            applied
                .recent
                .push_back((entry.log_id.index, Arc::new(batch)));
            if applied.recent.len() > RECENT_ENTRIES {
                applied.recent.pop_front();
            }
            responses.push(());
        }
        self.publish(&applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Parse before anything is replaced: a snapshot we cannot read changes nothing.
        let image: MetadataImage = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        tracing::info!(snapshot = %meta, "installing a metadata snapshot from the leader");
        self.store_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        let mut applied = lock(&self.shared.applied);
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.image = Arc::new(image);
        // The kept entries no longer lead up to the new image.
        applied.recent.clear();
        self.publish(&applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(lock(&self.shared.current).as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metadata::quorum::type_config::MetadataBatch;
    use crate::metadata::records::MetadataRecord;
    use openraft::{BasicNode, CommittedLeaderId, Membership};
    use std::collections::{BTreeMap, BTreeSet};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: uuid::Uuid::new_v4(),
            partitions: 2,
            configs: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn applied_batches_snapshot_install_elsewhere_and_reload_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, mut watch) = StateMachineStore::open(SnapshotFile::new(dir.path())).unwrap();
        let membership = Membership::new(
            vec![BTreeSet::from([1])],
            BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]),
        );
        sm.apply(vec![
            Entry {
                log_id: log_id(0),
                payload: EntryPayload::Membership(membership),
            },
            Entry {
                log_id: log_id(1),
                payload: EntryPayload::Normal(MetadataBatch(vec![topic("a"), topic("b")])),
            },
            Entry {
                log_id: log_id(2),
                payload: EntryPayload::Blank,
            },
        ])
        .await
        .unwrap();
        assert!(watch.has_changed().unwrap());
        let published = watch.borrow_and_update().clone();
        assert_eq!(published.index, Some(2));
        assert!(published.image.topic("b").is_some());
        let (applied, stored_membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(2)));
        assert_eq!(stored_membership.log_id(), &Some(log_id(0)));

        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(2)));

        // A follower installs it.
        let other = tempfile::tempdir().unwrap();
        let (mut follower, follower_watch) =
            StateMachineStore::open(SnapshotFile::new(other.path())).unwrap();
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(follower_watch.borrow().index, Some(2));
        assert!(follower_watch.borrow().image.topic("a").is_some());
        assert!(follower.get_current_snapshot().await.unwrap().is_some());

        // Both rebuild from their snapshot file.
        for path in [dir.path(), other.path()] {
            let (mut reopened, watch) = StateMachineStore::open(SnapshotFile::new(path)).unwrap();
            assert_eq!(reopened.applied_state().await.unwrap().0, Some(log_id(2)));
            assert_eq!(watch.borrow().image.topics().count(), 2);
        }

        // A snapshot whose bytes are not an image is refused and changes nothing.
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(9)),
            last_membership: Default::default(),
            snapshot_id: "bad".into(),
        };
        let garbage = Box::new(Cursor::new(b"not json".to_vec()));
        assert!(follower.install_snapshot(&meta, garbage).await.is_err());
        assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(2)));
    }
}
