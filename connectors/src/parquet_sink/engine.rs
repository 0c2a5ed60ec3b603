//! The Kafka-independent heart of the sink: records in, committed files out.
//!
//! [`SinkEngine`] takes records of assigned partitions, routes each to the open file of its
//! partition directory, rolls files by the [`RollingPolicy`](super::rolling::RollingPolicy),
//! and on [`SinkEngine::commit`] makes the closed files visible together with each Kafka
//! partition's resume point (see [`commit`](super::commit)). It does no network I/O, so the
//! exactly-once logic is tested by crashing it at any point; the Kafka loop around it is
//! [`ParquetSink`](super::ParquetSink), and `export` uses it too.
//!
//! # Why restarts neither duplicate nor skip
//!
//! Files of one Kafka partition and one directory hold consecutive runs of that
//! directory's records, and closed files are committed in order. So after a checkpoint, a
//! record at or after the resume point is already written exactly when its offset is at most
//! the last offset committed for its directory (`directory_high`). The resume point is the
//! smallest offset not yet in a committed file: the first record of any open file, of any
//! record waiting for schema inference, or the next record to read. Routing depends only on
//! the record, so a replay puts every record in the same directory as before.
//!
//! # Two paths per record
//!
//! Once a topic's schema is fixed, each record first tries the [fast path](super::decode):
//! its JSON bytes are parsed straight into the open file's Arrow column builders. A record
//! the fast path declines (anything unusual, including every record that will end up
//! dead-lettered) takes the general path: a `serde_json` map, the schema check, and the
//! conversion. Both put the same record in the same file with the same values; the general
//! path alone decides and words rejections. Parquet encoding runs on the task's
//! [encoder](super::encoder) thread.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use millrace_client::record::ConsumerRecord;
use millrace_client::TopicPartition;
use serde_json::{Map, Value};

use super::commit::{apply, sync_dir, Checkpoint, CheckpointLog, CommittedFile};
use super::convert::rows_to_batch;
use super::decode::{Cell, RowLayout};
use super::encoder::Encoder;
use super::partitioning::{file_name, DirectoryCache, Partitioner};
use super::recovery::{recover, StatePaths, STATE_DIR};
use super::rolling::{RollReason, RollingPolicy};
use super::schema::{
    SchemaConfig, SinkSchema, KAFKA_OFFSET_COLUMN, KAFKA_PARTITION_COLUMN, KAFKA_TIMESTAMP_COLUMN,
};
use super::writer::{ClosedFile, FileFormat, OpenFile};
use crate::error::{ConnectorError, IoContext, Result};
use crate::framework::Sink;
use crate::metrics::SinkMetrics;

/// Everything the engine needs to know about the files it writes.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Output root.
    pub out: PathBuf,
    /// Directory layout.
    pub partitioner: Partitioner,
    /// When files close.
    pub rolling: RollingPolicy,
    /// Codec and row groups.
    pub format: FileFormat,
    /// Declared schema or inference settings.
    pub schema: SchemaConfig,
    /// JSON field with the event time (ms since the epoch or RFC 3339); the Kafka timestamp
    /// when `None`.
    pub time_field: Option<String>,
    /// Add `_kafka_partition`, `_kafka_offset` and `_kafka_timestamp` columns.
    pub kafka_metadata: bool,
}

/// A record that cannot be written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The record as read.
    pub record: ConsumerRecord,
    /// The reason, for the `millrace.error` header.
    pub reason: String,
}

/// A parsed record on its way to a file.
struct Routed {
    record: ConsumerRecord,
    fields: Map<String, Value>,
    event_ms: i64,
    directory: String,
}

/// The schema of one topic, or the records collected to infer it.
enum TopicSchema {
    Ready {
        schema: SinkSchema,
        layout: Arc<RowLayout>,
    },
    Inferring {
        samples: Vec<Routed>,
        since: Instant,
    },
}

/// One assigned Kafka partition.
struct PartitionSink {
    paths: StatePaths,
    log: CheckpointLog,
    seq: u64,
    /// Resume point of the last checkpoint.
    committed_next: Option<i64>,
    /// Last offset covered by a committed or closed file, per directory.
    directory_high: BTreeMap<String, i64>,
    /// Offset after the last record processed.
    position: Option<i64>,
    /// Newest event time seen (for closing files that time has left behind).
    max_event_ms: i64,
    open: BTreeMap<String, OpenFile>,
    closed: Vec<ClosedFile>,
}

