//! The checker on hand-built histories: each anomaly once present and once absent, and the
//! edge cases that must not be flagged.

use bytes::Bytes;

use super::checker::{check, check_with, show_value, Anomaly, AnomalyKind, CheckOptions, Observer};
use super::history::{
    History, PolledRecord, ReadSource, Recorder, ReplicaRecord, Send, SendOutcome,
};

fn v(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn polled(partition: i32, offset: i64, value: &str) -> PolledRecord {
    PolledRecord {
        partition,
        offset,
        value: v(value),
    }
}

fn records(entries: &[(i64, &str)]) -> Vec<ReplicaRecord> {
    entries
        .iter()
        .map(|&(offset, value)| ReplicaRecord::new(offset, v(value)))
        .collect()
}

/// Two partitions, three acknowledged writes each, read by a consumer and back in full.
fn clean() -> History {
    let mut h = History::new();
    for (i, (p, o)) in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
        .into_iter()
        .enumerate()
    {
        h.acked(i % 2, format!("w{p}-{o}"), p, o);
    }
    h.poll(0, 0, vec![polled(0, 0, "w0-0"), polled(0, 1, "w0-1")]);
    h.poll(0, 0, vec![polled(1, 0, "w1-0"), polled(0, 2, "w0-2")]);
    h.poll(0, 0, vec![polled(1, 1, "w1-1"), polled(1, 2, "w1-2")]);
    for p in 0..2 {
        let entries: Vec<(i64, String)> = (0..3).map(|o| (o, format!("w{p}-{o}"))).collect();
        let entries: Vec<(i64, &str)> = entries.iter().map(|(o, s)| (*o, s.as_str())).collect();
        h.record_leader_read(p, records(&entries), Some(3));
        for broker in 1..=3 {
            h.record_replica_read(broker, p, records(&entries), Some(3));
        }
    }
    h
}

#[test]
fn a_clean_history_has_no_anomaly() {
    let report = check(&clean());
    for kind in AnomalyKind::ALL {
        assert_eq!(report.count(kind), 0, "{kind} in {report}");
    }
    assert!(report.is_valid());
    report.assert_valid();
    assert_eq!(report.counts.sends, 6);
    assert_eq!(report.counts.acknowledged, 6);
    assert_eq!(report.counts.read, 6);
    assert_eq!(report.counts.polled_records, 6);
    assert_eq!(report.counts.final_reads, 8);
    assert_eq!(report.counts.unacknowledged_but_read, 0);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn an_empty_history_is_valid() {
    check(&History::new()).assert_valid();
}

#[test]
fn indeterminate_writes_may_or_may_not_appear() {
    let mut h = clean();
    // One timed out yet was written, one timed out and was not, one was refused.
    h.indeterminate(0, "maybe-in", Some(0), "request timed out");
    h.indeterminate(0, "maybe-out", Some(0), "request timed out");
    h.failed(1, "refused", None, "buffer full");
    h.poll(1, 0, vec![polled(0, 3, "maybe-in")]);
    h.record_leader_read(0, records(&[(3, "maybe-in")]), Some(4));
    let report = check(&h);
    report.assert_valid();
    assert_eq!(report.counts.indeterminate, 2);
    assert_eq!(report.counts.failed, 1);
    assert_eq!(report.counts.unacknowledged_but_read, 1);
    assert_eq!(report.counts.failed_but_read, 0);
}

#[test]
fn a_failed_write_that_is_read_is_counted_not_flagged() {
    let mut h = History::new();
    h.failed(0, "refused", Some(0), "invalid record");
    h.record_leader_read(0, records(&[(0, "refused")]), Some(1));
    let report = check(&h);
    report.assert_valid();
    assert_eq!(report.counts.failed_but_read, 1);
    assert_eq!(report.counts.unacknowledged_but_read, 1);
}

#[test]
fn values_nobody_wrote_are_noted() {
    let mut h = History::new();
    h.record_leader_read(0, records(&[(0, "stranger")]), Some(1));
    let report = check(&h);
    report.assert_valid();
    assert_eq!(report.counts.unknown_read, 1);
    assert_eq!(report.notes.len(), 1, "{report}");
}

#[test]
fn an_acknowledged_write_missing_from_the_final_reads_is_lost() {
    let mut h = History::new();
    h.acked(0, "kept", 0, 0);
    h.acked(0, "lost", 0, 1);
    h.record_leader_read(0, records(&[(0, "kept")]), Some(1));
    let report = check(&h);
    assert_eq!(report.found_kinds(), vec![AnomalyKind::LostWrite]);
    assert_eq!(
        report.examples(AnomalyKind::LostWrite),
        &[Anomaly::LostWrite {
            partition: 0,
            offset: 1,
            value: v("lost"),
            acked_at: None,
        }]
    );
}

#[test]
fn a_write_read_only_past_the_high_watermark_is_lost() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(0, "b", 0, 1);
    // The record is there, but not committed: a new leader may truncate it.
    h.record_leader_read(0, records(&[(0, "a"), (1, "b")]), Some(1));
    let report = check(&h);
    assert_eq!(report.count(AnomalyKind::LostWrite), 1, "{report}");
    assert_eq!(report.found_kinds(), vec![AnomalyKind::LostWrite]);
}

#[test]
fn a_write_on_any_replica_is_not_lost() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.record_replica_read(1, 0, records(&[]), Some(0));
    h.record_replica_read(2, 0, records(&[(0, "a")]), Some(1));
    // Broker 1 is out of the ISR: not compared, and broker 2 holds the write.
    h.set_isr(0, vec![2]);
    check(&h).assert_valid();
}

