//! `millrace bench produce|consume|e2e`, in the manner of Kafka's perf-test tools: throughput,
//! latency percentiles and, for produce, the on-disk overhead per record.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Subcommand;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use millrace_client::admin::NewTopic;
use millrace_client::{Acks, Admin, Compression, Producer, ProducerConfig, ProducerRecord};

use super::ConnectArgs;

/// Which benchmark.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce records as fast as the producer allows.
    Produce(ProduceBench),
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
    /// Records to produce in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1_048_576)]
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
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a benchmark.
pub async fn run(connect: &ConnectArgs, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) => produce(connect, args).await,
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

async fn topic_size(admin: &Admin, topic: &str) -> anyhow::Result<i64> {
    let dirs = admin.describe_log_dirs(Some(&[topic])).await?;
    Ok(dirs
        .iter()
        .flat_map(|d| d.partitions.iter())
        .filter(|p| p.partition.topic == topic)
        .map(|p| p.size)
        .sum())
}

async fn produce(connect: &ConnectArgs, args: ProduceBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.records > 0, "--records must be positive");
    anyhow::ensure!(args.producers > 0, "--producers must be positive");
    let acks: Acks = args.acks.parse()?;
    let compression: Compression = args.compression.parse()?;
    let admin = connect.admin().await?;
    if admin.describe_topics(&[args.topic.as_str()]).await.is_err() {
        admin
            .create_topic(NewTopic::new(&args.topic, args.partitions))
            .await?;
    }
    let size_before = topic_size(&admin, &args.topic).await?;

    let bar = Arc::new(progress(args.records, args.json));
    let value = random_payload(args.record_size);
    let started = Instant::now();
    let mut workers = Vec::new();
    for index in 0..args.producers {
        let share =
            args.records / args.producers + u64::from(index < args.records % args.producers);
        let config = ProducerConfig::builder(connect.client_config()?)
            .acks(acks)
            .batch_size(args.batch_size)
            .linger_ms(args.linger_ms)
            .compression(compression)
            // Idempotence needs acks=all; as in the Java client, it is off otherwise.
            .enable_idempotence(acks == Acks::All)
            .build()?;
        let topic = args.topic.clone();
        let value = value.clone();
        let bar = bar.clone();
        workers.push(tokio::spawn(async move {
            produce_worker(config, topic, value, share, bar).await
        }));
    }
    let mut latencies = new_histogram()?;
    for worker in workers {
        latencies.add(worker.await??)?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let size_after = topic_size(&admin, &args.topic).await?;

    let records = args.records as f64;
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let payload = args.records * args.record_size as u64;
    let overhead = ((size_after - size_before) as f64 - payload as f64) / records;
    report(
        &Report {
            records: args.records,
            seconds: secs,
            records_per_sec: records / secs,
            mb_per_sec: payload as f64 / secs / (1024.0 * 1024.0),
            latencies: &latencies,
            overhead_bytes_per_record: Some(overhead),
        },
        args.json,
    );
    Ok(())
}

/// One producer's share: sends as fast as buffer memory allows; a collector task awaits the
/// delivery futures in order and records each record's latency (send to acknowledgement).
async fn produce_worker(
    config: ProducerConfig,
    topic: String,
    value: Bytes,
    count: u64,
    bar: Arc<ProgressBar>,
) -> anyhow::Result<Histogram<u64>> {
    let producer = Producer::connect(config).await?;
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Vec<(Instant, millrace_client::DeliveryFuture)>>(64);
    let collector = tokio::spawn(async move {
        let mut histogram = new_histogram()?;
        while let Some(chunk) = rx.recv().await {
            let n = chunk.len() as u64;
            for (sent, future) in chunk {
                future.await?;
                histogram.saturating_record(
                    u64::try_from(sent.elapsed().as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                );
            }
            bar.inc(n);
        }
        anyhow::Ok(histogram)
    });
    const CHUNK: usize = 1024;
    let mut chunk = Vec::with_capacity(CHUNK);
    for _ in 0..count {
        let future = producer
            .send(ProducerRecord::new(&topic, value.clone()))
            .await?;
        chunk.push((Instant::now(), future));
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
    producer.flush().await;
    let histogram = collector.await??;
    producer.close().await;
    Ok(histogram)
}

/// What a benchmark measured.
struct Report<'a> {
    records: u64,
    seconds: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    latencies: &'a Histogram<u64>,
    overhead_bytes_per_record: Option<f64>,
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
        if let (Some(overhead), Some(map)) = (r.overhead_bytes_per_record, object.as_object_mut()) {
            map.insert(
                "overhead_bytes_per_record".into(),
                serde_json::json!(overhead),
            );
        }
        println!("{object}");
    } else {
        println!(
            "{} records in {:.2} s: {:.0} records/s, {:.2} MB/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            r.records, r.seconds, r.records_per_sec, r.mb_per_sec, p50, p99, p999, max
        );
        if let Some(overhead) = r.overhead_bytes_per_record {
            println!("on-disk overhead: {overhead:.2} bytes per record");
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
    (0..size)
        .map(|_| {
            // xorshift64: plenty for filler bytes.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'A' + (state % 26) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}
