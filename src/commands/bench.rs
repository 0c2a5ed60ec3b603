//! `millrace bench produce|consume|e2e|failover`, in the manner of Kafka's perf-test tools:
//! throughput, latency percentiles and, for produce, the on-disk overhead per record;
//! `failover` times a leader's kill -9 on a cluster of its own.

mod failover;
mod topic;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Subcommand;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::{
    Acks, Admin, Compression, OffsetSpec, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};

use super::progress::ProduceWatch;
use super::ConnectArgs;

/// Which benchmark.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce records as fast as the producer allows.
    Produce(ProduceBench),
    /// Read records from the beginning of a topic as fast as the consumer allows.
    Consume(ConsumeBench),
    /// Produce at a fixed rate and measure each record's time from send to receipt.
    E2e(EndToEndBench),
    /// Start a 3-broker cluster, write acks=all at a fixed rate, kill -9 a partition leader
    /// and time the first acknowledged write after the kill (on its successor); repeated.
    Failover(failover::FailoverBench),
}

/// Options of `millrace bench consume`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsumeBench {
    /// Topic to read (fill it first, e.g. with `millrace bench produce`).
    #[arg(long, short = 't', default_value = "millrace-bench")]
    pub topic: String,
    /// Records to read in all (at most what the topic holds).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Consumer instances; the topic's partitions are split between them.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Read through this consumer group (subscribe) instead of assigning partitions.
    #[arg(long)]
    pub group: Option<String>,
    /// `fetch.max.bytes` of each consumer.
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes` of each consumer.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_partition_fetch_bytes: i32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `millrace bench e2e`.
#[derive(clap::Args, Debug, Clone)]
pub struct EndToEndBench {
    /// Topic (created with --partitions if missing).
    #[arg(long, short = 't', default_value = "millrace-bench-e2e")]
    pub topic: String,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    #[command(flatten)]
    pub replication: topic::Replication,
    /// Records to send in all.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Records per second to send at.
    #[arg(long, default_value_t = 10_000)]
    pub throughput: u64,
    /// Value size in bytes (at least 8: the send time travels in the value).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Producer linger in ms (0: send at once, for the lowest latency).
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `millrace bench produce`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProduceBench {
    /// Topic (created with --partitions if missing).
    #[arg(long, short = 't', default_value = "millrace-bench")]
    pub topic: String,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    #[command(flatten)]
    pub replication: topic::Replication,
    /// Records to produce in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Producer batch size in bytes. 512 KiB keeps 100-byte records under 8,192 per batch,
    /// where a record's offset delta still takes 2 bytes instead of 3.
    #[arg(long, default_value_t = 512 * 1024)]
    pub batch_size: usize,
    /// Producer linger in ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Producer instances, each sending records / producers.
    #[arg(long, default_value_t = 1)]
    pub producers: u64,
    /// Send in transactions of this many records: each producer gets a transactional id and
    /// commits every RECORDS records (acks=all). Latencies are still to acknowledgement; the
    /// records become visible to read_committed consumers at each commit.
    #[arg(long, value_name = "RECORDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub transactional: Option<u64>,
    /// With --transactional: begin each transaction while the one before it commits
    /// (`commit_and_begin_transaction`) instead of waiting for the commit.
    #[arg(long, requires = "transactional")]
    pub overlap_commits: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a benchmark.
pub async fn run(connect: &ConnectArgs, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) => produce(connect, args).await,
        BenchCommand::Consume(args) => consume(connect, args).await,
        BenchCommand::E2e(args) => end_to_end(connect, args).await,
        BenchCommand::Failover(args) => failover::run(args).await,
    }
}

/// Latencies in microseconds, up to an hour.
fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

fn progress(total: u64, json: bool) -> ProgressBar {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} records ({per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// The topic's bytes on disk over all replicas (DescribeLogDirs), or why the broker cannot say.
///
/// The on-disk overhead is an extra of `bench produce`: a broker that lacks DescribeLogDirs
/// (or refuses it) still gets benchmarked, and the report says why the overhead is missing.
async fn topic_size(admin: &Admin, topic: &str) -> Result<i64, String> {
    match admin.describe_log_dirs(Some(&[topic])).await {
        Ok(dirs) => Ok(dirs
            .iter()
            .flat_map(|d| d.partitions.iter())
            .filter(|p| p.partition.topic == topic)
            .map(|p| p.size)
            .sum()),
        Err(error) => Err(format!("not reported by this broker ({error})")),
    }
}

async fn produce(connect: &ConnectArgs, args: ProduceBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.records > 0, "--records must be positive");
    anyhow::ensure!(args.producers > 0, "--producers must be positive");
    let acks: Acks = args.acks.parse()?;
    anyhow::ensure!(
        args.transactional.is_none() || acks == Acks::All,
        "--transactional needs --acks all (a transactional producer is idempotent)"
    );
    let compression: Compression = args.compression.parse()?;
    let admin = connect.admin().await?;
    topic::ensure(&admin, &args.topic, args.partitions, &args.replication).await?;
    let size_before = topic_size(&admin, &args.topic).await;

    let bar = Arc::new(progress(args.records, args.json));
    let watch = ProduceWatch::new(bar.clone(), connect.timeout());
    let value = random_payload(args.record_size);
    let started = Instant::now();
    let mut workers = Vec::new();
    for index in 0..args.producers {
        let share =
            args.records / args.producers + u64::from(index < args.records % args.producers);
        let mut builder = ProducerConfig::builder(connect.client_config()?)
            .acks(acks)
            .batch_size(args.batch_size)
            .linger_ms(args.linger_ms)
            .compression(compression);
        if args.transactional.is_some() {
            // Unique per run and producer: a second run must not fence the first.
            builder =
                builder.transactional_id(format!("millrace-bench-{}-{index}", std::process::id()));
        }
        let config = builder.build()?;
        let topic = args.topic.clone();
        let value = value.clone();
        let bar = bar.clone();
        let watch = watch.clone();
        let transactions = args.transactional.map(|size| Transactions {
            size,
            overlap_commits: args.overlap_commits,
        });
        workers.push(tokio::spawn(async move {
            produce_worker(config, topic, value, share, transactions, bar, &watch).await
        }));
    }
    // Says why when acknowledgements stop, and gives up after --timeout.
    let latencies = watch
        .run(&admin, async {
            let mut latencies = new_histogram()?;
            for worker in workers {
                latencies.add(worker.await??)?;
            }
            anyhow::Ok(latencies)
        })
        .await?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let size_after = topic_size(&admin, &args.topic).await;

    let records = args.records as f64;
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let payload = args.records * args.record_size as u64;
    let overhead = match (size_before, size_after) {
        (Ok(before), Ok(after)) => {
            Overhead::Measured(((after - before) as f64 - payload as f64) / records)
        }
        (Err(reason), _) | (_, Err(reason)) => Overhead::NotReported(reason),
    };
    report(
        &Report {
            records: args.records,
            seconds: secs,
            records_per_sec: records / secs,
            mb_per_sec: payload as f64 / secs / (1024.0 * 1024.0),
            latencies: &latencies,
            overhead,
        },
        args.json,
    );
    Ok(())
}

/// Delivery futures handed to the collector at a time.
const CHUNK: usize = 1024;

/// How a benchmark producer uses transactions.
#[derive(Clone, Copy)]
struct Transactions {
    /// Records per transaction.
    size: u64,
    /// Begin each transaction while the one before it commits.
    overlap_commits: bool,
}

/// One producer's share: sends as fast as buffer memory allows; a collector task awaits the
/// delivery futures in order and records each record's latency (send to acknowledgement).
/// With `transactions`, the records go in transactions of that many, each committed before
/// the next begins or while it fills.
async fn produce_worker(
    config: ProducerConfig,
    topic: String,
    value: Bytes,
    count: u64,
    transactions: Option<Transactions>,
    bar: Arc<ProgressBar>,
    watch: &ProduceWatch,
) -> anyhow::Result<Histogram<u64>> {
    // The producer's buffer memory bounds the records awaiting acknowledgement; the channel
    // to the collector must hold at least that many, or it would throttle the benchmark
    // before the producer does (at 64 chunks it capped 100-byte records near 2 M/s).
    let chunks_in_flight = config.buffer_memory / value.len().max(1) / CHUNK + 2;
    let producer = Producer::connect(config).await?;
    watch.watch(&producer);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(Instant, millrace_client::DeliveryFuture)>>(
        chunks_in_flight,
    );
    let collector = tokio::spawn(async move {
        let mut histogram = new_histogram()?;
        let mut now = Instant::now();
        while let Some(chunk) = rx.recv().await {
            let n = chunk.len() as u64;
            for (sent, mut future) in chunk {
                // Records of one batch complete together: read the clock only after waiting,
                // not once per record (clock reads were a sixth of the benchmark's CPU time).
                match futures_util::FutureExt::now_or_never(&mut future) {
                    Some(result) => {
                        result?;
                    }
                    None => {
                        future.await?;
                        now = Instant::now();
                    }
                }
                histogram.saturating_record(
                    u64::try_from(now.saturating_duration_since(sent).as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                );
            }
            bar.inc(n);
        }
        anyhow::Ok(histogram)
    });
    // The send time is read once per 64 records (tens of microseconds apart), which can only
    // overstate latencies, by that much.
    const CLOCK_EVERY: u64 = 64;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut sent = Instant::now();
    let mut in_transaction = 0u64;
    let mut open = false;
    let mut pending_commits = std::collections::VecDeque::new();
    for i in 0..count {
        if i % CLOCK_EVERY == 0 {
            sent = Instant::now();
        }
        if transactions.is_some() && !open {
            producer.begin_transaction()?;
            open = true;
        }
        let future = producer
            .send(ProducerRecord::new(&topic, value.clone()))
            .await?;
        if let Some(transactions) = transactions {
            in_transaction += 1;
            if in_transaction == transactions.size {
                in_transaction = 0;
                if transactions.overlap_commits {
                    pending_commits.push_back(producer.commit_and_begin_transaction().await?);
                    // Outcomes are checked as they come, without waiting for them.
                    while let Some(settled) = pending_commits
                        .front_mut()
                        .and_then(futures_util::FutureExt::now_or_never)
                    {
                        settled?;
                        pending_commits.pop_front();
                    }
                } else {
                    producer.commit_transaction().await?;
                    open = false;
                }
            }
        }
        chunk.push((sent, future));
        if chunk.len() == CHUNK
            && tx
                .send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                .await
                .is_err()
        {
            break;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(chunk).await;
    }
    drop(tx);
    if open {
        producer.commit_transaction().await?;
    }
    for pending in pending_commits {
        pending.await?;
    }
    producer.flush().await;
    let histogram = collector.await??;
    producer.close().await;
    Ok(histogram)
}

/// The topic's partitions with their earliest and latest offsets.
async fn partition_ranges(
    admin: &Admin,
    topic: &str,
) -> anyhow::Result<Vec<(TopicPartition, i64, i64)>> {
    let described = admin.describe_topics(&[topic]).await?;
    let partitions: Vec<TopicPartition> = described
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(topic, p.id))
        })
        .collect();
    let starts = super::list_offsets(admin, &partitions, OffsetSpec::Earliest).await?;
    let ends = super::list_offsets(admin, &partitions, OffsetSpec::Latest).await?;
    Ok(partitions
        .into_iter()
        .map(|tp| {
            let start = starts.get(&tp).copied().unwrap_or(0).max(0);
            let end = ends.get(&tp).copied().unwrap_or(0).max(start);
            (tp, start, end)
        })
        .collect())
}

async fn consume(connect: &ConnectArgs, args: ConsumeBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.records > 0, "--records must be positive");
    anyhow::ensure!(args.consumers > 0, "--consumers must be positive");
    let admin = connect.admin().await?;
    let ranges = partition_ranges(&admin, &args.topic).await?;
    let available: i64 = ranges.iter().map(|(_, start, end)| end - start).sum();
    anyhow::ensure!(
        available >= args.records as i64,
        "topic `{}` holds {available} records, fewer than --records {}; fill it first \
         (millrace bench produce --topic {} --records {})",
        args.topic,
        args.records,
        args.topic,
        args.records
    );
    let bar = Arc::new(progress(args.records, args.json));
    let remaining = Arc::new(std::sync::atomic::AtomicI64::new(args.records as i64));
    let consumers = args.consumers.min(ranges.len()).max(1);
    // The clock starts once every consumer is connected, as Kafka's consumer perf tool
    // separates start-up from fetch time.
    let ready = Arc::new(tokio::sync::Barrier::new(consumers + 1));
    let mut workers = Vec::new();
    for index in 0..consumers {
        let mut builder = ConsumerConfig::builder(connect.client_config()?)
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_bytes(args.fetch_max_bytes)
            .max_partition_fetch_bytes(args.max_partition_fetch_bytes)
            .max_poll_records(100_000);
        if let Some(group) = &args.group {
            builder = builder.group_id(group);
        }
        let config = builder.build()?;
        // Without a group, each consumer takes every `consumers`-th partition from its start.
        let share: Vec<(TopicPartition, i64)> = ranges
            .iter()
            .enumerate()
            .filter(|(i, _)| i % consumers == index)
            .map(|(_, (tp, start, _))| (tp.clone(), *start))
            .collect();
        let topic = args.topic.clone();
        let grouped = args.group.is_some();
        let bar = bar.clone();
        let remaining = remaining.clone();
        let ready = ready.clone();
        workers.push(tokio::spawn(async move {
            consume_worker(config, topic, grouped, share, remaining, bar, ready).await
        }));
    }
    ready.wait().await;
    let started = Instant::now();
    let mut polls = new_histogram()?;
    let mut bytes = 0u64;
    let mut records = 0u64;
    for worker in workers {
        let (histogram, worker_records, worker_bytes) = worker.await??;
        polls.add(histogram)?;
        records += worker_records;
        bytes += worker_bytes;
    }
    let secs = started.elapsed().as_secs_f64().max(f64::EPSILON);
    bar.finish_and_clear();
    report(
        &Report {
            records,
            seconds: secs,
            records_per_sec: records as f64 / secs,
            mb_per_sec: bytes as f64 / secs / (1024.0 * 1024.0),
            latencies: &polls,
            overhead: Overhead::NotApplicable,
        },
        args.json,
    );
    if !args.json {
        println!("latency here is the time each poll took to return records");
    }
    Ok(())
}

/// Reads until the shared `remaining` count runs out; returns the poll-time histogram, the
/// records and the key+value bytes read.
async fn consume_worker(
    config: ConsumerConfig,
    topic: String,
    grouped: bool,
    share: Vec<(TopicPartition, i64)>,
    remaining: Arc<std::sync::atomic::AtomicI64>,
    bar: Arc<ProgressBar>,
    ready: Arc<tokio::sync::Barrier>,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    use std::sync::atomic::Ordering;
    // Reach the barrier even when connecting fails, or the others would wait forever.
    let connected = Consumer::connect(config).await;
    ready.wait().await;
    let mut consumer = connected?;
    if grouped {
        consumer.subscribe(&[topic.as_str()])?;
    } else {
        let partitions: Vec<TopicPartition> = share.iter().map(|(tp, _)| tp.clone()).collect();
        consumer.assign(&partitions)?;
        for (tp, start) in &share {
            consumer.seek(tp, *start)?;
        }
    }
    let mut polls = new_histogram()?;
    let (mut records, mut bytes) = (0u64, 0u64);
    while remaining.load(Ordering::Acquire) > 0 {
        let asked = Instant::now();
        let batch = consumer.poll(std::time::Duration::from_millis(500)).await?;
        if batch.is_empty() {
            if !grouped && share.is_empty() {
                break;
            }
            continue;
        }
        polls.saturating_record(
            u64::try_from(asked.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        let left = remaining.fetch_sub(batch.len() as i64, Ordering::AcqRel);
        // Count only up to the total asked for.
        let counted = (batch.len() as i64).min(left.max(0)) as usize;
        for record in &batch[..counted] {
            bytes += (record.key.as_ref().map_or(0, |k| k.len())
                + record.value.as_ref().map_or(0, |v| v.len())) as u64;
        }
        records += counted as u64;
        bar.inc(counted as u64);
    }
    consumer.close().await?;
    Ok((polls, records, bytes))
}

async fn end_to_end(connect: &ConnectArgs, args: EndToEndBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.records > 0, "--records must be positive");
    anyhow::ensure!(args.throughput > 0, "--throughput must be positive");
    anyhow::ensure!(
        args.record_size >= 8,
        "--record-size must be at least 8 bytes"
    );
    let acks: Acks = args.acks.parse()?;
    let compression: Compression = args.compression.parse()?;
    let admin = connect.admin().await?;
    topic::ensure(&admin, &args.topic, args.partitions, &args.replication).await?;
    let producer = Producer::connect(
        ProducerConfig::builder(connect.client_config()?)
            .acks(acks)
            .linger_ms(args.linger_ms)
            .compression(compression)
            .build()?,
    )
    .await?;
    // Warm up: metadata and connections are set up before the clock starts, so the figures
    // are the steady state, not the first request's connection and metadata look-ups. A
    // broker that rejects it is explained, and given up on after --timeout.
    let warm_up = ProduceWatch::new(Arc::new(ProgressBar::hidden()), connect.timeout());
    warm_up.watch(&producer);
    warm_up
        .run(&admin, async {
            let record = ProducerRecord::new(&args.topic, vec![0u8; 8]);
            anyhow::Ok(producer.send(record).await?.await?)
        })
        .await?;
    // The consumer starts at the end, so only this run's records are measured.
    let ranges = partition_ranges(&admin, &args.topic).await?;
    let mut consumer = Consumer::connect(
        ConsumerConfig::builder(connect.client_config()?)
            .fetch_max_wait(std::time::Duration::from_millis(500))
            .max_poll_records(100_000)
            .build()?,
    )
    .await?;
    let partitions: Vec<TopicPartition> = ranges.iter().map(|(tp, _, _)| tp.clone()).collect();
    consumer.assign(&partitions)?;
    for (tp, _, end) in &ranges {
        consumer.seek(tp, *end)?;
    }
    consumer.poll(std::time::Duration::ZERO).await?;

    let base = Instant::now();
    let filler = random_payload(args.record_size - 8);
    let total = args.records;
    let rate = args.throughput;
    let topic = args.topic.clone();
    let sender = tokio::spawn(async move {
        for i in 0..total {
            // Pace to the target rate: record i goes out at i / rate seconds.
            let due = base + std::time::Duration::from_nanos(i * 1_000_000_000 / rate);
            let now = Instant::now();
            if due > now + std::time::Duration::from_micros(500) {
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            }
            let sent = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let mut value = Vec::with_capacity(8 + filler.len());
            value.extend_from_slice(&sent.to_be_bytes());
            value.extend_from_slice(&filler);
            // Acknowledgements are not awaited one by one: the consumer measures.
            drop(producer.send(ProducerRecord::new(&topic, value)).await?);
        }
        producer.flush().await;
        producer.close().await;
        anyhow::Ok(())
    });

    let bar = progress(total, args.json);
    let mut latencies = new_histogram()?;
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut last_progress = Instant::now();
    while received < total {
        let batch = consumer.poll(std::time::Duration::from_millis(500)).await?;
        let now = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for record in &batch {
            let Some(value) = record.value.as_ref().filter(|v| v.len() >= 8) else {
                continue;
            };
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&value[..8]);
            let micros = now.saturating_sub(u64::from_be_bytes(sent)) / 1000;
            latencies.saturating_record(micros.max(1));
            bytes += value.len() as u64;
            received += 1;
        }
        bar.inc(batch.len() as u64);
        if !batch.is_empty() {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > connect.timeout() {
            anyhow::bail!(
                "no record arrived for {} s (--timeout) after {received} of {total}",
                connect.timeout().as_secs()
            );
        }
    }
    sender.await??;
    let secs = base.elapsed().as_secs_f64().max(f64::EPSILON);
    bar.finish_and_clear();
    consumer.close().await?;
    report(
        &Report {
            records: received,
            seconds: secs,
            records_per_sec: received as f64 / secs,
            mb_per_sec: bytes as f64 / secs / (1024.0 * 1024.0),
            latencies: &latencies,
            overhead: Overhead::NotApplicable,
        },
        args.json,
    );
    Ok(())
}

/// The on-disk overhead per record (`bench produce` only).
enum Overhead {
    /// Bytes on disk per record beyond its value.
    Measured(f64),
    /// The broker could not report sizes; why.
    NotReported(String),
    /// Not measured by this benchmark.
    NotApplicable,
}

/// What a benchmark measured.
struct Report<'a> {
    records: u64,
    seconds: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    latencies: &'a Histogram<u64>,
    overhead: Overhead,
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn report(r: &Report<'_>, json: bool) {
    let (p50, p99, p999, max) = (
        ms(r.latencies, 0.5),
        ms(r.latencies, 0.99),
        ms(r.latencies, 0.999),
        r.latencies.max() as f64 / 1000.0,
    );
    if json {
        let mut object = serde_json::json!({
            "records": r.records,
            "seconds": r.seconds,
            "records_per_sec": r.records_per_sec,
            "mb_per_sec": r.mb_per_sec,
            "p50_ms": p50,
            "p99_ms": p99,
            "p999_ms": p999,
            "max_ms": max,
        });
        if let Some(map) = object.as_object_mut() {
            match &r.overhead {
                Overhead::Measured(overhead) => {
                    map.insert(
                        "overhead_bytes_per_record".into(),
                        serde_json::json!(overhead),
                    );
                }
                Overhead::NotReported(reason) => {
                    map.insert(
                        "overhead_note".into(),
                        serde_json::json!(format!("on-disk overhead {reason}")),
                    );
                }
                Overhead::NotApplicable => {}
            }
        }
        println!("{object}");
    } else {
        println!(
            "{} records in {:.2} s: {:.0} records/s, {:.2} MB/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            r.records, r.seconds, r.records_per_sec, r.mb_per_sec, p50, p99, p999, max
        );
        match &r.overhead {
            Overhead::Measured(overhead) => {
                println!("on-disk overhead: {overhead:.2} bytes per record")
            }
            Overhead::NotReported(reason) => println!("on-disk overhead: {reason}"),
            Overhead::NotApplicable => {}
        }
    }
}

/// A payload of random capital letters, as Kafka's perf tool makes (so compression results
/// are not flattered by a constant byte).
fn random_payload(size: usize) -> Bytes {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
        | 1;
    let payload: Vec<u8> = (0..size)
        .map(|_| {
            // xorshift64: plenty for filler bytes.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'A' + (state % 26) as u8
        })
        .collect();
    // Leaked once per run, so that each record's copy of the handle is a plain pointer copy
    // rather than an atomic reference count (a tenth of the sending loop's time).
    Bytes::from_static(payload.leak())
}