#[test]
fn a_partition_without_final_read_loses_its_writes_with_a_note() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(0, "b", 1, 0);
    h.record_leader_read(0, records(&[(0, "a")]), Some(1));
    let report = check(&h);
    assert_eq!(report.count(AnomalyKind::LostWrite), 1);
    assert!(
        report.notes.iter().any(|n| n.contains("partition 1")),
        "{report}"
    );
}

#[test]
fn one_value_at_two_offsets_is_a_duplicate() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(0, "b", 0, 1);
    // A retried batch written twice.
    h.record_leader_read(0, records(&[(0, "a"), (1, "b"), (2, "a")]), Some(3));
    let report = check(&h);
    assert_eq!(report.found_kinds(), vec![AnomalyKind::Duplicate]);
    assert_eq!(
        report.examples(AnomalyKind::Duplicate),
        &[Anomaly::Duplicate {
            value: v("a"),
            places: vec![(0, 0), (0, 2)],
        }]
    );
}

#[test]
fn a_value_acknowledged_at_one_offset_and_read_at_another_is_a_duplicate() {
    let mut h = History::new();
    h.acked(0, "a", 0, 5);
    h.poll(0, 0, vec![polled(0, 4, "a")]);
    h.record_leader_read(0, records(&[(4, "a")]), Some(5));
    let report = check(&h);
    assert_eq!(report.count(AnomalyKind::Duplicate), 1, "{report}");
    assert!(!report.found_kinds().contains(&AnomalyKind::LostWrite));
}

#[test]
fn one_value_in_two_partitions_is_a_duplicate() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.record_leader_read(0, records(&[(0, "a")]), Some(1));
    h.record_leader_read(1, records(&[(0, "a")]), Some(1));
    let report = check(&h);
    assert_eq!(report.found_kinds(), vec![AnomalyKind::Duplicate]);
}

#[test]
fn a_value_read_twice_at_the_same_offset_is_not_a_duplicate() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(0, "b", 0, 1);
    // Two consumers, a rebalance that hands the partition back from the committed offset, the
    // final read and three replicas: the same values at the same places every time.
    h.poll(0, 0, vec![polled(0, 0, "a"), polled(0, 1, "b")]);
    h.poll(0, 1, vec![polled(0, 0, "a"), polled(0, 1, "b")]);
    h.poll(1, 0, vec![polled(0, 0, "a")]);
    h.record_leader_read(0, records(&[(0, "a"), (1, "b")]), Some(2));
    for broker in 1..=3 {
        h.record_replica_read(broker, 0, records(&[(0, "a"), (1, "b")]), Some(2));
    }
    check(&h).assert_valid();
}

