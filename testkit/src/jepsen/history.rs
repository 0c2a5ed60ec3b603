//! What a fault test saw: every producer send with its outcome, every consumer poll, and the
//! final reads of every partition (through the leader, and from each replica once replicas
//! can be read one by one).
//!
//! A [`History`] is plain data: the workload fills it through a [`Recorder`] (a shared handle
//! that tasks on several threads write to), and [`super::check`] reads it. Tests of the checker
//! build histories by hand with the same methods.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A partition index (a history is about one topic).
pub type Partition = i32;

/// A broker's `node.id`.
pub type BrokerId = i32;

/// What became of one producer send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The broker acknowledged the write at this place (with acks=all: the whole ISR has it).
    Acked {
        /// The partition it was written to.
        partition: Partition,
        /// Its offset.
        offset: i64,
    },
    /// Definitely not written: the client refused the record before sending it.
    Failed {
        /// Why.
        error: String,
    },
    /// Unknown: the send failed after the record may have reached a broker (a timeout, a broken
    /// connection, retries exhausted). The value may or may not show up in reads; either is
    /// fine.
    Indeterminate {
        /// Why.
        error: String,
    },
}

/// One producer send and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The producer's index in the workload.
    pub producer: usize,
    /// The place of this send among the producer's sends (0, 1, 2, ... in the order `send`
    /// was called), when known: an idempotent producer's acknowledged offsets in a partition
    /// must grow in this order.
    pub seq: Option<u64>,
    /// The partition the record was sent to, if the producer chose one.
    pub partition: Option<Partition>,
    /// The value: unique per write, which is what lets the checker tell writes apart.
    pub value: Bytes,
    /// What the producer was told.
    pub outcome: SendOutcome,
    /// When the outcome was known, since the recorder started (set by [`Recorder`]).
    pub at: Option<Duration>,
}

/// One record a consumer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolledRecord {
    /// The partition.
    pub partition: Partition,
    /// The offset.
    pub offset: i64,
    /// The value.
    pub value: Bytes,
}

/// One call of a consumer's poll that returned records, in the order the consumer returned
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// The consumer's index in the workload.
    pub consumer: usize,
    /// The consumer's session: a number that changes whenever the consumer's position may
    /// legitimately move back (a new assignment after a rebalance, a restart, a seek). Offsets
    /// are compared only within one session.
    pub session: u64,
    /// The records, in the order the poll returned them.
    pub records: Vec<PolledRecord>,
    /// When the poll returned, since the recorder started (set by [`Recorder`]).
    pub at: Option<Duration>,
}

/// Something a test did (a fault, a heal), with when, for the report's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When, since the recorder started.
    pub at: Duration,
    /// What, in a few words ("kill -9 broker 2").
    pub what: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>8.3}s {}", self.at.as_secs_f64(), self.what)
    }
}

/// One record of a final read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// The offset.
    pub offset: i64,
    /// The value.
    pub value: Bytes,
    /// The rest of the record as the replica stores it (key, timestamp, headers, in any fixed
    /// encoding the reader chooses), when the reader can see it: two replicas whose `rest`
    /// differs diverge even if the values agree. `None` when the reader only had the value.
    pub rest: Option<Bytes>,
}

impl ReplicaRecord {
    /// A record with only a value known.
    pub fn new(offset: i64, value: impl Into<Bytes>) -> Self {
        ReplicaRecord {
            offset,
            value: value.into(),
            rest: None,
        }
    }
}

/// Where a final read came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReadSource {
    /// Through the client: whichever broker led the partition at the time.
    Leader,
    /// From one broker's replica of the partition.
    Replica(BrokerId),
}

impl fmt::Display for ReadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadSource::Leader => write!(f, "leader"),
            ReadSource::Replica(id) => write!(f, "broker {id}"),
        }
    }
}

/// Everything one source held for one partition, read after the faults healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalRead {
    /// Who was read.
    pub source: ReadSource,
    /// The partition.
    pub partition: Partition,
    /// The records, in offset order.
    pub records: Vec<ReplicaRecord>,
    /// The high watermark the source reported, when known. Records at or past it are not
    /// committed: the checker neither counts them as reads nor compares them.
    pub high_watermark: Option<i64>,
}

impl FinalRead {
    /// The records below the high watermark (all of them when it is unknown).
    pub fn committed(&self) -> impl Iterator<Item = &ReplicaRecord> {
        let hw = self.high_watermark.unwrap_or(i64::MAX);
        self.records.iter().filter(move |r| r.offset < hw)
    }
}

