//! The engine's tests: exactly-once through crashes at random points, the layout of the
//! files, dead letters, rolling, and a saved schema across a restart. `fast_path.rs` checks
//! the fast path against the general path.

#![allow(clippy::unwrap_used)]

mod fast_path;

use std::path::Path;

use super::*;
use crate::parquet_sink::partitioning::TimePartitioning;
use crate::parquet_sink::schema::{ColumnSpec, ColumnType};
use crate::parquet_sink::writer::Codec;
use arrow::array::{Array, Int64Array};
use millrace_client::record::TimestampType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const HOUR: i64 = 3_600_000;
const BASE: i64 = 1_795_600_800_000; // 2026-11-25T10:00:00Z

fn config(out: &Path, max_records: u64) -> EngineConfig {
    EngineConfig {
        out: out.to_path_buf(),
        partitioner: Partitioner::new(TimePartitioning::Hour, vec!["country".into()]),
        rolling: RollingPolicy {
            max_records,
            max_bytes: u64::MAX,
            event_time_interval_ms: HOUR,
            max_open_ms: u64::MAX,
        },
        format: FileFormat {
            codec: Codec::Zstd,
            row_group_rows: 4,
        },
        schema: SchemaConfig {
            infer_records: 5,
            ..SchemaConfig::default()
        },
        time_field: Some("ts".into()),
        kafka_metadata: true,
    }
}

fn record(partition: i32, offset: i64, value: &str) -> ConsumerRecord {
    ConsumerRecord {
        topic: Arc::from("views"),
        partition,
        offset,
        timestamp: BASE,
        timestamp_type: TimestampType::CreateTime,
        key: None,
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![],
        leader_epoch: None,
    }
}

/// A topic of known content: ids interleaved over hours and countries, slightly out of
/// order in event time, with a malformed record every 37th.
fn topic(partitions: i32, per_partition: i64) -> Vec<Vec<ConsumerRecord>> {
    (0..partitions)
        .map(|p| {
            (0..per_partition)
                .map(|o| {
                    let id = i64::from(p) * 1_000_000 + o;
                    if o % 37 == 36 {
                        return record(p, o, "{not json");
                    }
                    let ts = BASE + (o * HOUR / 40) - (o % 3) * 60_000;
                    let country = ["DE", "FR", "US"][(o % 3) as usize];
                    record(
                        p,
                        o,
                        &format!(r#"{{"id":{id},"ts":{ts},"country":"{country}"}}"#),
                    )
                })
                .collect()
        })
        .collect()
}

fn expected_ids(topic: &[Vec<ConsumerRecord>]) -> Vec<i64> {
    let mut ids: Vec<i64> = topic
        .iter()
        .flatten()
        .filter(|r| r.offset % 37 != 36)
        .map(|r| i64::from(r.partition) * 1_000_000 + r.offset)
        .collect();
    ids.sort_unstable();
    ids
}

/// Every `id` in the committed files, with the files' directories checked.
fn committed_ids(out: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut stack = vec![out.join("topic=views")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            assert!(path.extension().unwrap() == "parquet", "{}", path.display());
            let file = std::fs::File::open(&path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let column = batch.column_by_name("id").unwrap();
                let column = column.as_any().downcast_ref::<Int64Array>().unwrap();
                ids.extend(column.values().iter().copied());
            }
        }
    }
    ids.sort_unstable();
    ids
}

/// A small deterministic generator, so failures replay.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// Feeds the topic to engines that crash at random points (dropped without closing, or
/// failing between the commit line and the renames), restarting from recovery each
/// time, then finishes cleanly.
fn run_with_crashes(seed: u64, max_records: u64) {
    let out = tempfile::tempdir().unwrap();
    let topic = topic(2, 300);
    let mut rng = Lcg(seed);
    let mut crashes = 0;
    loop {
        let metrics = Arc::new(SinkMetrics::default());
        let mut engine = SinkEngine::new(config(out.path(), max_records), metrics).unwrap();
        let mut next: Vec<i64> = (0..2)
            .map(|p| {
                engine
                    .assign(&TopicPartition::new("views", p))
                    .unwrap()
                    .unwrap_or(0)
            })
            .collect();
        let crash_now = crashes < 8;
        let mut crashed = false;
        while next.iter().any(|&n| n < 300) {
            let p = rng.next(2) as usize;
            let take = 1 + rng.next(25) as i64;
            let from = next[p];
            let to = (from + take).min(300);
            engine
                .write(topic[p][from as usize..to as usize].to_vec())
                .unwrap();
            next[p] = to;
            engine.take_dead_letters();
            if rng.next(3) == 0 {
                engine.commit().unwrap();
            }
            if crash_now && rng.next(10) == 0 {
                if rng.next(2) == 0 {
                    engine.crash_before_rename = true;
                    let _ = engine.commit();
                }
                crashed = true;
                break;
            }
        }
        if crashed {
            crashes += 1;
            continue;
        }
        engine.close_all().unwrap();
        engine.commit().unwrap();
        break;
    }
    assert_eq!(
        committed_ids(out.path()),
        expected_ids(&topic),
        "seed {seed}"
    );
}

