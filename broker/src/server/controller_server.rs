//! A controller-only node (`process.roles=controller`, Kafka's dedicated KRaft controller):
//! a voter of the metadata quorum and, while it leads, the active controller. It serves no
//! clients, hosts no partitions and does not register as a broker; brokers reach it on its
//! controller listener only.

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use super::bind_controller_listener;
use crate::broker::{claim_data_dir, fetcher_config, quorum_config};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::meta_properties;
use crate::metadata::quorum::MetadataQuorum;
use crate::metadata::{Controller, ControllerHandler};
use crate::metrics::endpoint::MetricsEndpoint;
use crate::metrics::{BrokerMetrics, Readiness};
use crate::replica::ReplicaManager;

/// A running controller-only node; [`RunningController::shutdown`] stops it.
pub struct RunningController {
    controller: Arc<Controller>,
    controller_addr: SocketAddr,
    background_shutdown: watch::Sender<bool>,
    /// `metrics.listener`'s endpoint, when set.
    metrics_endpoint: Option<MetricsEndpoint>,
    readiness: Arc<Readiness>,
    /// Held for the node's life: the OS releases it if the process dies.
    _data_dir_lock: File,
}

impl RunningController {
    /// Where the quorum listens (the CONTROLLER listener as bound).
    pub fn controller_addr(&self) -> SocketAddr {
        self.controller_addr
    }

    /// The controller role.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Where the metrics and health endpoint listens (`metrics.listener`), if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_endpoint
            .as_ref()
            .map(MetricsEndpoint::local_addr)
    }

    /// Leaves the quorum and stops. Another voter takes over as active controller if a
    /// majority remains.
    pub async fn shutdown(self) {
        self.readiness.shutting_down();
        self.background_shutdown.send_replace(true);
        self.controller.quorum().shutdown().await;
        tracing::info!("controller stopped");
    }
}

/// Starts a controller-only node: binds its controller listener, joins the quorum (waiting for
/// a leader and the cluster id) and runs the controller's liveness checks.
pub async fn start_controller(config: BrokerConfig) -> Result<RunningController, BrokerError> {
    if config.process_roles.is_broker() {
        return Err(BrokerError::Storage(
            "start_controller runs process.roles=controller only; brokers start with start()"
                .into(),
        ));
    }
    let config = Arc::new(config);
    let readiness = Arc::new(Readiness::default());
    let metrics_endpoint = match config.metrics.listener {
        Some(address) => {
            let metrics = Arc::new(
                BrokerMetrics::new(&config).map_err(|e| BrokerError::Storage(e.to_string()))?,
            );
            readiness.starting("joining the metadata quorum");
            Some(MetricsEndpoint::start(config.clone(), address, metrics, readiness.clone()).await?)
        }
        None => None,
    };
    let lock = claim_data_dir(&config)?;
    let listener = match config.controller_listener() {
        Some(listener) => bind_controller_listener(listener).await?,
        None => {
            return Err(BrokerError::Storage(
                "process.roles=controller needs a controller listener".into(),
            ))
        }
    };
    let controller_addr = listener.local_addr().map_err(|source| BrokerError::Io {
        context: "reading the controller listener's address".into(),
        source,
    })?;
    let handler = Arc::new(ControllerHandler::default());
    let quorum = Arc::new(
        MetadataQuorum::start(quorum_config(&config)?, Some(listener), handler.clone())
            .await
            .map_err(|e| BrokerError::Storage(e.to_string()))?,
    );
    // Hosts nothing: the controller only needs it for requests it submits itself, which a
    // node without clients never does.
    let replicas = Arc::new(ReplicaManager::new(
        config.data_dir.clone(),
        config.node_id,
        config.inter_broker_listener_name.clone(),
        fetcher_config(&config, Arc::new(std::sync::atomic::AtomicI64::new(-1))),
    ));
    let controller = Controller::start(config.clone(), quorum, replicas).await?;
    handler.bind(&controller);
    meta_properties::check_or_write(&config.data_dir, controller.cluster_id(), config.node_id)?;
    let (background_shutdown, shutdown) = watch::channel(false);
    tokio::spawn(controller.clone().run_liveness(shutdown));
    tracing::info!(%controller_addr, node_id = config.node_id, cluster_id = %controller.cluster_id(),
        "controller listening");
    if let Some(endpoint) = &metrics_endpoint {
        endpoint.attach_controller(controller.clone());
    }
    readiness.opened();
    Ok(RunningController {
        controller,
        controller_addr,
        background_shutdown,
        metrics_endpoint,
        readiness,
        _data_dir_lock: lock,
    })
}
