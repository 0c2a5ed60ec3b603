//! kill -9 of a partition leader during acks=all writes (RF=3, min.insync.replicas=2):
//! consumers and a consumer group carry on after the failover; nothing acknowledged is lost.

use std::time::{Duration, Instant};

use millrace_testkit::jepsen::topology;

use crate::common::*;

#[test]
fn kill_9_of_a_partition_leader_during_acks_all_writes_loses_nothing() {
    run("kill_9_of_a_partition_leader", async {
        let topic = "kill-leader";
        let mut cluster = cluster_with_topic(topic, &[]).await;
        let bootstrap = cluster.bootstrap();
        let (recorder, mut running) =
            steady_load(&bootstrap, topic, 2, 300, "writes before the fault").await;

        let victim = topology::leader_of(&bootstrap, topic, 0)
            .await
            .unwrap()
            .expect("partition 0 has a leader");
        kill9_noted(&mut cluster, &recorder, victim, "the leader of partition 0");
        let started = Instant::now();
        let successor =
            topology::wait_for_leader(&bootstrap, topic, 0, Some(victim), Duration::from_secs(30))
                .await
                .unwrap();
        recorder.note(format!(
            "broker {successor} leads partition 0 after {:?}",
            started.elapsed()
        ));
        // Writes go on with two of three replicas (min.insync.replicas=2).
        wait_for_acks(&mut running, &recorder, 300, "writes after the failover").await;

        cluster.start(victim).unwrap();
        recorder.note(format!("broker {victim} restarted"));
        cluster
            .wait_for_brokers(Duration::from_secs(60))
            .await
            .unwrap();
        wait_for_acks(&mut running, &recorder, 200, "writes after the restart").await;
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");

        // Let the restarted broker catch up before the replicas are compared.
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        let report = check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
        assert!(report.counts.acknowledged >= 800, "{report}");
    });
}