#[test]
fn two_values_at_one_offset_are_inconsistent() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(1, "b", 0, 1);
    // A consumer read "x" at 1 from a leader that was later deposed and truncated.
    h.poll(3, 7, vec![polled(0, 0, "a"), polled(0, 1, "x")]);
    h.record_leader_read(0, records(&[(0, "a"), (1, "b")]), Some(2));
    let report = check(&h);
    assert_eq!(
        report.found_kinds(),
        vec![AnomalyKind::InconsistentOffsets],
        "{report}"
    );
    let Anomaly::InconsistentOffsets {
        partition,
        offset,
        values,
    } = &report.examples(AnomalyKind::InconsistentOffsets)[0]
    else {
        panic!("not inconsistent-offsets: {report}");
    };
    assert_eq!((*partition, *offset), (0, 1));
    assert_eq!(values.len(), 2);
    assert_eq!(values[0].0, v("b"));
    assert!(values[0].1.contains(&Observer::Ack { producer: 1 }));
    assert!(values[0]
        .1
        .contains(&Observer::FinalRead(ReadSource::Leader)));
    assert_eq!(
        values[1],
        (
            v("x"),
            vec![Observer::Poll {
                consumer: 3,
                session: 7
            }]
        )
    );
    let text = report.to_string();
    assert!(text.contains("inconsistent-offsets: 1"), "{text}");
    assert!(text.contains("0@1 holds"), "{text}");
}

#[test]
fn replicas_disagreeing_at_an_offset_are_inconsistent_and_divergent() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.record_replica_read(1, 0, records(&[(0, "a"), (1, "b")]), Some(2));
    h.record_replica_read(2, 0, records(&[(0, "a"), (1, "c")]), Some(2));
    let report = check(&h);
    assert_eq!(
        report.found_kinds(),
        vec![AnomalyKind::InconsistentOffsets, AnomalyKind::Divergence],
        "{report}"
    );
}

#[test]
fn an_uncommitted_suffix_is_neither_inconsistent_nor_divergent() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    // Broker 2 led, was cut off, and appended "z" that never committed; broker 1 now leads
    // with "b" at the same offset. Neither is below the high watermark yet.
    h.record_replica_read(1, 0, records(&[(0, "a"), (1, "b")]), Some(1));
    h.record_replica_read(2, 0, records(&[(0, "a"), (1, "z")]), Some(1));
    check(&h).assert_valid();
}

#[test]
fn going_back_within_a_session_is_nonmonotonic() {
    let mut h = History::new();
    for o in 0..4 {
        h.acked(0, format!("v{o}"), 0, o);
    }
    h.poll(0, 0, vec![polled(0, 0, "v0"), polled(0, 1, "v1")]);
    h.poll(0, 0, vec![polled(0, 2, "v2")]);
    h.poll(
        0,
        0,
        vec![polled(0, 1, "v1"), polled(0, 2, "v2"), polled(0, 3, "v3")],
    );
    let entries = [(0, "v0"), (1, "v1"), (2, "v2"), (3, "v3")];
    h.record_leader_read(0, records(&entries), Some(4));
    let report = check(&h);
    assert_eq!(report.found_kinds(), vec![AnomalyKind::NonmonotonicPoll]);
    assert_eq!(
        report.examples(AnomalyKind::NonmonotonicPoll),
        &[Anomaly::NonmonotonicPoll {
            consumer: 0,
            session: 0,
            partition: 0,
            previous: 2,
            offset: 1,
            at: None,
        }]
    );
}

#[test]
fn the_same_offset_twice_in_a_session_is_nonmonotonic() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.poll(0, 0, vec![polled(0, 0, "a")]);
    h.poll(0, 0, vec![polled(0, 0, "a")]);
    h.record_leader_read(0, records(&[(0, "a")]), Some(1));
    let report = check(&h);
    assert_eq!(report.found_kinds(), vec![AnomalyKind::NonmonotonicPoll]);
}

