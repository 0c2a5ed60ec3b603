//! Jepsen's transactional anomalies, for fault tests of transactions.
//!
//! A [`TxnWorkload`] runs transactional producers that write small transactions of unique
//! values over a topic's partitions and end each one with a commit or an abort, and
//! read_committed consumers that poll all along. Every transaction's values, when its commit
//! was asked for and how it ended (committed, aborted, or unknown when the producer failed
//! in between) go into a [`TxnHistory`], with every value the consumers saw and when. After
//! the faults heal, [`final_read_committed`] waits until no transaction is open any more and
//! reads every partition with read_committed; [`check_transactions`] then names:
//!
//! - **aborted-read**: a value of an aborted transaction seen by a read_committed reader;
//! - **torn-transaction**: some but not all values of one transaction in the final read (a
//!   transaction is all or nothing, whatever its client was told);
//! - **precommitted-read**: a value seen before its transaction's commit was even asked for;
//! - **lost-write**: a value of a transaction whose commit was acknowledged, missing from the
//!   final read;
//! - **duplicate**: one value at two offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::{
    Admin, ClientConfig, IsolationLevel, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a transaction ended, as its producer knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Not ended yet.
    Open,
    /// `commit_transaction` returned Ok.
    Committed,
    /// `abort_transaction` returned Ok.
    Aborted,
    /// The producer failed before it was told (commit may or may not have happened).
    Unknown,
}

/// One transaction of the workload.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    /// `p<producer>-t<n>`.
    pub name: String,
    /// Values written (each unique in the whole history), with their partitions.
    pub values: Vec<(i32, String)>,
    /// When `commit_transaction` was called (None: never; an abort, or a failure before).
    pub commit_asked: Option<Instant>,
    /// How it ended.
    pub outcome: TxnOutcome,
}

/// A value a read_committed consumer returned, and when.
#[derive(Debug, Clone)]
pub struct SeenValue {
    /// Partition and offset.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The value.
    pub value: String,
    /// When the poll returned it.
    pub at: Instant,
}

/// Everything the transactional workload and the final read recorded.
#[derive(Debug, Default)]
pub struct TxnHistory {
    /// Every transaction, by name.
    pub transactions: BTreeMap<String, TxnRecord>,
    /// What the consumers saw while the workload ran.
    pub polled: Vec<SeenValue>,
    /// What the final read_committed read found, per partition in offset order.
    pub final_read: BTreeMap<i32, Vec<(i64, String)>>,
    /// Notes for the report (faults injected, producers restarted).
    pub notes: Vec<String>,
}

/// The shared, growing history.
#[derive(Debug, Clone, Default)]
pub struct TxnRecorder(Arc<Mutex<TxnHistory>>);

impl TxnRecorder {
    /// An empty history.
    pub fn new() -> Self {
        TxnRecorder::default()
    }

    /// Runs `f` on the history.
    pub fn with<T>(&self, f: impl FnOnce(&mut TxnHistory) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Adds a note (a fault, a restart) to the report.
    pub fn note(&self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("[txn jepsen] {note}");
        self.with(|h| h.notes.push(note));
    }

    fn begin(&self, name: &str) {
        self.with(|h| {
            h.transactions.insert(
                name.to_string(),
                TxnRecord {
                    name: name.to_string(),
                    values: Vec::new(),
                    commit_asked: None,
                    outcome: TxnOutcome::Open,
                },
            );
        });
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut TxnRecord)) {
        self.with(|h| {
            if let Some(t) = h.transactions.get_mut(name) {
                f(t);
            }
        });
    }

    /// Transactions that ended, by outcome: (committed, aborted, unknown).
    pub fn ended(&self) -> (usize, usize, usize) {
        self.with(|h| {
            let count = |o: TxnOutcome| h.transactions.values().filter(|t| t.outcome == o).count();
            (
                count(TxnOutcome::Committed),
                count(TxnOutcome::Aborted),
                count(TxnOutcome::Unknown),
            )
        })
    }
}

/// Transactional producers and read_committed consumers over one topic.
#[derive(Debug, Clone)]
pub struct TxnWorkload {
    bootstrap: String,
    topic: String,
    partitions: i32,
    producers: usize,
    consumers: usize,
    values_per_transaction: usize,
    /// One transaction in this many is aborted on purpose.
    abort_every: u64,
    transaction_timeout: Duration,
}

