//! Several in-process brokers forming one cluster on 127.0.0.1: voters of the metadata quorum
//! (combined broker and controller, as `millrace cluster up` starts its first three), and
//! optionally broker-only nodes that observe it, each with its own data dir and ports.

use std::net::SocketAddr;
use std::path::PathBuf;

use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::ClientConfig;

/// Timings that make failover tests quick: a broker is fenced 1.5 s after its last heartbeat,
/// and a follower out of sync for 2 s leaves the ISR.
pub const FAST_FAILOVER: &[&str] = &[
    "broker.session.timeout.ms=1500",
    "broker.heartbeat.interval.ms=300",
    "replica.lag.time.max.ms=2000",
    "group.initial.rebalance.delay.ms=0",
];

/// One broker of a [`TestCluster`]: running, or stopped with its ports and dir kept so that it
/// can start again.
pub struct ClusterMember {
    /// `node.id`.
    pub node_id: i32,
    /// Client (PLAINTEXT) address.
    pub addr: SocketAddr,
    /// Controller listener port (unused by a broker-only node).
    pub controller_port: u16,
    /// Whether it is a voter (`process.roles=broker,controller`) rather than broker-only.
    pub voter: bool,
    /// Data dir.
    pub dir: PathBuf,
    /// The broker, while it runs.
    pub broker: Option<RunningBroker>,
}

/// A cluster of in-process brokers.
pub struct TestCluster {
    /// The brokers, node ids 1..=n.
    pub members: Vec<ClusterMember>,
    overrides: Vec<String>,
    voters: String,
    _root: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` brokers (all voters) with `KEY=VALUE` overrides, concurrently: the quorum
    /// needs a majority before any of them finishes starting.
    pub async fn start(n: usize, overrides: &[&str]) -> TestCluster {
        TestCluster::start_with_brokers(n, 0, overrides).await
    }

    /// Starts `voters` combined brokers (node ids 1..=voters) and `brokers` broker-only nodes
    /// (`process.roles=broker`, the ids after), all concurrently.
    pub async fn start_with_brokers(
        voters: usize,
        brokers: usize,
        overrides: &[&str],
    ) -> TestCluster {
        let n = voters + brokers;
        let root = crate::temp_dir();
        let mut members = Vec::new();
        for index in 0..n {
            let node_id = i32::try_from(index + 1).expect("a small cluster");
            let port = crate::free_port();
            members.push(ClusterMember {
                node_id,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                controller_port: crate::free_port(),
                voter: index < voters,
                dir: root.path().join(format!("broker-{node_id}")),
                broker: None,
            });
        }
        let voters = members
            .iter()
            .filter(|m| m.voter)
            .map(|m| format!("{}@127.0.0.1:{}", m.node_id, m.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestCluster {
            members,
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            voters,
            _root: root,
        };
        let configs: Vec<BrokerConfig> = (0..n).map(|i| cluster.config(i)).collect();
        // Each on its own task: one broker waiting for the quorum must not hold up another.
        let starting: Vec<_> = configs
            .into_iter()
            .map(|config| tokio::spawn(millrace_broker::start(config)))
            .collect();
        let started = futures_util::future::join_all(starting).await;
        for (member, broker) in cluster.members.iter_mut().zip(started) {
            let broker = broker.expect("the start task runs to the end");
            member.broker = Some(broker.expect("a cluster broker starts"));
        }
        cluster
    }

    fn config(&self, index: usize) -> BrokerConfig {
        let member = &self.members[index];
        let (roles, listeners) = if member.voter {
            (
                "broker,controller",
                format!(
                    "PLAINTEXT://{},CONTROLLER://127.0.0.1:{}",
                    member.addr, member.controller_port
                ),
            )
        } else {
            ("broker", format!("PLAINTEXT://{}", member.addr))
        };
        let mut settings = vec![
            format!("node.id={}", member.node_id),
            format!("process.roles={roles}"),
            format!("controller.quorum.voters={}", self.voters),
            format!("listeners={listeners}"),
            "controller.listener.names=CONTROLLER".to_string(),
            "inter.broker.listener.name=PLAINTEXT".to_string(),
        ];
        settings.extend(self.overrides.iter().cloned());
        let settings =
            millrace_broker::config::parse_overrides(&settings).expect("valid cluster settings");
        BrokerConfig::from_settings(&settings, None, Some(member.dir.clone()))
            .expect("a valid cluster broker configuration")
    }

    /// The member with `node_id`.
    pub fn member(&self, node_id: i32) -> &ClusterMember {
        self.members
            .iter()
            .find(|m| m.node_id == node_id)
            .expect("a member with this node id")
    }

    /// The running broker with `node_id`.
    pub fn broker(&self, node_id: i32) -> &RunningBroker {
        self.member(node_id)
            .broker
            .as_ref()
            .expect("the broker is running")
    }

    /// Every client address, as a bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.members
            .iter()
            .map(|m| m.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client configuration for the cluster.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        ClientConfig::builder(self.members.iter().map(|m| m.addr.to_string()))
            .client_id(client_id)
            .build()
            .expect("a client configuration for the cluster")
    }

    /// Takes the running broker `node_id` out of the cluster's hands (to stop it).
    fn take(&mut self, node_id: i32) -> Option<RunningBroker> {
        self.members
            .iter_mut()
            .find(|m| m.node_id == node_id)
            .expect("a member with this node id")
            .broker
            .take()
    }

    /// Stops `node_id` without a controlled shutdown (see `RunningBroker::halt`).
    pub async fn halt(&mut self, node_id: i32) {
        if let Some(broker) = self.take(node_id) {
            broker.halt().await;
        }
    }

    /// Stops `node_id` with a controlled shutdown.
    pub async fn stop(&mut self, node_id: i32) {
        if let Some(broker) = self.take(node_id) {
            broker.shutdown().await;
        }
    }

    /// Starts `node_id` again on its ports and dir.
    pub async fn restart(&mut self, node_id: i32) {
        let index = self
            .members
            .iter()
            .position(|m| m.node_id == node_id)
            .expect("a member with this node id");
        let config = self.config(index);
        let broker = millrace_broker::start(config)
            .await
            .expect("the broker starts again");
        self.members[index].broker = Some(broker);
    }

    /// Stops every running broker at once, without controlled shutdowns: a controlled shutdown
    /// needs a quorum, which the last brokers to stop would no longer have.
    pub async fn shutdown(mut self) {
        let halting: Vec<_> = self
            .members
            .iter_mut()
            .filter_map(|m| m.broker.take())
            .map(|broker| tokio::spawn(broker.halt()))
            .collect();
        futures_util::future::join_all(halting).await;
    }
}
