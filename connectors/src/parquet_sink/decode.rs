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
//! records and compare the files.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::compute::kernels::cast_utils::{string_to_datetime, Parser};
use arrow::datatypes::{DataType, Date32Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use millrace_client::record::ConsumerRecord;
use serde_json::Value;

use super::engine::EngineConfig;
use super::schema::{ColumnType, ExtraFields, SinkSchema};
use crate::error::{ConnectorError, Result};

/// Rows per batch the builders start with room for (the open file converts 4096 at a time).
const INITIAL_ROWS: usize = 4096;

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
        let mut scan = Scanner {
            text,
            bytes,
            pos: 0,
        };
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
        (scan.pos == scan.bytes.len()).then_some(())
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

/// The fast path's JSON reader.
///
/// It accepts a subset of JSON and declines (`None`) everything else, so that what it
/// accepts is exactly what serde_json accepts, with the same values: object keys without
/// escapes; strings (those with escapes are decoded by serde_json); integers of up to 18
/// digits (anything else numeric is read by serde_json, whose float parsing is not always
/// the correctly rounded one of `str::parse`); `true`, `false`, `null`; and nested objects
/// and arrays, which serde_json reads as `Value`s.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

/// Nested objects and arrays deeper than this are left to the general path: serde_json
/// stops at 128 levels, counted from the record, while a nested value read on its own
/// starts counting at its own level.
const MAX_NESTED_OPENINGS: usize = 100;

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.bytes.get(self.pos) == Some(&byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// Where the string starting after its opening quote at `start` stops being plain: the
    /// index of the first `"`, `\\` or control character. Eight bytes at a time (the classic
    /// "has a zero byte" bit trick), as serde_json scans.
    fn plain_end(&self, start: usize) -> Option<usize> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        let rest = self.bytes.get(start..)?;
        let mut offset = 0;
        for chunk in rest.chunks_exact(8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            let quote = word ^ (ONES * u64::from(b'"'));
            let backslash = word ^ (ONES * u64::from(b'\\'));
            // High bit set in some byte iff some byte of `word` is '"', '\\' or below 0x20.
            let hits = (quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash)
                | (word.wrapping_sub(ONES * 0x20) & !word);
            if hits & HIGHS != 0 {
                break;
            }
            offset += 8;
        }
        let found = rest
            .get(offset..)?
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        Some(start + offset + found)
    }

    /// A string without escapes (at its opening quote).
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.pos;
        let end = self.plain_end(start)?;
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.pos = end + 1;
        self.text.get(start..end)
    }

    /// A string (at its opening quote); escapes are decoded by serde_json.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let open = self.pos;
        self.expect(b'"')?;
        let end = self.plain_end(self.pos)?;
        match self.bytes.get(end)? {
            b'"' => {
                let start = self.pos;
                self.pos = end + 1;
                Some(Cow::Borrowed(self.text.get(start..end)?))
            }
            b'\\' => {
                // Find the closing quote, stepping over escaped characters.
                let mut i = end;
                loop {
                    match self.bytes.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                let decoded: String = serde_json::from_str(self.text.get(open..=i)?).ok()?;
                self.pos = i + 1;
                Some(Cow::Owned(decoded))
            }
            // A raw control character: not JSON.
            _ => None,
        }
    }

    /// A number (at its first character).
    fn number(&mut self) -> Option<Cell<'a>> {
        let start = self.pos;
        let len = self
            .bytes
            .get(start..)?
            .iter()
            .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
        let end = len.map_or(self.bytes.len(), |n| start + n);
        let span = self.bytes.get(start..end)?;
        self.pos = end;
        let (negative, digits) = match span.split_first() {
            Some((b'-', digits)) => (true, digits),
            _ => (false, span),
        };
        let simple = !digits.is_empty()
            && digits.len() <= 18
            && digits.iter().all(u8::is_ascii_digit)
            && (digits[0] != b'0' || (digits.len() == 1 && !negative));
        if simple {
            // Exact and within i64: the value serde_json gives. (`-0` is a float there.)
            let magnitude = digits
                .iter()
                .fold(0_i64, |n, &d| n * 10 + i64::from(d - b'0'));
            return Some(Cell::I64(if negative { -magnitude } else { magnitude }));
        }
        let value: Value = serde_json::from_str(self.text.get(start..end)?).ok()?;
        match &value {
            Value::Number(_) => {
                Some(Cell::of_value(SlotKind::Column(ColumnType::Float64), &value).into_owned())
            }
            _ => None,
        }
    }

    /// A nested object or array (at its opening bracket), read by serde_json.
    fn nested(&mut self) -> Option<Value> {
        let rest = self.text.get(self.pos..)?;
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = values.next()?.ok()?;
        let consumed = values.byte_offset();
        // Counting brackets inside strings too only overestimates: safe.
        let openings = rest
            .as_bytes()
            .get(..consumed)?
            .iter()
            .filter(|&&b| b == b'{' || b == b'[')
            .count();
        if openings >= MAX_NESTED_OPENINGS {
            return None;
        }
        self.pos += consumed;
        Some(value)
    }

    /// One field's value, kept as its slot keeps it.
    fn value(&mut self, kind: SlotKind) -> Option<Cell<'a>> {
        let scalar = match self.bytes.get(self.pos)? {
            b'"' => Cell::Str(self.string()?),
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => self.literal(b"true", Cell::Bool(true))?,
            b'f' => self.literal(b"false", Cell::Bool(false))?,
            b'n' => self.literal(b"null", Cell::Null)?,
            b'{' | b'[' => match kind {
                // A typed column does not take objects or arrays.
                SlotKind::Column(ColumnType::Json) | SlotKind::Raw => {
                    Cell::Json(Cow::Owned(self.nested()?))
                }
                SlotKind::Column(_) => return None,
            },
            _ => return None,
        };
        Some(match (kind, scalar) {
            (SlotKind::Column(ColumnType::Json), Cell::Null) => Cell::Null,
            (SlotKind::Column(ColumnType::Json) | SlotKind::Raw, cell) => {
                Cell::Json(Cow::Owned(cell.into_value()?))
            }
            (SlotKind::Column(_), cell) => cell,
        })
    }

    fn literal(&mut self, word: &[u8], cell: Cell<'a>) -> Option<Cell<'a>> {
        if self.bytes.get(self.pos..self.pos + word.len())? != word {
            return None;
        }
        self.pos += word.len();
        Some(cell)
    }
}