impl TxnWorkload {
    /// Two producers, one consumer, transactions of four values, every fourth aborted.
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        TxnWorkload {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            partitions,
            producers: 2,
            consumers: 1,
            values_per_transaction: 4,
            abort_every: 4,
            transaction_timeout: Duration::from_secs(10),
        }
    }

    /// The number of transactional producers (each with its own transactional id).
    pub fn producers(mut self, n: usize) -> Self {
        self.producers = n;
        self
    }

    /// The producers' `transaction.timeout.ms`: how long a transaction left open by a failed
    /// producer holds the last stable offset back.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    fn client(&self, client_id: &str) -> anyhow::Result<ClientConfig> {
        ClientConfig::builder(self.bootstrap.split(',').map(str::to_string))
            .client_id(client_id)
            .request_timeout(Duration::from_secs(5))
            .build()
            .context("a client configuration")
    }

    /// Starts the producers and consumers as tasks, recording into `recorder`.
    pub fn start(self, recorder: TxnRecorder) -> RunningTxnWorkload {
        let (stop_tx, stop) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(0u64);
        let ended_tx = Arc::new(ended_tx);
        let producers = (0..self.producers)
            .map(|i| {
                tokio::spawn(produce(
                    self.clone(),
                    i,
                    recorder.clone(),
                    stop.clone(),
                    ended_tx.clone(),
                ))
            })
            .collect();
        let consumers = (0..self.consumers)
            .map(|i| tokio::spawn(consume(self.clone(), i, recorder.clone(), stop.clone())))
            .collect();
        RunningTxnWorkload {
            stop: stop_tx,
            ended,
            producers,
            consumers,
        }
    }
}

/// A started [`TxnWorkload`]; dropping it aborts its tasks.
pub struct RunningTxnWorkload {
    stop: watch::Sender<bool>,
    ended: watch::Receiver<u64>,
    producers: Vec<JoinHandle<anyhow::Result<()>>>,
    consumers: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl RunningTxnWorkload {
    /// Waits until `n` transactions have ended (any outcome) in all; false after `within`.
    pub async fn wait_for_ended(&mut self, n: u64, within: Duration) -> bool {
        tokio::time::timeout(within, self.ended.wait_for(|ended| *ended >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Transactions ended so far.
    pub fn ended(&self) -> u64 {
        *self.ended.borrow()
    }

    /// Stops the producers (each ends its open transaction) and the consumers.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut failures = Vec::new();
        for (i, task) in std::mem::take(&mut self.producers).into_iter().enumerate() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("producer {i}: {e:#}")),
                Err(e) => failures.push(format!("producer {i} panicked: {e}")),
            }
        }
        for (i, task) in std::mem::take(&mut self.consumers).into_iter().enumerate() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("consumer {i}: {e:#}")),
                Err(e) => failures.push(format!("consumer {i} panicked: {e}")),
            }
        }
        if !failures.is_empty() {
            bail!("the transactional workload failed: {}", failures.join("; "));
        }
        Ok(())
    }
}

impl Drop for RunningTxnWorkload {
    fn drop(&mut self) {
        for task in &self.producers {
            task.abort();
        }
        for task in &self.consumers {
            task.abort();
        }
    }
}