#[test]
fn going_back_after_a_rebalance_is_fine() {
    let mut h = History::new();
    for o in 0..3 {
        h.acked(0, format!("v{o}"), 0, o);
    }
    // Session 0 reads to 2, the group rebalances before the commit, session 1 resumes from the
    // committed offset 1; another consumer (its own sessions) reads the same partition too.
    h.poll(
        0,
        0,
        vec![polled(0, 0, "v0"), polled(0, 1, "v1"), polled(0, 2, "v2")],
    );
    h.poll(0, 1, vec![polled(0, 1, "v1"), polled(0, 2, "v2")]);
    h.poll(1, 0, vec![polled(0, 0, "v0")]);
    h.record_leader_read(0, records(&[(0, "v0"), (1, "v1"), (2, "v2")]), Some(3));
    check(&h).assert_valid();
}

#[test]
fn jumping_over_acknowledged_records_is_a_poll_skip() {
    let mut h = History::new();
    for o in 0..5 {
        h.acked(0, format!("v{o}"), 0, o);
    }
    h.poll(0, 2, vec![polled(0, 0, "v0")]);
    h.poll(0, 2, vec![polled(0, 3, "v3"), polled(0, 4, "v4")]);
    let entries = [(0, "v0"), (1, "v1"), (2, "v2"), (3, "v3"), (4, "v4")];
    h.record_leader_read(0, records(&entries), Some(5));
    let report = check(&h);
    assert_eq!(report.found_kinds(), vec![AnomalyKind::PollSkip]);
    assert_eq!(
        report.examples(AnomalyKind::PollSkip),
        &[Anomaly::PollSkip {
            consumer: 0,
            session: 2,
            partition: 0,
            previous: 0,
            offset: 3,
            skipped: vec![1, 2],
            skipped_count: 2,
            at: None,
        }]
    );
    assert!(report.to_string().contains("poll-skip: 1"));
}

#[test]
fn jumping_over_a_record_seen_only_in_the_final_read_is_a_poll_skip() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.indeterminate(0, "b", Some(0), "timed out");
    h.acked(0, "c", 0, 2);
    h.poll(0, 0, vec![polled(0, 0, "a"), polled(0, 2, "c")]);
    h.record_leader_read(0, records(&[(0, "a"), (1, "b"), (2, "c")]), Some(3));
    assert_eq!(check(&h).found_kinds(), vec![AnomalyKind::PollSkip]);
}

#[test]
fn gaps_without_known_records_are_not_skips() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(0, "c", 0, 5);
    // Offsets 1-4 hold nothing anyone knows of (transaction markers, compaction).
    h.poll(0, 0, vec![polled(0, 0, "a"), polled(0, 5, "c")]);
    h.record_leader_read(0, records(&[(0, "a"), (5, "c")]), Some(6));
    check(&h).assert_valid();
}

#[test]
fn skips_across_sessions_and_partitions_are_fine() {
    let mut h = History::new();
    for p in 0..2 {
        for o in 0..4 {
            h.acked(0, format!("p{p}-{o}"), p, o);
        }
    }
    // Partition 0 interleaved with partition 1 in one session; partition 1 resumes at 3 in a
    // new session (another member committed up to 3 meanwhile).
    h.poll(0, 0, vec![polled(0, 0, "p0-0"), polled(1, 0, "p1-0")]);
    h.poll(0, 0, vec![polled(0, 1, "p0-1"), polled(0, 2, "p0-2")]);
    h.poll(0, 1, vec![polled(1, 3, "p1-3"), polled(0, 3, "p0-3")]);
    for p in 0..2 {
        let entries: Vec<(i64, String)> = (0..4).map(|o| (o, format!("p{p}-{o}"))).collect();
        let entries: Vec<(i64, &str)> = entries.iter().map(|(o, s)| (*o, s.as_str())).collect();
        h.record_leader_read(p, records(&entries), Some(4));
    }
    check(&h).assert_valid();
}

