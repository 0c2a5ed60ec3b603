//! `millrace consume`: records to stdout, in the manner of kcat -C.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use anyhow::Context;
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, GroupWatch};
use millrace_client::record::ConsumerRecord;
use millrace_client::{OffsetSpec, ResponseError, TopicPartition};

use super::progress::{error_name, meaning, EXPLAIN_AFTER};
use super::ConnectArgs;

/// How long one poll waits for records before the stop conditions are checked again.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// Options of `millrace consume`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Read only this partition (default: all of them). Not with --group.
    #[arg(long, short = 'p', conflicts_with = "group")]
    pub partition: Option<i32>,
    /// Read through this consumer group: resume from its committed offsets and commit on exit.
    #[arg(long, short = 'g', value_name = "GROUP")]
    pub group: Option<String>,
    /// Where to start: beginning, end, an OFFSET (every chosen partition) or @TIMESTAMP_MS.
    /// With --group only beginning or end, and only for partitions without a committed offset.
    #[arg(
        long,
        short = 'o',
        value_name = "beginning|end|OFFSET|@TIMESTAMP_MS",
        default_value = "beginning",
        value_parser = parse_start
    )]
    pub from: StartFrom,
    /// Exit after N records.
    #[arg(long, short = 'c', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit once every partition read is at the end (without a group: the end as of the start).
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// Output: the value, key<SEP>value, or one JSON object per record [default: value, or kv
    /// when -K is given].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Separator between key and value in the kv format [default: `:`].
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
}

/// Where reading starts (`--from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The first record still stored.
    Beginning,
    /// The end of the log: only records produced from now on.
    End,
    /// This offset (clamped to the partition's stored range).
    Offset(i64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// Parses `--from`.
fn parse_start(s: &str) -> Result<StartFrom, String> {
    let invalid = || format!("`{s}` is not beginning, end, an offset (0 or more) or @TIMESTAMP_MS");
    match s {
        "beginning" | "earliest" => Ok(StartFrom::Beginning),
        "end" | "latest" => Ok(StartFrom::End),
        _ => match s.strip_prefix('@') {
            Some(ms) => match ms.parse::<i64>() {
                Ok(ms) if ms >= 0 => Ok(StartFrom::Timestamp(ms)),
                _ => Err(invalid()),
            },
            None => match s.parse::<i64>() {
                Ok(offset) if offset >= 0 => Ok(StartFrom::Offset(offset)),
                _ => Err(invalid()),
            },
        },
    }
}

/// How each record is printed (`--format`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The value, one per line.
    Value,
    /// The key, the separator, then the value.
    Kv,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

/// Reads records and prints them until a stop condition (--count, --exit-at-end) or
/// SIGINT/SIGTERM; always closes the consumer (which commits, in a group).
pub async fn run(connect: &ConnectArgs, args: ConsumeArgs) -> anyhow::Result<()> {
    // Checked before connecting: a wrong combination needs no broker to be reported.
    let reset = match (&args.group, args.from) {
        (Some(_), StartFrom::Beginning) => AutoOffsetReset::Earliest,
        (Some(_), StartFrom::End) => AutoOffsetReset::Latest,
        (Some(_), _) => anyhow::bail!(
            "--from takes only beginning or end with --group (a group resumes from its \
             committed offsets); use `millrace groups reset-offsets` to move them"
        ),
        // Without a group the reset policy only matters if the position falls out of range
        // while reading (retention); earliest skips the fewest records.
        (None, _) => AutoOffsetReset::Earliest,
    };
    let format = args.format.unwrap_or(if args.key_separator.is_some() {
        Format::Kv
    } else {
        Format::Value
    });
    // Handlers first, so a signal during the connect still means a clean stop.
    let mut stop = StopSignals::install()?;

    let mut builder = ConsumerConfig::builder(connect.client_config()?).auto_offset_reset(reset);
    if let Some(group) = &args.group {
        builder = builder.group_id(group).enable_auto_commit(true);
    }
    let config = builder.build()?;
    let mut consumer = tokio::select! {
        consumer = Consumer::connect(config) => consumer?,
        _ = stop.wait() => return Ok(()),
    };

    let mut printer = Printer {
        out: BufWriter::new(io::stdout().lock()),
        format,
        separator: args
            .key_separator
            .clone()
            .unwrap_or_else(|| ":".to_string()),
    };
    let watch = consumer.group_watch();
    let group_wait = async {
        match (watch, &args.group) {
            (Some(watch), Some(group)) => watch_group(watch, group, connect.timeout()).await,
            _ => std::future::pending().await,
        }
    };
    // Stopping drops `consume` at an await; the consumer hands out records only when a poll
    // returns, so nothing handed out is left unprinted.
    let result = tokio::select! {
        result = consume(&mut consumer, &args, &mut printer) => result,
        error = group_wait => Err(error),
        _ = stop.wait() => Ok(()),
    };
    let flushed = printer.out.flush();
    // Closed even after an error: in a group this commits what was printed and leaves.
    let closed = consumer.close().await;
    result?;
    match flushed {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
            return Err(error).context("writing to stdout")
        }
        _ => {}
    }
    closed.context("closing the consumer (committing offsets)")?;
    Ok(())
}

