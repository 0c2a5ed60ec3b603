//! A partition leader cut off from the other brokers (network namespaces, packets dropped
//! silently) while clients still reach it: no two leaders accept acks=all writes for one
//! partition, and on healing the old leader truncates the suffix it wrote alone (Kafka's
//! shouldNotAllowDivergentLogs), so every replica agrees again.

use std::time::{Duration, Instant};

use millrace_testkit::cluster::ClusterProcesses;
use millrace_testkit::jepsen::workload::Workload;
use millrace_testkit::jepsen::{topology, Recorder};
use millrace_testkit::netns::NetnsLab;

use crate::common::*;

#[test]
fn a_leader_cut_off_from_the_other_brokers_truncates_its_divergent_suffix() {
    run("a_leader_cut_off_from_the_other_brokers", async {
        // Without root there is no lab: this prints SKIP and passes.
        let Some(lab) = NetnsLab::new(3).unwrap() else {
            return;
        };
        let topic = "cut-off-leader";
        let mut cluster =
            ClusterProcesses::plan_in_lab(binary(), &lab, &["group.initial.rebalance.delay.ms=0"]);
        cluster.start_all().unwrap();
        cluster
            .wait_for_brokers(Duration::from_secs(60))
            .await
            .unwrap();
        let bootstrap = cluster.bootstrap();
        create_topic(&bootstrap, topic, PARTITIONS, 3).await;
        let recorder = Recorder::new();
        let mut workload = Workload::new(&bootstrap, topic, PARTITIONS)
            .producers(2)
            .consumers(1, 2)
            .rate_per_producer(300.0);
        // Sends stuck on the cut-off leader give up sooner, so the workload's window of sends
        // in flight moves on within the test's time.
        workload.delivery_timeout = Duration::from_secs(10);
        let mut running = workload.start(recorder.clone());
        wait_for_acks(&mut running, &recorder, 300, "writes before the fault").await;

        let victim = topology::leader_of(&bootstrap, topic, 0)
            .await
            .unwrap()
            .expect("partition 0 has a leader");
        let victim_addr = cluster.node(victim).spec.client_addr;
        // Broker i runs in host i - 1. Cut it off from the other hosts only: the test's
        // clients still reach it, as clients on its side of a partition would.
        lab.partition(&[(victim - 1) as usize]).unwrap();
        recorder.note(format!(
            "broker {victim}, the leader of partition 0, cut off from the other brokers"
        ));
        let started = Instant::now();
        // The majority's view: the cut-off broker's own metadata is stale.
        let majority = bootstrap_without(&cluster, victim);
        let successor =
            topology::wait_for_leader(&majority, topic, 0, Some(victim), Duration::from_secs(30))
                .await
                .unwrap();
        recorder.note(format!(
            "broker {successor} leads partition 0 after {:?}",
            started.elapsed()
        ));

        // Two brokers now believe they lead partition 0; only the one with the majority may
        // acknowledge an acks=all write. The cut-off one may append it (the divergent suffix)
        // but must not acknowledge it.
        let cut_off_write = "written-to-the-cut-off-leader";
        let code = produce_to(victim_addr, topic, 0, cut_off_write).await;
        assert!(
            REFUSALS.contains(&code),
            "the cut-off leader answered error code {code} to an acks=all produce (expected \
             one of {REFUSALS:?})"
        );
        let majority_write = "written-to-the-new-leader";
        let code = produce_to(
            cluster.node(successor).spec.client_addr,
            topic,
            0,
            majority_write,
        )
        .await;
        assert_eq!(code, NONE, "the new leader refused an acks=all produce");
        wait_for_acks(
            &mut running,
            &recorder,
            300,
            "writes while the leader is cut off",
        )
        .await;

        lab.heal_all().unwrap();
        recorder.note("the network healed");
        // The old leader must truncate its suffix to follow, or it never catches up.
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        wait_for_acks(&mut running, &recorder, 200, "writes after healing").await;
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
        assert_never_committed(&recorder, cut_off_write);
        assert_committed(&recorder, majority_write);
    });
}
