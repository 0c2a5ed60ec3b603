//! Parquet sink throughput next to the `parquet` crate's raw `ArrowWriter` on the same
//! batches, in the same run.
//!
//! `cargo bench -p millrace-connectors --bench sink_throughput [-- RECORDS RUNS]`
//!
//! * **sink**: the sink's engine (what `millrace connect` runs per task, minus the network):
//!   1 KB JSON records in, in poll-sized chunks of 500; JSON parsing, event time, routing,
//!   schema inference and checks, conversion to Arrow, Parquet writing (on the task's encoder
//!   thread, as in production), fsync, the commit log line and the rename.
//! * **raw**: the same rows converted to Arrow batches *before* the clock starts (4096 rows
//!   each, as the sink converts them, by the sink's own decoder), then only
//!   `ArrowWriter::write` of those batches with the same writer properties, `close` and
//!   fsync, on one thread.
//!
//! Both write zstd (the sink's default) to a temp directory. Runs alternate sink and raw;
//! the medians of records/s and of Parquet MB/s (output file bytes) are printed, and the
//! ratio sink/raw. Before the runs, one pass prints where the sink's time goes: decoding on
//! the engine's thread (the fast path, and the general path's stages for comparison) and the
//! thread's encoding (which is the raw write).
//!
//! Then the JSON-to-Arrow step alone, the sink's own scanner ([`JsonDecoder`], the engine's
//! fast path) next to arrow-json's `Decoder` (`ReaderBuilder::build_decoder`), on the same
//! records and the same schema, in 4096-row batches, the two alternating within each run
//! (which goes first alternates too); the medians of records/s and the median of the runs'
//! ratios are printed. arrow-json cannot write a JSON object into a text column (the sink's
//! `json` columns), so for it those columns are declared as what arrow-json infers from the
//! same records (a struct here): it parses the same bytes, and every other column is
//! checked to come out equal.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::json::reader::infer_json_schema_from_iterator;
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;
use millrace_client::record::{ConsumerRecord, TimestampType};
use millrace_client::TopicPartition;
use millrace_connectors::metrics::SinkMetrics;
use millrace_connectors::parquet_sink::convert::rows_to_batch;
use millrace_connectors::parquet_sink::decode::JsonDecoder;
use millrace_connectors::parquet_sink::{
    Codec, ColumnType, EngineConfig, FileFormat, Partitioner, RollingPolicy, SchemaConfig,
    SinkEngine, SinkSchema, TimePartitioning,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};

const DEFAULT_RECORDS: usize = 200_000;
const DEFAULT_RUNS: usize = 5;
/// Records per `write` call, like one poll of the consumer.
const POLL_CHUNK: usize = 500;
/// Rows per Arrow batch, as the sink's open file converts them.
const BATCH_ROWS: usize = 4096;
const ROW_GROUP_ROWS: usize = 122_880;
const BASE_MS: i64 = 1_795_600_800_000;

/// A deterministic generator, so every run and both writers see the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn word(&mut self) -> &'static str {
        const WORDS: [&str; 16] = [
            "mill", "race", "stream", "kafka", "parquet", "arrow", "event", "window", "sink",
            "source", "topic", "offset", "batch", "record", "lake", "query",
        ];
        WORDS[(self.next() % 16) as usize]
    }
}

/// About 1 KB of page-view JSON: ids, a timestamp, short strings of low cardinality, numbers,
/// a nested object and free text.
fn record_json(i: usize, rng: &mut Lcg) -> String {
    let mut text = String::new();
    while text.len() < 560 {
        text.push_str(rng.word());
        text.push(' ');
    }
    const COUNTRIES: [&str; 6] = ["DE", "FR", "US", "GB", "JP", "BR"];
    const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
    let country = COUNTRIES[(rng.next() % 6) as usize];
    let device = DEVICES[(rng.next() % 3) as usize];
    let variant = if rng.next().is_multiple_of(2) {
        "a"
    } else {
        "b"
    };
    let value = serde_json::json!({
        "id": i,
        "ts": BASE_MS + i as i64 * 7,
        "user": format!("user-{}", rng.next() % 50_000),
        "session": format!("{:016x}{:016x}", rng.next(), rng.next()),
        "country": country,
        "device": device,
        "path": format!("/products/{}/{}", rng.word(), rng.next() % 10_000),
        "referrer": format!("https://www.{}.example/{}?utm={}", rng.word(), rng.word(), rng.next() % 100),
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "duration_ms": rng.next() % 120_000,
        "price": (rng.next() % 100_000) as f64 / 100.0,
        "logged_in": rng.next().is_multiple_of(2),
        "ab": {"variant": variant, "cohort": rng.next() % 20},
        "text": text,
    });
    value.to_string()
}