/// One producer: transactions until stopped. A failure makes the transaction's outcome
/// unknown and the producer is created again (InitProducerId fences the failed one and aborts
/// what it left open, as an application restarting would).
async fn produce(
    w: TxnWorkload,
    index: usize,
    recorder: TxnRecorder,
    stop: watch::Receiver<bool>,
    ended: Arc<watch::Sender<u64>>,
) -> anyhow::Result<()> {
    let transactional_id = format!("jepsen-txn-{index}");
    let deadline_to_start = Instant::now() + Duration::from_secs(60);
    let mut producer: Option<Producer> = None;
    let mut n = 0u64;
    while !*stop.borrow() {
        let current = match producer.take() {
            Some(p) => p,
            None => {
                let config = ProducerConfig::builder(w.client(&format!("jepsen-txn-{index}"))?)
                    .transactional_id(transactional_id.as_str())
                    .transaction_timeout_ms(
                        u64::try_from(w.transaction_timeout.as_millis()).unwrap_or(u64::MAX),
                    )
                    .delivery_timeout_ms(15_000)
                    .build()
                    .context("a transactional producer configuration")?;
                match Producer::connect(config).await {
                    Ok(p) => p,
                    Err(e) => {
                        if Instant::now() > deadline_to_start && n == 0 {
                            bail!("producer {index} never started: {e}");
                        }
                        recorder.note(format!("producer {index} cannot start yet: {e}"));
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                }
            }
        };
        let name = format!("p{index}-t{n}");
        n += 1;
        recorder.begin(&name);
        let abort = n.is_multiple_of(w.abort_every);
        let result = one_transaction(&w, &current, &recorder, &name, abort).await;
        let outcome = match result {
            Ok(()) if abort => TxnOutcome::Aborted,
            Ok(()) => TxnOutcome::Committed,
            Err(e) => {
                recorder.note(format!(
                    "transaction {name}: {e}; producer {index} restarts"
                ));
                TxnOutcome::Unknown
            }
        };
        recorder.update(&name, |t| t.outcome = outcome);
        ended.send_modify(|e| *e += 1);
        if outcome == TxnOutcome::Unknown {
            let _ = tokio::time::timeout(Duration::from_secs(2), current.close()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            producer = Some(current);
        }
    }
    if let Some(p) = producer {
        let _ = tokio::time::timeout(Duration::from_secs(5), p.close()).await;
    }
    Ok(())
}

async fn one_transaction(
    w: &TxnWorkload,
    producer: &Producer,
    recorder: &TxnRecorder,
    name: &str,
    abort: bool,
) -> anyhow::Result<()> {
    producer.begin_transaction()?;
    let mut deliveries = Vec::new();
    for i in 0..w.values_per_transaction {
        // Spread over the partitions, starting where the transaction number says.
        let partition = i32::try_from(i).unwrap_or(0) % w.partitions;
        let value = format!("{name}-v{i}");
        recorder.update(name, |t| t.values.push((partition, value.clone())));
        deliveries.push(
            producer
                .send(
                    ProducerRecord::new(w.topic.as_str(), value.into_bytes()).partition(partition),
                )
                .await?,
        );
    }
    if abort {
        producer.abort_transaction().await?;
    } else {
        recorder.update(name, |t| t.commit_asked = Some(Instant::now()));
        producer.commit_transaction().await?;
    }
    drop(deliveries);
    Ok(())
}

fn read_committed_consumer(client: ClientConfig) -> anyhow::Result<ConsumerConfig> {
    ConsumerConfig::builder(client)
        .isolation_level(IsolationLevel::ReadCommitted)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100))
        .build()
        .context("a read_committed consumer configuration")
}

