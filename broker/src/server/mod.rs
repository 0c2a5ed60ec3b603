//! The running broker: the TCP listener, background maintenance, shutdown. The state every
//! request handler shares is [`Broker`], in `broker.rs`.
//!
//! Shutdown is explicit: a watch signal tells the listener and every connection to stop;
//! connections finish the responses they owe, then every log is flushed and closed, and the
//! data-dir lock is released.

pub mod broker_lifecycle;
pub mod connection;
pub mod controller_server;

pub use controller_server::{start_controller, RunningController};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::{BrokerConfig, Listener};
use crate::error::BrokerError;
use crate::metrics::endpoint::MetricsEndpoint;
use crate::metrics::{BrokerMetrics, Readiness};
use crate::security::SecuredListener;

/// A broker serving on a socket; dropping it does not stop it, [`RunningBroker::shutdown`] does.
pub struct RunningBroker {
    broker: Arc<Broker>,
    local_addr: SocketAddr,
    /// Every client listener's bound address, by listener name.
    listener_addrs: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// `metrics.listener`'s endpoint, when set.
    metrics_endpoint: Option<MetricsEndpoint>,
}

impl RunningBroker {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address a client listener is bound to, by name (`SASL_SSL`, ...).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        let name = name.to_ascii_uppercase();
        self.listener_addrs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, addr)| *addr)
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Where the metrics and health endpoint listens (`metrics.listener`), if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_endpoint
            .as_ref()
            .map(MetricsEndpoint::local_addr)
    }

    /// Stops at once, as close to a crash as a process can do to a part of itself: no
    /// controlled shutdown, connections dropped, heartbeats and quorum traffic stopped. For
    /// failover tests in one process; real crashes are tested with `kill -9`.
    pub async fn halt(self) {
        self.task.abort();
        let _ = self.task.await;
        self.broker.close().await;
        tracing::info!("broker halted");
    }

    /// Moves this broker's leaderships away (controlled shutdown), stops accepting, lets
    /// connections finish what they owe, leaves the metadata quorum and closes every log.
    pub async fn shutdown(self) {
        self.broker.readiness.shutting_down();
        self.broker
            .lifecycle
            .controlled_shutdown(CONTROLLED_SHUTDOWN_TIMEOUT)
            .await;
        let _ = self.shutdown.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "broker task failed");
        }
        self.broker.close().await;
        tracing::info!("broker stopped");
    }
}

