//! The Jepsen workload and checker end to end against one in-process broker: with no fault
//! the checker must find nothing, and a fault put into the recorded history must be found
//! (the pipeline can fail).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use millrace_testkit::jepsen::replica_read::record_broker_reads;
use millrace_testkit::jepsen::topology;
use millrace_testkit::jepsen::workload::{final_read, Workload};
use millrace_testkit::jepsen::{check, AnomalyKind, ReadSource, Recorder, SendOutcome};
use millrace_testkit::{
    create_topic, free_port, start_broker_at, temp_dir, TestBroker, FAST_GROUPS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_broker_has_no_anomalies_and_a_dropped_record_is_a_lost_write() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let topic = "jepsen-healthy";
    create_topic(&broker.client_config("jepsen-setup"), topic, 3).await;
    let recorder = Recorder::new();
    let mut running = Workload::new(&broker.bootstrap(), topic, 3)
        .producers(2)
        .consumers(1, 2)
        .writes_per_producer(300)
        .start(recorder.clone());
    assert!(
        running.wait_for_acks(600, Duration::from_secs(60)).await,
        "600 acknowledgements within 60 s (got {})",
        running.acked()
    );
    let summary = running.stop().await.unwrap();
    eprintln!("workload: {summary:?}");
    final_read(&broker.bootstrap(), topic, 3, &recorder)
        .await
        .unwrap();
    let history = recorder.snapshot();

    let report = check(&history);
    eprintln!("{report}");
    report.assert_valid();
    assert_eq!(report.counts.acknowledged, 600);
    assert_eq!(report.counts.indeterminate + report.counts.failed, 0);
    assert_eq!(report.counts.read, 600);
    assert_eq!(report.counts.final_reads, 3);
    // The assigned consumer alone reads every record once; the group reads them again.
    assert!(
        report.counts.polled_records >= 1200,
        "{} records polled",
        report.counts.polled_records
    );

    // The fault: one acknowledged record vanishes from the final read.
    let (victim, partition, offset) = history
        .sends
        .iter()
        .find_map(|s| match s.outcome {
            SendOutcome::Acked { partition, offset } => Some((s.value.clone(), partition, offset)),
            _ => None,
        })
        .unwrap();
    let mut faulty = history.clone();
    let read = faulty
        .final_reads
        .iter_mut()
        .find(|r| r.source == ReadSource::Leader && r.partition == partition)
        .unwrap();
    read.records.retain(|r| r.value != victim);
    let report = check(&faulty);
    assert_eq!(
        report.found_kinds(),
        vec![AnomalyKind::LostWrite],
        "{report}"
    );
    assert_eq!(report.count(AnomalyKind::LostWrite), 1);
    let text = report.to_string();
    assert!(
        text.contains(&format!("acknowledged at {partition}@{offset}")),
        "{text}"
    );

    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workload_runs_until_stopped() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let topic = "jepsen-until-stopped";
    create_topic(&broker.client_config("jepsen-setup"), topic, 2).await;
    let recorder = Recorder::new();
    let mut running = Workload::new(&broker.bootstrap(), topic, 2)
        .producers(1)
        .consumers(1, 1)
        .rate_per_producer(500.0)
        .start(recorder.clone());
    assert!(running.wait_for_acks(100, Duration::from_secs(30)).await);
    running.stop().await.unwrap();
    final_read(&broker.bootstrap(), topic, 2, &recorder)
        .await
        .unwrap();
    let report = check(&recorder.snapshot());
    report.assert_valid();
    assert!(report.counts.acknowledged >= 100, "{report}");
    // Every acknowledged write was polled by the consumers before they stopped.
    assert!(
        report.counts.polled_records >= 2 * report.counts.acknowledged,
        "{report}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_broker_reads_agree_with_the_client_and_a_changed_byte_is_divergence() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let topic = "jepsen-replicas";
    create_topic(&broker.client_config("jepsen-setup"), topic, 2).await;
    let recorder = Recorder::new();
    let mut running = Workload::new(&broker.bootstrap(), topic, 2)
        .consumers(1, 0)
        .writes_per_producer(100)
        .start(recorder.clone());
    assert!(running.wait_for_acks(200, Duration::from_secs(60)).await);
    running.stop().await.unwrap();
    final_read(&broker.bootstrap(), topic, 2, &recorder)
        .await
        .unwrap();
    // One broker read twice stands for two replicas that agree.
    for id in [1, 2] {
        record_broker_reads(&recorder, id, broker.addr(), topic, 2)
            .await
            .unwrap();
    }
    let history = recorder.snapshot();
    let report = check(&history);
    report.assert_valid();
    assert_eq!(report.counts.final_reads, 6);
    for partition in 0..2 {
        let reads: Vec<_> = history
            .final_reads
            .iter()
            .filter(|r| r.partition == partition)
            .collect();
        let values = |i: usize| -> Vec<(i64, bytes::Bytes)> {
            reads[i]
                .records
                .iter()
                .map(|r| (r.offset, r.value.clone()))
                .collect()
        };
        assert_eq!(
            values(0),
            values(1),
            "the broker holds what the client read"
        );
        assert_eq!(values(1), values(2));
        assert_eq!(reads[1].high_watermark, Some(100));
        assert!(reads[1].records.iter().all(|r| r.rest.is_some()));
    }

    // Broker 2's copy of one record differs outside the value (say, its timestamp).
    let mut faulty = history.clone();
    let read = faulty
        .final_reads
        .iter_mut()
        .find(|r| r.source == ReadSource::Replica(2) && r.partition == 1)
        .unwrap();
    let record = &mut read.records[7];
    let mut rest = record.rest.clone().unwrap().to_vec();
    *rest.last_mut().unwrap() ^= 1;
    record.rest = Some(rest.into());
    let report = check(&faulty);
    assert_eq!(
        report.found_kinds(),
        vec![AnomalyKind::Divergence],
        "{report}"
    );
    assert!(report.to_string().contains("at offset 7"), "{report}");
    broker.shutdown().await;
}

/// A fault on the one broker there is: a restart (a clean stop, the in-process broker cannot be
/// killed) in the middle of the writes. Clients reconnect; nothing acknowledged may be lost,
/// duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_under_load_has_no_anomalies() {
    let dir = temp_dir();
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let broker = start_broker_at(dir.path(), addr, &[FAST_GROUPS]).await;
    let bootstrap = addr.to_string();
    let topic = "jepsen-restart";
    let setup = millrace_client::ClientConfig::new(&bootstrap);
    create_topic(&setup, topic, 3).await;
    let recorder = Recorder::new();
    let mut running = Workload::new(&bootstrap, topic, 3)
        .producers(2)
        .consumers(1, 2)
        .rate_per_producer(400.0)
        .start(recorder.clone());
    assert!(running.wait_for_acks(200, Duration::from_secs(30)).await);
    recorder.note("broker stops");
    broker.shutdown().await;
    let broker = start_broker_at(dir.path(), addr, &[FAST_GROUPS]).await;
    recorder.note("broker restarted");
    let before = running.acked();
    assert!(
        running
            .wait_for_acks(before + 200, Duration::from_secs(60))
            .await,
        "writes resume after the restart ({} acknowledged)",
        running.acked()
    );
    let summary = running.stop().await.unwrap();
    eprintln!("workload: {summary:?}");
    final_read(&bootstrap, topic, 3, &recorder).await.unwrap();
    let report = check(&recorder.snapshot());
    eprintln!("{report}");
    report.assert_valid();
    assert!(report.counts.acknowledged >= 400);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_topology_names_the_leader_isr_and_brokers() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let bootstrap = broker.bootstrap();
    let topic = "jepsen-topology";
    create_topic(&broker.client_config("jepsen-setup"), topic, 2).await;
    let views = topology::describe_partitions(&bootstrap, topic)
        .await
        .unwrap();
    assert_eq!(views.len(), 2);
    let leader = views[0].leader.unwrap();
    assert_eq!(views[1].isr, vec![leader]);
    assert_eq!(
        topology::leader_of(&bootstrap, topic, 1).await.unwrap(),
        Some(leader)
    );
    assert_eq!(
        topology::brokers(&bootstrap).await.unwrap(),
        vec![(leader, broker.addr())]
    );
    let found = topology::wait_for_leader(&bootstrap, topic, 0, None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(found, leader);
    let error = topology::wait_for_leader(
        &bootstrap,
        topic,
        0,
        Some(leader),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("no new leader"), "{error}");

    // The per-broker reads and the ISR, as a fault test ends.
    let recorder = Recorder::new();
    let mut running = Workload::new(&bootstrap, topic, 2)
        .consumers(0, 0)
        .writes_per_producer(20)
        .start(recorder.clone());
    assert!(running.wait_for_acks(40, Duration::from_secs(30)).await);
    running.stop().await.unwrap();
    topology::record_every_broker(&recorder, &bootstrap, topic, 2)
        .await
        .unwrap();
    let history = recorder.snapshot();
    assert_eq!(history.isr.get(&0), Some(&vec![leader]));
    assert_eq!(history.final_reads.len(), 2);
    let report = check(&history);
    report.assert_valid();
    assert_eq!(report.counts.read, 40);
    broker.shutdown().await;
}
