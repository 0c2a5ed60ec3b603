//! JSON record bytes straight into Arrow column builders: the sink's fast path.
//!
//! The general path parses a record into a `serde_json::Value` map, checks the map against
//! the schema ([`SinkSchema::check`]), rebuilds it as a row ([`SinkSchema::prepare_row`]) and
//! converts rows to Arrow ([`convert`](super::convert)): four passes, and an allocation or two
//! per field. This module does it in one pass: a small JSON reader (`Scanner`) walks the
//! record's object and puts each field into a `Cell` that borrows the record's bytes, the
//! event time and the partition fields are read from the cells, and the cells are appended to
//! the open file's column builders (`RowBuilders`).
//!
//! The fast path only ever *accepts* records. Whenever a record is not a plain fit (not
//! JSON, not an object, a key with escapes, a type its column does not take, a field the
//! schema lacks, an unusable event time, a value only arrow's JSON decoder converts) it
//! declines, and the engine runs the general path on that one record, which decides what
//! happens to it and words the dead-letter reason as it always has. What it accepts, it
//! writes exactly as the general path would: the engine's tests run both paths over the same
//! records and compare the files, and the scanner's property tests compare its batches with
//! those of serde_json-parsed values.
//!
//! This file maps a topic's fields to the file's columns (`RowLayout`) and converts a cell for
//! its column as the general path would; `scanner.rs` is the JSON reader and `builders.rs`
//! the Arrow column builders of an open file.

mod builders;
mod scanner;

use std::borrow::Cow;
use std::collections::HashMap;

use arrow::array::timezone::Tz;
use arrow::compute::kernels::cast_utils::{string_to_datetime, Parser};
use arrow::datatypes::{DataType, Date32Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use millrace_client::record::ConsumerRecord;
use serde_json::Value;

pub(crate) use builders::RowBuilders;
use scanner::Scanner;

use super::engine::EngineConfig;
use super::schema::{ColumnType, ExtraFields, SinkSchema};
use crate::error::Result;

/// One field of a record as parsed, borrowing the record's bytes where it can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    /// The record has no such field.
    Missing,
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits `i64` (both paths normalise to this before `U64`).
    I64(i64),
    /// An integer above `i64::MAX`.
    U64(u64),
    /// Any other number.
    F64(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// A whole JSON value: every value of a `json` column, of a field that is only the event
    /// time or a partition, and objects or arrays the general path hands over.
    Json(Cow<'a, Value>),
}

impl<'a> Cell<'a> {
    /// The cell of a field of the general path's parsed map, for a slot of `kind`.
    fn of_value(kind: SlotKind, value: &'a Value) -> Cell<'a> {
        match (kind, value) {
            (SlotKind::Raw, value) => Cell::Json(Cow::Borrowed(value)),
            (_, Value::Null) => Cell::Null,
            (SlotKind::Column(ColumnType::Json), value) => Cell::Json(Cow::Borrowed(value)),
            (_, Value::Bool(b)) => Cell::Bool(*b),
            (_, Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    Cell::I64(i)
                } else if let Some(u) = n.as_u64() {
                    Cell::U64(u)
                } else if let Some(f) = n.as_f64() {
                    Cell::F64(f)
                } else {
                    Cell::Json(Cow::Borrowed(value))
                }
            }
            (_, Value::String(s)) => Cell::Str(Cow::Borrowed(s)),
            (_, value) => Cell::Json(Cow::Borrowed(value)),
        }
    }
}

impl Cell<'_> {
    /// The cell with nothing borrowed.
    fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Missing => Cell::Missing,
            Cell::Null => Cell::Null,
            Cell::Bool(b) => Cell::Bool(b),
            Cell::I64(n) => Cell::I64(n),
            Cell::U64(n) => Cell::U64(n),
            Cell::F64(x) => Cell::F64(x),
            Cell::Str(s) => Cell::Str(Cow::Owned(s.into_owned())),
            Cell::Json(v) => Cell::Json(Cow::Owned(v.into_owned())),
        }
    }

    /// The JSON value of a scalar cell as serde_json would have parsed it.
    fn into_value(self) -> Option<Value> {
        Some(match self {
            Cell::Missing => return None,
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(b),
            Cell::I64(n) => Value::from(n),
            Cell::U64(n) => Value::from(n),
            Cell::F64(x) => Value::Number(serde_json::Number::from_f64(x)?),
            Cell::Str(s) => Value::String(s.into_owned()),
            Cell::Json(v) => v.into_owned(),
        })
    }
}

