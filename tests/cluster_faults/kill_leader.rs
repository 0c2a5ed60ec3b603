//! Fault tests of a three-broker cluster of real `millrace broker` processes, judged by the
//! Jepsen-style checker (`millrace_testkit::jepsen`): producers with acks=all and idempotence
//! write unique values while consumers poll; a fault is injected and healed; everything is read
//! back from every replica; the checker must find no lost-write, duplicate,
//! inconsistent-offsets, nonmonotonic-poll, poll-skip, divergence or nonmonotonic-send.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use millrace_client::admin::NewTopic;
use millrace_testkit::cluster::ClusterProcesses;
use millrace_testkit::jepsen::workload::{final_read, Workload};
use millrace_testkit::jepsen::{check, topology, Recorder};

const PARTITIONS: i32 = 3;

/// A three-broker cluster with a replicated topic (RF=3, min.insync.replicas=2).
async fn cluster_with_topic(topic: &str) -> ClusterProcesses {
    let mut cluster = ClusterProcesses::plan(
        env!("CARGO_BIN_EXE_millrace"),
        3,
        &["group.initial.rebalance.delay.ms=0"],
    );
    cluster.start_all().unwrap();
    cluster
        .wait_for_brokers(Duration::from_secs(60))
        .await
        .unwrap();
    let client = millrace_client::ClientConfig::new(&cluster.bootstrap());
    millrace_testkit::create_topic_with(
        &client,
        NewTopic::new(topic, PARTITIONS)
            .replication_factor(3)
            .config("min.insync.replicas", "2"),
    )
    .await;
    for partition in 0..PARTITIONS {
        topology::wait_for_leader(
            &cluster.bootstrap(),
            topic,
            partition,
            None,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_partition_leader_during_acks_all_writes_loses_nothing() {
    let topic = "kill-leader";
    let mut cluster = cluster_with_topic(topic).await;
    let bootstrap = cluster.bootstrap();
    let recorder = Recorder::new();
    let mut running = Workload::new(&bootstrap, topic, PARTITIONS)
        .producers(2)
        .consumers(1, 2)
        .rate_per_producer(300.0)
        .start(recorder.clone());
    assert!(
        running.wait_for_acks(300, Duration::from_secs(60)).await,
        "writes before the fault ({} acknowledged)",
        running.acked()
    );

    let victim = topology::leader_of(&bootstrap, topic, 0)
        .await
        .unwrap()
        .expect("partition 0 has a leader");
    cluster.kill9(victim).unwrap();
    recorder.note(format!(
        "kill -9 of broker {victim}, the leader of partition 0"
    ));
    let started = std::time::Instant::now();
    let successor =
        topology::wait_for_leader(&bootstrap, topic, 0, Some(victim), Duration::from_secs(30))
            .await
            .unwrap();
    recorder.note(format!(
        "broker {successor} leads partition 0 after {:?}",
        started.elapsed()
    ));
    // Writes go on with two of three replicas (min.insync.replicas=2).
    let before = running.acked();
    assert!(
        running
            .wait_for_acks(before + 300, Duration::from_secs(60))
            .await,
        "writes after the failover ({} acknowledged)",
        running.acked()
    );

    cluster.restart(victim).unwrap();
    recorder.note(format!("broker {victim} restarted"));
    cluster
        .wait_for_brokers(Duration::from_secs(60))
        .await
        .unwrap();
    let before = running.acked();
    assert!(
        running
            .wait_for_acks(before + 200, Duration::from_secs(60))
            .await,
        "writes after the restart"
    );
    let summary = running.stop().await.unwrap();
    eprintln!("workload: {summary:?}");

    // Let the restarted broker catch up before the replicas are compared.
    for partition in 0..PARTITIONS {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let views = topology::describe_partitions(&bootstrap, topic)
                .await
                .unwrap();
            let view = views.iter().find(|v| v.partition == partition).unwrap();
            if view.isr.len() == 3 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "partition {partition} ISR {:?} did not grow back",
                view.isr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    final_read(&bootstrap, topic, PARTITIONS, &recorder)
        .await
        .unwrap();
    topology::record_every_broker(&recorder, &bootstrap, topic, PARTITIONS)
        .await
        .unwrap();
    let report = check(&recorder.snapshot());
    eprintln!("{report}");
    report.assert_valid();
    assert!(report.counts.acknowledged >= 800, "{report}");
}