fn records(count: usize) -> Vec<ConsumerRecord> {
    let mut rng = Lcg(42);
    let topic: Arc<str> = Arc::from("page-views");
    (0..count)
        .map(|i| ConsumerRecord {
            topic: topic.clone(),
            partition: 0,
            offset: i as i64,
            timestamp: BASE_MS + i as i64 * 7,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: Some(record_json(i, &mut rng).into_bytes().into()),
            headers: Vec::new(),
            leader_epoch: None,
        })
        .collect()
}

fn engine_config(out: &Path) -> EngineConfig {
    EngineConfig {
        out: out.to_path_buf(),
        // One directory: the raw writer writes one file too.
        partitioner: Partitioner::new(TimePartitioning::None, Vec::new()),
        rolling: RollingPolicy {
            max_records: u64::MAX,
            max_bytes: u64::MAX,
            event_time_interval_ms: i64::MAX,
            max_open_ms: u64::MAX,
        },
        format: FileFormat {
            codec: Codec::Zstd,
            row_group_rows: ROW_GROUP_ROWS,
        },
        schema: SchemaConfig::default(),
        time_field: Some("ts".into()),
        kafka_metadata: false,
    }
}

/// Parquet bytes under `dir` (not the sink's state).
fn parquet_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("listing output").flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "_millrace") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// One sink run: (elapsed, Parquet bytes).
fn run_sink(records: &[ConsumerRecord]) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let mut engine = SinkEngine::new(engine_config(dir.path()), Arc::new(SinkMetrics::default()))
        .expect("engine");
    engine
        .assign(&TopicPartition::new("page-views", 0))
        .expect("assign");
    for chunk in records.chunks(POLL_CHUNK) {
        engine.write(chunk.to_vec()).expect("write");
    }
    engine.close_all().expect("close");
    assert!(engine.take_dead_letters().is_empty());
    engine.commit().expect("commit");
    let elapsed = started.elapsed();
    (elapsed, parquet_bytes(dir.path()))
}

/// The schema the sink infers for `records` (from its first records, as the sink does).
fn inferred_schema(records: &[ConsumerRecord]) -> SinkSchema {
    let samples: Vec<Map<String, Value>> = records
        .iter()
        .take(SchemaConfig::default().infer_records)
        .map(|r| serde_json::from_slice(r.value.as_ref().expect("value")).expect("json object"))
        .collect();
    SinkSchema::infer(&samples)
}

/// The Arrow batches the sink writes for `records`, built by the sink's decoder outside any
/// timing.
fn batches(records: &[ConsumerRecord]) -> Vec<RecordBatch> {
    let schema = inferred_schema(records);
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut decoder = JsonDecoder::new(&schema, &engine_config(scratch.path())).expect("decoder");
    records
        .chunks(BATCH_ROWS)
        .map(|chunk| {
            for record in chunk {
                assert!(decoder.push(record), "record {} declined", record.offset);
            }
            decoder.finish().expect("batch").expect("rows")
        })
        .collect()
}

/// One raw writer run over prepared batches: (elapsed, Parquet bytes).
fn run_raw(batches: &[RecordBatch]) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raw.parquet");
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let started = Instant::now();
    let file = File::create(&path).expect("create");
    let mut writer =
        ArrowWriter::try_new(file, batches[0].schema(), Some(properties)).expect("writer");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    let file = writer.into_inner().expect("close");
    file.sync_all().expect("fsync");
    let elapsed = started.elapsed();
    (elapsed, std::fs::metadata(&path).expect("size").len())
}

