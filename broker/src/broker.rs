//! The broker's shared state: the one value every request handler is given.
//!
//! [`Broker`] ties the concerns together (settings, the controller and its metadata, the
//! hosted replicas, the group coordinator and its offsets, producer ids) and opens them in
//! order at start-up. The network side (`server/`) and the Kafka APIs (`api/`) both use it;
//! neither is used by it.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::{GroupCoordinator, OffsetMetadataManager};
use crate::metadata::{Controller, ProducerIdManager};
use crate::replica::{AlterPartitionManager, FetcherConfig, ReplicaManager};

/// Everything request handlers share: one value per concern, each owned by its module.
pub struct Broker {
    /// Settings.
    pub config: Arc<BrokerConfig>,
    /// Topic lifecycle and metadata.
    pub controller: Arc<Controller>,
    /// Hosted partition logs.
    pub replicas: Arc<ReplicaManager>,
    /// Consumer groups.
    pub groups: GroupCoordinator,
    /// Committed offsets on disk, in `__consumer_offsets`.
    pub offsets: OffsetMetadataManager,
    /// Producer ids handed out by InitProducerId.
    pub producer_ids: ProducerIdManager,
    /// ISR changes on their way to the controller.
    pub alter_partition: Arc<AlterPartitionManager>,
    /// Held for the broker's life: the OS releases it if the process dies.
    _data_dir_lock: File,
}

impl Broker {
    /// Locks the data dir, replays metadata and opens every partition.
    ///
    /// Must run inside a tokio runtime (partition logs start their flushers).
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
            context: format!("creating data dir {}", config.data_dir.display()),
            source,
        })?;
        let lock = lock_data_dir(&config.data_dir)?;
        let replicas = Arc::new(ReplicaManager::new(
            config.data_dir.clone(),
            config.node_id,
            "PLAINTEXT".to_string(),
            fetcher_config(&config),
        ));
        let controller = Arc::new(Controller::open(config.clone(), replicas.clone())?);
        let groups = GroupCoordinator::new(&config);
        let offsets = OffsetMetadataManager::new(&config, controller.clone(), replicas.clone());
        offsets.load(&groups);
        let producer_ids = ProducerIdManager::new(&controller);
        let deciding = controller.clone();
        let alter_partition = Arc::new(AlterPartitionManager::start(Arc::new(move |change| {
            let controller = deciding.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || controller.alter_partition(&change))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            })
        })));
        Ok(Arc::new(Broker {
            config,
            controller,
            replicas,
            groups,
            offsets,
            producer_ids,
            alter_partition,
            _data_dir_lock: lock,
        }))
    }
}

/// How this broker's followers fetch from their leaders.
pub fn fetcher_config(config: &BrokerConfig) -> FetcherConfig {
    FetcherConfig {
        local_id: config.node_id,
        max_wait: Duration::from_millis(500),
        max_bytes_per_partition: 1 << 20,
        response_max_bytes: 10 << 20,
        backoff: Duration::from_millis(1000),
        request_timeout: Duration::from_secs(30),
    }
}

fn lock_data_dir(dir: &std::path::Path) -> Result<File, BrokerError> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| BrokerError::Io {
            context: format!("opening lock file {}", path.display()),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(BrokerError::DataDirLocked(dir.to_path_buf()))
        }
        Err(std::fs::TryLockError::Error(source)) => Err(BrokerError::Io {
            context: format!("locking {}", path.display()),
            source,
        }),
    }
}