/// Opens the broker described by `config`, binds its listener and starts serving.
pub async fn start(mut config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
    if !config.process_roles.is_broker() {
        return Err(BrokerError::Storage(
            "process.roles=controller serves no clients; it starts with start_controller".into(),
        ));
    }
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
    config.set_bound_client_port(local_addr.port());
    let first_name = config.client_listener().name.clone();
    // The other client listeners (a broker may serve PLAINTEXT and SASL_SSL side by side).
    let mut bound = vec![(first_name, listener)];
    let others: Vec<Listener> = config
        .listeners
        .iter()
        .filter(|l| !config.controller_listener_names.contains(&l.name) && l.name != bound[0].0)
        .cloned()
        .collect();
    for other in others {
        let address = other.address();
        let socket = TcpListener::bind(&address)
            .await
            .map_err(|source| BrokerError::Io {
                context: format!("binding listener {other}"),
                source,
            })?;
        if let Ok(addr) = socket.local_addr() {
            config.set_bound_port(&other.name, addr.port());
        }
        bound.push((other.name.clone(), socket));
    }
    // TLS keys and certificates are read now, so a bad file stops the start with its name.
    let mut served = Vec::with_capacity(bound.len());
    let mut listener_addrs = Vec::with_capacity(bound.len());
    for (name, socket) in bound {
        let secured = SecuredListener::new(config.security_of(&name))
            .map_err(|e| BrokerError::Storage(format!("listener {name}: {e}")))?;
        if let Ok(addr) = socket.local_addr() {
            tracing::info!(listener = %name, protocol = %secured.security.protocol, %addr, "listener bound");
            listener_addrs.push((name, addr));
        }
        served.push((socket, Arc::new(secured)));
    }
    // The quorum's own listener, when there are other voters to talk to.
    let controller_listener = match config.controller_listener() {
        Some(listener)
            if config.process_roles.is_controller() && config.quorum_voters.len() > 1 =>
        {
            Some(bind_controller_listener(listener).await?)
        }
        _ => None,
    };
    let config = Arc::new(config);
    let metrics =
        Arc::new(BrokerMetrics::new(&config).map_err(|e| BrokerError::Storage(e.to_string()))?);
    let readiness = Arc::new(Readiness::default());
    // Up before the logs are opened, so that liveness and the reason for not being ready can
    // be read during a long recovery.
    let metrics_endpoint = match config.metrics.listener {
        Some(address) => Some(
            MetricsEndpoint::start(config.clone(), address, metrics.clone(), readiness.clone())
                .await?,
        ),
        None => None,
    };
    if let Some(endpoint) = &metrics_endpoint {
        metrics.set_endpoint(endpoint.local_addr());
    }
    let broker = Broker::open_observed(config, controller_listener, metrics, readiness).await?;
    if let Some(endpoint) = &metrics_endpoint {
        endpoint.attach_broker(broker.clone());
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(serve(broker.clone(), served, shutdown_rx));
    tracing::info!(%local_addr, data_dir = %broker.config.data_dir.display(), cluster_id = %broker.controller.cluster_id(), "broker listening");
    Ok(RunningBroker {
        broker,
        local_addr,
        listener_addrs,
        shutdown,
        task,
        metrics_endpoint,
    })
}

/// Binds the CONTROLLER listener the metadata quorum serves on.
async fn bind_controller_listener(listener: &Listener) -> Result<TcpListener, BrokerError> {
    let address = listener.address();
    TcpListener::bind(&address)
        .await
        .map_err(|source| BrokerError::Io {
            context: format!("binding the controller listener {address}"),
            source,
        })
}

/// How long a controlled shutdown waits for the controller to move leaderships away.
/// (Past it, the broker stops anyway: its session then expires and the controller fences it.)
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for connections to flush their owed responses.
const CONNECTION_DRAIN: Duration = Duration::from_secs(10);

async fn serve(
    broker: Arc<Broker>,
    listeners: Vec<(TcpListener, Arc<SecuredListener>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let maintenance = tokio::spawn(run_maintenance(broker.clone(), shutdown.clone()));
    let group_timer = tokio::spawn(run_group_timer(broker.clone(), shutdown.clone()));
    broker.alter_partition.start_isr_expiration(
        broker.replicas.clone(),
        Duration::from_millis(broker.config.replica_lag_time_max_ms),
        shutdown.clone(),
    );
    // One accept loop per listener, all feeding one set of connections.
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
    let mut acceptors = JoinSet::new();
    for (listener, secured) in listeners {
        let accepted_tx = accepted_tx.clone();
        acceptors.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if accepted_tx
                            .send((stream, peer, secured.clone()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    drop(accepted_tx);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            next = accepted.recv() => match next {
                Some((stream, peer, secured)) => {
                    connections.spawn(connection::serve_connection(
                        broker.clone(),
                        stream,
                        peer,
                        secured,
                        shutdown.clone(),
                    ));
                }
                None => break,
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    acceptors.abort_all();
    drop(accepted);
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
            now = interval.tick() => {
                let emptied = broker.groups.tick(now);
                // Offsets partitions change leaders with the cluster: follow them.
                broker.offsets.sync_coordination(&broker.groups);
                // Groups that became empty: record it, so a new coordinator does not restore
                // members that left (they would only expire there, a session later).
                for write in emptied {
                    let broker = broker.clone();
                    tokio::spawn(async move {
                        if let Err(error) = broker.offsets.store_group(&broker.groups, &write.group_id, Some(write.value)).await {
                            tracing::debug!(group = %write.group_id, %error, "cannot record the group as empty");
                        }
                    });
                }
            }
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
            for (partition, replica) in hosted.partitions {
                let log = replica.log().clone();
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