/// Where the sink's time goes, step by step over the same records (one pass, µs per record):
/// the fast path the sink takes, and for comparison the general path's stages (what every
/// record went through before the fast path).
fn breakdown(records: &[ConsumerRecord]) {
    let per = |t: Duration| t.as_secs_f64() * 1e6 / records.len() as f64;
    let schema = inferred_schema(records);
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut decoder = JsonDecoder::new(&schema, &engine_config(scratch.path())).expect("decoder");
    let started = Instant::now();
    for chunk in records.chunks(BATCH_ROWS) {
        for record in chunk {
            assert!(decoder.push(record));
        }
        decoder.finish().expect("batch");
    }
    let fast = started.elapsed();

    let started = Instant::now();
    let rows: Vec<Map<String, Value>> = records
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_ref().expect("value")).expect("json object"))
        .collect();
    let parse = started.elapsed();
    let arrow = schema.arrow_schema(false);
    let started = Instant::now();
    for row in &rows {
        schema
            .check(row, Default::default())
            .expect("rows fit the schema");
    }
    let check = started.elapsed();
    let started = Instant::now();
    let prepared: Vec<Map<String, Value>> =
        rows.into_iter().map(|r| schema.prepare_row(r)).collect();
    let prepare = started.elapsed();
    let started = Instant::now();
    for chunk in prepared.chunks(BATCH_ROWS) {
        rows_to_batch(&arrow, chunk).expect("convert");
    }
    let convert = started.elapsed();
    println!(
        "breakdown (µs per record): fast path, JSON bytes to Arrow batches {:.2}; \
         general path: parse JSON {:.2}, schema check {:.2}, prepare row {:.2}, to Arrow {:.2}",
        per(fast),
        per(parse),
        per(check),
        per(prepare),
        per(convert)
    );
}