/// One column being built.
enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8 {
        builder: StringBuilder,
        /// Bytes of the last batch, to size the next one's buffer once instead of growing it.
        last_bytes: usize,
    },
    Timestamp(TimestampMillisecondBuilder, Option<Arc<str>>),
    Date32(Date32Builder),
}

impl ColumnBuilder {
    fn new(data_type: &DataType) -> Option<Self> {
        let n = INITIAL_ROWS;
        Some(match data_type {
            DataType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(n)),
            DataType::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(n)),
            DataType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(n)),
            DataType::Float32 => ColumnBuilder::Float32(Float32Builder::with_capacity(n)),
            DataType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(n)),
            DataType::Utf8 => ColumnBuilder::Utf8 {
                builder: StringBuilder::with_capacity(n, n * 16),
                last_bytes: n * 16,
            },
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, tz) => {
                ColumnBuilder::Timestamp(TimestampMillisecondBuilder::with_capacity(n), tz.clone())
            }
            DataType::Date32 => ColumnBuilder::Date32(Date32Builder::with_capacity(n)),
            _ => return None,
        })
    }

    /// Appends `value`; `false` if it is not of this column's type. `scratch` is a buffer for
    /// JSON text.
    fn append(&mut self, value: Scalar<'_>, scratch: &mut Vec<u8>) -> bool {
        match (self, value) {
            (ColumnBuilder::Boolean(b), Scalar::Null) => b.append_null(),
            (ColumnBuilder::Boolean(b), Scalar::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Int32(b), Scalar::Null) => b.append_null(),
            (ColumnBuilder::Int32(b), Scalar::I32(v)) => b.append_value(v),
            (ColumnBuilder::Int64(b), Scalar::Null) => b.append_null(),
            (ColumnBuilder::Int64(b), Scalar::I64(v)) => b.append_value(v),
            (ColumnBuilder::Float32(b), Scalar::Null) => b.append_null(),
            (ColumnBuilder::Float32(b), Scalar::F32(v)) => b.append_value(v),
            (ColumnBuilder::Float64(b), Scalar::Null) => b.append_null(),
            (ColumnBuilder::Float64(b), Scalar::F64(v)) => b.append_value(v),
            (ColumnBuilder::Utf8 { builder, .. }, Scalar::Null) => builder.append_null(),
            (ColumnBuilder::Utf8 { builder, .. }, Scalar::Str(v)) => builder.append_value(v),
            (ColumnBuilder::Utf8 { builder, .. }, Scalar::Json(v)) => {
                // What `Value::to_string` (the general path) writes, without `fmt`'s detour.
                scratch.clear();
                if serde_json::to_writer(&mut *scratch, v).is_err() {
                    return false;
                }
                match std::str::from_utf8(scratch) {
                    Ok(text) => builder.append_value(text),
                    Err(_) => return false,
                }
            }
            (ColumnBuilder::Timestamp(b, _), Scalar::Null) => b.append_null(),
            (ColumnBuilder::Timestamp(b, _), Scalar::I64(v)) => b.append_value(v),
            (ColumnBuilder::Date32(b), Scalar::Null) => b.append_null(),
            (ColumnBuilder::Date32(b), Scalar::Date(v)) => b.append_value(v),
            _ => return false,
        }
        true
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8 {
                builder,
                last_bytes,
            } => {
                let array = builder.finish();
                let rows = array.len();
                *last_bytes = array.value_data().len();
                // `finish` leaves an empty buffer behind: size it for a batch like this one.
                *builder = StringBuilder::with_capacity(
                    rows.max(INITIAL_ROWS),
                    *last_bytes + *last_bytes / 8,
                );
                Arc::new(array)
            }
            ColumnBuilder::Timestamp(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            ColumnBuilder::Date32(b) => Arc::new(b.finish()),
        }
    }
}

