//! `millrace export`: a topic's records between two bounds to Parquet files, in the Parquet
//! sink's layout, with a progress bar and a summary.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use millrace_connectors::export::{export, Bound, ExportOptions};
use millrace_connectors::parquet_sink::{
    Codec, EngineConfig, FileFormat, Partitioner, RollingPolicy, SchemaConfig, TimePartitioning,
};

use super::ConnectArgs;

/// Options of `millrace export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Topic to export.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Output directory (created if missing). Exporting into the same directory again
    /// continues where the last export stopped and never writes a record twice.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// First record: beginning, an offset, @MS (ms since the epoch) or an RFC 3339 time.
    #[arg(long, value_name = "TIME|OFFSET", default_value = "beginning", value_parser = Bound::parse)]
    pub from: Bound,
    /// Stop before: end (the log end now), an offset, @MS or an RFC 3339 time.
    #[arg(long, value_name = "TIME|OFFSET", default_value = "end", value_parser = Bound::parse)]
    pub to: Bound,
    /// Record fields to partition directories by, after the time directories.
    #[arg(long, value_name = "FIELD,...", value_delimiter = ',')]
    pub partition_by: Vec<String>,
    /// JSON field with the event time (ms since the epoch or RFC 3339); default: the Kafka
    /// timestamp.
    #[arg(long, value_name = "FIELD")]
    pub time_field: Option<String>,
    /// Time directories: hour (dt=/hour=), day (dt=) or none.
    #[arg(long, default_value = "hour", value_parser = ["hour", "day", "none"])]
    pub time_partitioning: String,
    /// Page compression.
    #[arg(long, default_value = "zstd", value_parser = ["zstd", "snappy", "none"])]
    pub codec: String,
    /// Most rows per row group.
    #[arg(long, default_value_t = 122_880)]
    pub row_group_rows: usize,
    /// Most records per file.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_records_per_file: u64,
    /// Add _kafka_partition, _kafka_offset and _kafka_timestamp columns.
    #[arg(long)]
    pub kafka_metadata: bool,
    /// Topic for records that are not JSON objects or do not fit the schema (without one
    /// they are skipped and counted).
    #[arg(long, value_name = "TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Records to infer the schema from.
    #[arg(long, default_value_t = 1000)]
    pub infer_records: usize,
}

/// Runs the export and prints the summary.
pub async fn run(connect: &ConnectArgs, args: ExportArgs) -> anyhow::Result<()> {
    let time = match args.time_partitioning.as_str() {
        "day" => TimePartitioning::Day,
        "none" => TimePartitioning::None,
        _ => TimePartitioning::Hour,
    };
    let codec = match args.codec.as_str() {
        "snappy" => Codec::Snappy,
        "none" => Codec::None,
        _ => Codec::Zstd,
    };
    let options = ExportOptions {
        client: connect.client_config()?,
        topic: args.topic,
        from: args.from,
        to: args.to,
        engine: EngineConfig {
            out: args.out.clone(),
            partitioner: Partitioner::new(time, args.partition_by),
            rolling: RollingPolicy {
                max_records: args.max_records_per_file.max(1),
                // One run: files close by count, size and event time, never by the clock.
                max_open_ms: u64::MAX,
                ..RollingPolicy::default()
            },
            format: FileFormat {
                codec,
                row_group_rows: args.row_group_rows,
            },
            schema: SchemaConfig {
                infer_records: args.infer_records,
                ..SchemaConfig::default()
            },
            time_field: args.time_field,
            kafka_metadata: args.kafka_metadata,
        },
        dead_letter_topic: args.dead_letter_topic,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec})",
    )?);
    bar.enable_steady_tick(Duration::from_millis(200));
    let summary = export(options, |progress| {
        bar.set_length(progress.total);
        bar.set_position(progress.records);
    })
    .await;
    bar.finish_and_clear();
    let summary = summary?;
    let m = summary.metrics;
    let seconds = summary.elapsed.as_secs_f64();
    println!(
        "exported {} records to {} files ({} bytes) in {seconds:.2} s into {}{}",
        m.records_written,
        m.files_committed,
        m.bytes_written,
        args.out.display(),
        if m.dead_lettered > 0 {
            format!("; {} records could not be written", m.dead_lettered)
        } else {
            String::new()
        }
    );
    Ok(())
}
