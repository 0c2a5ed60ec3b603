//! The checker: reads a [`History`] and names what went wrong, after Jepsen's Kafka workload.
//!
//! Every write carries a unique value, so a value identifies a write wherever it shows up: in
//! the producer's acknowledgement (partition, offset), in a consumer's poll, in a final read.
//! The anomalies:
//!
//! - **lost-write**: acknowledged, yet no final read of its partition holds the value below the
//!   high watermark;
//! - **duplicate**: one value at two places (partition, offset), counting acknowledgements,
//!   polls and committed final reads (the same value read again at the same place is fine);
//! - **inconsistent-offsets**: two different values at one (partition, offset), across
//!   acknowledgements, polls, final reads and replicas;
//! - **nonmonotonic-poll**: within one consumer session, a partition's offsets do not strictly
//!   increase from one record to the next;
//! - **poll-skip**: within one consumer session, a partition's offsets jump over an offset known
//!   to hold a record (acknowledged, or present in a final read below the high watermark);
//! - **divergence**: two in-sync replicas differ (a record missing on one side, or different
//!   bytes) at an offset below both their high watermarks;
//! - **nonmonotonic-send**: one producer's acknowledged offsets in a partition do not grow in
//!   the order it sent the records (an idempotent producer must not reorder, also across
//!   leader changes); only sends with a recorded sequence number count.
//!
//! Records at or past a final read's high watermark are not committed: a deposed leader may
//! still hold a suffix it is about to truncate, so they are neither counted as reads nor
//! compared.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use super::history::{BrokerId, Event, FinalRead, History, Partition, ReadSource, SendOutcome};

/// The anomalies the checker knows, by Jepsen's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// Acknowledged, never read.
    LostWrite,
    /// One value at two offsets.
    Duplicate,
    /// Two values at one offset.
    InconsistentOffsets,
    /// A consumer went backwards within a session.
    NonmonotonicPoll,
    /// A consumer jumped over a record within a session.
    PollSkip,
    /// In-sync replicas differ below the high watermark.
    Divergence,
    /// A producer's writes to a partition landed out of send order.
    NonmonotonicSend,
}

impl AnomalyKind {
    /// Every kind, in report order.
    pub const ALL: [AnomalyKind; 7] = [
        AnomalyKind::LostWrite,
        AnomalyKind::Duplicate,
        AnomalyKind::InconsistentOffsets,
        AnomalyKind::NonmonotonicPoll,
        AnomalyKind::PollSkip,
        AnomalyKind::Divergence,
        AnomalyKind::NonmonotonicSend,
    ];

    /// Jepsen's name for it, e.g. `lost-write`.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::LostWrite => "lost-write",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::InconsistentOffsets => "inconsistent-offsets",
            AnomalyKind::NonmonotonicPoll => "nonmonotonic-poll",
            AnomalyKind::PollSkip => "poll-skip",
            AnomalyKind::Divergence => "divergence",
            AnomalyKind::NonmonotonicSend => "nonmonotonic-send",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who saw a value at a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Observer {
    /// A producer's acknowledgement.
    Ack {
        /// The producer.
        producer: usize,
    },
    /// A consumer's poll.
    Poll {
        /// The consumer.
        consumer: usize,
        /// Its session.
        session: u64,
    },
    /// A final read.
    FinalRead(ReadSource),
}

impl fmt::Display for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observer::Ack { producer } => write!(f, "ack to producer {producer}"),
            Observer::Poll { consumer, session } => {
                write!(f, "poll of consumer {consumer} (session {session})")
            }
            Observer::FinalRead(source) => write!(f, "final read of {source}"),
        }
    }
}