/// Rows of one file being collected into Arrow columns.
pub(crate) struct RowBuilders {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    scratch: Vec<u8>,
    /// Set if a push went wrong half-way (a broken promise of [`RowLayout::fits`]): the batch
    /// is refused rather than written with misaligned columns.
    broken: bool,
}

impl RowBuilders {
    /// Empty builders for the files of `layout`.
    pub(crate) fn new(layout: &RowLayout) -> Result<Self> {
        let columns = layout
            .arrow
            .fields()
            .iter()
            .map(|f| {
                ColumnBuilder::new(f.data_type()).ok_or_else(|| {
                    ConnectorError::Config(format!(
                        "column `{}`: no builder for {}",
                        f.name(),
                        f.data_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RowBuilders {
            schema: layout.arrow.clone(),
            columns,
            rows: 0,
            scratch: Vec::new(),
            broken: false,
        })
    }

    /// Rows collected since the last [`Self::finish`].
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// Appends a parsed record for which [`RowLayout::fits`] said yes.
    pub(crate) fn push(&mut self, layout: &RowLayout, cells: &[Cell<'_>], record: &ConsumerRecord) {
        let split = layout.columns.len().min(self.columns.len());
        let (data, metadata) = self.columns.split_at_mut(split);
        self.broken |= data.len() != layout.columns.len();
        for (column, builder) in layout.columns.iter().zip(data) {
            let appended = convert(column, cell_of(column, cells))
                .is_some_and(|value| builder.append(value, &mut self.scratch));
            self.broken |= !appended;
        }
        if layout.kafka_metadata {
            let values = [
                Scalar::I32(record.partition),
                Scalar::I64(record.offset),
                Scalar::I64(record.timestamp),
            ];
            self.broken |= metadata.len() != values.len();
            for (value, builder) in values.into_iter().zip(metadata) {
                self.broken |= !builder.append(value, &mut self.scratch);
            }
        }
        self.rows += 1;
    }

    /// The collected rows as one batch (`None` when there are none); the builders start over.
    pub(crate) fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        if std::mem::take(&mut self.broken) {
            return Err(ConnectorError::Config(
                "a record the fast path accepted did not convert (a bug: please report it)".into(),
            ));
        }
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
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
