//! The partitions this broker hosts: their logs, looked up by topic and partition.
//!
//! The hot paths (produce, fetch) only take a read lock here to find an `Arc<PartitionLog>`;
//! all IO happens outside the lock.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::log::{LogConfig, LogError, PartitionLog};

/// A hosted topic: its id and one log per partition, indexed by partition number.
#[derive(Clone)]
pub struct HostedTopic {
    /// Topic id.
    pub topic_id: Uuid,
    /// The logs of the partitions this broker holds a replica of, by partition index.
    pub partitions: BTreeMap<i32, Arc<PartitionLog>>,
}

/// File in each partition dir recording which topic id it belongs to (as Kafka's
/// `partition.metadata`), so a dir left over from a deleted topic is never reused by a new
/// topic of the same name.
const PARTITION_METADATA: &str = "partition.metadata";

/// Hosts partition logs.
pub struct ReplicaManager {
    data_dir: PathBuf,
    topics: RwLock<HashMap<String, HostedTopic>>,
}

impl ReplicaManager {
    /// A manager with no partitions, storing under `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        ReplicaManager {
            data_dir,
            topics: RwLock::new(HashMap::new()),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log of one partition, if hosted.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
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

    /// Directory of one partition.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Opens (creating if needed) the given partitions of a topic and hosts them; ones
    /// already hosted are left as they are.
    ///
    /// A directory that belongs to another topic id (a deleted topic of the same name) is
    /// removed first.
    pub fn open_partitions(
        &self,
        topic: &str,
        topic_id: Uuid,
        partitions: impl IntoIterator<Item = i32>,
        config: &LogConfig,
    ) -> Result<(), LogError> {
        let mut opened = Vec::new();
        for partition in partitions {
            if self.partition(topic, partition).is_some() {
                continue;
            }
            let dir = self.partition_dir(topic, partition);
            prepare_partition_dir(&dir, topic_id)?;
            opened.push((partition, PartitionLog::open(dir, config.clone())?));
        }
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        let hosted = topics
            .entry(topic.to_string())
            .or_insert_with(|| HostedTopic {
                topic_id,
                partitions: BTreeMap::new(),
            });
        hosted.partitions.extend(opened);
        Ok(())
    }

    /// Applies new settings to every partition of a topic.
    pub fn set_config(&self, topic: &str, config: &LogConfig) {
        if let Some(hosted) = self.topic(topic) {
            for log in hosted.partitions.values() {
                log.set_config(config.clone());
            }
        }
    }

    /// Stops hosting a topic, closes its logs and removes their directories.
    ///
    /// Directories are renamed first (one atomic step) so that a crash half-way through
    /// removal leaves nothing that looks like a live partition.
    pub fn remove_topic(&self, topic: &str) {
        let removed = {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            topics.remove(topic)
        };
        let Some(hosted) = removed else { return };
        for log in hosted.partitions.into_values() {
            if let Err(error) = log.close() {
                tracing::warn!(%topic, %error, "closing a deleted partition failed");
            }
            remove_partition_dir(log.dir());
        }
    }

    /// Closes every log (clean shutdown).
    pub fn close_all(&self) {
        for (name, hosted) in self.all() {
            for (partition, log) in &hosted.partitions {
                if let Err(error) = log.close() {
                    tracing::error!(topic = %name, partition, %error, "closing partition failed");
                }
            }
        }
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