/// One anomaly, with what it takes to find it in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// An acknowledged write missing from every final read of its partition.
    LostWrite {
        /// The partition it was acknowledged in.
        partition: Partition,
        /// The offset it was acknowledged at.
        offset: i64,
        /// The value.
        value: Bytes,
        /// When it was acknowledged, if recorded.
        acked_at: Option<Duration>,
    },
    /// One value at several places.
    Duplicate {
        /// The value.
        value: Bytes,
        /// Every (partition, offset) it was seen at.
        places: Vec<(Partition, i64)>,
    },
    /// Several values at one place.
    InconsistentOffsets {
        /// The partition.
        partition: Partition,
        /// The offset.
        offset: i64,
        /// Each value seen there, with who saw it.
        values: Vec<(Bytes, Vec<Observer>)>,
    },
    /// A consumer's offsets for a partition did not increase.
    NonmonotonicPoll {
        /// The consumer.
        consumer: usize,
        /// Its session.
        session: u64,
        /// The partition.
        partition: Partition,
        /// The offset of the record before.
        previous: i64,
        /// The offset that followed it.
        offset: i64,
        /// When the poll that returned `offset` returned, if recorded.
        at: Option<Duration>,
    },
    /// A consumer's offsets for a partition jumped over records.
    PollSkip {
        /// The consumer.
        consumer: usize,
        /// Its session.
        session: u64,
        /// The partition.
        partition: Partition,
        /// The offset of the record before.
        previous: i64,
        /// The offset that followed it.
        offset: i64,
        /// The offsets in between known to hold records (the first few).
        skipped: Vec<i64>,
        /// How many offsets in between are known to hold records.
        skipped_count: usize,
        /// When the poll that returned `offset` returned, if recorded.
        at: Option<Duration>,
    },
    /// Two in-sync replicas differ below the high watermark.
    Divergence {
        /// The partition.
        partition: Partition,
        /// The first offset where they differ.
        offset: i64,
        /// One replica and its value there (`None`: it has no record there).
        first: (BrokerId, Option<Bytes>),
        /// The other replica and its value there.
        second: (BrokerId, Option<Bytes>),
        /// How many offsets differ between the two.
        differing_offsets: usize,
    },
    /// A producer sent `earlier` before `later` to one partition, yet `later` got the lower
    /// offset.
    NonmonotonicSend {
        /// The producer.
        producer: usize,
        /// The partition.
        partition: Partition,
        /// The earlier send: its sequence number, offset and value.
        earlier: (u64, i64, Bytes),
        /// The later send: its sequence number, offset and value.
        later: (u64, i64, Bytes),
    },
}

impl Anomaly {
    /// Which kind it is.
    pub fn kind(&self) -> AnomalyKind {
        match self {
            Anomaly::LostWrite { .. } => AnomalyKind::LostWrite,
            Anomaly::Duplicate { .. } => AnomalyKind::Duplicate,
            Anomaly::InconsistentOffsets { .. } => AnomalyKind::InconsistentOffsets,
            Anomaly::NonmonotonicPoll { .. } => AnomalyKind::NonmonotonicPoll,
            Anomaly::PollSkip { .. } => AnomalyKind::PollSkip,
            Anomaly::Divergence { .. } => AnomalyKind::Divergence,
            Anomaly::NonmonotonicSend { .. } => AnomalyKind::NonmonotonicSend,
        }
    }
}

/// A value for a log line: the text if it is short printable UTF-8, else hex, cut at 48 bytes.
pub fn show_value(value: &[u8]) -> String {
    const MAX: usize = 48;
    let cut = &value[..value.len().min(MAX)];
    let more = if value.len() > MAX { "..." } else { "" };
    match std::str::from_utf8(cut) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}{more}"),
        _ => {
            let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}{more}")
        }
    }
}

/// " at 1.234s", or nothing when the time was not recorded.
fn show_at(at: &Option<Duration>) -> String {
    at.map(|at| format!(" at {:.3}s", at.as_secs_f64()))
        .unwrap_or_default()
}

