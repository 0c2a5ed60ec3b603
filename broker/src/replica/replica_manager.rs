//! The partitions this broker hosts (Kafka's `ReplicaManager`): their replicas, looked up
//! by topic and partition, and the metadata that says which to host and in what role.
//!
//! The hot paths (produce, fetch) only take a read lock here to find an `Arc<Partition>`;
//! all IO happens outside the lock. [`ReplicaManager::apply_image`] is the one place that
//! opens, re-roles and removes replicas, from the cluster metadata: after the local
//! controller commits on a single node, and on every metadata update in a cluster.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use uuid::Uuid;

use super::partition::{Partition, Role, RoleChange};
use super::replica_fetcher::{FetcherConfig, ReplicaFetcherManager};
use crate::log::{LogError, PartitionLog};
use crate::metadata::{topic_config, MetadataImage};

/// A hosted topic: its id and the replicas of it on this broker, by partition index.
#[derive(Clone)]
pub struct HostedTopic {
    /// Topic id.
    pub topic_id: Uuid,
    /// The replicas this broker holds, by partition index.
    pub partitions: BTreeMap<i32, Arc<Partition>>,
    /// The topic overrides last applied to the logs.
    configs: BTreeMap<String, String>,
}

/// File in each partition dir recording which topic id it belongs to (as Kafka's
/// `partition.metadata`), so a dir left over from a deleted topic is never reused by a new
/// topic of the same name.
const PARTITION_METADATA: &str = "partition.metadata";

/// How many logs close at once at shutdown (Kafka's `num.recovery.threads.per.data.dir` plays
/// this part there); closing is fsync-bound, so threads beyond the cores still help.
const CLOSE_THREADS: usize = 8;

/// Hosts partition replicas.
pub struct ReplicaManager {
    data_dir: PathBuf,
    local_id: i32,
    topics: RwLock<HashMap<String, HostedTopic>>,
    /// Inter-broker address of every registered broker, for the fetchers.
    addresses: Arc<RwLock<HashMap<i32, String>>>,
    /// The listener other brokers are reached on (`inter.broker.listener.name`).
    inter_broker_listener: String,
    fetchers: ReplicaFetcherManager,
    /// Serializes [`ReplicaManager::apply_image`]: roles change in metadata order.
    applying: Mutex<()>,
    /// The metadata log index the replicas were last made to match.
    applied_index: tokio::sync::watch::Sender<u64>,
    /// ISR shrinks and expansions of the partitions led here, as the metadata brought them
    /// (proposed by this leader, or by the controller removing a fenced broker), for Kafka's
    /// `IsrShrinksPerSec` and `IsrExpandsPerSec`.
    isr_changes: [AtomicU64; 2],
}