/// How a field is kept while a record is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    /// A column of the file, typed as the scalar it holds.
    Column(ColumnType),
    /// A field that is only the event time or a partition directory: kept as a JSON value, as
    /// the general path sees it.
    Raw,
}

/// One column of the file, and where its value comes from.
#[derive(Debug, Clone)]
struct FileColumn {
    kind: ColumnType,
    nullable: bool,
    /// The slot, or `None` for a column named like a partition field (partition fields are
    /// taken out of records before the schema sees them, so the column is always missing).
    slot: Option<usize>,
    /// The time zone of a timestamp column, as arrow's decoder parses it.
    tz: Option<Tz>,
}

/// What a topic's records look like to the fast path: which field goes where.
#[derive(Debug)]
pub(crate) struct RowLayout {
    names: Vec<Box<str>>,
    kinds: Vec<SlotKind>,
    index: HashMap<Box<str>, usize>,
    columns: Vec<FileColumn>,
    /// The slot of the event-time field, when there is one.
    time_slot: Option<usize>,
    /// The event-time slot when it is neither a column nor a partition field: with
    /// `extra_fields = "dead_letter"` the general path refuses records that have it.
    time_only_slot: Option<usize>,
    /// Slots of the partitioner's fields, in its order.
    partition_slots: Vec<usize>,
    extra: ExtraFields,
    kafka_metadata: bool,
    arrow: SchemaRef,
}

impl RowLayout {
    /// The layout of records of `schema` written with `config`.
    pub(crate) fn new(schema: &SinkSchema, config: &EngineConfig) -> Self {
        let arrow = schema.arrow_schema(config.kafka_metadata);
        let mut layout = RowLayout {
            names: Vec::new(),
            kinds: Vec::new(),
            index: HashMap::new(),
            columns: Vec::new(),
            time_slot: None,
            time_only_slot: None,
            partition_slots: Vec::new(),
            extra: config.schema.extra_fields,
            kafka_metadata: config.kafka_metadata,
            arrow: arrow.clone(),
        };
        let partition_fields = config.partitioner.fields();
        for field in partition_fields {
            let slot = layout.slot(field, SlotKind::Raw);
            layout.partition_slots.push(slot);
        }
        for (i, column) in schema.columns.iter().enumerate() {
            let slot = (!partition_fields.contains(&column.name))
                .then(|| layout.slot(&column.name, SlotKind::Column(column.kind)));
            let tz = match arrow.fields().get(i).map(|f| f.data_type()) {
                Some(DataType::Timestamp(_, Some(tz))) => tz.parse::<Tz>().ok(),
                _ => None,
            };
            layout.columns.push(FileColumn {
                kind: column.kind,
                nullable: column.nullable,
                slot,
                tz,
            });
        }
        if let Some(field) = &config.time_field {
            let known = layout.index.contains_key(field.as_str());
            let slot = layout.slot(field, SlotKind::Raw);
            layout.time_slot = Some(slot);
            if !known {
                layout.time_only_slot = Some(slot);
            }
        }
        layout
    }

    /// The slot named `name`, added with `kind` if new (a declared schema never names a
    /// column twice: the configuration is validated).
    fn slot(&mut self, name: &str, kind: SlotKind) -> usize {
        if let Some(&slot) = self.index.get(name) {
            return slot;
        }
        let slot = self.names.len();
        self.names.push(name.into());
        self.kinds.push(kind);
        self.index.insert(name.into(), slot);
        slot
    }

