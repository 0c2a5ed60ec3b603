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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use millrace_client::record::ConsumerRecord;
use millrace_client::TopicPartition;
use serde_json::{Map, Value};

use super::commit::{apply, Checkpoint, CheckpointLog, CommittedFile};
use super::convert::rows_to_batch;
use super::decode::{Cell, RowLayout};
use super::encoder::Encoder;
use super::partitioning::{file_name, DirectoryCache, Partitioner};
use super::recovery::{recover, StatePaths, STATE_DIR};
use super::rolling::{RollReason, RollingPolicy};
use super::schema::{
    schema_before_records, settle_inferred, SchemaConfig, SchemaStore, SinkSchema,
    KAFKA_OFFSET_COLUMN, KAFKA_PARTITION_COLUMN, KAFKA_TIMESTAMP_COLUMN,
};
use super::writer::{ClosedFile, FileFormat, OpenFile};
use crate::durable::sync_dir;
use crate::error::{ConnectorError, IoContext, Result};
use crate::framework::{DeadLetter, Sink};
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
    /// Where inferred schemas are saved.
    schema_store: SchemaStore,
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
            schema_store: SchemaStore::new(&config.out),
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

    /// The schema state of `topic`: declared, saved by an earlier inference, or being
    /// inferred now.
    fn schema_for(&mut self, topic: &str) -> Result<&mut TopicSchema> {
        if !self.schemas.contains_key(topic) {
            let known = schema_before_records(
                &self.config.schema,
                self.config.partitioner.fields(),
                &self.schema_store,
                topic,
            )?;
            let state = match known {
                Some(schema) => ready(schema, &self.config),
                None => TopicSchema::Inferring {
                    samples: Vec::new(),
                    since: Instant::now(),
                },
            };
            self.schemas.insert(topic.to_string(), state);
        }
        self.schemas
            .get_mut(topic)
            .ok_or_else(|| ConnectorError::Config(format!("no schema state for {topic}")))
    }

    /// Fixes the schema of `topic` from the records collected so far (saved, so restarts
    /// write files of the same schema), and writes the collected records.
    fn finish_inference(&mut self, topic: &str) -> Result<()> {
        let samples = match self.schemas.get_mut(topic) {
            Some(TopicSchema::Inferring { samples, .. }) if !samples.is_empty() => {
                std::mem::take(samples)
            }
            _ => return Ok(()),
        };
        let schema = settle_inferred(&self.schema_store, topic, samples.iter().map(|s| &s.fields))?;
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

#[cfg(test)]
mod tests;