/// Records in, exactly-once Parquet files out. See the [module documentation](self).
pub struct SinkEngine {
    config: EngineConfig,
    schemas: HashMap<String, TopicSchema>,
    partitions: HashMap<TopicPartition, PartitionSink>,
    dead_letters: Vec<DeadLetter>,
    metrics: Arc<SinkMetrics>,
    encoder: Encoder,
    /// The fast path's memory of field order (see [`RowLayout::parse`]).
    field_order: Vec<usize>,
    directories: DirectoryCache,
    /// Test hook: fail `commit` right after the log line, before any rename.
    #[cfg(test)]
    pub(crate) crash_before_rename: bool,
    /// Test hook: every record takes the general path.
    #[cfg(test)]
    pub(crate) general_path_only: bool,
    /// Test counter: records the fast path wrote.
    #[cfg(test)]
    pub(crate) fast_records: u64,
}

impl SinkEngine {
    /// An engine writing under `config.out`, counting into `metrics`.
    pub fn new(config: EngineConfig, metrics: Arc<SinkMetrics>) -> Result<Self> {
        std::fs::create_dir_all(config.out.join(STATE_DIR))
            .io("creating", &config.out.join(STATE_DIR))?;
        Ok(SinkEngine {
            config,
            schemas: HashMap::new(),
            partitions: HashMap::new(),
            dead_letters: Vec::new(),
            metrics,
            encoder: Encoder::start()?,
            field_order: Vec::new(),
            directories: DirectoryCache::default(),
            #[cfg(test)]
            crash_before_rename: false,
            #[cfg(test)]
            general_path_only: false,
            #[cfg(test)]
            fast_records: 0,
        })
    }

    /// Takes over `tp`: recovers its state and returns the offset to resume from (`None`
    /// when nothing of it was ever committed: start where the configuration says).
    pub fn assign(&mut self, tp: &TopicPartition) -> Result<Option<i64>> {
        if let Some(part) = self.partitions.get(tp) {
            return Ok(part.position.or(part.committed_next));
        }
        let (paths, log, state) = recover(&self.config.out, &tp.topic, tp.partition)?;
        self.partitions.insert(
            tp.clone(),
            PartitionSink {
                paths,
                log,
                seq: state.seq,
                committed_next: state.next_offset,
                directory_high: state.directory_high,
                position: state.next_offset,
                max_event_ms: i64::MIN,
                open: BTreeMap::new(),
                closed: Vec::new(),
            },
        );
        Ok(state.next_offset)
    }