/// While the consumer is not in a generation of `group`: after a few seconds says on stderr
/// why (the coordinator's answer and what it means), and after `timeout` returns the error
/// to give up with. Membership changes announce nothing a task could await, so the watch is
/// read twice a second.
async fn watch_group(watch: GroupWatch, group: &str, timeout: Duration) -> anyhow::Error {
    let mut waiting_since = std::time::Instant::now();
    let mut said: Option<String> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if watch.joined() {
            waiting_since = std::time::Instant::now();
            said = None;
            continue;
        }
        let waited = waiting_since.elapsed();
        if waited < EXPLAIN_AFTER {
            continue;
        }
        let why = match watch.last_join_error() {
            None => "no answer from its coordinator yet".to_string(),
            Some(error) => match error.kafka_error() {
                Some(code) => match meaning(&code) {
                    Some(meaning) => format!("{}: {meaning}", error_name(&code)),
                    None => error_name(&code),
                },
                None => error.to_string(),
            },
        };
        if waited >= timeout {
            return anyhow::anyhow!(
                "gave up joining group `{group}` after {} s (--timeout): {why}",
                timeout.as_secs()
            );
        }
        if said.as_ref() != Some(&why) {
            eprintln!("waiting to join group `{group}`: {why}");
            said = Some(why);
        }
    }
}

/// The read-print loop, up to a stop condition.
async fn consume(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let all = topic_partitions(consumer, &args.topic).await?;
    // The log end offsets at the start, for --exit-at-end without a group.
    let mut ends: Option<HashMap<TopicPartition, i64>> = None;
    if args.group.is_some() {
        consumer.subscribe(&[args.topic.as_str()])?;
    } else {
        let chosen: Vec<TopicPartition> = match args.partition {
            Some(p) if all.contains(&p) => vec![TopicPartition::new(&args.topic, p)],
            Some(p) => anyhow::bail!(
                "topic `{}` has no partition {p} (it has {})",
                args.topic,
                all.len()
            ),
            None => all
                .iter()
                .map(|p| TopicPartition::new(&args.topic, *p))
                .collect(),
        };
        consumer.assign(&chosen)?;
        let needs_ends = args.exit_at_end || matches!(args.from, StartFrom::Offset(_));
        let latest = if needs_ends {
            listed(consumer, &chosen, OffsetSpec::Latest).await?
        } else {
            HashMap::new()
        };
        match args.from {
            StartFrom::Beginning => consumer.seek_to_beginning(&chosen)?,
            StartFrom::End => consumer.seek_to_end(&chosen)?,
            StartFrom::Timestamp(ms) => consumer.seek_to_timestamp(&chosen, ms)?,
            StartFrom::Offset(offset) => {
                // Clamped here rather than left to an out-of-range reset, so the start is the
                // nearest stored record whichever side the offset misses on.
                let earliest = listed(consumer, &chosen, OffsetSpec::Earliest).await?;
                for tp in &chosen {
                    let mut start = offset;
                    if let Some(low) = earliest.get(tp) {
                        start = start.max(*low);
                    }
                    if let Some(high) = latest.get(tp) {
                        start = start.min(*high);
                    }
                    consumer.seek(tp, start)?;
                }
            }
        }
        if args.exit_at_end {
            ends = Some(latest);
        }
    }

    let mut remaining = args.count;
    let mut polled = false;
    loop {
        if args.exit_at_end && polled && at_end(consumer, ends.as_ref()) {
            return Ok(());
        }
        let mut records = consumer.poll(POLL_TIMEOUT).await?;
        polled = true;
        if let Some(left) = remaining {
            let left = usize::try_from(left).unwrap_or(usize::MAX);
            if records.len() > left {
                let unprinted = records.split_off(left);
                rewind(consumer, &unprinted)?;
            }
        }
        if let Some(left) = remaining.as_mut() {
            *left -= records.len() as u64;
        }
        match printer.print(&records) {
            Ok(()) => {}
            // The reader went away (`| head`): that is how such a pipeline ends, not an error.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(error) => return Err(error).context("writing to stdout"),
        }
        if remaining == Some(0) {
            return Ok(());
        }
    }
}