fn show_slot(value: &Option<Bytes>) -> String {
    value
        .as_ref()
        .map_or_else(|| "nothing".to_string(), |v| show_value(v))
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::LostWrite {
                partition,
                offset,
                value,
                acked_at,
            } => write!(
                f,
                "{} acknowledged at {partition}@{offset}{}, in no final read",
                show_value(value),
                show_at(acked_at)
            ),
            Anomaly::Duplicate { value, places } => {
                let places: Vec<String> = places.iter().map(|(p, o)| format!("{p}@{o}")).collect();
                write!(f, "{} at {}", show_value(value), places.join(", "))
            }
            Anomaly::InconsistentOffsets {
                partition,
                offset,
                values,
            } => {
                write!(f, "{partition}@{offset} holds ")?;
                for (i, (value, observers)) in values.iter().enumerate() {
                    let who: Vec<String> = observers.iter().map(|o| o.to_string()).collect();
                    let sep = if i == 0 { "" } else { " and " };
                    write!(f, "{sep}{} (seen by {})", show_value(value), who.join(", "))?;
                }
                Ok(())
            }
            Anomaly::NonmonotonicPoll {
                consumer,
                session,
                partition,
                previous,
                offset,
                at,
            } => write!(
                f,
                "consumer {consumer} (session {session}) read partition {partition} at \
                 {previous} then at {offset} (poll{})",
                show_at(at)
            ),
            Anomaly::PollSkip {
                consumer,
                session,
                partition,
                previous,
                offset,
                skipped,
                skipped_count,
                at,
            } => write!(
                f,
                "consumer {consumer} (session {session}) read partition {partition} at \
                 {previous} then at {offset} (poll{}), skipping {skipped_count} record(s) at \
                 {skipped:?}{}",
                show_at(at),
                if *skipped_count > skipped.len() {
                    " ..."
                } else {
                    ""
                }
            ),
            Anomaly::Divergence {
                partition,
                offset,
                first,
                second,
                differing_offsets,
            } => write!(
                f,
                "partition {partition}: broker {} has {} and broker {} has {} at offset \
                 {offset} ({differing_offsets} offset(s) differ below the high watermark)",
                first.0,
                show_slot(&first.1),
                second.0,
                show_slot(&second.1)
            ),
            Anomaly::NonmonotonicSend {
                producer,
                partition,
                earlier,
                later,
            } => write!(
                f,
                "producer {producer} sent {} (send {}) before {} (send {}) to partition \
                 {partition}, but they were acknowledged at offsets {} and {}",
                show_value(&earlier.2),
                earlier.0,
                show_value(&later.2),
                later.0,
                earlier.1,
                later.1
            ),
        }
    }
}

/// How many of each kind, and the first few.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// How many were found.
    pub count: usize,
    /// The first [`CheckOptions::max_examples`] of them.
    pub examples: Vec<Anomaly>,
}

/// What the history holds, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sends with a known outcome.
    pub sends: usize,
    /// Sends acknowledged.
    pub acknowledged: usize,
    /// Sends that definitely failed.
    pub failed: usize,
    /// Sends with an unknown outcome.
    pub indeterminate: usize,
    /// Distinct values seen in polls or committed final reads.
    pub read: usize,
    /// Values not acknowledged yet read: indeterminate ones that did happen (fine), and failed
    /// ones (see `failed_but_read`).
    pub unacknowledged_but_read: usize,
    /// Values whose send definitely failed, yet were read. Not one of the named anomalies
    /// (which failures are definite depends on the client), but worth a look when not 0.
    pub failed_but_read: usize,
    /// Values read that no recorded send wrote (a send still in flight when the history was
    /// taken, or a record from outside the workload).
    pub unknown_read: usize,
    /// Records returned by polls.
    pub polled_records: usize,
    /// Final reads (one per source and partition).
    pub final_reads: usize,
}

/// Settings of [`check_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// How many examples to keep per anomaly kind.
    pub max_examples: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { max_examples: 8 }
    }
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The numbers.
    pub counts: Counts,
    /// Every kind, found or not.
    pub anomalies: BTreeMap<AnomalyKind, Found>,
    /// Remarks that are not anomalies but explain the numbers (a partition without a final
    /// read, values nobody sent).
    pub notes: Vec<String>,
    /// What the test did and when (the history's events), to read the anomalies against.
    pub timeline: Vec<Event>,
}

impl CheckReport {
    /// How many anomalies of `kind` were found.
    pub fn count(&self, kind: AnomalyKind) -> usize {
        self.anomalies.get(&kind).map_or(0, |f| f.count)
    }

    /// The examples kept for `kind`.
    pub fn examples(&self, kind: AnomalyKind) -> &[Anomaly] {
        self.anomalies
            .get(&kind)
            .map_or(&[][..], |f| f.examples.as_slice())
    }

    /// The kinds found at least once.
    pub fn found_kinds(&self) -> Vec<AnomalyKind> {
        AnomalyKind::ALL
            .into_iter()
            .filter(|k| self.count(*k) > 0)
            .collect()
    }

    /// True when no anomaly was found.
    pub fn is_valid(&self) -> bool {
        self.found_kinds().is_empty()
    }

