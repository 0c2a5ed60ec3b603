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
    run(
        "a_leader_cut_off_from_the_other_brokers",
        cut_off_a_leader("cut-off-leader", false),
    );
}

/// The same with the active controller as the cut-off leader: the other brokers' heartbeats
/// in flight to it go unanswered while a new controller is elected.
#[test]
fn the_active_controller_cut_off_while_leading_a_partition_truncates_its_divergent_suffix() {
    run(
        "the_active_controller_cut_off_while_leading",
        cut_off_a_leader("cut-off-controller", true),
    );
}

/// Cuts the leader of a partition off from the other brokers (the active controller if
/// `controller`, else a leader that is not the controller), checks that only the majority's
/// new leader acknowledges acks=all writes, heals, and checks everything.
async fn cut_off_a_leader(topic: &'static str, controller: bool) {
    // Without root there is no lab: this prints SKIP and passes.
    let Some(lab) = NetnsLab::new(3).unwrap() else {
        return;
    };
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

    let active = topology::controller(&bootstrap).await.unwrap();
    let views = topology::describe_partitions(&bootstrap, topic)
        .await
        .unwrap();
    let chosen = views
        .iter()
        .find(|v| (v.leader == Some(active)) == controller)
        .unwrap_or_else(|| panic!("no partition to cut off (controller {active}): {views:?}"));
    let (partition, victim) = (chosen.partition, chosen.leader.unwrap());
    let victim_addr = cluster.node(victim).spec.client_addr;
    // Broker i runs in host i - 1. Cut it off from the other hosts only: the test's
    // clients still reach it, as clients on its side of a partition would.
    lab.partition(&[(victim - 1) as usize]).unwrap();
    recorder.note(format!(
        "broker {victim}, the leader of partition {partition} (the controller is \
         {active}), cut off from the other brokers"
    ));
    let started = Instant::now();
    // The majority's view: the cut-off broker's own metadata is stale.
    let majority = bootstrap_without(&cluster, victim);
    let successor = topology::wait_for_leader(
        &majority,
        topic,
        partition,
        Some(victim),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    recorder.note(format!(
        "broker {successor} leads partition {partition} after {:?}",
        started.elapsed()
    ));

    // Two brokers now believe they lead the partition; only the one with the majority may
    // acknowledge an acks=all write. The cut-off one may append it (the divergent suffix)
    // but must not acknowledge it.
    let cut_off_write = "written-to-the-cut-off-leader";
    let code = produce_to(victim_addr, topic, partition, cut_off_write).await;
    assert!(
        REFUSALS.contains(&code),
        "the cut-off leader answered error code {code} to an acks=all produce (expected \
         one of {REFUSALS:?})"
    );
    let majority_write = "written-to-the-new-leader";
    let code = produce_to(
        cluster.node(successor).spec.client_addr,
        topic,
        partition,
        majority_write,
    )
    .await;
    assert_eq!(code, NONE, "the new leader refused an acks=all produce");
    // The workload's own writes to this partition are not required to go on during the cut:
    // millrace-client may keep taking its metadata from the cut-off broker (an open
    // connection), which still names itself leader with the older epoch, and send there until
    // the network heals. Writes must go on after healing (below).

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
}
