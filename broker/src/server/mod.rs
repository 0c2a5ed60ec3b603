//! The running broker: shared state, the TCP listener, background maintenance, shutdown.
//!
//! Shutdown is explicit: a watch signal tells the listener and every connection to stop;
//! connections finish the responses they owe, then every log is flushed and closed, and the
//! data-dir lock is released.

pub mod connection;

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::error::BrokerError;
use crate::group::GroupCoordinator;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::ReplicaManager;

/// Everything request handlers share.
pub struct Broker {
    /// Settings.
    pub config: Arc<BrokerConfig>,
    /// Topic lifecycle and metadata.
    pub controller: Controller,
    /// Hosted partition logs.
    pub replicas: Arc<ReplicaManager>,
    /// Consumer groups.
    pub groups: GroupCoordinator,
    /// Producer ids handed out by InitProducerId.
    pub producer_ids: ProducerIdManager,
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
        let replicas = Arc::new(ReplicaManager::new(config.data_dir.clone()));
        let controller = Controller::open(config.clone(), replicas.clone())?;
        let groups = GroupCoordinator::new(&config);
        let producer_ids = ProducerIdManager::new(&controller);
        let broker = Arc::new(Broker {
            config,
            controller,
            replicas,
            groups,
            producer_ids,
            _data_dir_lock: lock,
        });
        crate::group::load_offsets(&broker);
        Ok(broker)
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

/// A broker serving on a socket; dropping it does not stop it, [`RunningBroker::shutdown`] does.
pub struct RunningBroker {
    broker: Arc<Broker>,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, lets connections finish what they owe, closes every log.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "broker task failed");
        }
        let replicas = self.broker.replicas.clone();
        let closed = tokio::task::spawn_blocking(move || replicas.close_all()).await;
        if let Err(error) = closed {
            tracing::error!(%error, "closing logs failed");
        }
        tracing::info!("broker stopped");
    }
}

/// Opens the broker described by `config`, binds its listener and starts serving.
pub async fn start(mut config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| BrokerError::Io {
            context: format!("binding {listen}"),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| BrokerError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    // Listening on port 0 (tests, embedding): clients must be told the port actually bound.
    if config.advertised_port == 0 {
        config.advertised_port = local_addr.port();
    }
    let broker = Broker::open(config)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(serve(broker.clone(), listener, shutdown_rx));
    tracing::info!(%local_addr, data_dir = %broker.config.data_dir.display(), cluster_id = %broker.controller.cluster_id(), "broker listening");
    Ok(RunningBroker {
        broker,
        local_addr,
        shutdown,
        task,
    })
}

/// How long shutdown waits for connections to flush their owed responses.
const CONNECTION_DRAIN: Duration = Duration::from_secs(10);

async fn serve(broker: Arc<Broker>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let maintenance = tokio::spawn(run_maintenance(broker.clone(), shutdown.clone()));
    let group_timer = tokio::spawn(run_group_timer(broker.clone(), shutdown.clone()));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection::serve_connection(
                        broker.clone(),
                        stream,
                        peer,
                        shutdown.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(CONNECTION_DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections did not finish in time; closing them");
        connections.abort_all();
    }
    maintenance.abort();
    group_timer.abort();
}

/// How often group session timeouts and rebalance deadlines are checked.
const GROUP_TICK: Duration = Duration::from_millis(50);

async fn run_group_timer(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(GROUP_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            now = interval.tick() => broker.groups.tick(now),
        }
    }
}

/// Retention, compaction and age-based rolling, every `log.retention.check.interval.ms`.
async fn run_maintenance(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_millis(broker.config.log_retention_check_interval_ms);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        for (topic, hosted) in broker.replicas.all() {
            for (partition, log) in hosted.partitions.into_iter().enumerate() {
                let now = crate::api::now_ms();
                let outcome = tokio::task::spawn_blocking(move || log.run_maintenance(now)).await;
                match outcome {
                    Ok(Ok(report)) if report != Default::default() => {
                        tracing::info!(%topic, partition, ?report, "log maintenance");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%topic, partition, %error, "log maintenance failed")
                    }
                    Err(error) => {
                        tracing::error!(%topic, partition, %error, "log maintenance panicked")
                    }
                }
            }
        }
    }
}
