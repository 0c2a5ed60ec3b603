//! The workload: producers and consumers against real brokers over TCP, through
//! `millrace-client`, recording everything they see into a [`Recorder`]; and the final read
//! that reads every partition back once the faults have healed.
//!
//! Producers write with acks=all and idempotence, each value unique (`<prefix>-p<producer>-<n>`),
//! round-robin over the partitions, with a window of sends in flight. Consumers poll: some
//! with every partition assigned by hand (they never rebalance, so their offsets must only go
//! forward), the others in one consumer group (each rebalance starts a new session, see
//! [`super::history::Poll::session`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerEvent};
use millrace_client::{
    Acks, ClientConfig, DeliveryFuture, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::history::{PolledRecord, Recorder, ReplicaRecord, SendOutcome};

/// What to run. Build it with [`Workload::new`] and the setters, then [`Workload::start`] it.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `HOST:PORT,HOST:PORT` of the brokers.
    pub bootstrap: String,
    /// The topic (created beforehand, with `partitions` partitions).
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// How many producers.
    pub producers: usize,
    /// How many consumers with every partition assigned by hand.
    pub assigned_consumers: usize,
    /// How many consumers in the consumer group.
    pub group_consumers: usize,
    /// The consumer group's id.
    pub group_id: String,
    /// Each producer stops after this many sends; `None`: it writes until stopped.
    pub writes_per_producer: Option<u64>,
    /// Each producer's sends per second; `None`: as fast as its window allows.
    pub rate_per_producer: Option<f64>,
    /// How many sends each producer keeps unacknowledged at once.
    pub max_in_flight: usize,
    /// The start of every value; values are `<prefix>-p<producer>-<n>`.
    pub value_prefix: String,
    /// The producers' `delivery.timeout.ms`: how long a send may stay unanswered before it is
    /// recorded as indeterminate.
    pub delivery_timeout: Duration,
    /// How long consumers keep polling after [`RunningWorkload::stop`] to reach the end of
    /// every partition.
    pub drain_timeout: Duration,
    /// The clients' `request.timeout.ms`: how long a request may go unanswered (a paused or
    /// cut-off broker answers nothing) before the client gives up on it and retries, maybe
    /// elsewhere. Kafka requires `delivery.timeout.ms >= linger.ms + request.timeout.ms`: a
    /// send must outlive one unanswered request, or an idempotent producer's batch stuck on a
    /// silent old leader expires instead of being retried on the new one, leaving a gap in
    /// its sequence numbers.
    pub request_timeout: Duration,
}

