//! Kafka's `socket-server-metrics` (`kafka.server:type=socket-server-metrics,listener=<L>`):
//! open connections and connections accepted, on the client listener.

use prometheus::{IntCounter, IntGauge, Opts, Registry};

use super::MetricsError;

/// Connection counts.
pub struct SocketServerMetrics {
    open: IntGauge,
    created: IntCounter,
}

impl SocketServerMetrics {
    /// Registers the connection metrics of `listener` (its name, as in `listeners`).
    pub fn new(registry: &Registry, listener: &str) -> Result<Self, MetricsError> {
        let open = IntGauge::with_opts(
            Opts::new(
                "kafka_server_socket_server_metrics_connections",
                "Open client connections (Kafka: socket-server-metrics connection-count)",
            )
            .const_label("listener", listener),
        )?;
        let created = IntCounter::with_opts(
            Opts::new(
                "kafka_server_socket_server_metrics_connection_creation_total",
                "Client connections accepted (Kafka: socket-server-metrics connection-creation-total)",
            )
            .const_label("listener", listener),
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(created.clone()))?;
        Ok(SocketServerMetrics { open, created })
    }

    /// Counts a connection as open until the returned guard drops.
    pub fn opened(&self) -> OpenConnection {
        self.created.inc();
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

/// An open connection; dropping it counts the connection closed.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