    /// Panics with the whole report when any anomaly was found.
    #[track_caller]
    pub fn assert_valid(&self) {
        if !self.is_valid() {
            let names: Vec<&str> = self.found_kinds().into_iter().map(|k| k.name()).collect();
            panic!("the history has anomalies: {}\n{self}", names.join(", "));
        }
    }

    fn push(&mut self, anomaly: Anomaly, max_examples: usize) {
        let found = self.anomalies.entry(anomaly.kind()).or_default();
        found.count += 1;
        if found.examples.len() < max_examples {
            found.examples.push(anomaly);
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "{} sends: {} acknowledged, {} failed, {} indeterminate; {} values read \
             ({} unacknowledged but read, {} of them failed; {} unknown); {} records polled; \
             {} final reads",
            c.sends,
            c.acknowledged,
            c.failed,
            c.indeterminate,
            c.read,
            c.unacknowledged_but_read,
            c.failed_but_read,
            c.unknown_read,
            c.polled_records,
            c.final_reads
        )?;
        for kind in AnomalyKind::ALL {
            let found = self.anomalies.get(&kind).cloned().unwrap_or_default();
            writeln!(f, "  {kind}: {}", found.count)?;
            for example in &found.examples {
                writeln!(f, "    - {example}")?;
            }
            if found.count > found.examples.len() {
                writeln!(f, "    - ... {} more", found.count - found.examples.len())?;
            }
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        if !self.timeline.is_empty() {
            writeln!(f, "  timeline:")?;
            for event in &self.timeline {
                writeln!(f, "    {event}")?;
            }
        }
        Ok(())
    }
}

/// Checks `history` with the default options.
pub fn check(history: &History) -> CheckReport {
    check_with(history, CheckOptions::default())
}

/// The outcome of a value's send(s), the best one if a value was (wrongly) sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Failed,
    Indeterminate,
    Acked,
}

