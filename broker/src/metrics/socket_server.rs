//! Kafka's `socket-server-metrics` (`kafka.server:type=socket-server-metrics,listener=<L>`):
//! open connections, connections accepted, and SASL authentications (failed, successful, and
//! KIP-368 re-authentications), on the client listener.

use prometheus::{IntCounter, IntGauge, Opts, Registry};

use super::MetricsError;

/// Connection counts.
pub struct SocketServerMetrics {
    open: IntGauge,
    created: IntCounter,
    failed_authentication: IntCounter,
    successful_authentication: IntCounter,
    successful_reauthentication: IntCounter,
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
        let failed_authentication = IntCounter::with_opts(
            Opts::new(
                "kafka_server_socket_server_metrics_failed_authentication_total",
                "SASL authentications that failed (Kafka: socket-server-metrics failed-authentication-total)",
            )
            .const_label("listener", listener),
        )?;
        let successful_authentication = IntCounter::with_opts(
            Opts::new(
                "kafka_server_socket_server_metrics_successful_authentication_total",
                "SASL authentications that succeeded, re-authentications included (Kafka: socket-server-metrics successful-authentication-total)",
            )
            .const_label("listener", listener),
        )?;
        let successful_reauthentication = IntCounter::with_opts(
            Opts::new(
                "kafka_server_socket_server_metrics_successful_reauthentication_total",
                "KIP-368 re-authentications on open connections that succeeded (Kafka: socket-server-metrics successful-reauthentication-total)",
            )
            .const_label("listener", listener),
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(created.clone()))?;
        registry.register(Box::new(failed_authentication.clone()))?;
        registry.register(Box::new(successful_authentication.clone()))?;
        registry.register(Box::new(successful_reauthentication.clone()))?;
        Ok(SocketServerMetrics {
            open,
            created,
            failed_authentication,
            successful_authentication,
            successful_reauthentication,
        })
    }

    /// Counts the outcome of one SASL token: a failure, a completed authentication, or a
    /// completed re-authentication (an exchange still under way counts nothing).
    pub fn authentication_outcome(
        &self,
        outcome: &crate::security::authenticator::AuthenticateOutcome,
    ) {
        use crate::security::authenticator::codes::SASL_AUTHENTICATION_FAILED;
        if outcome.error_code == SASL_AUTHENTICATION_FAILED {
            self.failed_authentication.inc();
        } else if outcome.error_code == 0 && outcome.completed {
            self.successful_authentication.inc();
            if outcome.reauthenticated {
                self.successful_reauthentication.inc();
            }
        }
    }

    /// Counts a failed authentication (the answer was SASL_AUTHENTICATION_FAILED).
    pub fn authentication_failed(&self) {
        self.failed_authentication.inc();
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
