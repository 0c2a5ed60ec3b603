//! `millrace produce`: one record per line of stdin, in the manner of kcat -P.

use std::io::BufRead;
use std::sync::Arc;

use bytes::Bytes;
use millrace_client::{Acks, Compression, Producer, ProducerConfig, ProducerRecord};

use super::progress::ProduceWatch;
use super::{key_value, ConnectArgs};

/// Options of `millrace produce`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Split each line at the first SEP into key and value (`--key-separator :`).
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header added to every record (`--header source=cli`); repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = key_value)]
    pub headers: Vec<(String, String)>,
    /// Partition (default: by key, or sticky for unkeyed records).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, short = 'z', default_value = "none")]
    pub compression: String,
}

/// Reads stdin and produces every line; fails (non-zero exit) if any record is not delivered.
pub async fn run(connect: &ConnectArgs, args: ProduceArgs) -> anyhow::Result<()> {
    let acks: Acks = args.acks.parse()?;
    let compression: Compression = args.compression.parse()?;
    let config = ProducerConfig::builder(connect.client_config()?)
        .acks(acks)
        .compression(compression)
        .build()?;
    let producer = Producer::connect(config).await?;
    if producer.partition_count(&args.topic).await? == 0 {
        anyhow::bail!("topic `{}` has no partitions", args.topic);
    }
    // Counts delivered records for the watch, which says why when writes keep failing.
    let delivered_bar = Arc::new(indicatif::ProgressBar::hidden());
    let watch = ProduceWatch::new(delivered_bar.clone(), connect.timeout());
    watch.watch(&producer);
    let admin = connect.admin().await?;
    // Delivery futures are awaited by a separate task so reading stdin never waits on acks.
    let (pending_tx, mut pending_rx) = tokio::sync::mpsc::channel(100_000);
    let waiter = tokio::spawn(async move {
        let mut delivered = 0u64;
        let mut failed = 0u64;
        let mut first_error = None;
        while let Some(future) = pending_rx.recv().await {
            match future.await {
                Ok(_) => {
                    delivered += 1;
                    delivered_bar.inc(1);
                }
                Err(error) => {
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        (delivered, failed, first_error)
    });

    let (delivered, failed, first_error) = watch
        .run(&admin, send_lines(&producer, &args, pending_tx, waiter))
        .await?;
    producer.close().await;
    eprintln!("{delivered} records delivered to {}", args.topic);
    if let Some(error) = first_error {
        anyhow::bail!("{failed} records were not delivered; first error: {error}");
    }
    Ok(())
}

/// Sends every line of stdin, then waits until each is delivered or failed; returns
/// (delivered, failed, the first error).
async fn send_lines(
    producer: &Producer,
    args: &ProduceArgs,
    pending_tx: tokio::sync::mpsc::Sender<millrace_client::DeliveryFuture>,
    waiter: tokio::task::JoinHandle<(u64, u64, Option<millrace_client::ClientError>)>,
) -> anyhow::Result<(u64, u64, Option<millrace_client::ClientError>)> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    // stdin is read in place: these are short blocking reads of piped input.
    while let Some(line) = tokio::task::block_in_place(|| lines.next()) {
        let line = line?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut record = ProducerRecord::new(&args.topic, Bytes::from(value));
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        for (k, v) in &args.headers {
            record = record.header(k.clone(), Bytes::from(v.clone()));
        }
        let future = producer.send(record).await?;
        if pending_tx.send(future).await.is_err() {
            break;
        }
    }
    drop(pending_tx);
    producer.flush().await;
    Ok(waiter.await?)
}
