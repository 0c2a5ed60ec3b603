//! kill -9 of the active controller (the metadata quorum's Raft leader), also while a
//! CreateTopics is on its way: a new controller is elected, writes go on, and topics can be
//! created and written afterwards.

use std::time::{Duration, Instant};

use millrace_client::admin::NewTopic;
use millrace_client::{Admin, ClientConfig, ClientError, ResponseError};
use millrace_testkit::jepsen::workload::Workload;
use millrace_testkit::jepsen::{topology, Recorder};

use crate::common::*;

/// Waits until the cluster names a controller other than `not`.
async fn wait_for_new_controller(bootstrap: &str, not: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match topology::controller(bootstrap).await {
            Ok(id) if id >= 0 && id != not => return id,
            Ok(id) => format!("controller {id}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            Instant::now() < deadline,
            "no controller other than {not} within 30 s (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `topic` (min.insync.replicas=2); an existing one is fine (a CreateTopics
/// interrupted by the fault may have been applied without its answer arriving).
async fn create_or_find(
    bootstrap: &str,
    topic: &str,
    replication_factor: i16,
) -> Result<(), ClientError> {
    let config = ClientConfig::builder(bootstrap.split(',').map(str::to_string))
        .client_id("fault-test-admin")
        .request_timeout(Duration::from_secs(10))
        .build()?;
    let admin = Admin::connect(config).await?;
    let created = admin
        .create_topic(
            NewTopic::new(topic, PARTITIONS)
                .replication_factor(replication_factor)
                .config("min.insync.replicas", "2"),
        )
        .await;
    match created {
        Err(ClientError::Kafka {
            error: ResponseError::TopicAlreadyExists,
            ..
        }) => Ok(()),
        other => other,
    }
}

/// Writes `records` acknowledged records to `topic` and checks them like the main workload.
async fn write_and_check(bootstrap: &str, topic: &str, records: u64) {
    for partition in 0..PARTITIONS {
        topology::wait_for_leader(bootstrap, topic, partition, None, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let recorder = Recorder::new();
    let mut running = Workload::new(bootstrap, topic, PARTITIONS)
        .producers(1)
        .consumers(1, 0)
        .writes_per_producer(records)
        .start(recorder.clone());
    wait_for_acks(
        &mut running,
        &recorder,
        records,
        &format!("writes to {topic}"),
    )
    .await;
    running.stop().await.unwrap();
    wait_for_full_isr(bootstrap, topic, PARTITIONS).await;
    let report = check_everything(bootstrap, topic, PARTITIONS, &recorder).await;
    assert_eq!(report.counts.acknowledged, records as usize, "{report}");
}

#[test]
fn kill_9_of_the_active_controller_during_create_topics_elects_a_new_one() {
    run("kill_9_of_the_active_controller", async {
        let topic = "kill-controller";
        let mut cluster = cluster_with_topic(topic, &[]).await;
        let bootstrap = cluster.bootstrap();
        let (recorder, mut running) =
            steady_load(&bootstrap, topic, 2, 300, "writes before the fault").await;

        let victim = topology::controller(&bootstrap).await.unwrap();
        assert!(
            cluster.ids().contains(&victim),
            "the controller {victim} is one of the brokers"
        );
        // The CreateTopics is sent, then the controller dies: it may be applied or not, and
        // its answer may be lost; either way it must not wedge topic creation.
        let during = tokio::spawn({
            let bootstrap = bootstrap.clone();
            async move { create_or_find(&bootstrap, "created-during-the-kill", 3).await }
        });
        kill9_noted(&mut cluster, &recorder, victim, "the active controller");
        let started = Instant::now();
        let successor = wait_for_new_controller(&bootstrap, victim).await;
        recorder.note(format!(
            "broker {successor} is the controller after {:?}",
            started.elapsed()
        ));
        eprintln!(
            "CreateTopics during the kill: {:?}",
            during.await.unwrap().map_err(|e| e.to_string())
        );
        wait_for_acks(
            &mut running,
            &recorder,
            300,
            "writes after the controller failover",
        )
        .await;

        // Topic creation works on the new controller while the old one is down. Once it is
        // fenced (out of every ISR), placement only uses the two live brokers, so RF=2 (RF=3
        // is refused with INVALID_REPLICATION_FACTOR, as in Kafka).
        for partition in 0..PARTITIONS {
            wait_for_partition(
                &bootstrap,
                topic,
                partition,
                Duration::from_secs(30),
                "the killed controller leaving the ISR",
                |v| !v.isr.contains(&victim),
            )
            .await;
        }
        create_or_find(&bootstrap, "created-after-the-kill", 2)
            .await
            .unwrap_or_else(|e| panic!("creating a topic after the kill: {e}"));
        write_and_check(&bootstrap, "created-after-the-kill", 150).await;

        cluster.start(victim).unwrap();
        recorder.note(format!("broker {victim} restarted"));
        cluster
            .wait_for_brokers(Duration::from_secs(60))
            .await
            .unwrap();
        wait_for_acks(&mut running, &recorder, 200, "writes after the restart").await;
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;

        // The topic whose CreateTopics the kill interrupted: created then, or now.
        create_or_find(&bootstrap, "created-during-the-kill", 3)
            .await
            .unwrap_or_else(|e| panic!("creating the topic the kill interrupted: {e}"));
        write_and_check(&bootstrap, "created-during-the-kill", 150).await;
    });
}
