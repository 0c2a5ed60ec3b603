//! The fast path writes what the general path writes, and declines what it must: both run
//! over records that exercise every branch of either, and their files and dead letters are
//! compared.

use super::*;
use crate::parquet_sink::schema::ExtraFields;

/// Records that exercise every branch of the fast path and of the general path.
fn awkward_records() -> Vec<ConsumerRecord> {
    let ts = BASE + 5;
    let later = BASE + 2 * HOUR + 17;
    let lines: Vec<String> = vec![
        format!(
            r#"{{"id":1,"ts":{ts},"country":"DE","user":"a","score":1.5,"ratio":0.25,"small":3,"ok":true,"day":"2026-11-25","extra":{{"b":1,"a":[1,2.50,"x"]}}}}"#
        ),
        format!(r#"{{"ts":"2026-11-25T10:30:00.123+02:00","id":2,"country":"DE","user":"b"}}"#),
        format!(r#"{{"id":3,"ts":{ts},"country":"DE","user":"a\"b\\n\u00e9\ud83d\ude00 \/"}}"#),
        format!(r#"{{"i\u0064":4,"ts":{ts},"country":"DE"}}"#),
        format!(r#"{{"id":5,"ts":{ts},"country":"DE","user":null,"score":null,"extra":null}}"#),
        format!(r#"{{"ts":{ts},"country":"DE"}}"#),
        format!(r#"{{"id":"7","ts":{ts},"country":"DE"}}"#),
        format!(r#"{{"id":8,"ts":{ts},"country":"DE","zzz":1}}"#),
        "{not json".to_string(),
        "[1,2]".to_string(),
        format!(r#"{{"id":11,"ts":{ts},"country":"DE","score":18446744073709551615}}"#),
        format!(r#"{{"id":18446744073709551615,"ts":{ts},"country":"DE"}}"#),
        format!(r#"{{"id":13,"ts":{ts},"country":"DE","ratio":1e39}}"#),
        format!(r#"{{"id":14,"ts":{ts},"country":"DE","small":3000000000}}"#),
        format!(r#"{{"id":15,"ts":{ts},"country":7}}"#),
        format!(r#"{{"id":16,"ts":{ts},"country":null}}"#),
        format!(r#"{{"id":17,"ts":{ts},"country":""}}"#),
        format!(r#"{{"id":18,"ts":{ts},"country":{{"x":[1,{{"y":null}}]}}}}"#),
        format!(r#"{{"id":19,"ts":{ts},"country":"a/b=c"}}"#),
        format!(r#"{{"id":20,"country":"DE"}}"#),
        format!(r#"{{"id":21,"ts":1.5,"country":"DE"}}"#),
        format!(r#"{{"id":22,"ts":true,"country":"DE"}}"#),
        format!(r#"{{"id":23,"id":24,"ts":{ts},"country":"DE"}}"#),
        format!(r#"{{"id":25,"ts":{ts},"country":"DE"}} x"#),
        format!(r#"{{"id":26,"ts":{ts},"country":"DE","zzz":1e400}}"#),
        format!(r#"{{"id":27,"ts":{ts},"country":"DE","day":"2026-13-01"}}"#),
        format!(" \n{{ \"id\" : 28 , \"ts\" : {later} , \"country\" : \"FR\" }} \n"),
        format!(r#"{{"id":29,"ts":{later},"country":"FR","extra":"x","n_any":[]}}"#),
        format!(
            r#"{{"id":30,"ts":{later},"country":"FR","extra":{{"a":{{"b":{{"c":[[[]]]}}}}}},"n_any":1.0e2}}"#
        ),
        format!(r#"{{"id":31,"ts":{ts},"country":"DE","user":5}}"#),
        format!(r#"{{"id":32,"ts":{ts},"country":"DE","ok":"true"}}"#),
        format!(r#"{{"id":33,"ts":"2026-11-25T10:00:00.123456789Z","country":"DE"}}"#),
        format!(r#"{{"id":34,"ts":-1,"country":"DE"}}"#),
        format!(r#"{{"id":35,"ts":"2026-11-25 10:00:00","country":"DE"}}"#),
        format!(
            r#"{{"id":36,"ts":{ts},"country":"DE","score":-0.0,"ratio":-3,"small":-2147483648}}"#
        ),
        format!(r#"{{"id":37,"ts":{ts},"country":"DE","user":"","day":null,"ok":false}}"#),
        format!(r#"{{"id":38,"ts":{ts},"country":"DE","ratio":3.4028235e38,"score":1e308}}"#),
        "{}".to_string(),
        "null".to_string(),
        format!(r#"{{"id":40,"ts":{ts},"country":"DE","user":"\ud800"}}"#),
        format!(r#"{{"id":41,"ts":{ts},"country":"DE","zzz":{{"q":[1,2,{{"r":"\u0041"}}]}}}}"#),
        // The fast reader's own edges: escapes across its 32-byte chunks, raw control
        // characters, number forms, literals, nesting depth, whitespace.
        format!(
            r#"{{"id":42,"ts":{ts},"country":"DE","user":"0123456789012345678901234567890\"\\x"}}"#
        ),
        format!("{{\"id\":43,\"ts\":{ts},\"country\":\"DE\",\"user\":\"tab\there\"}}"),
        format!(r#"{{"id":01,"ts":{ts},"country":"DE"}}"#),
        format!(r#"{{"id":-0,"ts":{ts},"country":"DE","score":-0}}"#),
        format!(r#"{{"id":46,"ts":{ts},"country":"DE","score":1.0,"n_any":-0}}"#),
        format!(r#"{{"id":47,"ts":{ts},"country":"DE","score":1e2,"n_any":1E+2}}"#),
        format!(r#"{{"id":-,"ts":{ts},"country":"DE"}}"#),
        format!(r#"{{"id":1-2,"ts":{ts},"country":"DE"}}"#),
        format!(
            r#"{{"id":9223372036854775807,"ts":{ts},"country":"DE","n_any":-9223372036854775808}}"#
        ),
        format!(
            r#"{{"id":123456789012345678,"ts":{ts},"country":"DE","score":1234567890123456789}}"#
        ),
        format!(r#"{{"id":52,"ts":{ts},"country":"DE","ok":truex}}"#),
        format!(
            r#"{{"id":53,"ts":{ts},"country":"DE","extra":{}1{}}}"#,
            "[".repeat(130),
            "]".repeat(130)
        ),
        format!(
            r#"{{"id":54,"ts":{ts},"country":"DE","extra":{}1{}}}"#,
            "[".repeat(99),
            "]".repeat(99)
        ),
        format!("\u{feff}{{\"id\":55,\"ts\":{ts},\"country\":\"DE\"}}"),
        format!(r#"{{"id":56,"ts":{ts},"country":"DE",}}"#),
        format!(r#"{{"id":57,"ts":{ts},"country":"DE"}}{{}}"#),
        format!(r#"{{"id":58,"ts":{ts},"country":"DE","extra":[1,2,]}}"#),
        format!(r#"{{"id":59,"ts":{ts},"country":"D\u0045","n_any":"\ud83d\ude00"}}"#),
        format!(r#"{{"id":60,"ts":{ts},"country":"DE","zzz":-01}}"#),
        format!(
            r#"{{"id":61 , "ts" :{ts}	,"country":"DE" , "extra" : {{ "b" : [ 1 , {{ }} ] , "a" : null }} }}"#
        ),
        format!(r#"{{"id":62,"ts":{ts},"country":"DE","user":"x"#),
        format!(r#"{{"id":63,"ts":{ts},"country":"DE","user":"\x"}}"#),
    ];
    let mut records: Vec<ConsumerRecord> = lines
        .iter()
        .enumerate()
        .map(|(o, line)| record(0, o as i64, line))
        .collect();
    let mut invalid_utf8 = record(0, records.len() as i64, "");
    let mut bytes = format!(r#"{{"id":64,"ts":{ts},"country":"DE","user":"#).into_bytes();
    bytes.extend_from_slice(b"\"\xff\"}");
    invalid_utf8.value = Some(bytes.into());
    records.push(invalid_utf8);
    let tombstone = records.len() as i64;
    let mut empty = record(0, tombstone, "");
    empty.value = None;
    records.push(empty);
    records
}

fn column(name: &str, kind: ColumnType) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        kind,
        nullable: name != "id",
    }
}

/// Each committed file's rows (as Arrow batches) by path, the dead letters, and how many
/// records the fast path wrote.
type Outcome = (
    BTreeMap<String, Vec<arrow::record_batch::RecordBatch>>,
    Vec<(i64, String)>,
    u64,
);

fn run_engine(cfg: EngineConfig, records: &[ConsumerRecord], general_only: bool) -> Outcome {
    let out = cfg.out.clone();
    let mut engine = SinkEngine::new(cfg, Arc::new(SinkMetrics::default())).unwrap();
    engine.general_path_only = general_only;
    engine.assign(&TopicPartition::new("views", 0)).unwrap();
    // Small writes, so that both inference and the ready schema see the records.
    for chunk in records.chunks(3) {
        engine.write(chunk.to_vec()).unwrap();
    }
    engine.close_all().unwrap();
    engine.commit().unwrap();
    let fast = engine.fast_records;
    let letters = engine
        .take_dead_letters()
        .into_iter()
        .map(|l| (l.record.offset, l.reason))
        .collect();
    let mut files = BTreeMap::new();
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
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
            let batches = reader.map(|b| b.unwrap()).collect();
            let relative = path.strip_prefix(&out).unwrap().display().to_string();
            files.insert(relative, batches);
        }
    }
    (files, letters, fast)
}

/// The fast path writes what the general path writes, and declines what it must.
#[test]
fn the_fast_path_writes_what_the_general_path_writes() {
    let declared = vec![
        column("id", ColumnType::Int64),
        column("ts", ColumnType::TimestampMs),
        column("country", ColumnType::String),
        column("user", ColumnType::String),
        column("score", ColumnType::Float64),
        column("ratio", ColumnType::Float32),
        column("small", ColumnType::Int32),
        column("ok", ColumnType::Boolean),
        column("day", ColumnType::Date),
        column("extra", ColumnType::Json),
        column("n_any", ColumnType::Json),
    ];
    let records = awkward_records();
    type Variant = (&'static str, Box<dyn Fn(&mut EngineConfig)>);
    let variants: Vec<Variant> = vec![
        ("declared", Box::new(|_: &mut EngineConfig| {})),
        (
            "declared, extra fields ignored",
            Box::new(|c: &mut EngineConfig| c.schema.extra_fields = ExtraFields::Ignore),
        ),
        (
            "declared without the time column, extra fields ignored",
            Box::new(|c: &mut EngineConfig| {
                c.schema.extra_fields = ExtraFields::Ignore;
                if let Some(columns) = &mut c.schema.columns {
                    columns.retain(|col| col.name != "ts");
                }
            }),
        ),
        (
            "declared without the time column",
            Box::new(|c: &mut EngineConfig| {
                if let Some(columns) = &mut c.schema.columns {
                    columns.retain(|col| col.name != "ts");
                }
            }),
        ),
        (
            "inferred",
            Box::new(|c: &mut EngineConfig| c.schema.columns = None),
        ),
        (
            "inferred, extra fields ignored, Kafka time, no partitions",
            Box::new(|c: &mut EngineConfig| {
                c.schema.columns = None;
                c.schema.extra_fields = ExtraFields::Ignore;
                c.time_field = None;
                c.kafka_metadata = false;
                c.partitioner = Partitioner::new(TimePartitioning::Day, vec![]);
            }),
        ),
        (
            "time field is the partition field",
            Box::new(|c: &mut EngineConfig| {
                c.partitioner = Partitioner::new(TimePartitioning::None, vec!["ts".into()]);
            }),
        ),
    ];
    for (name, adjust) in variants {
        let run = |general_only: bool| {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(dir.path(), 4);
            cfg.schema.columns = Some(declared.clone());
            adjust(&mut cfg);
            let outcome = run_engine(cfg, &records, general_only);
            (dir, outcome)
        };
        let (_fast_dir, fast) = run(false);
        let (_general_dir, general) = run(true);
        // Without a time column, `dead_letter` refuses every record with a time field.
        if !name.ends_with("without the time column") {
            assert!(!general.0.is_empty(), "{name}: nothing written");
            assert!(fast.2 >= 10, "{name}: the fast path took only {}", fast.2);
        }
        assert_eq!(general.2, 0);
        assert_eq!(fast.1, general.1, "{name}: dead letters differ");
        assert_eq!(
            fast.0.keys().collect::<Vec<_>>(),
            general.0.keys().collect::<Vec<_>>(),
            "{name}: files differ"
        );
        for (path, batches) in &general.0 {
            let a = arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap();
            let theirs = &fast.0[path];
            let b = arrow::compute::concat_batches(&theirs[0].schema(), theirs).unwrap();
            assert_eq!(a, b, "{name}: {path} differs");
        }
    }
}
