//! The broker's shared state: the one value every request handler is given.
//!
//! [`Broker`] ties the concerns together (settings, the controller and its metadata, the
//! hosted replicas, the group coordinator and its offsets, producer ids) and opens them in
//! order at start-up. The network side (`server/`) and the Kafka APIs (`api/`) both use it;
//! neither is used by it.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::ToSocketAddrs;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::{GroupCoordinator, OffsetMetadataManager};
use crate::meta_properties;
use crate::metadata::quorum::{MetadataQuorum, QuorumConfig};
use crate::metadata::{publisher, Controller, ControllerHandler, ProducerIdManager};
use crate::metrics::{BrokerMetrics, Readiness};
use crate::replica::{AlterPartitionManager, FetcherConfig, ReplicaManager};
use crate::server::broker_lifecycle::BrokerLifecycle;
use crate::txn::TransactionCoordinator;

/// Everything request handlers share: one value per concern, each owned by its module.
pub struct Broker {
    /// Settings.
    pub config: Arc<BrokerConfig>,
    /// The controller role, and the way to the active controller.
    pub controller: Arc<Controller>,
    /// Hosted partition replicas.
    pub replicas: Arc<ReplicaManager>,
    /// Consumer groups.
    pub groups: GroupCoordinator,
    /// Committed offsets on disk, in `__consumer_offsets`.
    pub offsets: OffsetMetadataManager,
    /// Producer ids handed out by InitProducerId.
    pub producer_ids: ProducerIdManager,
    /// Transactions, in `__transaction_state`.
    pub transactions: TransactionCoordinator,
    /// Produce and fetch byte-rate quotas, enforced.
    pub quotas: crate::quota::ClientQuotaManager,
    /// The authorizer (ACLs), when `authorizer.class.name` is set.
    pub authorizer: Option<crate::security::authorizer::Authorizer>,
    /// ISR changes on their way to the controller.
    pub alter_partition: Arc<AlterPartitionManager>,
    /// Registration and heartbeats.
    pub lifecycle: Arc<BrokerLifecycle>,
    /// Metrics the request path counts (served by `metrics.listener` when set).
    pub metrics: Arc<BrokerMetrics>,
    /// Start-up step and shutdown, for `/health/ready`.
    pub readiness: Arc<Readiness>,
    /// Stops the background tasks (metadata publisher, heartbeats, fencing, ISR expiry).
    pub background_shutdown: watch::Sender<bool>,
    /// Held for the broker's life: the OS releases it if the process dies.
    _data_dir_lock: File,
}

impl Broker {
    /// Locks the data dir, checks it belongs to this node (`meta.properties`, written on first
    /// start), joins the metadata quorum (serving it on `controller_listener` when there are
    /// several voters), opens the partitions the metadata puts here, and registers with the
    /// active controller. Returns once the controller has unfenced this broker.
    pub async fn open(
        config: BrokerConfig,
        controller_listener: Option<TcpListener>,
    ) -> Result<Arc<Broker>, BrokerError> {
        let metrics =
            Arc::new(BrokerMetrics::new(&config).map_err(|e| BrokerError::Storage(e.to_string()))?);
        Self::open_observed(
            Arc::new(config),
            controller_listener,
            metrics,
            Arc::default(),
        )
        .await
    }

