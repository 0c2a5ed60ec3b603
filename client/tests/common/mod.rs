//! Helpers for tests against an in-process broker on a free port.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;

use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::ClientConfig;

/// A broker in a temp dir; dropped dir removes the data.
pub struct TestBroker {
    pub broker: RunningBroker,
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    pub fn addr(&self) -> SocketAddr {
        self.broker.local_addr()
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig::builder([self.addr().to_string()])
            .client_id("millrace-client-test")
            .build()
            .unwrap()
    }
}

/// Overrides every test broker gets: no rebalance delay, so groups form at once.
const TEST_OVERRIDES: &[&str] = &["group.initial.rebalance.delay.ms=0"];

/// Starts a broker on a free port in a fresh temp dir.
pub async fn start_broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_at(dir.path(), "127.0.0.1:0".parse().unwrap(), &[]).await;
    TestBroker { broker, dir }
}

/// Starts a broker on `addr` over `dir` with extra `KEY=VALUE` overrides.
pub async fn start_broker_at(dir: &Path, addr: SocketAddr, overrides: &[&str]) -> RunningBroker {
    let overrides: Vec<String> = TEST_OVERRIDES
        .iter()
        .chain(overrides)
        .map(|s| s.to_string())
        .collect();
    let settings = millrace_broker::config::parse_overrides(&overrides).unwrap();
    let config =
        BrokerConfig::from_settings(&settings, Some(addr), Some(dir.to_path_buf())).unwrap();
    millrace_broker::start(config).await.unwrap()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
