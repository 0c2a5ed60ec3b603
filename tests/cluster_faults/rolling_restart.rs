//! A rolling restart of every broker under load (SIGTERM: a controlled shutdown that moves
//! leaderships away first), and idempotent producers across leader changes forced by kill -9:
//! no record written twice, none out of order.

use std::time::Duration;

use millrace_testkit::jepsen::workload::Workload;
use millrace_testkit::jepsen::{topology, Recorder};

use crate::common::*;

#[test]
fn a_rolling_restart_of_every_broker_under_load_loses_nothing() {
    run("a_rolling_restart", async {
        let topic = "rolling-restart";
        let mut cluster = cluster_with_topic(topic, &[]).await;
        let bootstrap = cluster.bootstrap();
        let (recorder, mut running) =
            steady_load(&bootstrap, topic, 2, 300, "writes before the restarts").await;

        for id in cluster.ids() {
            let status = cluster.terminate(id).unwrap();
            recorder.note(format!("broker {id} stopped (SIGTERM): {status}"));
            assert!(
                status.success(),
                "broker {id} exited with {status} on SIGTERM"
            );
            // A controlled shutdown hands its leaderships over before the process exits.
            let others = bootstrap_without(&cluster, id);
            for partition in 0..PARTITIONS {
                topology::wait_for_leader(
                    &others,
                    topic,
                    partition,
                    Some(id),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            }
            wait_for_acks(
                &mut running,
                &recorder,
                100,
                &format!("writes while broker {id} is down"),
            )
            .await;
            cluster.start(id).unwrap();
            recorder.note(format!("broker {id} restarted"));
            cluster
                .wait_for_brokers(Duration::from_secs(60))
                .await
                .unwrap();
            // The next broker goes only once this one is back in every ISR, as an operator's
            // rolling restart would wait.
            wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
            wait_for_acks(
                &mut running,
                &recorder,
                100,
                &format!("writes after broker {id} returned"),
            )
            .await;
        }
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
    });
}

#[test]
fn idempotent_producers_across_leader_changes_write_each_record_once_in_order() {
    run("idempotent_producers_across_leader_changes", async {
        let topic = "idempotent-failover";
        let mut cluster = cluster_with_topic(topic, &[]).await;
        let bootstrap = cluster.bootstrap();
        let recorder = Recorder::new();
        // Fast producers with many sends in flight: a leader killed under them leaves batches
        // whose fate the producer cannot know, which it retries on the new leader (the same
        // producer id and sequence numbers, rebuilt by the new leader from its log).
        let mut running = Workload::new(&bootstrap, topic, PARTITIONS)
            .producers(3)
            .consumers(1, 0)
            .rate_per_producer(800.0)
            .start(recorder.clone());
        wait_for_acks(&mut running, &recorder, 500, "writes before the faults").await;
        for partition in 0..PARTITIONS {
            let leader = topology::leader_of(&bootstrap, topic, partition)
                .await
                .unwrap()
                .expect("a leader");
            kill9_noted(
                &mut cluster,
                &recorder,
                leader,
                &format!("the leader of partition {partition}"),
            );
            topology::wait_for_leader(
                &bootstrap,
                topic,
                partition,
                Some(leader),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
            wait_for_acks(&mut running, &recorder, 300, "writes after the failover").await;
            cluster.start(leader).unwrap();
            recorder.note(format!("broker {leader} restarted"));
            cluster
                .wait_for_brokers(Duration::from_secs(60))
                .await
                .unwrap();
            wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        }
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        let report = check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
        assert!(report.counts.acknowledged >= 1400, "{report}");
    });
}