#[test]
fn in_sync_replicas_that_differ_below_the_high_watermark_diverge() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(0, "b", 0, 1);
    // Broker 3 misses offset 1 entirely.
    h.record_replica_read(1, 0, records(&[(0, "a"), (1, "b")]), Some(2));
    h.record_replica_read(2, 0, records(&[(0, "a"), (1, "b")]), Some(2));
    h.record_replica_read(3, 0, records(&[(0, "a")]), Some(2));
    let report = check(&h);
    assert_eq!(
        report.found_kinds(),
        vec![AnomalyKind::Divergence],
        "{report}"
    );
    assert_eq!(report.count(AnomalyKind::Divergence), 2, "{report}");
    assert_eq!(
        report.examples(AnomalyKind::Divergence)[0],
        Anomaly::Divergence {
            partition: 0,
            offset: 1,
            first: (1, Some(v("b"))),
            second: (3, None),
            differing_offsets: 1,
        }
    );
}

#[test]
fn replicas_with_the_same_value_but_different_bytes_diverge() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    let with_rest = |rest: &str| {
        vec![ReplicaRecord {
            offset: 0,
            value: v("a"),
            rest: Some(v(rest)),
        }]
    };
    h.record_replica_read(1, 0, with_rest("key=k ts=1"), Some(1));
    h.record_replica_read(2, 0, with_rest("key=k ts=2"), Some(1));
    // A reader that saw only the value cannot tell: it is compared on the value alone.
    h.record_replica_read(3, 0, records(&[(0, "a")]), Some(1));
    let report = check(&h);
    assert_eq!(report.found_kinds(), vec![AnomalyKind::Divergence]);
    assert_eq!(report.count(AnomalyKind::Divergence), 1, "{report}");
}

#[test]
fn replicas_out_of_the_isr_or_past_the_high_watermark_do_not_diverge() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(0, "b", 0, 1);
    h.record_replica_read(1, 0, records(&[(0, "a"), (1, "b")]), Some(2));
    // Broker 2 lags (its high watermark is behind): only offset 0 is compared.
    h.record_replica_read(2, 0, records(&[(0, "a")]), Some(1));
    // Broker 3 is out of the ISR and behind.
    h.record_replica_read(3, 0, records(&[]), Some(0));
    h.set_isr(0, vec![1, 2]);
    check(&h).assert_valid();
}

#[test]
fn replicas_after_retention_are_compared_from_the_later_start() {
    let mut h = History::new();
    h.acked(0, "c", 0, 2);
    h.record_replica_read(1, 0, records(&[(0, "a"), (1, "b"), (2, "c")]), Some(3));
    h.record_replica_read(2, 0, records(&[(2, "c")]), Some(3));
    check(&h).assert_valid();
}

#[test]
fn examples_are_capped_but_counted() {
    let mut h = History::new();
    for o in 0..20 {
        h.acked(0, format!("v{o}"), 0, o);
    }
    h.record_leader_read(0, records(&[]), Some(0));
    let report = check_with(&h, CheckOptions { max_examples: 3 });
    assert_eq!(report.count(AnomalyKind::LostWrite), 20);
    assert_eq!(report.examples(AnomalyKind::LostWrite).len(), 3);
    assert!(report.to_string().contains("... 17 more"), "{report}");
}

#[test]
#[should_panic(expected = "the history has anomalies: lost-write, duplicate")]
fn assert_valid_names_what_it_found() {
    let mut h = History::new();
    h.acked(0, "a", 0, 0);
    h.acked(0, "b", 0, 1);
    h.record_leader_read(0, records(&[(0, "a"), (1, "x"), (2, "a")]), Some(3));
    check(&h).assert_valid();
}

#[test]
fn the_report_lists_every_kind_by_name() {
    let text = check(&clean()).to_string();
    for kind in AnomalyKind::ALL {
        assert!(text.contains(&format!("{}: 0", kind.name())), "{text}");
    }
    assert!(text.contains("6 acknowledged"), "{text}");
}

#[test]
fn values_are_shown_as_text_or_hex() {
    assert_eq!(show_value(b"p1-7"), "\"p1-7\"");
    assert_eq!(show_value(&[0, 255]), "0x00ff");
    assert!(show_value(&[b'x'; 100]).ends_with("..."));
}