impl ReplicaManager {
    /// A manager with no partitions, storing under `data_dir`, for broker `local_id`.
    pub fn new(
        data_dir: PathBuf,
        local_id: i32,
        inter_broker_listener: String,
        fetcher: FetcherConfig,
    ) -> Self {
        let addresses: Arc<RwLock<HashMap<i32, String>>> = Arc::default();
        let lookup = addresses.clone();
        let resolve = Arc::new(move |broker: i32| {
            lookup
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&broker)
                .cloned()
        });
        ReplicaManager {
            data_dir,
            local_id,
            topics: RwLock::new(HashMap::new()),
            addresses,
            inter_broker_listener,
            fetchers: ReplicaFetcherManager::new(fetcher, resolve),
            applying: Mutex::new(()),
            applied_index: tokio::sync::watch::channel(0).0,
            isr_changes: Default::default(),
        }
    }

    /// Records that the replicas match the metadata up to log `index`.
    pub fn set_applied(&self, index: u64) {
        self.applied_index.send_if_modified(|current| {
            let moved = index > *current;
            if moved {
                *current = index;
            }
            moved
        });
    }

    /// The metadata log index the replicas were last made to match (the health check compares
    /// it with the quorum's applied index: a broker still opening its logs trails it).
    pub fn applied(&self) -> u64 {
        *self.applied_index.borrow()
    }

    /// Waits until the replicas match the metadata up to log `index`, for at most `timeout`
    /// (returns either way: callers only want read-your-writes, not a guarantee).
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) {
        let mut applied = self.applied_index.subscribe();
        let _ = tokio::time::timeout(timeout, applied.wait_for(|i| *i >= index)).await;
    }

    /// The inter-broker address (`host:port`) of a registered broker, for requests to it
    /// (the transaction coordinator's WriteTxnMarkers).
    pub fn broker_address(&self, broker: i32) -> Option<String> {
        self.addresses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&broker)
            .cloned()
    }

    /// This broker's id.
    pub fn local_id(&self) -> i32 {
        self.local_id
    }

    /// Record bytes this broker's followers appended from their leaders so far.
    pub fn replicated_bytes(&self) -> u64 {
        self.fetchers.replicated_bytes()
    }

    /// ISR shrinks and expansions of the partitions led here so far.
    pub fn isr_changes(&self) -> (u64, u64) {
        let [shrinks, expands] = &self.isr_changes;
        (
            shrinks.load(Ordering::Relaxed),
            expands.load(Ordering::Relaxed),
        )
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log of one partition, if hosted.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        self.replica(topic, partition).map(|r| r.log().clone())
    }

    /// The replica of one partition, if hosted.
    pub fn replica(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.get(topic)?.partitions.get(&partition).cloned()
    }

    /// A hosted topic.
    pub fn topic(&self, topic: &str) -> Option<HostedTopic> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.get(topic).cloned()
    }

    /// Every hosted topic, by name.
    pub fn all(&self) -> Vec<(String, HostedTopic)> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.iter().map(|(n, t)| (n.clone(), t.clone())).collect()
    }

    /// The replicas this broker leads.
    pub fn leaders(&self) -> Vec<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.role() == Role::Leader)
            .cloned()
            .collect()
    }

    /// The partitions followed, with their leaders: (topic, partition, leader).
    pub fn followed(&self) -> Vec<(String, i32, i32)> {
        self.fetchers.followed()
    }

    /// Directory of one partition.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Makes the hosted replicas what `image` says: opens the partitions with a replica here,
    /// applies topic settings, makes each leader or follower of its current epoch (starting
    /// and stopping fetchers), and removes replicas of deleted topics or moved partitions.
    /// Must be called inside a tokio runtime.
    pub fn apply_image(
        &self,
        image: &MetadataImage,
        log_defaults: &BTreeMap<String, String>,
    ) -> Result<(), LogError> {
        let _applying = self.applying.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut addresses = self.addresses.write().unwrap_or_else(|e| e.into_inner());
            addresses.clear();
            for broker in image.brokers() {
                let endpoint = broker
                    .endpoint(&self.inter_broker_listener)
                    .or_else(|| broker.listeners.first());
                if let Some(e) = endpoint {
                    addresses.insert(broker.broker_id, format!("{}:{}", e.host, e.port));
                }
            }
        }
        self.remove_unassigned(image);
        let mut first_error = None;
        for topic in image.topics() {
            let log_config = topic_config::log_config(log_defaults, &topic.configs);
            let min_isr = topic_config::min_insync_replicas(log_defaults, &topic.configs);
            // Compared under the read lock: cloning the hosted topic only to compare its
            // settings would copy every replica handle on every metadata change.
            let configs_changed = self
                .topics
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&topic.name)
                .is_some_and(|hosted| hosted.configs != topic.configs);
            for (&index, state) in &topic.partition_states {
                if !state.replicas.contains(&self.local_id) {
                    continue;
                }
                let replica = match self.replica(&topic.name, index) {
                    Some(replica) => {
                        if configs_changed {
                            replica.log().set_config(log_config.clone());
                        }
                        replica
                    }
                    None => {
                        let dir = self.partition_dir(&topic.name, index);
                        let opened = prepare_partition_dir(&dir, topic.topic_id)
                            .and_then(|()| PartitionLog::open(dir, log_config.clone()));
                        let log = match opened {
                            Ok(log) => log,
                            Err(error) => {
                                tracing::error!(topic = %topic.name, partition = index, %error, "cannot open partition");
                                first_error.get_or_insert(error);
                                continue;
                            }
                        };
                        let replica =
                            Partition::new(&topic.name, index, topic.topic_id, self.local_id, log);
                        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
                        topics
                            .entry(topic.name.clone())
                            .or_insert_with(|| HostedTopic {
                                topic_id: topic.topic_id,
                                partitions: BTreeMap::new(),
                                configs: topic.configs.clone(),
                            })
                            .partitions
                            .insert(index, replica.clone());
                        replica
                    }
                };
                let isr_before = (replica.role() == Role::Leader).then(|| replica.isr().len());
                let change = replica.apply_metadata(state, min_isr);
                if let (Some(before), Role::Leader) = (isr_before, replica.role()) {
                    let after = state.isr.len();
                    if after != before {
                        self.isr_changes[usize::from(after > before)]
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                match change {
                    RoleChange::Unchanged => {}
                    RoleChange::BecameLeader => self.fetchers.remove(&topic.name, index),
                    RoleChange::BecameFollower { leader } if leader >= 0 => {
                        self.fetchers
                            .add(leader, replica.clone(), state.leader_epoch)
                    }
                    RoleChange::BecameFollower { .. } => self.fetchers.remove(&topic.name, index),
                }
            }
            if let Some(hosted) = self
                .topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&topic.name)
            {
                hosted.configs = topic.configs.clone();
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Stops hosting what the metadata no longer puts here: deleted topics (or a topic of the
    /// same name with a new id) and partitions moved to other brokers.
    fn remove_unassigned(&self, image: &MetadataImage) {
        let mut removed = Vec::new();
        {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            topics.retain(|name, hosted| {
                let current = image.topic(name).filter(|t| t.topic_id == hosted.topic_id);
                hosted.partitions.retain(|index, replica| {
                    let keep = current
                        .and_then(|t| t.partition(*index))
                        .is_some_and(|p| p.replicas.contains(&self.local_id));
                    if !keep {
                        removed.push(replica.clone());
                    }
                    keep
                });
                current.is_some() && !hosted.partitions.is_empty()
            });
        }
        for replica in removed {
            self.fetchers.remove(replica.topic(), replica.index());
            if let Err(error) = replica.log().close() {
                tracing::warn!(topic = %replica.topic(), partition = replica.index(), %error, "closing a removed partition failed");
            }
            tracing::info!(topic = %replica.topic(), partition = replica.index(), "removed replica");
            remove_partition_dir(replica.log().dir());
        }
    }

    /// Stops every fetcher and closes every log (clean shutdown). A close is a few fsyncs, so
    /// the logs close on [`CLOSE_THREADS`] threads at once: one after another, a broker with
    /// hundreds of partitions took longer to stop than a supervisor's grace period.
    pub fn close_all(&self) {
        self.fetchers.shutdown();
        let started = std::time::Instant::now();
        let replicas: Vec<(String, i32, Arc<Partition>)> = self
            .all()
            .into_iter()
            .flat_map(|(name, hosted)| {
                hosted
                    .partitions
                    .iter()
                    .map(|(partition, replica)| (name.clone(), *partition, replica.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let count = replicas.len();
        let queue = Mutex::new(replicas.into_iter());
        let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
        std::thread::scope(|scope| {
            for _ in 0..CLOSE_THREADS.min(count) {
                scope.spawn(|| {
                    while let Some((name, partition, replica)) = next() {
                        if let Err(error) = replica.log().close() {
                            tracing::error!(topic = %name, partition, %error, "closing partition failed");
                        }
                    }
                });
            }
        });
        tracing::info!(
            partitions = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "closed every partition log"
        );
    }

    /// Removes partition directories that no live topic owns: leftovers of deletions that a
    /// crash interrupted, or of topics whose metadata says they do not exist.
    pub fn remove_stray_dirs(&self, is_live: impl Fn(&str, i32) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".deleted") {
                remove_partition_dir(&path);
                continue;
            }
            let Some((topic, partition)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(partition) = partition.parse::<i32>() else {
                continue;
            };
            if path.join(PARTITION_METADATA).exists() && !is_live(topic, partition) {
                tracing::info!(dir = %path.display(), "removing partition dir of a deleted topic");
                remove_partition_dir(&path);
            }
        }
    }
}

fn prepare_partition_dir(dir: &Path, topic_id: Uuid) -> Result<(), LogError> {
    let marker = dir.join(PARTITION_METADATA);
    if let Ok(existing) = std::fs::read_to_string(&marker) {
        if existing.trim() != format!("topic_id: {topic_id}") {
            tracing::warn!(dir = %dir.display(), "partition dir belongs to an older topic; removing it");
            std::fs::remove_dir_all(dir)?;
        }
    }
    std::fs::create_dir_all(dir)?;
    if !marker.exists() {
        let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
        std::fs::write(&tmp, format!("topic_id: {topic_id}\n"))?;
        std::fs::rename(&tmp, &marker)?;
    }
    Ok(())
}

fn remove_partition_dir(dir: &Path) {
    let target = if dir.extension().is_some_and(|e| e == "deleted") {
        dir.to_path_buf()
    } else {
        let mut name = dir.as_os_str().to_owned();
        name.push(format!(".{}.deleted", Uuid::new_v4().simple()));
        let target = PathBuf::from(name);
        if let Err(error) = std::fs::rename(dir, &target) {
            tracing::warn!(dir = %dir.display(), %error, "cannot rename partition dir for deletion");
            return;
        }
        target
    };
    if let Err(error) = std::fs::remove_dir_all(&target) {
        tracing::warn!(dir = %target.display(), %error, "cannot remove deleted partition dir");
    }
}