    /// [`Broker::open`] with the metrics to count into and the readiness to report each
    /// start-up step to (the metrics endpoint, started before, serves both meanwhile).
    pub async fn open_observed(
        config: Arc<BrokerConfig>,
        controller_listener: Option<TcpListener>,
        metrics: Arc<BrokerMetrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Arc<Broker>, BrokerError> {
        readiness.starting("joining the metadata quorum");
        let lock = claim_data_dir(&config)?;
        // This broker's epoch once registered: the lifecycle sets it, ISR proposals and replica
        // fetches carry it.
        let broker_epoch = Arc::new(AtomicI64::new(-1));
        let replicas = Arc::new(ReplicaManager::new(
            config.data_dir.clone(),
            config.node_id,
            config.inter_broker_listener_name.clone(),
            fetcher_config(&config, broker_epoch.clone()),
        ));
        let (background_shutdown, shutdown) = watch::channel(false);

        let handler = Arc::new(ControllerHandler::default());
        let quorum = Arc::new(
            MetadataQuorum::start(
                quorum_config(&config)?,
                controller_listener,
                handler.clone(),
            )
            .await
            .map_err(|e| BrokerError::Storage(e.to_string()))?,
        );
        let controller =
            Controller::start(config.clone(), quorum.clone(), replicas.clone()).await?;
        handler.bind(&controller);
        meta_properties::check_or_write(&config.data_dir, controller.cluster_id(), config.node_id)?;

        readiness.starting("recovering partition logs and registering with the controller");
        tokio::spawn(publisher::run(
            quorum.clone(),
            replicas.clone(),
            config.log_defaults.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(controller.clone().run_liveness(shutdown.clone()));

        let groups = GroupCoordinator::new(&config);
        let offsets = OffsetMetadataManager::new(&config, controller.clone(), replicas.clone());
        let producer_ids = ProducerIdManager::new();
        let deciding = controller.clone();
        let alter_partition = Arc::new(AlterPartitionManager::start(
            Arc::new(move |change| {
                let controller = deciding.clone();
                Box::pin(async move {
                    controller
                        .alter_partition(change)
                        .await
                        .map_err(|e| e.to_string())
                })
            }),
            broker_epoch,
        ));
        let lifecycle = BrokerLifecycle::start(
            controller.clone(),
            &config,
            alter_partition.broker_epoch_cell(),
            shutdown,
        )
        .await?;
        // The partitions on disk that the metadata does not put here are leftovers. Only now
        // is that known: the registration above is in this node's image, so the image holds
        // every record committed before it. Right after a restart it may not: the quorum's
        // commit index is saved lazily, so the tail of the log is applied only once the
        // leader commits again, and a topic created there looked deleted (after a kill -9,
        // every `__consumer_offsets` partition was removed this way). The image is read per
        // dir: the publisher already runs, and a dir it created holds a topic of an image at
        // least that new.
        let node_id = config.node_id;
        replicas.remove_stray_dirs(|topic, partition| {
            quorum
                .image()
                .topic(topic)
                .and_then(|t| t.partition(partition))
                .is_some_and(|p| p.replicas.contains(&node_id))
        });
        // Now that this broker leads what it should, rebuild the groups of the offsets
        // partitions it leads.
        readiness.starting("catching up metadata and loading groups");
        replicas
            .wait_applied(
                quorum.status().last_applied.unwrap_or(0),
                Duration::from_secs(10),
            )
            .await;
        groups.set_ownership(offsets.ownership());
        offsets.sync_coordination(&groups);
        let transactions = TransactionCoordinator::new(&config);
        let authorizer = config
            .authorizer
            .clone()
            .map(crate::security::authorizer::Authorizer::new);
        let broker = Arc::new(Broker {
            config,
            controller,
            replicas,
            groups,
            offsets,
            producer_ids,
            transactions,
            quotas: crate::quota::ClientQuotaManager::default(),
            authorizer,
            alter_partition,
            lifecycle,
            metrics,
            readiness,
            background_shutdown,
            _data_dir_lock: lock,
        });
        broker.transactions.sync_coordination(&broker);
        broker.transactions.resume_prepared(&broker);
        tokio::spawn(TransactionCoordinator::run(
            Arc::downgrade(&broker),
            broker.background_shutdown.subscribe(),
        ));
        broker.readiness.opened();
        Ok(broker)
    }
}

impl Broker {
    /// Stops the background tasks, leaves the metadata quorum and closes every log (the last
    /// step of a shutdown, also for tests that reopen the same dir).
    pub async fn close(&self) {
        self.background_shutdown.send_replace(true);
        self.controller.quorum().shutdown().await;
        let replicas = self.replicas.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || replicas.close_all()).await {
            tracing::error!(%error, "closing logs failed");
        }
    }
}

/// The quorum this node votes in (`controller.quorum.voters`, or this node alone), or, with
/// `process.roles=broker`, the one it observes.
pub(crate) fn quorum_config(config: &BrokerConfig) -> Result<QuorumConfig, BrokerError> {
    let node_id = u64::try_from(config.node_id).map_err(|_| {
        BrokerError::Storage(format!("node.id {} must not be negative", config.node_id))
    })?;
    let dir = config.data_dir.join("__cluster_metadata-0");
    let voters = config.voter_addresses();
    let observer = !config.process_roles.is_controller();
    let mut quorum = if voters.len() <= 1 && !observer {
        QuorumConfig::single(node_id, dir.clone())
    } else {
        let mut resolved = BTreeMap::new();
        for (id, address) in voters {
            let addr = address
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    BrokerError::Storage(format!(
                        "controller.quorum.voters: cannot resolve `{address}` of voter {id}"
                    ))
                })?;
            let id = u64::try_from(id).map_err(|_| {
                BrokerError::Storage(format!("controller.quorum.voters: bad voter id {id}"))
            })?;
            resolved.insert(id, addr);
        }
        if observer {
            QuorumConfig::observer(node_id, resolved, dir.clone())
        } else {
            QuorumConfig::new(node_id, resolved, dir.clone())
        }
    };
    quorum.legacy_log = Some(dir.join("metadata.log"));
    quorum.security = config.controller_security.clone();
    // openraft waits its leader lease (its `election_timeout_max`) and then a random
    // `election_timeout_min..max` before a follower campaigns, so these bounds make a voter that
    // hears no leader for 1-1.33x `controller.quorum.election.timeout.ms` start an election, as
    // the setting is documented, and a leader without a majority's acknowledgement for 2/3 of
    // it step down (see the quorum's module docs).
    let election = Duration::from_millis(config.controller_quorum_election_timeout_ms);
    quorum.election_timeout_min = election / 3;
    quorum.election_timeout_max = election * 2 / 3;
    quorum.heartbeat_interval = (election / 10).max(Duration::from_millis(10));
    Ok(quorum)
}