impl Workload {
    /// Two producers, one consumer assigning every partition and two in a group, writing until
    /// stopped.
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        Workload {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            partitions,
            producers: 2,
            assigned_consumers: 1,
            group_consumers: 2,
            group_id: format!("{topic}-jepsen"),
            writes_per_producer: None,
            rate_per_producer: None,
            max_in_flight: 32,
            value_prefix: topic.to_string(),
            delivery_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the number of producers.
    pub fn producers(mut self, n: usize) -> Self {
        self.producers = n;
        self
    }

    /// Sets the number of consumers assigning every partition and of consumers in the group.
    pub fn consumers(mut self, assigned: usize, in_group: usize) -> Self {
        self.assigned_consumers = assigned;
        self.group_consumers = in_group;
        self
    }

    /// Each producer stops after `n` sends.
    pub fn writes_per_producer(mut self, n: u64) -> Self {
        self.writes_per_producer = Some(n);
        self
    }

    /// Each producer sends at most `per_second` records a second.
    pub fn rate_per_producer(mut self, per_second: f64) -> Self {
        self.rate_per_producer = Some(per_second);
        self
    }

    /// Sets the start of every value (to keep two workloads on one topic apart).
    pub fn value_prefix(mut self, prefix: &str) -> Self {
        self.value_prefix = prefix.to_string();
        self
    }

    fn client(&self, client_id: &str) -> anyhow::Result<ClientConfig> {
        ClientConfig::builder(self.bootstrap.split(',').map(str::to_string))
            .client_id(client_id)
            .request_timeout(self.request_timeout)
            .build()
            .with_context(|| format!("a client configuration for {}", self.bootstrap))
    }

    /// Starts every producer and consumer as a task on the current tokio runtime, recording
    /// into `recorder`.
    pub fn start(self, recorder: Recorder) -> RunningWorkload {
        let (stop_producers, producers_stopped) = watch::channel(false);
        let (stop_consumers, consumers_stopped) = watch::channel(false);
        let (acked_tx, acked) = watch::channel(0u64);
        let acked_tx = std::sync::Arc::new(acked_tx);
        let producers = (0..self.producers)
            .map(|i| {
                let task = ProducerTask {
                    workload: self.clone(),
                    index: i,
                    recorder: recorder.clone(),
                    stop: producers_stopped.clone(),
                    acked: acked_tx.clone(),
                };
                tokio::spawn(task.run())
            })
            .collect();
        let consumers = (0..self.assigned_consumers + self.group_consumers)
            .map(|i| {
                let task = ConsumerTask {
                    workload: self.clone(),
                    index: i,
                    in_group: i >= self.assigned_consumers,
                    recorder: recorder.clone(),
                    stop: consumers_stopped.clone(),
                };
                tokio::spawn(task.run())
            })
            .collect();
        RunningWorkload {
            stop_producers,
            stop_consumers,
            acked,
            producers,
            consumers,
        }
    }
}

/// A started [`Workload`]. Dropping it without [`RunningWorkload::stop`] (a test that failed
/// half-way) aborts its tasks.
pub struct RunningWorkload {
    stop_producers: watch::Sender<bool>,
    stop_consumers: watch::Sender<bool>,
    acked: watch::Receiver<u64>,
    producers: Vec<JoinHandle<anyhow::Result<()>>>,
    consumers: Vec<JoinHandle<anyhow::Result<ConsumerStats>>>,
}

/// What the consumers went through, for a test's log.
#[derive(Debug, Clone, Default)]
pub struct WorkloadSummary {
    /// Poll errors over all consumers (the consumers keep polling after one).
    pub consumer_errors: usize,
    /// The first few of them.
    pub first_consumer_errors: Vec<String>,
    /// Assignment changes seen by the group's consumers.
    pub rebalances: usize,
}

impl RunningWorkload {
    /// Sends acknowledged so far, over all producers.
    pub fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Waits until `n` sends were acknowledged; false if `within` ran out first.
    pub async fn wait_for_acks(&mut self, n: u64, within: Duration) -> bool {
        tokio::time::timeout(within, self.acked.wait_for(|acked| *acked >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops the producers (each waits for the answers to its sends in flight, up to the
    /// delivery timeout), lets the consumers poll up to the end of every partition (up to the
    /// drain timeout), closes everything, and reports the consumers' troubles. An error if a
    /// producer or consumer could not start or a task panicked.
    pub async fn stop(mut self) -> anyhow::Result<WorkloadSummary> {
        let _ = self.stop_producers.send(true);
        let mut failures = Vec::new();
        for (i, task) in std::mem::take(&mut self.producers).into_iter().enumerate() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("producer {i}: {e:#}")),
                Err(e) => failures.push(format!("producer {i} panicked: {e}")),
            }
        }
        let _ = self.stop_consumers.send(true);
        let mut summary = WorkloadSummary::default();
        for (i, task) in std::mem::take(&mut self.consumers).into_iter().enumerate() {
            match task.await {
                Ok(Ok(stats)) => {
                    summary.consumer_errors += stats.errors;
                    summary.rebalances += stats.rebalances;
                    let room = 8usize.saturating_sub(summary.first_consumer_errors.len());
                    summary
                        .first_consumer_errors
                        .extend(stats.first_errors.into_iter().take(room));
                }
                Ok(Err(e)) => failures.push(format!("consumer {i}: {e:#}")),
                Err(e) => failures.push(format!("consumer {i} panicked: {e}")),
            }
        }
        if !failures.is_empty() {
            bail!("the workload failed: {}", failures.join("; "));
        }
        Ok(summary)
    }
}

impl Drop for RunningWorkload {
    fn drop(&mut self) {
        for task in &self.producers {
            task.abort();
        }
        for task in &self.consumers {
            task.abort();
        }
    }
}

struct ProducerTask {
    workload: Workload,
    index: usize,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
    acked: std::sync::Arc<watch::Sender<u64>>,
}

impl ProducerTask {
    async fn run(mut self) -> anyhow::Result<()> {
        let w = &self.workload;
        let client = w.client(&format!("jepsen-producer-{}", self.index))?;
        let mut config = ProducerConfig::builder(client)
            .acks(Acks::All)
            .enable_idempotence(true)
            .linger_ms(1)
            .build()
            .context("a producer configuration")?;
        config.delivery_timeout = w.delivery_timeout;
        let producer = Producer::connect(config)
            .await
            .with_context(|| format!("producer {} connects", self.index))?;
        let mut ticker = w.rate_per_producer.map(|rate| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
            // After a stall (a fault), carry on at the rate rather than catching up in a burst.
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut in_flight: VecDeque<(u64, Bytes, i32, DeliveryFuture)> = VecDeque::new();
        let mut n: u64 = 0;
        loop {
            if *self.stop.borrow() || w.writes_per_producer.is_some_and(|max| n >= max) {
                break;
            }
            if let Some(ticker) = ticker.as_mut() {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = self.stop.changed() => break,
                }
            }
            if in_flight.len() >= w.max_in_flight.max(1) {
                if let Some(oldest) = in_flight.pop_front() {
                    self.settle(oldest).await;
                }
            }
            let value = Bytes::from(format!("{}-p{}-{n}", w.value_prefix, self.index));
            let partition = ((n + self.index as u64) % w.partitions.max(1) as u64) as i32;
            let record = ProducerRecord::new(w.topic.clone(), value.clone()).partition(partition);
            match producer.send(record).await {
                Ok(delivery) => in_flight.push_back((n, value, partition, delivery)),
                // Refused before it left the client: it cannot have been written.
                Err(e) => self.recorder.send(
                    self.index,
                    n,
                    value,
                    Some(partition),
                    SendOutcome::Failed {
                        error: e.to_string(),
                    },
                ),
            }
            n += 1;
        }
        while let Some(oldest) = in_flight.pop_front() {
            self.settle(oldest).await;
        }
        producer.close().await;
        Ok(())
    }