#[test]
fn crashes_at_random_points_neither_duplicate_nor_skip_records() {
    for seed in 1..=12 {
        run_with_crashes(seed, 1 + seed % 9);
    }
}

#[test]
fn a_clean_run_writes_every_valid_record_once() {
    run_with_crashes(0, 1_000);
}

#[test]
fn files_land_in_hive_directories_named_by_offset_range() {
    let out = tempfile::tempdir().unwrap();
    let mut engine =
        SinkEngine::new(config(out.path(), 100), Arc::new(SinkMetrics::default())).unwrap();
    let tp = TopicPartition::new("views", 0);
    engine.assign(&tp).unwrap();
    let ts = BASE + HOUR + 5;
    engine
        .write(vec![
            record(0, 0, &format!(r#"{{"id":1,"ts":{ts},"country":"DE"}}"#)),
            record(0, 1, &format!(r#"{{"id":2,"ts":{ts},"country":"DE"}}"#)),
        ])
        .unwrap();
    engine.close_all().unwrap();
    assert_eq!(engine.commit().unwrap(), vec![(tp, 2)]);
    let dir = out
        .path()
        .join("topic=views/dt=2026-11-25/hour=11/country=DE");
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["views+0+0000000000000000000+0000000000000000001.parquet"]
    );
}

#[test]
fn records_that_do_not_fit_become_dead_letters_with_a_reason() {
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(out.path(), 100);
    cfg.schema.columns = Some(vec![
        ColumnSpec {
            name: "id".into(),
            kind: ColumnType::Int64,
            nullable: false,
        },
        ColumnSpec {
            name: "ts".into(),
            kind: ColumnType::Int64,
            nullable: false,
        },
        ColumnSpec {
            name: "country".into(),
            kind: ColumnType::String,
            nullable: true,
        },
    ]);
    let metrics = Arc::new(SinkMetrics::default());
    let mut engine = SinkEngine::new(cfg, metrics.clone()).unwrap();
    engine.assign(&TopicPartition::new("views", 0)).unwrap();
    engine
        .write(vec![
            record(0, 0, "not json"),
            record(0, 1, &format!(r#"{{"id":"x","ts":{BASE}}}"#)),
            record(0, 2, &format!(r#"{{"id":3,"ts":{BASE}}}"#)),
            record(0, 3, r#"{"id":4}"#),
        ])
        .unwrap();
    let letters = engine.take_dead_letters();
    let reasons: Vec<(i64, &str)> = letters
        .iter()
        .map(|l| (l.record.offset, l.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].1.starts_with("value is not valid JSON"));
    assert_eq!(
        reasons[1],
        (
            1,
            "does not fit the schema: field `id` is a string but the column is Int64"
        )
    );
    assert_eq!(reasons[2], (3, "event time field `ts` is missing"));
    assert_eq!(metrics.snapshot().dead_lettered, 3);
}

#[test]
fn files_roll_by_estimated_size() {
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(out.path(), u64::MAX);
    cfg.rolling.max_bytes = 4_000;
    let mut engine = SinkEngine::new(cfg, Arc::new(SinkMetrics::default())).unwrap();
    engine.assign(&TopicPartition::new("views", 0)).unwrap();
    let records: Vec<ConsumerRecord> = (0..200)
        .map(|o| {
            record(
                0,
                o,
                &format!(
                    r#"{{"id":{o},"ts":{BASE},"country":"DE","pad":"{}"}}"#,
                    "x".repeat(80)
                ),
            )
        })
        .collect();
    engine.write(records).unwrap();
    engine.close_all().unwrap();
    engine.commit().unwrap();
    let dir = out
        .path()
        .join("topic=views/dt=2026-11-25/hour=10/country=DE");
    let files = std::fs::read_dir(dir).unwrap().count();
    // About 120 input bytes a record: some 33 records a file, give or take the encoder.
    assert!((3..=20).contains(&files), "{files} files");
    assert_eq!(committed_ids(out.path()), (0..200).collect::<Vec<i64>>());
}

#[test]
fn an_inferred_schema_survives_a_restart() {
    let out = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("views", 0);
    let line = |id: i64, extra: &str| format!(r#"{{"id":{id},"ts":{BASE},"country":"DE"{extra}}}"#);
    {
        let mut engine =
            SinkEngine::new(config(out.path(), 100), Arc::new(SinkMetrics::default())).unwrap();
        engine.assign(&tp).unwrap();
        let records = (0..5).map(|o| record(0, o, &line(o, ""))).collect();
        engine.write(records).unwrap();
        engine.close_all().unwrap();
        engine.commit().unwrap();
    }
    let mut engine =
        SinkEngine::new(config(out.path(), 100), Arc::new(SinkMetrics::default())).unwrap();
    assert_eq!(engine.assign(&tp).unwrap(), Some(5));
    // A field the first records did not have: the saved schema rejects it at once
    // instead of inferring a different schema for the new files.
    engine
        .write(vec![record(0, 5, &line(5, r#","new":1"#))])
        .unwrap();
    let letters = engine.take_dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].reason,
        "does not fit the schema: field `new` is not in the schema"
    );
}