    /// The Arrow schema of the files.
    pub(crate) fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow
    }

    /// Parses `bytes` into `cells` (one per slot). `false` when the record is not a plain
    /// fit for the fast path (see the [module documentation](self)). `order` remembers the
    /// slots of the last record's keys by position, so that records with their fields in the
    /// same order (nearly all) find each slot with one string comparison.
    pub(crate) fn parse<'a>(
        &self,
        bytes: &'a [u8],
        cells: &mut Vec<Cell<'a>>,
        order: &mut Vec<usize>,
    ) -> bool {
        cells.clear();
        cells.resize(self.names.len(), Cell::Missing);
        // serde_json refuses invalid UTF-8 inside strings, and outside them anything but
        // ASCII is a syntax error: checking the whole record once is the same test.
        let Ok(text) = std::str::from_utf8(bytes) else {
            return false;
        };
        let mut scan = Scanner::new(text);
        self.parse_object(&mut scan, cells, order).is_some()
    }

    fn parse_object<'a>(
        &self,
        scan: &mut Scanner<'a>,
        cells: &mut [Cell<'a>],
        order: &mut Vec<usize>,
    ) -> Option<()> {
        scan.ws();
        scan.expect(b'{')?;
        scan.ws();
        if !scan.eat(b'}') {
            let mut position = 0;
            loop {
                let key = scan.plain_string()?;
                scan.ws();
                scan.expect(b':')?;
                scan.ws();
                match self.slot_of(key, position, order) {
                    Some(slot) => {
                        let kind = *self.kinds.get(slot)?;
                        // A repeated key: the last one counts, as in a parsed map.
                        *cells.get_mut(slot)? = scan.value(kind)?;
                    }
                    None if self.extra == ExtraFields::Ignore => {
                        scan.value(SlotKind::Raw)?;
                    }
                    None => return None,
                }
                position += 1;
                scan.ws();
                if scan.eat(b'}') {
                    break;
                }
                scan.expect(b',')?;
                scan.ws();
            }
        }
        scan.ws();
        // Only whitespace may follow the object.
        scan.at_end().then_some(())
    }

    /// The slot of `key`, the `position`th key of its record.
    fn slot_of(&self, key: &str, position: usize, order: &mut Vec<usize>) -> Option<usize> {
        if let Some(&slot) = order.get(position) {
            if self.names.get(slot).is_some_and(|n| **n == *key) {
                return Some(slot);
            }
        }
        let slot = self.index.get(key).copied();
        let remembered = slot.unwrap_or(usize::MAX);
        match order.get_mut(position) {
            Some(entry) => *entry = remembered,
            None => order.push(remembered),
        }
        slot
    }

    /// The cells of a record the general path parsed (partition fields still in `fields`).
    pub(crate) fn cells_of<'a>(
        &self,
        fields: &'a serde_json::Map<String, Value>,
        cells: &mut Vec<Cell<'a>>,
    ) {
        cells.clear();
        cells.extend(self.names.iter().zip(&self.kinds).map(|(name, &kind)| {
            fields
                .get(&**name)
                .map_or(Cell::Missing, |v| Cell::of_value(kind, v))
        }));
    }

    /// The event time of a parsed record: what the general path takes from the time field,
    /// or `None` where the general path refuses the record.
    pub(crate) fn event_time(&self, cells: &[Cell<'_>], kafka_timestamp: i64) -> Option<i64> {
        let Some(slot) = self.time_slot else {
            return Some(kafka_timestamp);
        };
        match cells.get(slot)? {
            Cell::I64(ms) => Some(*ms),
            Cell::Str(s) => rfc3339_ms(s),
            Cell::Json(value) => match &**value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => rfc3339_ms(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value of the partitioner's `i`th field (`None` when missing).
    pub(crate) fn partition_value<'c>(&self, cells: &'c [Cell<'_>], i: usize) -> Option<&'c Value> {
        match cells.get(*self.partition_slots.get(i)?)? {
            Cell::Json(value) => Some(value),
            _ => None,
        }
    }

    /// Whether a parsed record goes into the file as it is: every column's value converts,
    /// nothing the schema lacks is there. Exactly the records [`RowBuilders::push`] takes.
    pub(crate) fn fits(&self, cells: &[Cell<'_>]) -> bool {
        if self.extra == ExtraFields::DeadLetter
            && self
                .time_only_slot
                .is_some_and(|slot| !matches!(cells.get(slot), Some(Cell::Missing) | None))
        {
            return false;
        }
        self.converts(cells)
    }

    /// Whether every column's value converts without arrow's JSON decoder (for records that
    /// passed the general path's schema check).
    pub(crate) fn converts(&self, cells: &[Cell<'_>]) -> bool {
        self.columns
            .iter()
            .all(|column| convert(column, cell_of(column, cells)).is_some())
    }
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[inline]
fn cell_of<'c, 'a>(column: &FileColumn, cells: &'c [Cell<'a>]) -> &'c Cell<'a> {
    column
        .slot
        .and_then(|slot| cells.get(slot))
        .unwrap_or(&Cell::Missing)
}

/// A cell converted for its column.
enum Scalar<'c> {
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Str(&'c str),
    /// A `json` column's value, written as its JSON text.
    Json(&'c Value),
    Date(i32),
}

/// Converts `cell` for `column` as the general path would (its schema check, then its
/// direct conversion or arrow's JSON decoder), or `None` where that path refuses the value or
/// needs the decoder.
#[inline]
fn convert<'c>(column: &FileColumn, cell: &'c Cell<'_>) -> Option<Scalar<'c>> {
    match (column.kind, cell) {
        (_, Cell::Missing | Cell::Null) => column.nullable.then_some(Scalar::Null),
        (ColumnType::Boolean, Cell::Bool(b)) => Some(Scalar::Bool(*b)),
        (ColumnType::Int32, Cell::I64(n)) => i32::try_from(*n).ok().map(Scalar::I32),
        (ColumnType::Int64, Cell::I64(n)) => Some(Scalar::I64(*n)),
        (ColumnType::Float32, Cell::I64(_) | Cell::U64(_) | Cell::F64(_)) => {
            let x = number(cell)? as f32;
            // Out of float32's range: the decoder's call, on the general path.
            x.is_finite().then_some(Scalar::F32(x))
        }
        (ColumnType::Float64, Cell::I64(_) | Cell::U64(_) | Cell::F64(_)) => {
            number(cell).map(Scalar::F64)
        }
        (ColumnType::String, Cell::Str(s)) => Some(Scalar::Str(s)),
        (ColumnType::TimestampMs, Cell::I64(ms)) => Some(Scalar::I64(*ms)),
        (ColumnType::TimestampMs, Cell::Str(s)) => {
            // The schema check accepts RFC 3339; arrow's decoder then parses the text in the
            // column's time zone. Both, so the result is the decoder's.
            chrono::DateTime::parse_from_rfc3339(s).ok()?;
            let date = string_to_datetime(column.tz.as_ref()?, s).ok()?;
            Some(Scalar::I64(date.timestamp_millis()))
        }
        (ColumnType::Date, Cell::Str(s)) => {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            Date32Type::parse(s).map(Scalar::Date)
        }
        (ColumnType::Json, Cell::Json(value)) => Some(Scalar::Json(value)),
        _ => None,
    }
}

fn number(cell: &Cell<'_>) -> Option<f64> {
    match cell {
        Cell::I64(n) => Some(*n as f64),
        Cell::U64(n) => Some(*n as f64),
        Cell::F64(x) => Some(*x),
        _ => None,
    }
}

/// Decodes JSON records of one topic into Arrow batches of the sink's file schema, as the
/// sink's engine does for the records its fast path takes (for benchmarks and tools).
pub struct JsonDecoder {
    layout: RowLayout,
    builders: RowBuilders,
    order: Vec<usize>,
}

impl JsonDecoder {
    /// A decoder for records of `schema`, with the partition and time fields, extra-field
    /// policy and metadata columns of `config`.
    pub fn new(schema: &SinkSchema, config: &EngineConfig) -> Result<Self> {
        let layout = RowLayout::new(schema, config);
        let builders = RowBuilders::new(&layout)?;
        Ok(JsonDecoder {
            layout,
            builders,
            order: Vec::new(),
        })
    }

    /// Adds `record`'s row; `false` (and nothing added) when the fast path declines it: the
    /// engine would take its general path.
    pub fn push(&mut self, record: &ConsumerRecord) -> bool {
        let Some(value) = record.value.as_deref() else {
            return false;
        };
        let mut cells = Vec::with_capacity(self.layout.names.len());
        if !self.layout.parse(value, &mut cells, &mut self.order)
            || self.layout.event_time(&cells, record.timestamp).is_none()
            || !self.layout.fits(&cells)
        {
            return false;
        }
        self.builders.push(&self.layout, &cells, record);
        true
    }

    /// The rows added since the last call, as one batch (`None` when there are none).
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        self.builders.finish()
    }
}
