//! SIGSTOP of a partition leader until another is elected, then SIGCONT: the old leader (a
//! zombie that still believes it leads, as after a long GC pause) is fenced and accepts no
//! write, also one that reaches it the instant it wakes up.

use std::time::{Duration, Instant};

use millrace_testkit::faults::Paused;
use millrace_testkit::jepsen::topology;
use millrace_testkit::wire::TestClient;

use crate::common::*;

#[test]
fn a_paused_leader_is_fenced_and_accepts_no_write_when_it_resumes() {
    run("a_paused_leader_is_fenced", async {
        let topic = "zombie-leader";
        let cluster = cluster_with_topic(topic, &[]).await;
        let bootstrap = cluster.bootstrap();
        let (recorder, mut running) =
            steady_load(&bootstrap, topic, 2, 300, "writes before the fault").await;

        let before = partition_view(&bootstrap, topic, 0).await;
        let victim = before.leader.expect("partition 0 has a leader");
        let victim_addr = cluster.node(victim).spec.client_addr;
        let paused = Paused::new(cluster.pid(victim).unwrap()).unwrap();
        recorder.note(format!(
            "SIGSTOP of broker {victim}, the leader of partition 0"
        ));
        let started = Instant::now();
        // Ask the brokers that run: the paused one takes connections but answers nothing.
        let awake = bootstrap_without(&cluster, victim);
        let successor =
            topology::wait_for_leader(&awake, topic, 0, Some(victim), Duration::from_secs(30))
                .await
                .unwrap();
        recorder.note(format!(
            "broker {successor} leads partition 0 after {:?}",
            started.elapsed()
        ));
        let after = partition_view(&awake, topic, 0).await;
        assert!(
            after.leader_epoch > before.leader_epoch,
            "a new leader needs a new epoch: {before:?} then {after:?}"
        );
        wait_for_acks(
            &mut running,
            &recorder,
            300,
            "writes while the old leader is paused",
        )
        .await;

        // A write that reaches the zombie the moment it wakes: the kernel takes it while the
        // process is stopped, so the broker handles it first thing on SIGCONT, with its stale
        // belief that it leads (before it hears of the new epoch).
        let mut at_wake_up = TestClient::try_connect(victim_addr).await.unwrap();
        let first = "zombie-write-at-wake-up";
        send_produce(&mut at_wake_up, 1, &produce_request(topic, 0, first, 3000)).await;
        paused.resume().unwrap();
        recorder.note(format!("SIGCONT of broker {victim}"));
        let code = read_produce_error(&mut at_wake_up, Duration::from_secs(30)).await;
        assert!(
            REFUSALS.contains(&code),
            "the resumed old leader answered error code {code} to an acks=all produce \
             (expected one of {REFUSALS:?})"
        );
        // And once it runs again: still no write.
        let second = "zombie-write-after-wake-up";
        let code = produce_to(victim_addr, topic, 0, second).await;
        assert!(
            REFUSALS.contains(&code),
            "the old leader answered error code {code} after it resumed (expected one of \
             {REFUSALS:?})"
        );

        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        wait_for_acks(
            &mut running,
            &recorder,
            200,
            "writes after the old leader rejoined",
        )
        .await;
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
        assert_never_committed(&recorder, first);
        assert_never_committed(&recorder, second);
    });
}