/// How this broker's followers fetch from their leaders.
pub fn fetcher_config(config: &BrokerConfig, broker_epoch: Arc<AtomicI64>) -> FetcherConfig {
    FetcherConfig {
        local_id: config.node_id,
        broker_epoch,
        replicated_bytes: Arc::default(),
        max_wait: Duration::from_millis(config.replica_fetch_wait_max_ms),
        max_bytes_per_partition: config.replica_fetch_max_bytes,
        response_max_bytes: 10 << 20,
        backoff: Duration::from_millis(1000),
        request_timeout: Duration::from_secs(30),
        security: config.inter_broker.clone(),
    }
}

/// Creates and locks the data dir and checks it belongs to this node, before anything in it is
/// replayed or cleaned up: another node's dir must not be touched. (The cluster id is checked
/// once the controller has it.) The lock is held as long as the returned file.
pub(crate) fn claim_data_dir(config: &BrokerConfig) -> Result<File, BrokerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
        context: format!("creating data dir {}", config.data_dir.display()),
        source,
    })?;
    let lock = lock_data_dir(&config.data_dir)?;
    meta_properties::check_node_id(&config.data_dir, config.node_id)?;
    Ok(lock)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::meta_properties::{MetaPropertiesError, FILE_NAME};

    fn config(dir: &Path, node_id: i32) -> BrokerConfig {
        let settings = BTreeMap::from([("node.id".to_string(), node_id.to_string())]);
        BrokerConfig::from_settings(
            &settings,
            Some("127.0.0.1:0".parse().unwrap()),
            Some(dir.to_path_buf()),
        )
        .unwrap()
    }

    /// The error opening `dir` as `node_id` gives; the broker must not open.
    async fn open_error(dir: &Path, node_id: i32) -> BrokerError {
        match Broker::open(config(dir, node_id), None).await {
            Ok(_) => panic!("opened {} as node {node_id}", dir.display()),
            Err(error) => error,
        }
    }

    #[tokio::test]
    async fn a_broker_reopens_on_its_own_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = Broker::open(config(dir.path(), 1), None).await.unwrap();
        let cluster_id = first.controller.cluster_id().to_string();
        first.close().await;
        drop(first);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(
            text.contains(&format!("cluster.id={cluster_id}\n")),
            "{text}"
        );
        assert!(text.contains("node.id=1\n"), "{text}");

        let again = Broker::open(config(dir.path(), 1), None).await.unwrap();
        assert_eq!(again.controller.cluster_id(), cluster_id);
    }

    #[tokio::test]
    async fn another_node_id_on_the_dir_is_refused_naming_both_ids() {
        let dir = tempfile::tempdir().unwrap();
        let first = Broker::open(config(dir.path(), 1), None).await.unwrap();
        let cluster_id = first.controller.cluster_id().to_string();
        first.close().await;
        drop(first);
        let error = open_error(dir.path(), 2).await;
        assert!(
            matches!(
                error,
                BrokerError::MetaProperties(MetaPropertiesError::NodeMismatch {
                    found_node_id: 1,
                    node_id: 2,
                    ..
                })
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("cluster {cluster_id} node 1, not node 2")),
            "{message}"
        );
        // The refusal changed nothing: node 1 still opens the dir.
        Broker::open(config(dir.path(), 1), None).await.unwrap();
    }

    #[tokio::test]
    async fn a_dir_of_another_cluster_is_refused_naming_both_cluster_ids() {
        let dir = tempfile::tempdir().unwrap();
        let first = Broker::open(config(dir.path(), 1), None).await.unwrap();
        let cluster_id = first.controller.cluster_id().to_string();
        first.close().await;
        drop(first);
        std::fs::write(
            dir.path().join(FILE_NAME),
            "version=1\ncluster.id=OtherClusterAAAAAAAAAA\nnode.id=1\n",
        )
        .unwrap();
        let error = open_error(dir.path(), 1).await;
        assert!(
            matches!(
                error,
                BrokerError::MetaProperties(MetaPropertiesError::Mismatch { .. })
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "belongs to cluster OtherClusterAAAAAAAAAA node 1, not cluster {cluster_id} node 1"
            )),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_malformed_meta_properties_stops_the_broker_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "version=1\nnode.id=1\n").unwrap();
        let message = open_error(dir.path(), 1).await.to_string();
        assert!(
            message.contains("meta.properties is malformed"),
            "{message}"
        );
        assert!(message.contains("no `cluster.id`"), "{message}");
    }
}