#[test]
fn the_recorder_is_shared_between_threads() {
    let recorder = Recorder::new();
    let handles: Vec<_> = (0..4)
        .map(|producer| {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                for offset in 0..10 {
                    recorder.with(|h| h.acked(producer, format!("{producer}-{offset}"), 0, 0));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("a recording thread");
    }
    assert_eq!(recorder.snapshot().sends.len(), 40);
}

#[test]
fn the_recorder_stamps_times_and_the_report_shows_the_timeline() {
    let recorder = Recorder::new();
    recorder.send(
        0,
        0,
        "lost",
        Some(0),
        SendOutcome::Acked {
            partition: 0,
            offset: 0,
        },
    );
    recorder.poll(1, 0, vec![polled(0, 1, "x"), polled(0, 0, "y")]);
    recorder.poll(1, 0, vec![]);
    recorder.note("kill -9 broker 2");
    recorder.with(|h| h.record_leader_read(0, records(&[]), Some(0)));
    let history = recorder.snapshot();
    assert!(history.sends[0].at.is_some());
    assert_eq!(history.polls.len(), 1, "an empty poll is not recorded");
    assert!(history.polls[0].at.is_some());
    assert_eq!(history.events.len(), 1);
    assert!(Some(history.events[0].at) >= history.sends[0].at);
    let report = check(&history);
    let Anomaly::LostWrite { acked_at, .. } = &report.examples(AnomalyKind::LostWrite)[0] else {
        panic!("{report}");
    };
    assert_eq!(*acked_at, history.sends[0].at);
    let text = report.to_string();
    assert!(text.contains("timeline:"), "{text}");
    assert!(text.contains("s kill -9 broker 2"), "{text}");
    assert!(text.contains("acknowledged at 0@0 at "), "{text}");
    assert!(text.contains("then at 0 (poll at "), "{text}");
}

/// An acknowledged send with its sequence number.
fn sent(producer: usize, seq: u64, value: &str, partition: i32, offset: i64) -> Send {
    Send {
        producer,
        seq: Some(seq),
        partition: Some(partition),
        value: v(value),
        outcome: SendOutcome::Acked { partition, offset },
        at: None,
    }
}

#[test]
fn writes_landing_out_of_send_order_are_a_nonmonotonic_send() {
    let mut h = History::new();
    // Producer 0 sent a, b, c to partition 0 in that order; c overtook b (a retried batch
    // that a new leader appended after the next one).
    h.sends.push(sent(0, 0, "a", 0, 0));
    h.sends.push(sent(0, 2, "c", 0, 1));
    h.sends.push(sent(0, 1, "b", 0, 2));
    h.record_leader_read(0, records(&[(0, "a"), (1, "c"), (2, "b")]), Some(3));
    let report = check(&h);
    assert_eq!(report.found_kinds(), vec![AnomalyKind::NonmonotonicSend]);
    assert_eq!(
        report.examples(AnomalyKind::NonmonotonicSend),
        &[Anomaly::NonmonotonicSend {
            producer: 0,
            partition: 0,
            earlier: (1, 2, v("b")),
            later: (2, 1, v("c")),
        }]
    );
    assert!(report.to_string().contains("nonmonotonic-send: 1"));
}

#[test]
fn send_order_is_per_producer_and_partition() {
    let mut h = History::new();
    // Interleaved producers and partitions, completions out of order: all fine.
    h.sends.push(sent(1, 0, "p1-0", 0, 1));
    h.sends.push(sent(0, 1, "p0-1", 1, 0));
    h.sends.push(sent(0, 0, "p0-0", 0, 0));
    h.sends.push(sent(0, 2, "p0-2", 0, 2));
    h.sends.push(sent(1, 1, "p1-1", 1, 1));
    // A send without a sequence number is not ordered.
    h.acked(0, "unordered", 0, 3);
    h.record_leader_read(
        0,
        records(&[(0, "p0-0"), (1, "p1-0"), (2, "p0-2"), (3, "unordered")]),
        Some(4),
    );
    h.record_leader_read(1, records(&[(0, "p0-1"), (1, "p1-1")]), Some(2));
    check(&h).assert_valid();
}
