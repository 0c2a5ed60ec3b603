//! The test kit shared by Millrace's integration tests (a dev-dependency only).
//!
//! Everything a test needs around the code under test, written once:
//!
//! - [`TestBroker`] and [`start_broker_in`] / [`start_broker_at`]: an in-process broker
//!   (`millrace_broker::start`) on a free port over a temp dir, with `KEY=VALUE` overrides;
//! - [`TestCluster`]: several in-process brokers forming one cluster (all quorum voters);
//! - [`BrokerProcess`]: a `millrace broker` process (the real binary), killed when dropped;
//! - [`free_port`] and [`temp_dir`];
//! - [`api_hiding_proxy`]: a broker whose ApiVersions leaves out chosen APIs, as another
//!   Kafka-protocol broker without them would answer;
//! - [`create_topic`] / [`create_topic_with`] and [`produce_all`] through `millrace-client`;
//! - record builders: [`records`] (wire-level record batches for raw protocol tests) and
//!   [`produce::json_record`] (a keyed JSON `ProducerRecord`);
//! - [`wire::TestClient`], one Kafka request at a time over TCP, and [`http`], a small HTTP/1.1
//!   client with server-sent events;
//! - [`jepsen`]: the history of a fault test and the checker that names its anomalies
//!   (lost-write, duplicate, inconsistent-offsets, nonmonotonic-poll, poll-skip, divergence,
//!   nonmonotonic-send);
//! - [`netns::NetnsLab`]: hosts in network namespaces behind a router, with cuts, isolation
//!   and delays; [`faults`]: kill -9, SIGSTOP/SIGCONT, bit flips and torn tails;
//! - [`cluster::ClusterProcesses`]: N `millrace broker` processes configured as one cluster
//!   with Kafka's settings, each killed, paused or restarted on its own.
//!
//! ```no_run
//! # async fn example() {
//! use millrace_testkit::{create_topic, produce_all, TestBroker, FAST_GROUPS};
//! use millrace_client::{ProducerConfig, ProducerRecord};
//!
//! let broker = TestBroker::start(&[FAST_GROUPS]).await;
//! let client = broker.client_config("my-test");
//! create_topic(&client, "events", 3).await;
//! produce_all(ProducerConfig::new(client), vec![ProducerRecord::new("events", "hello")]).await;
//! # }
//! ```
//!
//! Every helper panics on failure: it is test code, and a panic with a message is the
//! clearest failure a test can report.
//!
//! The kit depends on `millrace-broker` and `millrace-client`, and those crates use it as a
//! dev-dependency: cargo allows that cycle because their integration tests link the same
//! library build the kit links. (Unit tests inside `src/` may use the kit only for plain
//! values, such as a broker's address: there the crate is compiled a second time, with
//! `cfg(test)`, and its types would not match the kit's.)

pub mod api_hiding_proxy;
pub mod broker;
pub mod cluster;
pub mod dirs;
pub mod faults;
pub mod http;
pub mod jepsen;
pub mod net;
pub mod netns;
pub mod process;
pub mod produce;
pub mod records;
pub mod test_cluster;
pub mod topics;
pub mod wait;
pub mod wire;

pub use broker::{start_broker_at, start_broker_in, TestBroker, FAST_GROUPS};
pub use dirs::temp_dir;
pub use net::free_port;
pub use process::BrokerProcess;
pub use produce::produce_all;
pub use test_cluster::{TestCluster, FAST_FAILOVER};
pub use topics::{create_topic, create_topic_with};
pub use wait::eventually;