/// Checks `history` for every anomaly kind.
pub fn check_with(history: &History, options: CheckOptions) -> CheckReport {
    let max = options.max_examples;
    let mut report = CheckReport {
        counts: Counts::default(),
        anomalies: AnomalyKind::ALL
            .into_iter()
            .map(|k| (k, Found::default()))
            .collect(),
        notes: Vec::new(),
        timeline: history.events.clone(),
    };

    // What each value's producer was told.
    let mut status: BTreeMap<&Bytes, Status> = BTreeMap::new();
    for send in &history.sends {
        let s = match send.outcome {
            SendOutcome::Acked { .. } => Status::Acked,
            SendOutcome::Failed { .. } => Status::Failed,
            SendOutcome::Indeterminate { .. } => Status::Indeterminate,
        };
        let entry = status.entry(&send.value).or_insert(s);
        *entry = (*entry).max(s);
    }
    let acks: Vec<(&Bytes, Partition, i64, usize, Option<Duration>)> = history
        .sends
        .iter()
        .filter_map(|s| match s.outcome {
            SendOutcome::Acked { partition, offset } => {
                Some((&s.value, partition, offset, s.producer, s.at))
            }
            _ => None,
        })
        .collect();

    // Every observation of a value at a place. Final reads count only below their high
    // watermark (beyond it a replica may hold a suffix it is about to truncate).
    let mut at_place: BTreeMap<(Partition, i64), BTreeMap<&Bytes, BTreeSet<Observer>>> =
        BTreeMap::new();
    let mut places_of: BTreeMap<&Bytes, BTreeSet<(Partition, i64)>> = BTreeMap::new();
    let mut read_values: BTreeSet<&Bytes> = BTreeSet::new();
    for &(value, partition, offset, producer, _) in &acks {
        at_place
            .entry((partition, offset))
            .or_default()
            .entry(value)
            .or_default()
            .insert(Observer::Ack { producer });
        places_of
            .entry(value)
            .or_default()
            .insert((partition, offset));
    }
    for poll in &history.polls {
        for r in &poll.records {
            report.counts.polled_records += 1;
            at_place
                .entry((r.partition, r.offset))
                .or_default()
                .entry(&r.value)
                .or_default()
                .insert(Observer::Poll {
                    consumer: poll.consumer,
                    session: poll.session,
                });
            places_of
                .entry(&r.value)
                .or_default()
                .insert((r.partition, r.offset));
            read_values.insert(&r.value);
        }
    }
    for read in &history.final_reads {
        for r in read.committed() {
            at_place
                .entry((read.partition, r.offset))
                .or_default()
                .entry(&r.value)
                .or_default()
                .insert(Observer::FinalRead(read.source));
            places_of
                .entry(&r.value)
                .or_default()
                .insert((read.partition, r.offset));
            read_values.insert(&r.value);
        }
    }

    // Counts.
    report.counts.sends = history.sends.len();
    for send in &history.sends {
        match send.outcome {
            SendOutcome::Acked { .. } => report.counts.acknowledged += 1,
            SendOutcome::Failed { .. } => report.counts.failed += 1,
            SendOutcome::Indeterminate { .. } => report.counts.indeterminate += 1,
        }
    }
    report.counts.read = read_values.len();
    report.counts.final_reads = history.final_reads.len();
    for value in &read_values {
        match status.get(value) {
            Some(Status::Acked) => {}
            Some(Status::Indeterminate) => report.counts.unacknowledged_but_read += 1,
            Some(Status::Failed) => {
                report.counts.unacknowledged_but_read += 1;
                report.counts.failed_but_read += 1;
            }
            None => report.counts.unknown_read += 1,
        }
    }
    if report.counts.unknown_read > 0 {
        report.notes.push(format!(
            "{} value(s) were read that no recorded send wrote",
            report.counts.unknown_read
        ));
    }

    // lost-write: per partition, the values its final reads hold below the high watermark.
    let mut final_values: BTreeMap<Partition, BTreeSet<&Bytes>> = BTreeMap::new();
    for read in &history.final_reads {
        let values = final_values.entry(read.partition).or_default();
        values.extend(read.committed().map(|r| &r.value));
    }
    let mut unread_partitions: BTreeMap<Partition, usize> = BTreeMap::new();
    for &(value, partition, offset, _, acked_at) in &acks {
        let present = final_values
            .get(&partition)
            .is_some_and(|values| values.contains(value));
        if !present {
            if !final_values.contains_key(&partition) {
                *unread_partitions.entry(partition).or_default() += 1;
            }
            report.push(
                Anomaly::LostWrite {
                    partition,
                    offset,
                    value: value.clone(),
                    acked_at,
                },
                max,
            );
        }
    }
    for (partition, lost) in unread_partitions {
        report.notes.push(format!(
            "partition {partition} has no final read: its {lost} acknowledged write(s) count \
             as lost"
        ));
    }

    // duplicate.
    for (value, places) in &places_of {
        if places.len() > 1 {
            report.push(
                Anomaly::Duplicate {
                    value: (*value).clone(),
                    places: places.iter().copied().collect(),
                },
                max,
            );
        }
    }

    // inconsistent-offsets.
    for (&(partition, offset), values) in &at_place {
        if values.len() > 1 {
            report.push(
                Anomaly::InconsistentOffsets {
                    partition,
                    offset,
                    values: values
                        .iter()
                        .map(|(v, who)| ((*v).clone(), who.iter().copied().collect()))
                        .collect(),
                },
                max,
            );
        }
    }

    // nonmonotonic-poll and poll-skip. An offset is known to hold a record if it was
    // acknowledged or a final read has it below the high watermark.
    let mut known: BTreeMap<Partition, BTreeSet<i64>> = BTreeMap::new();
    for &(_, partition, offset, _, _) in &acks {
        known.entry(partition).or_default().insert(offset);
    }
    for read in &history.final_reads {
        known
            .entry(read.partition)
            .or_default()
            .extend(read.committed().map(|r| r.offset));
    }
    let mut last: BTreeMap<(usize, u64, Partition), i64> = BTreeMap::new();
    for poll in &history.polls {
        for r in &poll.records {
            let key = (poll.consumer, poll.session, r.partition);
            if let Some(&previous) = last.get(&key) {
                if r.offset <= previous {
                    report.push(
                        Anomaly::NonmonotonicPoll {
                            consumer: poll.consumer,
                            session: poll.session,
                            partition: r.partition,
                            previous,
                            offset: r.offset,
                            at: poll.at,
                        },
                        max,
                    );
                } else if r.offset > previous + 1 {
                    let skipped: Vec<i64> = known
                        .get(&r.partition)
                        .map(|k| k.range(previous + 1..r.offset).copied().collect())
                        .unwrap_or_default();
                    if !skipped.is_empty() {
                        report.push(
                            Anomaly::PollSkip {
                                consumer: poll.consumer,
                                session: poll.session,
                                partition: r.partition,
                                previous,
                                offset: r.offset,
                                skipped_count: skipped.len(),
                                skipped: skipped.into_iter().take(8).collect(),
                                at: poll.at,
                            },
                            max,
                        );
                    }
                }
            }
            last.insert(key, r.offset);
        }
    }

    // nonmonotonic-send: per producer and partition, acknowledged offsets in send order.
    // (sequence number, offset, value) of each acknowledged send.
    type Sent<'a> = Vec<(u64, i64, &'a Bytes)>;
    let mut sent: BTreeMap<(usize, Partition), Sent<'_>> = BTreeMap::new();
    for send in &history.sends {
        if let (Some(seq), SendOutcome::Acked { partition, offset }) = (send.seq, &send.outcome) {
            sent.entry((send.producer, *partition))
                .or_default()
                .push((seq, *offset, &send.value));
        }
    }
    for ((producer, partition), mut sends) in sent {
        sends.sort_unstable_by_key(|&(seq, _, _)| seq);
        for pair in sends.windows(2) {
            let ((s1, o1, v1), (s2, o2, v2)) = (pair[0], pair[1]);
            if o2 <= o1 {
                report.push(
                    Anomaly::NonmonotonicSend {
                        producer,
                        partition,
                        earlier: (s1, o1, v1.clone()),
                        later: (s2, o2, v2.clone()),
                    },
                    max,
                );
            }
        }
    }

    // divergence: every pair of in-sync replica reads of a partition.
    let mut replica_reads: BTreeMap<Partition, Vec<(BrokerId, &FinalRead)>> = BTreeMap::new();
    for read in &history.final_reads {
        if let ReadSource::Replica(broker) = read.source {
            if history.in_isr(read.source, read.partition) {
                replica_reads
                    .entry(read.partition)
                    .or_default()
                    .push((broker, read));
            }
        }
    }
    for (partition, reads) in &replica_reads {
        for (i, &(broker_a, a)) in reads.iter().enumerate() {
            for &(broker_b, b) in &reads[i + 1..] {
                if let Some(anomaly) = diverge(*partition, (broker_a, a), (broker_b, b)) {
                    report.push(anomaly, max);
                }
            }
        }
    }

    report
}

