//! The HTTP endpoint of `metrics.listener`: `/metrics` (Prometheus text format),
//! `/health/live`, `/health/ready` and `/v1/cluster` (JSON for scripts).
//!
//! It starts before the node opens its logs and joins the cluster, so that liveness and the
//! reason a node is not ready yet can be read while it recovers; the node is attached once
//! open ([`MetricsEndpoint::attach_broker`]).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{BrokerMetrics, Readiness, CONTENT_TYPE};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata::Controller;
use crate::Broker;

/// What the endpoint reports on, once open.
enum Node {
    Broker(Arc<Broker>),
    Controller(Arc<Controller>),
}

/// The endpoint's shared state.
struct EndpointState {
    config: Arc<BrokerConfig>,
    metrics: Arc<BrokerMetrics>,
    readiness: Arc<Readiness>,
    node: OnceLock<Node>,
}

/// A running metrics endpoint; it stops when [`MetricsEndpoint::shutdown`] is called or the
/// value is dropped.
pub struct MetricsEndpoint {
    state: Arc<EndpointState>,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl MetricsEndpoint {
    /// Binds `config.metrics.listener` (the caller checked it is set) and serves.
    pub async fn start(
        config: Arc<BrokerConfig>,
        address: SocketAddr,
        metrics: Arc<BrokerMetrics>,
        readiness: Arc<Readiness>,
    ) -> Result<MetricsEndpoint, BrokerError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| BrokerError::Io {
                context: format!("binding metrics.listener {address}"),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| BrokerError::Io {
            context: "reading the metrics listener's address".into(),
            source,
        })?;
        let state = Arc::new(EndpointState {
            config,
            metrics,
            readiness,
            node: OnceLock::new(),
        });
        let app = Router::new()
            .route("/", get(index))
            .route("/metrics", get(metrics_text))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .route("/v1/cluster", get(cluster))
            .with_state(state.clone());
        let (shutdown, mut stop) = watch::channel(false);
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(%error, "metrics endpoint stopped");
            }
        });
        tracing::info!(address = %local_addr, "metrics endpoint listening: /metrics /health/live /health/ready /v1/cluster");
        Ok(MetricsEndpoint {
            state,
            local_addr,
            shutdown,
        })
    }

    /// The address bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Reports on `broker` from now on.
    pub fn attach_broker(&self, broker: Arc<Broker>) {
        let _ = self.state.node.set(Node::Broker(broker));
    }

    /// Reports on the controller-only node's `controller` from now on.
    pub fn attach_controller(&self, controller: Arc<Controller>) {
        let _ = self.state.node.set(Node::Controller(controller));
    }

    /// Stops serving.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

impl EndpointState {
    fn readiness(&self) -> Result<(), String> {
        match self.node.get() {
            Some(Node::Broker(broker)) => self.readiness.check_broker(Some(broker)),
            Some(Node::Controller(controller)) => self.readiness.check_controller(Some(controller)),
            None if self.config.process_roles.is_broker() => self.readiness.check_broker(None),
            None => self.readiness.check_controller(None),
        }
    }

    fn controller(&self) -> Option<&Arc<Controller>> {
        match self.node.get()? {
            Node::Broker(broker) => Some(&broker.controller),
            Node::Controller(controller) => Some(controller),
        }
    }
}

async fn index() -> &'static str {
    "Millrace node endpoint: /metrics /health/live /health/ready /v1/cluster\n"
}

async fn metrics_text(State(state): State<Arc<EndpointState>>) -> Response {
    // Reading log sizes and group offsets takes locks the request path also takes briefly;
    // keep it off the async workers.
    let body = tokio::task::spawn_blocking(move || match state.node.get() {
        Some(Node::Broker(broker)) => state.metrics.encode(Some(broker)),
        Some(Node::Controller(controller)) => state
            .metrics
            .encode_controller(controller, state.config.node_id),
        None => state.metrics.encode(None),
    })
    .await;
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "collecting metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting metrics failed\n",
            )
                .into_response()
        }
    }
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(state): State<Arc<EndpointState>>) -> Response {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn cluster(State(state): State<Arc<EndpointState>>) -> Response {
    let readiness = state.readiness();
    let mut body = json!({
        "node_id": state.config.node_id,
        "process_roles": state.config.process_roles.to_string(),
        "ready": readiness.is_ok(),
        "reason": readiness.err(),
    });
    if let Some(controller) = state.controller() {
        let image = controller.image();
        let brokers: Vec<_> = image
            .brokers()
            .map(|b| {
                let endpoint = b.listeners.first();
                json!({
                    "id": b.broker_id,
                    "host": endpoint.map(|e| e.host.clone()),
                    "port": endpoint.map(|e| e.port),
                    "rack": b.rack,
                    "fenced": b.fenced,
                })
            })
            .collect();
        let (mut topics, mut partitions, mut offline, mut under_replicated) = (0, 0, 0, 0);
        for topic in image.topics() {
            topics += 1;
            for p in topic.partition_states.values() {
                partitions += 1;
                offline += i32::from(p.leader < 0);
                under_replicated += i32::from(p.isr.len() < p.replicas.len());
            }
        }
        body["cluster_id"] = json!(controller.cluster_id());
        body["active_controller"] = json!(controller.active_controller_id());
        body["brokers"] = json!(brokers);
        body["topics"] = json!(topics);
        body["partitions"] = json!(partitions);
        body["offline_partitions"] = json!(offline);
        body["under_replicated_partitions"] = json!(under_replicated);
    }
    axum::Json(body).into_response()
}