/// The sink's file schema for arrow-json: `json` columns (JSON text, which arrow-json does not
/// produce from objects) become what arrow-json infers for those fields from the same records.
fn arrow_json_schema(schema: &SinkSchema, records: &[ConsumerRecord]) -> SchemaRef {
    let sample = records
        .iter()
        .take(SchemaConfig::default().infer_records)
        .map(|r| {
            serde_json::from_slice::<Value>(r.value.as_ref().expect("value"))
                .map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))
        });
    let inferred = infer_json_schema_from_iterator(sample).expect("arrow-json infers");
    let file = schema.arrow_schema(false);
    let fields: Vec<Field> = schema
        .columns
        .iter()
        .zip(file.fields())
        .map(|(column, field)| match column.kind {
            ColumnType::Json => inferred
                .field_with_name(&column.name)
                .expect("field inferred")
                .clone(),
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// One pass of the sink's scanner over `records`: (elapsed, batches).
fn run_scanner(
    decoder: &mut JsonDecoder,
    records: &[ConsumerRecord],
) -> (Duration, Vec<RecordBatch>) {
    let mut out = Vec::with_capacity(records.len() / BATCH_ROWS + 1);
    let started = Instant::now();
    for chunk in records.chunks(BATCH_ROWS) {
        for record in chunk {
            assert!(decoder.push(record), "record {} declined", record.offset);
        }
        out.push(decoder.finish().expect("batch").expect("rows"));
    }
    (started.elapsed(), out)
}

/// One pass of arrow-json's decoder over `records`, one record's bytes per `decode` call as
/// the sink receives them: (elapsed, batches).
fn run_arrow_json(schema: &SchemaRef, records: &[ConsumerRecord]) -> (Duration, Vec<RecordBatch>) {
    let mut out = Vec::with_capacity(records.len() / BATCH_ROWS + 1);
    let started = Instant::now();
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH_ROWS)
        .build_decoder()
        .expect("decoder");
    for chunk in records.chunks(BATCH_ROWS) {
        for record in chunk {
            let bytes = record.value.as_deref().expect("value");
            let read = decoder.decode(bytes).expect("decode");
            assert_eq!(read, bytes.len(), "record {} not consumed", record.offset);
        }
        out.push(decoder.flush().expect("batch").expect("rows"));
    }
    (started.elapsed(), out)
}

/// The scanner next to arrow-json (see the module documentation).
fn compare_decoders(records: &[ConsumerRecord], runs: usize) {
    let schema = inferred_schema(records);
    let arrow_json = arrow_json_schema(&schema, records);
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut scanner = JsonDecoder::new(&schema, &engine_config(scratch.path())).expect("decoder");
    // Same values in every column both can write.
    let (_, ours) = run_scanner(&mut scanner, records);
    let (_, theirs) = run_arrow_json(&arrow_json, records);
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        for (i, column) in schema.columns.iter().enumerate() {
            if column.kind != ColumnType::Json {
                assert_eq!(a.column(i), b.column(i), "column {} differs", column.name);
            }
        }
    }
    let rate = |t: Duration| records.len() as f64 / t.as_secs_f64();
    let (mut scanner_rates, mut arrow_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (s, a) = if run % 2 == 0 {
            let s = run_scanner(&mut scanner, records).0;
            (s, run_arrow_json(&arrow_json, records).0)
        } else {
            let a = run_arrow_json(&arrow_json, records).0;
            (run_scanner(&mut scanner, records).0, a)
        };
        println!(
            "decoders run {run}: scanner {:>9.0} records/s, arrow-json {:>9.0} records/s",
            rate(s),
            rate(a)
        );
        scanner_rates.push(rate(s));
        arrow_rates.push(rate(a));
        ratios.push(rate(a) / rate(s));
    }
    println!(
        "median decoders: scanner {:.0} records/s, arrow-json {:.0} records/s; \
         arrow-json / scanner {:.0}% (median of the runs' ratios)",
        median(scanner_rates),
        median(arrow_rates),
        100.0 * median(ratios)
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours.
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let count = numbers.first().copied().unwrap_or(DEFAULT_RECORDS);
    let runs = numbers.get(1).copied().unwrap_or(DEFAULT_RUNS).max(1);
    let records = records(count);
    let input_bytes: usize = records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    println!(
        "{count} records, {:.0} bytes of JSON each on average, {runs} runs each (zstd, {ROW_GROUP_ROWS} rows per row group)",
        input_bytes as f64 / count as f64
    );
    let prepared = batches(&records);
    breakdown(&records);
    compare_decoders(&records, runs);

    let mut sink = (Vec::new(), Vec::new());
    let mut raw = (Vec::new(), Vec::new());
    for run in 0..runs {
        let (t, bytes) = run_sink(&records);
        let s = t.as_secs_f64();
        sink.0.push(count as f64 / s);
        sink.1.push(bytes as f64 / s / 1e6);
        println!(
            "run {run}: sink {:>9.0} records/s {:>7.1} MB/s Parquet ({bytes} bytes, {s:.3} s)",
            count as f64 / s,
            bytes as f64 / s / 1e6
        );
        let (t, bytes) = run_raw(&prepared);
        let s = t.as_secs_f64();
        raw.0.push(count as f64 / s);
        raw.1.push(bytes as f64 / s / 1e6);
        println!(
            "run {run}: raw  {:>9.0} records/s {:>7.1} MB/s Parquet ({bytes} bytes, {s:.3} s)",
            count as f64 / s,
            bytes as f64 / s / 1e6
        );
    }
    let (sink_rates, raw_rates) = (sink.0.clone(), raw.0.clone());
    let (sink_rps, sink_mbps) = (median(sink.0), median(sink.1));
    let (raw_rps, raw_mbps) = (median(raw.0), median(raw.1));
    println!(
        "median sink: {sink_rps:.0} records/s, {sink_mbps:.1} MB/s Parquet, {:.1} MB/s JSON in",
        sink_rps * input_bytes as f64 / count as f64 / 1e6
    );
    println!("median raw ArrowWriter: {raw_rps:.0} records/s, {raw_mbps:.1} MB/s Parquet");
    // Each run's pair ran back to back, so its ratio shares the machine's load of the moment;
    // on a busy machine the median of the pairs is steadier than the ratio of the medians.
    let pairs: Vec<f64> = sink_rates
        .iter()
        .zip(&raw_rates)
        .map(|(s, r)| s / r)
        .collect();
    println!(
        "sink / raw: {:.0}% (ratio of the medians), {:.0}% (median of the runs' ratios)",
        100.0 * sink_rps / raw_rps,
        100.0 * median(pairs)
    );
}
