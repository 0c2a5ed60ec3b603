//! The in-process broker: `millrace_broker::start` on 127.0.0.1 over a data directory.

use std::net::SocketAddr;
use std::path::Path;

use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::ClientConfig;

/// The override that lets a consumer group form at once: no initial rebalance delay (Kafka's
/// default waits 3 s for more members, which only slows a test down).
pub const FAST_GROUPS: &str = "group.initial.rebalance.delay.ms=0";

/// A broker on a free port in its own temp dir; dropping it removes the data (stop the broker
/// first with [`TestBroker::shutdown`] where a test cares about a clean stop).
pub struct TestBroker {
    /// The running broker.
    pub broker: RunningBroker,
    /// Its data directory.
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    /// Starts a broker on a free port in a fresh temp dir, with `KEY=VALUE` overrides
    /// (for example [`FAST_GROUPS`]).
    pub async fn start(overrides: &[&str]) -> TestBroker {
        let dir = crate::temp_dir();
        let broker = start_broker_in(dir.path(), overrides).await;
        TestBroker { broker, dir }
    }

    /// Where the broker listens.
    pub fn addr(&self) -> SocketAddr {
        self.broker.local_addr()
    }

    /// `HOST:PORT` of the broker, as a bootstrap server.
    pub fn bootstrap(&self) -> String {
        self.addr().to_string()
    }

    /// A client configuration for this broker with `client_id`.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        ClientConfig::builder([self.bootstrap()])
            .client_id(client_id)
            .build()
            .expect("a client configuration for the test broker")
    }

    /// Stops the broker (every log closed), then removes its data.
    pub async fn shutdown(self) {
        self.broker.shutdown().await;
    }
}

/// Starts an in-process broker on a free port of 127.0.0.1 over `dir`, with `KEY=VALUE`
/// overrides.
pub async fn start_broker_in(dir: &Path, overrides: &[&str]) -> RunningBroker {
    let addr = "127.0.0.1:0".parse().expect("a socket address");
    start_broker_at(dir, addr, overrides).await
}

/// Starts an in-process broker on `addr` over `dir`, with `KEY=VALUE` overrides: a restart
/// on the same port and data reuses both.
pub async fn start_broker_at(dir: &Path, addr: SocketAddr, overrides: &[&str]) -> RunningBroker {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let settings =
        millrace_broker::config::parse_overrides(&overrides).expect("valid broker overrides");
    let config = BrokerConfig::from_settings(&settings, Some(addr), Some(dir.to_path_buf()))
        .expect("a valid broker configuration");
    millrace_broker::start(config)
        .await
        .expect("the test broker starts")
}