/// One read_committed consumer assigned every partition, polling until stopped.
async fn consume(
    w: TxnWorkload,
    index: usize,
    recorder: TxnRecorder,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = w.client(&format!("jepsen-txn-reader-{index}"))?;
    let mut consumer = Consumer::connect(read_committed_consumer(client)?)
        .await
        .context("the read_committed consumer connects")?;
    let tps: Vec<TopicPartition> = (0..w.partitions)
        .map(|p| TopicPartition::new(w.topic.as_str(), p))
        .collect();
    consumer.assign(&tps)?;
    consumer.seek_to_beginning(&tps)?;
    while !*stop.borrow() {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => {
                let at = Instant::now();
                recorder.with(|h| {
                    h.polled.extend(records.into_iter().map(|r| SeenValue {
                        partition: r.partition,
                        offset: r.offset,
                        value: String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned(),
                        at,
                    }));
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
    Ok(())
}

/// Waits until no transaction holds any partition back (the last stable offset equals the
/// high watermark everywhere; a transaction left open by a failed producer is aborted by its
/// coordinator after its timeout), then reads every partition with read_committed into the
/// history. Gives up after `within`.
pub async fn final_read_committed(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    recorder: &TxnRecorder,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let client = ClientConfig::builder(bootstrap.split(',').map(str::to_string))
        .client_id("jepsen-txn-final-read")
        .build()
        .context("a client configuration")?;
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let latest: Vec<(TopicPartition, OffsetSpec)> = tps
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let admin = Admin::connect(client.clone()).await?;
    let ends: BTreeMap<i32, i64> = loop {
        let both = async {
            let high = admin.list_offsets(&latest).await?;
            let stable = admin
                .list_offsets_with_isolation(&latest, IsolationLevel::ReadCommitted)
                .await?;
            anyhow::Ok((high, stable))
        };
        match both.await {
            Ok((high, stable)) if tps.iter().all(|tp| {
                high.get(tp).map(|o| o.offset) == stable.get(tp).map(|o| o.offset)
            }) =>
            {
                break high
                    .into_iter()
                    .map(|(tp, o)| (tp.partition, o.offset))
                    .collect()
            }
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok((high, stable)) => bail!(
                "transactions still open after {within:?}: high watermarks {high:?}, last stable offsets {stable:?}"
            ),
            Err(e) => return Err(e).context("the end offsets of the final read"),
        }
    };
    let mut consumer = Consumer::connect(read_committed_consumer(client)?).await?;
    consumer.assign(&tps)?;
    consumer.seek_to_beginning(&tps)?;
    let mut read: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let done = |consumer: &Consumer| {
        tps.iter().all(|tp| {
            consumer
                .position(tp)
                .is_some_and(|p| p >= ends.get(&tp.partition).copied().unwrap_or(0))
        })
    };
    while !done(&consumer) {
        if Instant::now() >= deadline {
            bail!(
                "the final read_committed read of {topic} did not reach {ends:?} within {within:?}"
            );
        }
        if let Ok(records) = consumer.poll(Duration::from_millis(200)).await {
            for r in records {
                read.entry(r.partition).or_default().push((
                    r.offset,
                    String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned(),
                ));
            }
        }
    }
    let _ = consumer.close().await;
    recorder.with(|h| h.final_read = read);
    Ok(())
}

/// One anomaly, with an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnAnomaly {
    /// Jepsen's name for it.
    pub kind: &'static str,
    /// What happened.
    pub detail: String,
}

/// What [`check_transactions`] found.
#[derive(Debug, Clone, Default)]
pub struct TxnReport {
    /// Transactions by outcome: committed, aborted, unknown, still open.
    pub committed: usize,
    /// Aborted.
    pub aborted: usize,
    /// Unknown outcome, of which these many turned out committed (all values visible).
    pub unknown: usize,
    /// Unknown-outcome transactions whose values are all visible.
    pub unknown_visible: usize,
    /// Values the consumers saw while the workload ran.
    pub polled: usize,
    /// Values in the final read.
    pub final_values: usize,
    /// Every anomaly (at most 20 kept per kind).
    pub anomalies: Vec<TxnAnomaly>,
    /// The notes of the run.
    pub notes: Vec<String>,
}

impl TxnReport {
    /// Panics with the whole report if any anomaly was found.
    pub fn assert_valid(&self) {
        assert!(self.anomalies.is_empty(), "{self}");
    }
}

impl fmt::Display for TxnReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "transactions: {} committed, {} aborted, {} unknown ({} of them visible); {} values polled, {} in the final read",
            self.committed, self.aborted, self.unknown, self.unknown_visible, self.polled, self.final_values
        )?;
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &self.anomalies {
            *by_kind.entry(a.kind).or_default() += 1;
        }
        writeln!(f, "anomalies: {by_kind:?}")?;
        for a in &self.anomalies {
            writeln!(f, "  {}: {}", a.kind, a.detail)?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

/// Checks a transactional history (see the module docs for what each anomaly means).
pub fn check_transactions(history: &TxnHistory) -> TxnReport {
    let mut report = TxnReport {
        notes: history.notes.clone(),
        polled: history.polled.len(),
        ..TxnReport::default()
    };
    let mut found = |kind: &'static str, detail: String| {
        if report.anomalies.iter().filter(|a| a.kind == kind).count() < 20 {
            report.anomalies.push(TxnAnomaly { kind, detail });
        }
    };
    // Which transaction wrote each value.
    let mut writer: HashMap<&str, &TxnRecord> = HashMap::new();
    for t in history.transactions.values() {
        for (_, v) in &t.values {
            writer.insert(v.as_str(), t);
        }
    }
    // The final read: where each value is.
    let mut at: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    let mut final_values = 0;
    for (partition, records) in &history.final_read {
        for (offset, value) in records {
            final_values += 1;
            at.entry(value.as_str())
                .or_default()
                .push((*partition, *offset));
        }
    }
    report.final_values = final_values;
    for (value, places) in &at {
        if places.len() > 1 {
            found("duplicate", format!("{value} at {places:?}"));
        }
        if !writer.contains_key(value) {
            found(
                "unexpected",
                format!("{value} at {places:?} was never written"),
            );
        }
    }
    for t in history.transactions.values() {
        let visible: Vec<&str> = t
            .values
            .iter()
            .map(|(_, v)| v.as_str())
            .filter(|v| at.contains_key(v))
            .collect();
        let missing: Vec<&str> = t
            .values
            .iter()
            .map(|(_, v)| v.as_str())
            .filter(|v| !at.contains_key(v))
            .collect();
        match t.outcome {
            TxnOutcome::Committed => report.committed += 1,
            TxnOutcome::Aborted => report.aborted += 1,
            TxnOutcome::Unknown | TxnOutcome::Open => {
                report.unknown += 1;
                if missing.is_empty() && !t.values.is_empty() {
                    report.unknown_visible += 1;
                }
            }
        }
        if t.outcome == TxnOutcome::Aborted && !visible.is_empty() {
            found(
                "aborted-read",
                format!("{} was aborted, yet the final read has {visible:?}", t.name),
            );
        }
        if t.outcome == TxnOutcome::Committed && !missing.is_empty() {
            found(
                "lost-write",
                format!(
                    "{} was committed, yet {missing:?} are not in the final read",
                    t.name
                ),
            );
        }
        if !visible.is_empty() && !missing.is_empty() {
            found(
                "torn-transaction",
                format!("{}: {visible:?} visible, {missing:?} not", t.name),
            );
        }
    }
    // What the consumers saw while transactions ran.
    let mut seen_aborted = BTreeSet::new();
    for seen in &history.polled {
        let Some(t) = writer.get(seen.value.as_str()) else {
            found(
                "unexpected",
                format!(
                    "{} polled at {}-{} was never written",
                    seen.value, seen.partition, seen.offset
                ),
            );
            continue;
        };
        if t.outcome == TxnOutcome::Aborted && seen_aborted.insert(t.name.as_str()) {
            found(
                "aborted-read",
                format!(
                    "{} (aborted) polled at {}-{}",
                    seen.value, seen.partition, seen.offset
                ),
            );
        }
        let early = match t.commit_asked {
            None => true,
            Some(asked) => seen.at < asked,
        };
        if early {
            found(
                "precommitted-read",
                format!(
                    "{} of {} polled at {}-{} before its commit was asked for",
                    seen.value, t.name, seen.partition, seen.offset
                ),
            );
        }
    }
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn txn(name: &str, outcome: TxnOutcome, asked: Option<Instant>) -> TxnRecord {
        TxnRecord {
            name: name.to_string(),
            values: (0..2).map(|i| (i, format!("{name}-v{i}"))).collect(),
            commit_asked: asked,
            outcome,
        }
    }

    fn history(transactions: Vec<TxnRecord>, final_values: &[&str]) -> TxnHistory {
        let mut h = TxnHistory::default();
        for t in transactions {
            h.transactions.insert(t.name.clone(), t);
        }
        for (offset, v) in final_values.iter().enumerate() {
            h.final_read
                .entry(0)
                .or_default()
                .push((i64::try_from(offset).unwrap(), (*v).to_string()));
        }
        h
    }

    fn kinds(report: &TxnReport) -> Vec<&'static str> {
        report.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let now = Instant::now();
        let mut h = history(
            vec![
                txn("c", TxnOutcome::Committed, Some(now)),
                txn("a", TxnOutcome::Aborted, None),
                txn("u", TxnOutcome::Unknown, Some(now)),
            ],
            &["c-v0", "c-v1", "u-v0", "u-v1"],
        );
        h.polled.push(SeenValue {
            partition: 0,
            offset: 0,
            value: "c-v0".into(),
            at: now + Duration::from_millis(5),
        });
        let report = check_transactions(&h);
        report.assert_valid();
        assert_eq!(
            (report.committed, report.aborted, report.unknown),
            (1, 1, 1)
        );
        assert_eq!(report.unknown_visible, 1);
    }

    #[test]
    fn each_anomaly_is_named() {
        let now = Instant::now();
        // Aborted yet visible; committed yet half missing; unknown and torn.
        let h = history(
            vec![
                txn("a", TxnOutcome::Aborted, None),
                txn("c", TxnOutcome::Committed, Some(now)),
                txn("u", TxnOutcome::Unknown, Some(now)),
            ],
            &["a-v0", "c-v0", "u-v1", "c-v0"],
        );
        let found = kinds(&check_transactions(&h));
        for kind in [
            "aborted-read",
            "lost-write",
            "torn-transaction",
            "duplicate",
        ] {
            assert!(found.contains(&kind), "{kind} not in {found:?}");
        }
        // Seen before its commit was asked for.
        let mut h = history(
            vec![txn("c", TxnOutcome::Committed, Some(now))],
            &["c-v0", "c-v1"],
        );
        h.polled.push(SeenValue {
            partition: 0,
            offset: 0,
            value: "c-v0".into(),
            at: now - Duration::from_millis(1),
        });
        assert_eq!(kinds(&check_transactions(&h)), vec!["precommitted-read"]);
    }
}