/// The end of what a read covers: its high watermark, else one past its last record.
fn covered_end(read: &FinalRead) -> i64 {
    read.high_watermark
        .unwrap_or_else(|| read.records.last().map_or(0, |r| r.offset + 1))
}

/// Compares two replicas' reads of a partition over the offsets both cover below both high
/// watermarks (from the later of their first offsets: retention may have removed more on one).
fn diverge(
    partition: Partition,
    (broker_a, a): (BrokerId, &FinalRead),
    (broker_b, b): (BrokerId, &FinalRead),
) -> Option<Anomaly> {
    let end = covered_end(a).min(covered_end(b));
    let start = match (a.records.first(), b.records.first()) {
        (Some(x), Some(y)) => x.offset.max(y.offset),
        // One side is empty: everything the other has below the end is missing there.
        (Some(x), None) | (None, Some(x)) => x.offset,
        (None, None) => return None,
    };
    let in_range = |read: &'_ FinalRead| -> BTreeMap<i64, (Bytes, Option<Bytes>)> {
        read.records
            .iter()
            .filter(|r| r.offset >= start && r.offset < end)
            .map(|r| (r.offset, (r.value.clone(), r.rest.clone())))
            .collect()
    };
    let (left, right) = (in_range(a), in_range(b));
    let offsets: BTreeSet<i64> = left.keys().chain(right.keys()).copied().collect();
    let mut first = None;
    let mut differing = 0;
    for offset in offsets {
        let (x, y) = (left.get(&offset), right.get(&offset));
        let same = match (x, y) {
            (Some((vx, rx)), Some((vy, ry))) => {
                vx == vy && (rx.is_none() || ry.is_none() || rx == ry)
            }
            _ => false,
        };
        if !same {
            differing += 1;
            if first.is_none() {
                first = Some((offset, x.map(|(v, _)| v.clone()), y.map(|(v, _)| v.clone())));
            }
        }
    }
    first.map(|(offset, x, y)| Anomaly::Divergence {
        partition,
        offset,
        first: (broker_a, x),
        second: (broker_b, y),
        differing_offsets: differing,
    })
}
