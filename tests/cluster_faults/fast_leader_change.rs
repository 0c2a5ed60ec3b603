//! Leader epochs that come fast or carry nothing: two leader changes in quick succession
//! while a follower is down, which then returns several epochs behind (Kafka's
//! shouldSurviveFastLeaderChange; KAFKA-7164: a follower truncates after every epoch change);
//! and a partition that goes through several epochs without a write, then is written
//! (KAFKA-20961: epochs without records must not make followers loop).

use std::time::Duration;

use millrace_testkit::jepsen::workload::Workload;
use millrace_testkit::jepsen::{topology, Recorder};

use crate::common::*;

#[test]
fn two_leader_changes_in_quick_succession_while_a_follower_is_down() {
    run("two_leader_changes_in_quick_succession", async {
        // Five brokers, all voters, and five replicas: with a follower down and a leader
        // killed the quorum (three of five) still elects, which three brokers could not.
        let topic = "fast-leader-change";
        let mut cluster = start_cluster(5, &[]).await;
        let bootstrap = cluster.bootstrap();
        create_topic(&bootstrap, topic, PARTITIONS, 5).await;
        let (recorder, mut running) =
            steady_load(&bootstrap, topic, 1, 300, "writes before the faults").await;

        let start = partition_view(&bootstrap, topic, 0).await;
        let first = start.leader.expect("partition 0 has a leader");
        let follower = a_follower(&start);
        kill9_noted(
            &mut cluster,
            &recorder,
            follower,
            "a follower of partition 0",
        );
        wait_for_partition(
            &bootstrap,
            topic,
            0,
            Duration::from_secs(30),
            "the dead follower leaving the ISR",
            |v| !v.isr.contains(&follower),
        )
        .await;
        wait_for_acks(&mut running, &recorder, 200, "writes without the follower").await;

        // First change.
        kill9_noted(&mut cluster, &recorder, first, "the leader of partition 0");
        let second =
            topology::wait_for_leader(&bootstrap, topic, 0, Some(first), Duration::from_secs(30))
                .await
                .unwrap();
        recorder.note(format!("broker {second} leads partition 0"));
        // The quorum needs three of five up for the next election: bring the first back,
        // then change again at once, before it has necessarily caught up.
        cluster.start(first).unwrap();
        wait_for_broker_listed(&bootstrap, first).await;
        recorder.note(format!("broker {first} restarted"));
        kill9_noted(&mut cluster, &recorder, second, "the leader of partition 0");
        let third =
            topology::wait_for_leader(&bootstrap, topic, 0, Some(second), Duration::from_secs(30))
                .await
                .unwrap();
        recorder.note(format!("broker {third} leads partition 0"));
        assert_ne!(third, follower, "the dead follower cannot lead");
        wait_for_acks(
            &mut running,
            &recorder,
            300,
            "writes after two leader changes",
        )
        .await;

        cluster.start(second).unwrap();
        cluster.start(follower).unwrap();
        recorder.note(format!("brokers {second} and {follower} restarted"));
        cluster
            .wait_for_brokers(Duration::from_secs(60))
            .await
            .unwrap();
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        wait_for_acks(
            &mut running,
            &recorder,
            200,
            "writes with every broker back",
        )
        .await;
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        let end = partition_view(&bootstrap, topic, 0).await;
        assert!(
            end.leader_epoch >= start.leader_epoch + 2,
            "two leader changes: epoch {} then {}",
            start.leader_epoch,
            end.leader_epoch
        );
        check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
    });
}

#[test]
fn a_partition_without_writes_across_several_epochs_then_written_stays_in_agreement() {
    run("a_partition_without_writes_across_several_epochs", async {
        let topic = "quiet-epochs";
        let mut cluster = cluster_with_topic(topic, &[]).await;
        let bootstrap = cluster.bootstrap();
        let start = partition_view(&bootstrap, topic, 0).await;
        // Each round moves the leadership (a new epoch with no record in it) and waits until
        // every replica follows the new epoch and is in sync again.
        for round in 0..3 {
            let leader = topology::leader_of(&bootstrap, topic, 0)
                .await
                .unwrap()
                .expect("partition 0 has a leader");
            cluster.kill9(leader).unwrap();
            topology::wait_for_leader(&bootstrap, topic, 0, Some(leader), Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
            cluster.start(leader).unwrap();
            cluster
                .wait_for_brokers(Duration::from_secs(60))
                .await
                .unwrap();
            wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        }
        let quiet = partition_view(&bootstrap, topic, 0).await;
        assert!(
            quiet.leader_epoch >= start.leader_epoch + 3,
            "three leader changes: epoch {} then {}",
            start.leader_epoch,
            quiet.leader_epoch
        );

        let recorder = Recorder::new();
        let mut running = Workload::new(&bootstrap, topic, PARTITIONS)
            .producers(2)
            .consumers(1, 1)
            .writes_per_producer(300)
            .start(recorder.clone());
        wait_for_acks(
            &mut running,
            &recorder,
            600,
            "writes after the quiet epochs",
        )
        .await;
        running.stop().await.unwrap();
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        let report = check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
        assert_eq!(report.counts.acknowledged, 600, "{report}");
    });
}
