//! Dedicated controllers (`process.roles=controller`) with broker-only nodes: the quorum runs
//! on nodes that serve no clients, brokers register with it and take every admin request,
//! clients are told a broker as their controller, and losing the active controller only
//! moves the role to another voter.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use millrace_broker::{BrokerConfig, RunningBroker, RunningController};
use millrace_testkit::wire::TestClient;
use millrace_testkit::{free_port, temp_dir, FAST_FAILOVER};

fn config(settings: Vec<String>, dir: &Path) -> BrokerConfig {
    let mut settings = settings;
    settings.extend(FAST_FAILOVER.iter().map(|s| s.to_string()));
    let settings = millrace_broker::config::parse_overrides(&settings).unwrap();
    BrokerConfig::from_settings(&settings, None, Some(dir.to_path_buf())).unwrap()
}

async fn create(addr: SocketAddr, topic: &str) -> i16 {
    let mut client = TestClient::connect(addr).await;
    let response = client
        .call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_num_partitions(2)
                    .with_replication_factor(2)])
                .with_timeout_ms(10_000),
        )
        .await;
    response.topics[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_run_on_a_quorum_of_dedicated_controllers() {
    let root = temp_dir();
    let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = controller_ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let controllers: Vec<_> = controller_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            config(
                vec![
                    format!("node.id={}", i + 1),
                    "process.roles=controller".into(),
                    format!("listeners=CONTROLLER://127.0.0.1:{port}"),
                    "controller.listener.names=CONTROLLER".into(),
                    format!("controller.quorum.voters={voters}"),
                ],
                &root.path().join(format!("controller-{}", i + 1)),
            )
        })
        .map(|config| tokio::spawn(millrace_broker::start_controller(config)))
        .collect();
    let brokers: Vec<_> = [4, 5]
        .into_iter()
        .map(|id| {
            config(
                vec![
                    format!("node.id={id}"),
                    "process.roles=broker".into(),
                    format!("listeners=PLAINTEXT://127.0.0.1:{}", free_port()),
                    "controller.listener.names=CONTROLLER".into(),
                    format!("controller.quorum.voters={voters}"),
                ],
                &root.path().join(format!("broker-{id}")),
            )
        })
        .map(|config| tokio::spawn(millrace_broker::start(config)))
        .collect();
    let mut controllers: Vec<RunningController> = futures_util::future::join_all(controllers)
        .await
        .into_iter()
        .map(|started| started.unwrap().unwrap())
        .collect();
    let brokers: Vec<RunningBroker> = futures_util::future::join_all(brokers)
        .await
        .into_iter()
        .map(|started| started.unwrap().unwrap())
        .collect();
    let addr = |i: usize| brokers[i].local_addr();

    // Only the brokers are brokers; the controller clients are told is one of them. Broker
    // 4 learns of broker 5's unfencing from the quorum a moment after 5 has started.
    let mut client = TestClient::connect(addr(0)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let metadata = loop {
        let metadata: MetadataResponse = client.call(12, &MetadataRequest::default()).await;
        let mut ids: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
        ids.sort_unstable();
        if ids == vec![4, 5] {
            break metadata;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "brokers in metadata: {ids:?}, expected [4, 5]"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!([4, 5].contains(&metadata.controller_id.0), "{metadata:?}");

    assert_eq!(create(addr(0), "on-brokers").await, 0);
    let response: MetadataResponse = client
        .call(12, &MetadataRequest::default().with_topics(None))
        .await;
    let topic = response
        .topics
        .iter()
        .find(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.0.as_str() == "on-brokers")
        })
        .unwrap();
    for partition in &topic.partitions {
        let mut replicas: Vec<i32> = partition.replica_nodes.iter().map(|b| b.0).collect();
        replicas.sort_unstable();
        assert_eq!(replicas, vec![4, 5]);
    }

    // The active controller stops: another voter takes over and admin requests still work.
    let active = controllers
        .iter()
        .position(|c| c.controller().quorum().is_leader())
        .unwrap();
    controllers.remove(active).shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !controllers
        .iter()
        .any(|c| c.controller().quorum().is_leader())
    {
        assert!(Instant::now() < deadline, "no new active controller");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(create(addr(1), "after-controller-change").await, 0);

    for broker in brokers {
        broker.halt().await;
    }
    for controller in controllers {
        controller.shutdown().await;
    }
}