/// The partition ids of `topic`, sorted; a clear error if it does not exist.
async fn topic_partitions(consumer: &Consumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    match consumer.partitions_for(topic).await {
        Ok(mut partitions) if !partitions.is_empty() => {
            partitions.sort_unstable();
            Ok(partitions)
        }
        Ok(_) => anyhow::bail!("topic `{topic}` has no partitions"),
        Err(error)
            if matches!(
                error.kafka_error(),
                Some(ResponseError::UnknownTopicOrPartition)
            ) =>
        {
            anyhow::bail!("topic `{topic}` does not exist")
        }
        Err(error) => Err(error).with_context(|| format!("looking up topic `{topic}`")),
    }
}

/// Offsets by `spec`, leaving out partitions the broker gave none for.
async fn listed(
    consumer: &Consumer,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
) -> anyhow::Result<HashMap<TopicPartition, i64>> {
    Ok(consumer
        .offsets_for(partitions, spec)
        .await?
        .into_iter()
        .filter(|(_, listed)| listed.offset >= 0)
        .map(|(tp, listed)| (tp, listed.offset))
        .collect())
}

/// Whether every partition read has reached its end: the end seen at the start without a
/// group, a lag of 0 as of the last fetch in a group.
fn at_end(consumer: &Consumer, ends: Option<&HashMap<TopicPartition, i64>>) -> bool {
    let assigned = consumer.assignment();
    match ends {
        Some(ends) => assigned.iter().all(|tp| {
            let end = ends.get(tp).copied().unwrap_or(0);
            consumer.position(tp).is_some_and(|p| p >= end)
        }),
        // A member given no partitions (more members than partitions) has nothing to read.
        None if assigned.is_empty() => consumer.group_generation().is_some(),
        None => assigned.iter().all(|tp| consumer.lag(tp) == Some(0)),
    }
}

/// Moves positions back to the first record not printed, so that a group commits only what
/// was printed (the poll already counted these records as consumed).
fn rewind(consumer: &mut Consumer, unprinted: &[ConsumerRecord]) -> anyhow::Result<()> {
    let mut first: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for record in unprinted {
        first
            .entry(TopicPartition::new(&*record.topic, record.partition))
            .and_modify(|o| *o = (*o).min(record.offset))
            .or_insert(record.offset);
    }
    for (tp, offset) in first {
        consumer.seek(&tp, offset)?;
    }
    Ok(())
}

/// Writes records to stdout in the chosen format.
struct Printer {
    out: BufWriter<io::StdoutLock<'static>>,
    format: Format,
    separator: String,
}

impl Printer {
    /// Prints a poll's records and flushes, so output keeps up with a slow topic.
    fn print(&mut self, records: &[ConsumerRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            match self.format {
                Format::Value => {
                    self.out
                        .write_all(lossy(record.value.as_deref()).as_bytes())?;
                }
                Format::Kv => {
                    self.out
                        .write_all(lossy(record.key.as_deref()).as_bytes())?;
                    self.out.write_all(self.separator.as_bytes())?;
                    self.out
                        .write_all(lossy(record.value.as_deref()).as_bytes())?;
                }
                Format::Json => {
                    serde_json::to_writer(&mut self.out, &to_json(record))
                        .map_err(io::Error::from)?;
                }
            }
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

/// Bytes as text, replacing invalid UTF-8; nothing for a missing key or value.
fn lossy(bytes: Option<&[u8]>) -> std::borrow::Cow<'_, str> {
    bytes.map_or(std::borrow::Cow::Borrowed(""), String::from_utf8_lossy)
}

/// A record as a JSON object; a missing key, value or header value is `null`.
fn to_json(record: &ConsumerRecord) -> serde_json::Value {
    let text = |bytes: Option<&[u8]>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
    let headers: Vec<serde_json::Value> = record
        .headers
        .iter()
        .map(|(name, value)| serde_json::json!([name, text(value.as_deref())]))
        .collect();
    serde_json::json!({
        "topic": &*record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": text(record.key.as_deref()),
        "value": text(record.value.as_deref()),
        "headers": headers,
    })
}

/// SIGINT and SIGTERM, registered before they are awaited.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_start() {
        assert_eq!(parse_start("beginning"), Ok(StartFrom::Beginning));
        assert_eq!(parse_start("end"), Ok(StartFrom::End));
        assert_eq!(parse_start("42"), Ok(StartFrom::Offset(42)));
        assert_eq!(
            parse_start("@1700000000000"),
            Ok(StartFrom::Timestamp(1_700_000_000_000))
        );
        for bad in ["nonsense", "-1", "@", "@x", "@-5", ""] {
            assert!(parse_start(bad).is_err(), "{bad}");
        }
    }
}