/// A fault test's observations. Build it through a [`Recorder`] while the workload runs; hand
/// it to [`super::check`] afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Every send whose outcome is known, in completion order.
    pub sends: Vec<Send>,
    /// Every poll that returned records, in the order they were recorded.
    pub polls: Vec<Poll>,
    /// The final reads.
    pub final_reads: Vec<FinalRead>,
    /// The in-sync replicas of each partition when the replicas were read, if the test
    /// recorded them. A partition without an entry counts every replica read as in sync
    /// (after the faults heal and the cluster settles, every replica should be).
    pub isr: BTreeMap<Partition, Vec<BrokerId>>,
    /// What the test did and when ([`Recorder::note`]).
    pub events: Vec<Event>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Records an acknowledged send.
    pub fn acked(
        &mut self,
        producer: usize,
        value: impl Into<Bytes>,
        partition: Partition,
        offset: i64,
    ) {
        self.sends.push(Send {
            producer,
            seq: None,
            partition: Some(partition),
            value: value.into(),
            outcome: SendOutcome::Acked { partition, offset },
            at: None,
        });
    }

    /// Records a send that definitely did not happen.
    pub fn failed(
        &mut self,
        producer: usize,
        value: impl Into<Bytes>,
        partition: Option<Partition>,
        error: impl Into<String>,
    ) {
        self.sends.push(Send {
            producer,
            seq: None,
            partition,
            value: value.into(),
            outcome: SendOutcome::Failed {
                error: error.into(),
            },
            at: None,
        });
    }

    /// Records a send whose outcome is unknown.
    pub fn indeterminate(
        &mut self,
        producer: usize,
        value: impl Into<Bytes>,
        partition: Option<Partition>,
        error: impl Into<String>,
    ) {
        self.sends.push(Send {
            producer,
            seq: None,
            partition,
            value: value.into(),
            outcome: SendOutcome::Indeterminate {
                error: error.into(),
            },
            at: None,
        });
    }

    /// Records a poll of `consumer` in `session` (nothing is recorded for an empty poll).
    pub fn poll(&mut self, consumer: usize, session: u64, records: Vec<PolledRecord>) {
        if !records.is_empty() {
            self.polls.push(Poll {
                consumer,
                session,
                records,
                at: None,
            });
        }
    }

    /// Records a final read of `partition` through the client (the partition's leader).
    pub fn record_leader_read(
        &mut self,
        partition: Partition,
        records: Vec<ReplicaRecord>,
        high_watermark: Option<i64>,
    ) {
        self.final_reads.push(FinalRead {
            source: ReadSource::Leader,
            partition,
            records,
            high_watermark,
        });
    }

    /// Records a final read of `partition` from the replica on broker `broker`, with the
    /// high watermark that replica knew (the hook for per-replica reads once partitions are
    /// replicated: the checker compares such reads for divergence).
    pub fn record_replica_read(
        &mut self,
        broker: BrokerId,
        partition: Partition,
        records: Vec<ReplicaRecord>,
        high_watermark: Option<i64>,
    ) {
        self.final_reads.push(FinalRead {
            source: ReadSource::Replica(broker),
            partition,
            records,
            high_watermark,
        });
    }

    /// Records that the test did `what` at `at`.
    pub fn note(&mut self, at: Duration, what: impl Into<String>) {
        self.events.push(Event {
            at,
            what: what.into(),
        });
    }

    /// Records the in-sync replicas of `partition` at the time of the final reads.
    pub fn set_isr(&mut self, partition: Partition, isr: Vec<BrokerId>) {
        self.isr.insert(partition, isr);
    }

    /// True if `source`'s read of `partition` is from an in-sync replica (leader reads and
    /// partitions without a recorded ISR count as in sync).
    pub fn in_isr(&self, source: ReadSource, partition: Partition) -> bool {
        match (source, self.isr.get(&partition)) {
            (ReadSource::Replica(id), Some(isr)) => isr.contains(&id),
            _ => true,
        }
    }
}

/// A [`History`] shared by the tasks of a workload: cheap to clone, safe to write from any
/// thread, and a clock: what is recorded through its methods carries the time since the
/// recorder was made, so a report can be read against the test's own [`Recorder::note`]s. A
/// poisoned lock (a task panicked while recording) still yields the history, so the test
/// reports what was seen up to then.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<History>>,
    start: Instant,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            inner: Arc::default(),
            start: Instant::now(),
        }
    }
}

impl Recorder {
    /// A recorder with an empty history; its clock starts now.
    pub fn new() -> Self {
        Recorder::default()
    }

    /// Runs `f` on the history under the lock.
    pub fn with<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        let mut history = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut history)
    }

    /// A copy of the history as it is now.
    pub fn snapshot(&self) -> History {
        self.with(|h| h.clone())
    }

    /// Time since the recorder was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records that the test did `what` now (a fault, a heal), for the report's timeline.
    pub fn note(&self, what: impl Into<String>) {
        let at = self.elapsed();
        self.with(|h| h.note(at, what));
    }

    /// Records the outcome, known now, of send number `seq` of `producer`.
    pub fn send(
        &self,
        producer: usize,
        seq: u64,
        value: impl Into<Bytes>,
        partition: Option<Partition>,
        outcome: SendOutcome,
    ) {
        let at = Some(self.elapsed());
        let value = value.into();
        self.with(|h| {
            h.sends.push(Send {
                producer,
                seq: Some(seq),
                partition,
                value,
                outcome,
                at,
            })
        });
    }

    /// Records a poll that returned now (nothing for an empty poll).
    pub fn poll(&self, consumer: usize, session: u64, records: Vec<PolledRecord>) {
        if records.is_empty() {
            return;
        }
        let at = Some(self.elapsed());
        self.with(|h| {
            h.polls.push(Poll {
                consumer,
                session,
                records,
                at,
            })
        });
    }
}
