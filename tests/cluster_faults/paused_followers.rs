//! Followers paused with SIGSTOP (alive, sockets open, silent): one paused past
//! `replica.lag.time.max.ms` leaves the ISR and comes back once resumed and caught up; with
//! two of three replicas paused the ISR shrinks to the leader, and acks=all writes get
//! NOT_ENOUGH_REPLICAS: nothing is acknowledged, nothing is committed.

use std::time::{Duration, Instant};

use millrace_testkit::faults::Paused;
use millrace_testkit::jepsen::topology;

use crate::common::*;

#[test]
fn paused_followers_leave_the_isr_and_below_min_insync_nothing_is_acknowledged() {
    run("paused_followers", async {
        let topic = "paused-followers";
        // The ISR shrinks by lag (3 s) well before a paused broker would be fenced (its
        // session lasts 10 s): what is tested is the leader's lag check. Five brokers, all
        // voters, so that the quorum (three) still decides ISR changes with two paused.
        let cluster = start_cluster(
            5,
            &[
                "replica.lag.time.max.ms=3000",
                "broker.session.timeout.ms=10000",
            ],
        )
        .await;
        let bootstrap = cluster.bootstrap();
        create_topic(&bootstrap, topic, PARTITIONS, 3).await;
        let (recorder, mut running) =
            steady_load(&bootstrap, topic, 1, 300, "writes before the fault").await;

        let view = partition_view(&bootstrap, topic, 0).await;
        let leader = view.leader.expect("partition 0 has a leader");
        let controller = topology::controller(&bootstrap).await.unwrap();
        let mut followers: Vec<i32> = view
            .replicas
            .iter()
            .copied()
            .filter(|id| *id != leader)
            .collect();
        // Pause a follower that is not the controller first, so that the one-follower part
        // sees an ISR shrink and nothing else.
        followers.sort_by_key(|id| *id == controller);
        let (a, b) = (followers[0], followers[1]);
        // Clients ask the brokers that are not paused.
        let awake = bootstrap_without(&cluster, a);

        let paused = Paused::new(cluster.pid(a).unwrap()).unwrap();
        recorder.note(format!("SIGSTOP of broker {a}, a follower of partition 0"));
        let started = Instant::now();
        wait_for_partition(
            &awake,
            topic,
            0,
            Duration::from_secs(20),
            "the paused follower leaving the ISR",
            |v| !v.isr.contains(&a),
        )
        .await;
        recorder.note(format!(
            "broker {a} left the ISR of partition 0 after {:?}",
            started.elapsed()
        ));
        paused.resume().unwrap();
        recorder.note(format!("SIGCONT of broker {a}"));
        wait_for_partition(
            &bootstrap,
            topic,
            0,
            Duration::from_secs(30),
            "the resumed follower rejoining the ISR",
            |v| v.isr.contains(&a),
        )
        .await;
        recorder.note(format!("broker {a} back in the ISR of partition 0"));
        wait_for_acks(
            &mut running,
            &recorder,
            200,
            "writes after the follower returned",
        )
        .await;

        // Two of three replicas paused.
        let paused_a = Paused::new(cluster.pid(a).unwrap()).unwrap();
        let paused_b = Paused::new(cluster.pid(b).unwrap()).unwrap();
        recorder.note(format!(
            "SIGSTOP of brokers {a} and {b}, followers of partition 0"
        ));
        let others: Vec<String> = cluster
            .specs()
            .iter()
            .filter(|s| s.id != a && s.id != b)
            .map(|s| s.client_addr.to_string())
            .collect();
        let awake = others.join(",");
        wait_for_partition(
            &awake,
            topic,
            0,
            Duration::from_secs(30),
            "the ISR shrinking to the leader",
            |v| v.isr == [leader],
        )
        .await;
        recorder.note(format!("the ISR of partition 0 is [{leader}]"));
        let leader_addr = cluster.node(leader).spec.client_addr;
        let refused: Vec<String> = (0..3).map(|i| format!("below-min-insync-{i}")).collect();
        for value in &refused {
            let code = produce_to(leader_addr, topic, 0, value).await;
            assert_eq!(
                code, NOT_ENOUGH_REPLICAS,
                "an acks=all produce with the ISR at [{leader}] (min.insync.replicas=2)"
            );
        }
        paused_a.resume().unwrap();
        paused_b.resume().unwrap();
        recorder.note(format!("SIGCONT of brokers {a} and {b}"));

        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        wait_for_acks(
            &mut running,
            &recorder,
            200,
            "writes after both followers returned",
        )
        .await;
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
        for value in &refused {
            assert_never_committed(&recorder, value);
        }
    });
}
