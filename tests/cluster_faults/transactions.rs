//! Transactions under faults, judged by the transactional checker
//! (`millrace_testkit::jepsen::transactions`): no aborted read, no torn transaction, no
//! precommitted read, no lost write of a committed transaction, no duplicate.
//!
//! - kill -9 of a transaction coordinator, then of a partition leader, while transactional
//!   producers commit and abort transactions that span segment rolls;
//! - the coordinator killed between PrepareCommit and the markers: its successor must finish
//!   the commit, so the whole transaction becomes visible.

use std::time::{Duration, Instant};

use millrace_client::admin::NewTopic;
use millrace_client::{Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use millrace_testkit::cluster::ClusterProcesses;
use millrace_testkit::jepsen::topology;
use millrace_testkit::jepsen::transactions::{
    check_transactions, final_read_committed, RunningTxnWorkload, TxnOutcome, TxnRecord,
    TxnRecorder, TxnWorkload,
};

use crate::common::*;

/// Settings for every scenario here: abandoned transactions are aborted within a second of
/// their timeout, a stopped broker leaves the ISRs after 3 s, and `__transaction_state` has
/// few partitions (50 on three brokers only slows the start).
const TXN_SETTINGS: &[&str] = &[
    "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
    "transaction.state.log.num.partitions=5",
    "replica.lag.time.max.ms=3000",
];

/// A three-broker cluster with `topic` (RF=3, min.insync.replicas=2) whose segments roll
/// every few transactions.
async fn cluster_for_transactions(topic: &str, extra: &[&str]) -> ClusterProcesses {
    let settings: Vec<&str> = TXN_SETTINGS.iter().chain(extra).copied().collect();
    let cluster = start_cluster(3, &settings).await;
    let bootstrap = cluster.bootstrap();
    millrace_testkit::create_topic_with(
        &ClientConfig::new(bootstrap.as_str()),
        NewTopic::new(topic, PARTITIONS)
            .replication_factor(3)
            .config("min.insync.replicas", "2")
            .config("segment.bytes", "4096"),
    )
    .await;
    for partition in 0..PARTITIONS {
        topology::wait_for_leader(&bootstrap, topic, partition, None, Duration::from_secs(30))
            .await
            .unwrap();
    }
    cluster
}

/// The broker coordinating `transactional_id` and its state, as DescribeTransactions answers.
async fn coordinator_of(bootstrap: &str, transactional_id: &str) -> (i32, String) {
    try_coordinator_of(bootstrap, transactional_id)
        .await
        .unwrap_or_else(|e| panic!("DescribeTransactions of {transactional_id}: {e}"))
}

/// [`coordinator_of`], giving up on a broker after 2 s: a request that lands on a stopped
/// broker must not hold a poll for the default 30 s.
async fn try_coordinator_of(
    bootstrap: &str,
    transactional_id: &str,
) -> anyhow::Result<(i32, String)> {
    let client = ClientConfig::builder(bootstrap.split(',').map(str::to_string))
        .request_timeout(Duration::from_secs(2))
        .build()?;
    let admin = Admin::connect(client).await?;
    let described = admin.describe_transactions(&[transactional_id]).await?;
    Ok((described[0].coordinator, described[0].state.clone()))
}

/// Waits until `n` more transactions have ended, within `seconds`, failing with `what`.
async fn more_transactions(
    running: &mut RunningTxnWorkload,
    recorder: &TxnRecorder,
    n: u64,
    seconds: u64,
    what: &str,
) {
    let before = running.ended();
    assert!(
        running
            .wait_for_ended(before + n, Duration::from_secs(seconds))
            .await,
        "transactions {what}: {:?}",
        recorder.ended()
    );
}

/// kill -9 of broker `id` (`role`), 20 more transactions without it, then it restarts.
async fn kill_while_transactions_go_on(
    cluster: &mut ClusterProcesses,
    running: &mut RunningTxnWorkload,
    recorder: &TxnRecorder,
    id: i32,
    role: &str,
) {
    cluster.kill9(id).unwrap();
    recorder.note(format!("kill -9 of broker {id}, {role}"));
    more_transactions(
        running,
        recorder,
        20,
        90,
        &format!("after the kill of the {role}"),
    )
    .await;
    cluster.start(id).unwrap();
    cluster
        .wait_for_brokers(Duration::from_secs(60))
        .await
        .unwrap();
    recorder.note(format!("broker {id} restarted"));
}

#[test]
fn kill_9_of_the_coordinator_and_of_a_leader_during_transactions() {
    run("kill_9_during_transactions", async {
        let topic = "txn-faults";
        let mut cluster = cluster_for_transactions(topic, &[]).await;
        let bootstrap = cluster.bootstrap();
        let recorder = TxnRecorder::new();
        let mut running = TxnWorkload::new(&bootstrap, topic, PARTITIONS)
            .producers(2)
            .transaction_timeout(Duration::from_secs(8))
            .start(recorder.clone());
        more_transactions(&mut running, &recorder, 20, 60, "before the faults").await;

        let (coordinator, _) = coordinator_of(&bootstrap, "jepsen-txn-0").await;
        kill_while_transactions_go_on(
            &mut cluster,
            &mut running,
            &recorder,
            coordinator,
            "coordinator of jepsen-txn-0",
        )
        .await;
        let leader = topology::leader_of(&bootstrap, topic, 1)
            .await
            .unwrap()
            .expect("partition 1 has a leader");
        kill_while_transactions_go_on(
            &mut cluster,
            &mut running,
            &recorder,
            leader,
            &format!("leader of {topic}-1"),
        )
        .await;
        more_transactions(&mut running, &recorder, 10, 60, "after the restart").await;
        running.stop().await.unwrap();

        final_read_committed(
            &bootstrap,
            topic,
            PARTITIONS,
            &recorder,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let report = recorder.with(|h| check_transactions(h));
        eprintln!("{report}");
        report.assert_valid();
        assert!(report.committed >= 40, "{report}");
        assert!(report.aborted >= 5, "{report}");
    });
}

#[test]
fn a_coordinator_killed_between_prepare_and_markers_is_finished_by_its_successor() {
    run("coordinator_killed_between_prepare_and_markers", async {
        let topic = "txn-prepared";
        // The stopped broker keeps its leaderships for 10 s (the default session is 2 s), so
        // that the transaction stays prepared, its markers held back, long enough to be seen.
        let mut cluster =
            cluster_for_transactions(topic, &["broker.session.timeout.ms=10000"]).await;
        let bootstrap = cluster.bootstrap();
        let recorder = TxnRecorder::new();
        // A short request timeout: a request that lands on the stopped broker is abandoned
        // (and sent elsewhere) in seconds, not the default 30.
        let client = ClientConfig::builder(bootstrap.split(',').map(str::to_string))
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let config = ProducerConfig::builder(client)
            .transactional_id("prepared")
            .build()
            .unwrap();
        let producer = Producer::connect(config).await.unwrap();
        producer.begin_transaction().unwrap();
        let values: Vec<(i32, String)> = (0..PARTITIONS)
            .flat_map(|p| (0..3).map(move |i| (p, format!("prepared-{p}-{i}"))))
            .collect();
        for (partition, value) in &values {
            let _delivery = producer
                .send(ProducerRecord::new(topic, value.clone().into_bytes()).partition(*partition))
                .await
                .unwrap();
        }
        producer.flush().await;
        let (coordinator, state) = coordinator_of(&bootstrap, "prepared").await;
        assert_eq!(state, "Ongoing");
        // A data partition led by another broker: stopped, it holds the markers back.
        // A data partition led by a broker that is neither the coordinator nor the active
        // controller: stopped, it holds the markers back until its session expires. (A
        // stopped active controller is fenced within a couple of heartbeats by its successor,
        // and its partitions move at once: the markers would not wait.)
        let controller = topology::controller(&bootstrap).await.unwrap();
        let mut stalled = None;
        for partition in 0..PARTITIONS {
            let leader = topology::leader_of(&bootstrap, topic, partition)
                .await
                .unwrap()
                .unwrap();
            if leader != coordinator && leader != controller {
                stalled = Some(leader);
                break;
            }
        }
        let stalled = stalled.unwrap_or_else(|| {
            panic!(
                "no partition of {topic} is led by a broker other than the coordinator \
                 ({coordinator}) and the active controller ({controller})"
            )
        });
        cluster.sigstop(stalled).unwrap();
        recorder.note(format!(
            "broker {stalled} stopped (SIGSTOP); broker {coordinator} coordinates"
        ));
        let asked = Instant::now();
        let committing = tokio::spawn(async move { producer.commit_transaction().await });

        // PrepareCommit is durable once the stopped broker has left the ISR of the
        // transaction's `__transaction_state` partition; the markers cannot all be written
        // until the stopped broker is fenced. Asked of the coordinator alone, so that no poll
        // waits on the stopped broker and the window is not missed.
        let at_coordinator = cluster
            .specs()
            .iter()
            .find(|spec| spec.id == coordinator)
            .map(|spec| spec.client_addr.to_string())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = match try_coordinator_of(&at_coordinator, "prepared").await {
                Ok((_, state)) => state,
                Err(e) => format!("unknown ({e})"),
            };
            if state == "PrepareCommit" {
                recorder.note(format!("PrepareCommit after {:?}", asked.elapsed()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the transaction never reached PrepareCommit (state {state})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.kill9(coordinator).unwrap();
        recorder.note(format!(
            "kill -9 of broker {coordinator} in PrepareCommit, before its markers"
        ));
        cluster.sigcont(stalled).unwrap();
        recorder.note(format!("broker {stalled} resumed"));
        let committed = tokio::time::timeout(Duration::from_secs(60), committing)
            .await
            .expect("commit_transaction returned")
            .unwrap();
        recorder.note(format!(
            "commit_transaction answered {committed:?} after {:?}",
            asked.elapsed()
        ));

        // The successor finishes the commit.
        let survivors = ClientConfig::new(bootstrap_without(&cluster, coordinator));
        let admin = Admin::connect(survivors).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(d) = admin.describe_transactions(&["prepared"]).await {
                if d[0].state == "CompleteCommit" {
                    recorder.note(format!(
                        "broker {} completed the commit after {:?}",
                        d[0].coordinator,
                        asked.elapsed()
                    ));
                    assert_ne!(d[0].coordinator, coordinator);
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the commit was never completed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        recorder.with(|h| {
            h.transactions.insert(
                "prepared".into(),
                TxnRecord {
                    name: "prepared".into(),
                    values: values.clone(),
                    commit_asked: Some(asked),
                    // The client may or may not have heard; the checker needs all or nothing.
                    outcome: if committed.is_ok() {
                        TxnOutcome::Committed
                    } else {
                        TxnOutcome::Unknown
                    },
                },
            );
        });
        let read_from = bootstrap_without(&cluster, coordinator);
        final_read_committed(
            &read_from,
            topic,
            PARTITIONS,
            &recorder,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let report = recorder.with(|h| check_transactions(h));
        eprintln!("{report}");
        report.assert_valid();
        // Prepared means decided: every value is visible, not merely none.
        assert_eq!(report.final_values, values.len(), "{report}");
        cluster.start(coordinator).unwrap();
        cluster
            .wait_for_brokers(Duration::from_secs(60))
            .await
            .unwrap();
    });
}