    /// The partitions taken over and not yet released.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// The offset after the last record processed for `tp`, if any.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions.get(tp).and_then(|p| p.position)
    }

    /// Processes records (in offset order per partition). Records of partitions not assigned,
    /// and records before a partition's position (already processed), are ignored.
    pub fn write(&mut self, records: Vec<ConsumerRecord>) -> Result<()> {
        // Cells borrow from `records`, so they live out here and are reused record to record.
        let mut cells = Vec::new();
        let mut tp = TopicPartition::new("", -1);
        for record in &records {
            if tp.partition != record.partition || tp.topic != *record.topic {
                tp = TopicPartition::new(&*record.topic, record.partition);
            }
            let Some(part) = self.partitions.get_mut(&tp) else {
                tracing::debug!(partition = %tp, "record of a partition not assigned; ignored");
                continue;
            };
            if part.position.is_some_and(|p| record.offset < p) {
                continue;
            }
            part.position = Some(record.offset + 1);
            self.metrics.add_records_in(1);
            if !self.write_fast(&tp, record, &mut cells)? {
                self.write_general(&tp, record.clone())?;
            }
        }
        Ok(())
    }

    /// The fast path: `false` when it declines the record (nothing done), `true` when the
    /// record is written or was written before a restart.
    fn write_fast<'r>(
        &mut self,
        tp: &TopicPartition,
        record: &'r ConsumerRecord,
        cells: &mut Vec<Cell<'r>>,
    ) -> Result<bool> {
        #[cfg(test)]
        if self.general_path_only {
            return Ok(false);
        }
        let Some(TopicSchema::Ready { layout, .. }) = self.schemas.get(&tp.topic) else {
            return Ok(false);
        };
        let Some(value) = record.value.as_deref() else {
            return Ok(false);
        };
        if !layout.parse(value, cells, &mut self.field_order) {
            return Ok(false);
        }
        let Some(event_ms) = layout.event_time(cells, record.timestamp) else {
            return Ok(false);
        };
        if !layout.fits(cells) {
            return Ok(false);
        }
        let cells: &[Cell<'r>] = cells;
        let Some(directory) =
            self.directories
                .directory(&self.config.partitioner, &tp.topic, event_ms, |i| {
                    layout.partition_value(cells, i)
                })
        else {
            return Ok(false);
        };
        let Some(part) = self.partitions.get_mut(tp) else {
            return Ok(true);
        };
        if part
            .directory_high
            .get(directory)
            .is_some_and(|&high| record.offset <= high)
        {
            // Written before a restart (see `write_general`).
            return Ok(true);
        }
        part.max_event_ms = part.max_event_ms.max(event_ms);
        let target = Target {
            rolling: self.config.rolling,
            format: &self.config.format,
            layout,
            directory,
            event_ms,
        };
        append_row(
            part,
            &mut self.encoder,
            tp,
            &target,
            record,
            Row::Cells(cells),
        )?;
        #[cfg(test)]
        {
            self.fast_records += 1;
        }
        Ok(true)
    }

    /// The general path: parse, route, and check or collect for inference.
    fn write_general(&mut self, tp: &TopicPartition, record: ConsumerRecord) -> Result<()> {
        let routed = match self.route(record) {
            Ok(routed) => routed,
            Err(dead) => {
                self.dead_letter(*dead);
                return Ok(());
            }
        };
        let Some(part) = self.partitions.get_mut(tp) else {
            return Ok(());
        };
        if part
            .directory_high
            .get(&routed.directory)
            .is_some_and(|&high| routed.record.offset <= high)
        {
            // Written before a restart (replayed because another directory held back the
            // resume point).
            return Ok(());
        }
        part.max_event_ms = part.max_event_ms.max(routed.event_ms);
        match self.schema_for(&tp.topic)? {
            TopicSchema::Ready { .. } => self.append(tp, routed),
            TopicSchema::Inferring { samples, .. } => {
                samples.push(routed);
                if samples.len() >= self.config.schema.infer_records.max(1) {
                    self.finish_inference(&tp.topic)?;
                }
                Ok(())
            }
        }
    }

    /// Parses a record and finds its directory, or says why it cannot be written.
    fn route(&self, record: ConsumerRecord) -> std::result::Result<Routed, Box<DeadLetter>> {
        let reject =
            |record: ConsumerRecord, reason: String| Box::new(DeadLetter { record, reason });
        let Some(value) = record.value.as_ref() else {
            return Err(reject(record, "record has no value (tombstone)".into()));
        };
        let fields = match serde_json::from_slice::<Value>(value) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(reject(record, "value is JSON but not an object".into())),
            Err(error) => return Err(reject(record, format!("value is not valid JSON: {error}"))),
        };
        let event_ms = match self.event_time(&record, &fields) {
            Ok(ms) => ms,
            Err(reason) => return Err(reject(record, reason)),
        };
        let Some(directory) = self
            .config
            .partitioner
            .directory(&record.topic, event_ms, &fields)
        else {
            return Err(reject(
                record,
                format!("event time {event_ms} is out of the calendar's range"),
            ));
        };
        let mut fields = fields;
        // Partition fields live in the path, as Hive and Spark store them: a column in the
        // file as well would clash with the path's column in readers (DataFusion refuses the
        // duplicate name).
        for field in self.config.partitioner.fields() {
            fields.remove(field);
        }
        Ok(Routed {
            record,
            fields,
            event_ms,
            directory,
        })
    }

    fn event_time(
        &self,
        record: &ConsumerRecord,
        fields: &Map<String, Value>,
    ) -> std::result::Result<i64, String> {
        let Some(field) = &self.config.time_field else {
            return Ok(record.timestamp);
        };
        match fields.get(field) {
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                format!("event time field `{field}` is not an integer of ms since the epoch")
            }),
            Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("event time field `{field}` is not RFC 3339: {e}")),
            Some(_) => Err(format!(
                "event time field `{field}` is neither ms since the epoch nor RFC 3339"
            )),
            None => Err(format!("event time field `{field}` is missing")),
        }
    }

    /// The schema state of `topic`: declared, persisted by an earlier inference, or being
    /// inferred now.
    fn schema_for(&mut self, topic: &str) -> Result<&mut TopicSchema> {
        if !self.schemas.contains_key(topic) {
            let state = match &self.config.schema.columns {
                Some(columns) => {
                    let partition_fields = self.config.partitioner.fields();
                    let columns = columns
                        .iter()
                        .filter(|c| !partition_fields.contains(&c.name))
                        .cloned()
                        .collect();
                    ready(SinkSchema { columns }, &self.config)
                }
                None => match load_schema(&self.schema_path(topic))? {
                    Some(schema) => ready(schema, &self.config),
                    None => TopicSchema::Inferring {
                        samples: Vec::new(),
                        since: Instant::now(),
                    },
                },
            };
            self.schemas.insert(topic.to_string(), state);
        }
        self.schemas
            .get_mut(topic)
            .ok_or_else(|| ConnectorError::Config(format!("no schema state for {topic}")))
    }

    fn schema_path(&self, topic: &str) -> PathBuf {
        self.config
            .out
            .join(STATE_DIR)
            .join(topic)
            .join("schema.json")
    }

    /// Fixes the schema of `topic` from the records collected so far, saves it (so restarts
    /// write files of the same schema), and writes the collected records.
    fn finish_inference(&mut self, topic: &str) -> Result<()> {
        let samples = match self.schemas.get_mut(topic) {
            Some(TopicSchema::Inferring { samples, .. }) if !samples.is_empty() => {
                std::mem::take(samples)
            }
            _ => return Ok(()),
        };
        let inferred = SinkSchema::infer(samples.iter().map(|s| &s.fields));
        let schema = save_schema(&self.schema_path(topic), &inferred)?;
        if schema == inferred {
            tracing::info!(topic, columns = schema.columns.len(), "schema inferred");
        } else {
            tracing::info!(
                topic,
                "schema inferred by another task first; using that one"
            );
        }
        self.schemas
            .insert(topic.to_string(), ready(schema, &self.config));
        for routed in samples {
            let tp = TopicPartition::new(&*routed.record.topic, routed.record.partition);
            if self.partitions.contains_key(&tp) {
                self.append(&tp, routed)?;
            }
        }
        Ok(())
    }

    /// Checks a record of the general path against the ready schema and adds it to its
    /// directory's open file.
    fn append(&mut self, tp: &TopicPartition, routed: Routed) -> Result<()> {
        let Some(TopicSchema::Ready { schema, layout }) = self.schemas.get(&tp.topic) else {
            return Ok(());
        };
        if let Err(mismatch) = schema.check(&routed.fields, self.config.schema.extra_fields) {
            self.dead_letter(DeadLetter {
                record: routed.record,
                reason: format!("does not fit the schema: {mismatch}"),
            });
            return Ok(());
        }
        let layout = layout.clone();
        let mut cells = Vec::new();
        layout.cells_of(&routed.fields, &mut cells);
        let row = if layout.converts(&cells) {
            Row::Cells(&cells)
        } else {
            // A value only arrow's JSON decoder converts (or refuses): decode this row alone.
            let mut row = schema.prepare_row(routed.fields.clone());
            if self.config.kafka_metadata {
                row.insert(
                    KAFKA_PARTITION_COLUMN.into(),
                    routed.record.partition.into(),
                );
                row.insert(KAFKA_OFFSET_COLUMN.into(), routed.record.offset.into());
                row.insert(
                    KAFKA_TIMESTAMP_COLUMN.into(),
                    routed.record.timestamp.into(),
                );
            }
            let (batch, rejected) = rows_to_batch(layout.arrow_schema(), &[row])?;
            if let Some(rejected) = rejected.into_iter().next() {
                self.dead_letter(DeadLetter {
                    record: routed.record,
                    reason: rejected.reason,
                });
                return Ok(());
            }
            Row::Batch(batch)
        };
        let Some(part) = self.partitions.get_mut(tp) else {
            return Ok(());
        };
        let target = Target {
            rolling: self.config.rolling,
            format: &self.config.format,
            layout: &layout,
            directory: &routed.directory,
            event_ms: routed.event_ms,
        };
        append_row(part, &mut self.encoder, tp, &target, &routed.record, row)
    }

    fn dead_letter(&mut self, dead: DeadLetter) {
        tracing::debug!(
            topic = %dead.record.topic,
            partition = dead.record.partition,
            offset = dead.record.offset,
            reason = %dead.reason,
            "dead letter"
        );
        self.metrics.add_dead_lettered(1);
        self.dead_letters.push(dead);
    }

    /// Closes files that the rolling policy says are done by age or event time, and fixes
    /// schemas whose inference has waited `max_open_ms`.
    pub fn tick(&mut self, now: Instant) -> Result<()> {
        let max_wait = std::time::Duration::from_millis(self.config.rolling.max_open_ms);
        let due: Vec<String> = self
            .schemas
            .iter()
            .filter(|(_, s)| {
                matches!(s, TopicSchema::Inferring { samples, since }
                    if !samples.is_empty() && now.saturating_duration_since(*since) >= max_wait)
            })
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in due {
            self.finish_inference(&topic)?;
        }
        let rolling = self.config.rolling;
        for part in self.partitions.values_mut() {
            let done: Vec<(String, RollReason)> = part
                .open
                .iter()
                .filter_map(|(dir, file)| {
                    rolling
                        .on_tick(&file.stats, part.max_event_ms, now)
                        .map(|reason| (dir.clone(), reason))
                })
                .collect();
            for (dir, reason) in done {
                close_file(part, &self.encoder, &dir, reason)?;
            }
        }
        Ok(())
    }

    /// Closes every open file of `partitions` (for a revocation or the end of an export),
    /// first fixing their topics' schemas if inference is still collecting. Follow with
    /// [`Self::take_dead_letters`] and [`Self::commit`].
    pub fn close_partitions(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let mut topics: Vec<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in topics {
            self.finish_inference(topic)?;
        }
        for tp in partitions {
            if let Some(part) = self.partitions.get_mut(tp) {
                let dirs: Vec<String> = part.open.keys().cloned().collect();
                for dir in dirs {
                    close_file(part, &self.encoder, &dir, RollReason::Close)?;
                }
            }
        }
        Ok(())
    }

    /// Closes every open file of every partition.
    pub fn close_all(&mut self) -> Result<()> {
        let all = self.assigned();
        self.close_partitions(&all)
    }

    /// Forgets `partitions` (after their files were committed, or when they were lost to
    /// another member): anything not committed is deleted, and a later owner replays it.
    pub fn release(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(mut part) = self.partitions.remove(tp) {
                for (_, file) in std::mem::take(&mut part.open) {
                    file.discard(&self.encoder);
                }
                for closed in part.closed.drain(..) {
                    let _ = std::fs::remove_file(part.paths.staging.join(&closed.staged_name));
                }
            }
            if let Some(TopicSchema::Inferring { samples, .. }) = self.schemas.get_mut(&tp.topic) {
                samples.retain(|s| s.record.partition != tp.partition);
            }
        }
    }

    /// Records that cannot be written, to send to the dead-letter topic. They must be
    /// delivered before the next [`Self::commit`], which moves resume points past them.
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead_letters)
    }

    /// Whether [`Self::commit`] has anything to do.
    pub fn has_pending_commit(&self) -> bool {
        self.partitions
            .values()
            .any(|p| !p.closed.is_empty() || (p.open.is_empty() && p.position > p.committed_next))
    }

    /// Commits closed files and resume points, one checkpoint per partition that has
    /// something new. Returns the new resume points, for committing the consumer group's
    /// offsets (so that lag is visible; restarts do not read them).
    pub fn commit(&mut self) -> Result<Vec<(TopicPartition, i64)>> {
        let mut committed = Vec::new();
        let mut tps: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        tps.sort();
        for tp in tps {
            let waiting = match self.schemas.get(&tp.topic) {
                Some(TopicSchema::Inferring { samples, .. }) => samples
                    .iter()
                    .filter(|s| s.record.partition == tp.partition)
                    .map(|s| s.record.offset)
                    .min(),
                _ => None,
            };
            let Some(part) = self.partitions.get_mut(&tp) else {
                continue;
            };
            let Some(position) = part.position else {
                continue;
            };
            let next = part
                .open
                .values()
                .map(|f| f.first_offset)
                .chain(waiting)
                .fold(position, i64::min);
            if part.closed.is_empty() && Some(next) == part.committed_next {
                continue;
            }
            // The encoder thread completes closed files in the background: each must be
            // whole and fsynced before the line that commits it.
            for file in &mut part.closed {
                file.durable()?;
            }
            let files: Vec<CommittedFile> = part
                .closed
                .iter()
                .map(|f| CommittedFile {
                    staged: f.staged_name.clone(),
                    path: format!(
                        "{}/{}",
                        f.directory,
                        file_name(&tp.topic, tp.partition, f.first_offset, f.last_offset)
                    ),
                    first_offset: f.first_offset,
                    last_offset: f.last_offset,
                    records: f.records,
                })
                .collect();
            let checkpoint = Checkpoint {
                seq: part.seq + 1,
                next_offset: next,
                directory_high: part
                    .directory_high
                    .iter()
                    .filter(|(_, &high)| high >= next)
                    .map(|(d, &h)| (d.clone(), h))
                    .collect(),
                files,
            };
            if !checkpoint.files.is_empty() {
                // The staged names must be durable before the line that refers to them.
                sync_dir(&part.paths.staging)?;
            }
            part.log.append(&checkpoint)?;
            #[cfg(test)]
            if self.crash_before_rename {
                return Err(ConnectorError::Config("test crash before rename".into()));
            }
            apply(&self.config.out, &part.paths.staging, &checkpoint)?;
            let bytes: u64 = part.closed.iter().map(ClosedFile::bytes).sum();
            let records: u64 = part.closed.iter().map(|f| f.records).sum();
            self.metrics
                .add_committed(part.closed.len() as u64, records, bytes);
            part.closed.clear();
            part.seq = checkpoint.seq;
            part.committed_next = Some(next);
            part.directory_high = checkpoint.directory_high;
            committed.push((tp, next));
        }
        Ok(committed)
    }
}