    /// Waits for one send's answer and records it.
    async fn settle(&self, (n, value, partition, delivery): (u64, Bytes, i32, DeliveryFuture)) {
        match delivery.await {
            Ok(metadata) => {
                self.recorder.send(
                    self.index,
                    n,
                    value,
                    Some(partition),
                    SendOutcome::Acked {
                        partition: metadata.partition,
                        offset: metadata.offset,
                    },
                );
                self.acked.send_modify(|n| *n += 1);
            }
            // Any error after the record left the client may follow a write that happened (a
            // timed-out attempt that the broker did apply, then retries that failed), so it
            // proves nothing either way.
            Err(e) => self.recorder.send(
                self.index,
                n,
                value,
                Some(partition),
                SendOutcome::Indeterminate {
                    error: e.to_string(),
                },
            ),
        }
    }
}

struct ConsumerTask {
    workload: Workload,
    index: usize,
    in_group: bool,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct ConsumerStats {
    errors: usize,
    first_errors: Vec<String>,
    rebalances: usize,
}

fn consumer_config(client: ClientConfig, group: Option<&str>) -> anyhow::Result<ConsumerConfig> {
    let mut builder = ConsumerConfig::builder(client)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(200))
        .session_timeout(Duration::from_secs(6))
        .auto_commit_interval(Duration::from_millis(300));
    if let Some(group) = group {
        builder = builder.group_id(group);
    }
    builder.build().context("a consumer configuration")
}

impl ConsumerTask {
    async fn run(self) -> anyhow::Result<ConsumerStats> {
        let w = &self.workload;
        let client = w.client(&format!("jepsen-consumer-{}", self.index))?;
        let group = self.in_group.then_some(w.group_id.as_str());
        let mut consumer = Consumer::connect(consumer_config(client, group)?)
            .await
            .with_context(|| format!("consumer {} connects", self.index))?;
        let partitions: Vec<TopicPartition> = (0..w.partitions)
            .map(|p| TopicPartition::new(w.topic.clone(), p))
            .collect();
        if self.in_group {
            consumer.subscribe(&[w.topic.as_str()])?;
        } else {
            consumer.assign(&partitions)?;
        }
        let mut stats = ConsumerStats::default();
        let mut session: u64 = 0;
        // Where the partitions ended when the producers had stopped: the drain's goal.
        let mut drain: Option<(Instant, BTreeMap<TopicPartition, i64>)> = None;
        loop {
            if drain.is_none() && *self.stop.borrow() {
                let ends = match consumer.offsets_for(&partitions, OffsetSpec::Latest).await {
                    Ok(ends) => ends.into_iter().map(|(tp, o)| (tp, o.offset)).collect(),
                    Err(e) => {
                        stats.error(format!("looking up the end offsets: {e}"));
                        BTreeMap::new()
                    }
                };
                drain = Some((Instant::now() + w.drain_timeout, ends));
            }
            if let Some((deadline, ends)) = &drain {
                let caught_up = consumer.assignment().iter().all(|tp| {
                    let end = ends.get(tp).copied().unwrap_or(0);
                    consumer.position(tp).is_some_and(|p| p >= end)
                });
                if caught_up || Instant::now() >= *deadline {
                    break;
                }
            }
            match consumer.poll_event(Duration::from_millis(200)).await {
                Ok(Some(ConsumerEvent::Records(records))) => {
                    let records = records
                        .into_iter()
                        .map(|r| PolledRecord {
                            partition: r.partition,
                            offset: r.offset,
                            value: r.value.unwrap_or_default(),
                        })
                        .collect();
                    self.recorder.poll(self.index, session, records);
                }
                // A new assignment starts from committed offsets, which may be behind what
                // this consumer read before: a new session.
                Ok(Some(
                    ConsumerEvent::Assigned(_) | ConsumerEvent::Revoked(_) | ConsumerEvent::Lost(_),
                )) => {
                    session += 1;
                    stats.rebalances += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    stats.error(e.to_string());
                    // The broker may be down for a while: do not spin on the error.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Err(e) = consumer.close().await {
            stats.error(format!("closing: {e}"));
        }
        Ok(stats)
    }
}

impl ConsumerStats {
    fn error(&mut self, error: String) {
        self.errors += 1;
        if self.first_errors.len() < 8 {
            self.first_errors.push(error);
        }
    }
}

/// Reads every partition of `topic` from offset 0 to its end through the client (each from
/// its leader) and records each as a leader read, with the end offset as high watermark. Gives
/// up after 60 s.
pub async fn final_read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    recorder: &Recorder,
) -> anyhow::Result<()> {
    final_read_within(
        bootstrap,
        topic,
        partitions,
        recorder,
        Duration::from_secs(60),
    )
    .await
}

/// [`final_read`] with a time limit of `within`.
pub async fn final_read_within(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    recorder: &Recorder,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let client = ClientConfig::builder(bootstrap.split(',').map(str::to_string))
        .client_id("jepsen-final-read")
        .build()
        .context("a client configuration for the final read")?;
    let mut consumer = Consumer::connect(consumer_config(client, None)?)
        .await
        .context("the final read's consumer connects")?;
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(&tps)?;
    consumer.seek_to_beginning(&tps)?;
    // The end offset (the high watermark, reading uncommitted records never being asked for).
    let ends: BTreeMap<i32, i64> = loop {
        match consumer.offsets_for(&tps, OffsetSpec::Latest).await {
            Ok(ends) => {
                break ends
                    .into_iter()
                    .map(|(tp, o)| (tp.partition, o.offset))
                    .collect()
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("final read: end offsets of {topic}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("the end offsets for the final read"),
        }
    };
    let mut read: BTreeMap<i32, Vec<ReplicaRecord>> = BTreeMap::new();
    let done = |read: &BTreeMap<i32, Vec<ReplicaRecord>>, consumer: &Consumer| {
        tps.iter().all(|tp| {
            let end = ends.get(&tp.partition).copied().unwrap_or(0);
            let last = read
                .get(&tp.partition)
                .and_then(|r| r.last())
                .map_or(-1, |r| r.offset);
            last + 1 >= end || consumer.position(tp).is_some_and(|p| p >= end)
        })
    };
    while !done(&read, &consumer) {
        if Instant::now() >= deadline {
            let got: Vec<String> = tps
                .iter()
                .map(|tp| {
                    format!(
                        "{}: {} of end {}",
                        tp.partition,
                        consumer.position(tp).unwrap_or(-1),
                        ends.get(&tp.partition).copied().unwrap_or(0)
                    )
                })
                .collect();
            bail!(
                "the final read of {topic} did not reach the end within {within:?} (positions: {})",
                got.join(", ")
            );
        }
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => {
                for r in records {
                    read.entry(r.partition)
                        .or_default()
                        .push(ReplicaRecord::new(r.offset, r.value.unwrap_or_default()));
                }
            }
            Err(e) => {
                eprintln!("final read of {topic}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = consumer.close().await;
    recorder.with(|h| {
        for tp in &tps {
            let end = ends.get(&tp.partition).copied();
            let records = read.remove(&tp.partition).unwrap_or_default();
            h.record_leader_read(tp.partition, records, end);
        }
    });
    Ok(())
}