/// The engine is the Parquet sink's task: the framework's consumer loop drives it.
impl Sink for SinkEngine {
    fn open(&mut self, partition: &TopicPartition) -> Result<Option<i64>> {
        self.assign(partition)
    }

    fn put(&mut self, records: Vec<ConsumerRecord>) -> Result<()> {
        self.write(records)
    }

    fn tick(&mut self, now: Instant) -> Result<()> {
        SinkEngine::tick(self, now)
    }

    fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        SinkEngine::take_dead_letters(self)
    }

    fn wants_commit(&self) -> bool {
        self.has_pending_commit()
    }

    fn commit(&mut self) -> Result<Vec<(TopicPartition, i64)>> {
        SinkEngine::commit(self)
    }

    fn close(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.close_partitions(partitions)
    }

    fn release(&mut self, partitions: &[TopicPartition]) {
        SinkEngine::release(self, partitions)
    }
}

fn ready(schema: SinkSchema, config: &EngineConfig) -> TopicSchema {
    let layout = Arc::new(RowLayout::new(&schema, config));
    TopicSchema::Ready { schema, layout }
}

/// A row for [`append_row`]: parsed cells, or a one-row batch from arrow's decoder.
enum Row<'c, 'a> {
    Cells(&'c [Cell<'a>]),
    Batch(arrow::record_batch::RecordBatch),
}

/// Where a row goes and what decides when its file rolls.
struct Target<'t> {
    rolling: RollingPolicy,
    format: &'t FileFormat,
    layout: &'t RowLayout,
    directory: &'t str,
    event_ms: i64,
}

/// Adds a row that fits the schema to its directory's open file, rolling files as the
/// policy says.
fn append_row(
    part: &mut PartitionSink,
    encoder: &mut Encoder,
    tp: &TopicPartition,
    target: &Target<'_>,
    record: &ConsumerRecord,
    row: Row<'_, '_>,
) -> Result<()> {
    let directory = target.directory;
    let roll = part
        .open
        .get(directory)
        .and_then(|file| target.rolling.before_append(&file.stats, target.event_ms));
    if let Some(reason) = roll {
        close_file(part, encoder, directory, reason)?;
    }
    if !part.open.contains_key(directory) {
        let staged = part.paths.staging.join(format!(
            "{}+{}+{:019}.inprogress",
            tp.topic, tp.partition, record.offset
        ));
        let file = OpenFile::create(
            encoder,
            staged,
            directory.to_string(),
            target.layout,
            target.format,
            record.offset,
            target.event_ms,
        )?;
        part.open.insert(directory.to_string(), file);
    }
    if let Some(file) = part.open.get_mut(directory) {
        match row {
            Row::Cells(cells) => {
                file.append_cells(encoder, target.layout, cells, record, target.event_ms)?
            }
            Row::Batch(batch) => file.append_batch(encoder, batch, record, target.event_ms)?,
        }
        if let Some(reason) = target.rolling.after_append(&file.stats) {
            close_file(part, encoder, directory, reason)?;
        }
    }
    Ok(())
}

/// Finishes the open file of `dir` and queues it for the next commit.
fn close_file(
    part: &mut PartitionSink,
    encoder: &Encoder,
    dir: &str,
    reason: RollReason,
) -> Result<()> {
    let Some(file) = part.open.remove(dir) else {
        return Ok(());
    };
    tracing::debug!(
        directory = dir,
        first = file.first_offset,
        last = file.last_offset,
        records = file.stats.records,
        ?reason,
        "file closed"
    );
    let high = part
        .directory_high
        .entry(dir.to_string())
        .or_insert(i64::MIN);
    *high = (*high).max(file.last_offset);
    // A file without rows is discarded: nothing to commit, but its offsets are done.
    if let Some(closed) = file.finish(encoder)? {
        part.closed.push(closed);
    }
    Ok(())
}

fn load_schema(path: &Path) -> Result<Option<SinkSchema>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ConnectorError::Config(format!("reading saved schema {}: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).io("reading", path),
    }
}

/// Saves an inferred schema unless one is saved already, and returns the schema in force.
/// Tasks of one sink (or instances sharing an output root) may infer at the same time: the
/// first to link its file wins and the others adopt its schema, so every file of a topic has
/// one schema. The file is complete and fsynced before the link makes it visible.
fn save_schema(path: &Path, schema: &SinkSchema) -> Result<SinkSchema> {
    static ATTEMPT: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .ok_or_else(|| ConnectorError::Config(format!("bad schema path {}", path.display())))?;
    std::fs::create_dir_all(dir).io("creating", dir)?;
    let tmp = path.with_extension(format!(
        "json.{}-{}.tmp",
        std::process::id(),
        ATTEMPT.fetch_add(1, Ordering::Relaxed)
    ));
    let json = serde_json::to_vec_pretty(schema)
        .map_err(|e| ConnectorError::Config(format!("encoding schema: {e}")))?;
    let mut file = std::fs::File::create(&tmp).io("creating", &tmp)?;
    file.write_all(&json).io("writing", &tmp)?;
    file.sync_all().io("syncing", &tmp)?;
    // A hard link fails if the name exists, unlike a rename: first writer wins.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(schema.clone())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_schema(path)?
            .ok_or_else(|| ConnectorError::Config(format!("{} vanished", path.display()))),
        Err(e) => Err(e).io("linking", path),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::parquet_sink::partitioning::TimePartitioning;
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
            super::super::schema::ColumnSpec {
                name: "id".into(),
                kind: super::super::schema::ColumnType::Int64,
                nullable: false,
            },
            super::super::schema::ColumnSpec {
                name: "ts".into(),
                kind: super::super::schema::ColumnType::Int64,
                nullable: false,
            },
            super::super::schema::ColumnSpec {
                name: "country".into(),
                kind: super::super::schema::ColumnType::String,
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

    fn column(
        name: &str,
        kind: super::super::schema::ColumnType,
    ) -> super::super::schema::ColumnSpec {
        super::super::schema::ColumnSpec {
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
        use super::super::schema::{ColumnType, ExtraFields};
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
        let line =
            |id: i64, extra: &str| format!(r#"{{"id":{id},"ts":{BASE},"country":"DE"{extra}}}"#);
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
}
