//! The fast path's JSON reader: one pass over a record's bytes, values as [`Cell`]s that
//! borrow them.
//!
//! Why a reader of our own rather than arrow-json's decoder, which also turns JSON bytes into
//! Arrow columns about as fast (the README's Connectors section has the side-by-side
//! figures): the sink must write exactly what its general path (serde_json, the schema check,
//! then Arrow) writes, and dead-letter what that path refuses, one record at a time, and it
//! must read the event time and the partition fields of each record before the record has a
//! file. arrow-json coerces where the schema check refuses (`"42"` into an integer column,
//! `1.5` truncated into one), cannot write an object as JSON text (the sink's `json` columns,
//! which inference gives every nested field), and reports a bad value for a whole batch at
//! `flush`, without the row.
//!
//! The property tests at the end check the reader against serde_json: over random records
//! of a schema, whatever the fast path accepts comes out as the same Arrow batch as the
//! serde_json-parsed values do.

use std::borrow::Cow;

use serde_json::Value;

use super::{Cell, SlotKind};
use crate::parquet_sink::schema::ColumnType;

/// The fast path's JSON reader.
///
/// It accepts a subset of JSON and declines (`None`) everything else, so that what it
/// accepts is exactly what serde_json accepts, with the same values: object keys without
/// escapes; strings (those with escapes are decoded by serde_json); integers of up to 18
/// digits (anything else numeric is read by serde_json, whose float parsing is not always
/// the correctly rounded one of `str::parse`); `true`, `false`, `null`; and nested objects
/// and arrays, which serde_json reads as `Value`s.
///
/// Its methods are `#[inline]`: they are called from `decode/mod.rs`, which may land in
/// another codegen unit, and they are the fast path's inner loop.
pub(super) struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

/// Nested objects and arrays deeper than this are left to the general path: serde_json
/// stops at 128 levels, counted from the record, while a nested value read on its own
/// starts counting at its own level.
const MAX_NESTED_OPENINGS: usize = 100;

impl<'a> Scanner<'a> {
    /// A reader at the start of `text`.
    #[inline]
    pub(super) fn new(text: &'a str) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    /// Whether everything was read.
    #[inline]
    pub(super) fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    #[inline]
    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    pub(super) fn eat(&mut self, byte: u8) -> bool {
        let found = self.bytes.get(self.pos) == Some(&byte);
        if found {
            self.pos += 1;
        }
        found
    }

    #[inline]
    pub(super) fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// Where the string starting after its opening quote at `start` stops being plain: the
    /// index of the first `"`, `\\` or control character. Eight bytes at a time (the classic
    /// "has a zero byte" bit trick), as serde_json scans.
    #[inline]
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
    #[inline]
    pub(super) fn plain_string(&mut self) -> Option<&'a str> {
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
    #[inline]
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
    #[inline]
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
    #[inline]
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
    #[inline]
    pub(super) fn value(&mut self, kind: SlotKind) -> Option<Cell<'a>> {
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

    #[inline]
    fn literal(&mut self, word: &[u8], cell: Cell<'a>) -> Option<Cell<'a>> {
        if self.bytes.get(self.pos..self.pos + word.len())? != word {
            return None;
        }
        self.pos += word.len();
        Some(cell)
    }
}

#[cfg(test)]
mod tests {
    //! The reader against serde_json: random records of a schema with one column of every
    //! type, written in every way JSON allows (escapes, number forms, whitespace, key order,
    //! repeated keys, nesting) and sometimes not fitting (wrong types, extra fields). Every
    //! batch of records the fast path accepts must equal the batch the general path builds
    //! from serde_json's parse of the same records; and records that fit and are plain must
    //! be accepted, so that the comparison is not vacuous.

    #![allow(clippy::unwrap_used)]

    use std::fmt::Write as _;
    use std::path::PathBuf;
    use std::sync::Arc;

    use arrow::array::timezone::Tz;
    use arrow::compute::kernels::cast_utils::{string_to_datetime, Parser};
    use arrow::datatypes::Date32Type;
    use millrace_client::record::{ConsumerRecord, TimestampType};
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use crate::parquet_sink::convert::rows_to_batch;
    use crate::parquet_sink::decode::JsonDecoder;
    use crate::parquet_sink::schema::{
        ColumnSpec, ColumnType, ExtraFields, SchemaConfig, SinkSchema,
    };
    use crate::parquet_sink::{
        Codec, EngineConfig, FileFormat, Partitioner, RollingPolicy, TimePartitioning,
    };

    /// The schema's columns: one of every type (`i64!` is not nullable).
    const COLUMNS: [(&str, ColumnType); 9] = [
        ("flag", ColumnType::Boolean),
        ("small", ColumnType::Int32),
        ("i64!", ColumnType::Int64),
        ("ratio", ColumnType::Float32),
        ("score", ColumnType::Float64),
        ("name", ColumnType::String),
        ("ts", ColumnType::TimestampMs),
        ("day", ColumnType::Date),
        ("extra", ColumnType::Json),
    ];

    fn schema() -> SinkSchema {
        SinkSchema {
            columns: COLUMNS
                .iter()
                .map(|&(name, kind)| ColumnSpec {
                    name: name.into(),
                    kind,
                    nullable: !name.ends_with('!'),
                })
                .collect(),
        }
    }

    fn config(extra: ExtraFields, kafka_metadata: bool) -> EngineConfig {
        EngineConfig {
            out: PathBuf::new(),
            partitioner: Partitioner::new(TimePartitioning::None, Vec::new()),
            rolling: RollingPolicy::default(),
            format: FileFormat {
                codec: Codec::None,
                row_group_rows: 1024,
            },
            schema: SchemaConfig {
                columns: Some(schema().columns),
                infer_records: 1,
                extra_fields: extra,
            },
            time_field: None,
            kafka_metadata,
        }
    }

    /// A character of a JSON string, written raw or escaped as `how` says.
    fn push_char(out: &mut String, c: char, how: u8) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '/' if how == 1 => out.push_str("\\/"),
            c if how == 0 => {
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
            c => out.push(c),
        }
    }

    fn string_text() -> impl Strategy<Value = String> {
        let c =
            prop_oneof![4 => proptest::char::range('a', 'z'), 1 => any::<char>(), 1 => Just('/')];
        proptest::collection::vec((c, 0_u8..6), 0..24).prop_map(|chars| {
            let mut out = String::from("\"");
            for (c, how) in chars {
                push_char(&mut out, c, how);
            }
            out.push('"');
            out
        })
    }

    fn integer_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (-1000_i64..1000).prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("-0".to_string()),
            Just("9223372036854775808".to_string()),
            Just("123456789012345678".to_string()),
            Just("1234567890123456789".to_string()),
        ]
    }

    fn number_text() -> impl Strategy<Value = String> {
        let finite = any::<f64>().prop_filter("finite", |x| x.is_finite());
        prop_oneof![
            integer_text(),
            finite.clone().prop_map(|x| format!("{x}")),
            finite.clone().prop_map(|x| format!("{x:e}")),
            finite.prop_map(|x| format!("{x:E}")),
            (any::<i32>(), 0_u32..1_000_000, -40_i32..40, any::<bool>()).prop_map(
                |(whole, fraction, exp, plus)| {
                    let sign = if plus && exp >= 0 { "+" } else { "" };
                    format!("{whole}.{fraction}e{sign}{exp}")
                }
            ),
            Just("-0.0".to_string()),
            Just("1E+2".to_string()),
            Just("1e400".to_string()),
        ]
    }

    fn rfc3339_text() -> impl Strategy<Value = String> {
        (
            (1900_u32..2200, 1_u32..13, 1_u32..29),
            (0_u32..24, 0_u32..60, 0_u32..60),
            prop_oneof![
                Just(String::new()),
                (0_u32..1000).prop_map(|f| format!(".{f:03}")),
                Just(".123456789".to_string())
            ],
            prop_oneof![
                Just("Z".to_string()),
                Just("z".to_string()),
                (0_u32..14, any::<bool>())
                    .prop_map(|(h, west)| { format!("{}{h:02}:30", if west { '-' } else { '+' }) })
            ],
            prop_oneof![3 => Just('T'), 1 => Just('t'), 1 => Just(' ')],
        )
            .prop_map(|((y, mo, d), (h, mi, s), fraction, zone, sep)| {
                format!("\"{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{fraction}{zone}\"")
            })
    }

    fn date_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (1_u32..9999, 1_u32..13, 1_u32..32)
                .prop_map(|(y, m, d)| format!("\"{y:04}-{m:02}-{d:02}\"")),
            1 => (1_u32..9999, 0_u32..14, 0_u32..33).prop_map(|(y, m, d)| format!("\"{y}-{m}-{d}\"")),
        ]
    }

    /// Any JSON value, as text with random whitespace inside.
    fn value_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            string_text(),
            number_text(),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("null".to_string()),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                (proptest::collection::vec(inner.clone(), 0..4), ws())
                    .prop_map(|(items, ws)| format!("[{ws}{}{ws}]", items.join(&format!("{ws},")))),
                (
                    proptest::collection::vec((string_text(), inner), 0..4),
                    ws()
                )
                    .prop_map(|(fields, ws)| {
                        let fields: Vec<String> = fields
                            .into_iter()
                            .map(|(k, v)| format!("{k}{ws}:{v}"))
                            .collect();
                        format!("{{{ws}{}{ws}}}", fields.join(","))
                    }),
            ]
        })
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just(""), 2 => Just(" "), 1 => Just("\n\t"), 1 => Just(" \r\n ")]
    }

    /// Whether serde_json reads `text` (numbers beyond `f64`, like `1e400`, it does not).
    fn is_json(text: &str) -> bool {
        serde_json::from_str::<Value>(text).is_ok()
    }

    /// A value `kind`'s column takes, as JSON text.
    fn fitting_text(kind: ColumnType) -> BoxedStrategy<String> {
        match kind {
            ColumnType::Boolean => {
                prop_oneof![Just("true".to_string()), Just("false".to_string())].boxed()
            }
            ColumnType::Int32 => any::<i32>().prop_map(|n| n.to_string()).boxed(),
            ColumnType::Int64 => prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                (-1000_i64..1000).prop_map(|n| n.to_string()),
            ]
            .boxed(),
            ColumnType::Float32 => prop_oneof![
                any::<f32>()
                    .prop_filter("finite", |x| x.is_finite())
                    .prop_map(|x| format!("{x}")),
                (-1000_i64..1000).prop_map(|n| n.to_string()),
            ]
            .boxed(),
            ColumnType::Float64 => number_text().prop_filter("JSON", |t| is_json(t)).boxed(),
            ColumnType::String => string_text().boxed(),
            ColumnType::TimestampMs => prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                // What the general path writes: RFC 3339 to its check, and to arrow's parser.
                rfc3339_text().prop_filter("a time both parsers take", |t| {
                    let t = t.trim_matches('"');
                    let utc: Tz = "+00:00".parse().unwrap();
                    chrono::DateTime::parse_from_rfc3339(t).is_ok()
                        && string_to_datetime(&utc, t).is_ok()
                }),
            ]
            .boxed(),
            ColumnType::Date => date_text()
                .prop_filter("a date both parsers take", |t| {
                    let t = t.trim_matches('"');
                    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok()
                        && Date32Type::parse(t).is_some()
                })
                .boxed(),
            ColumnType::Json => value_text().prop_filter("JSON", |t| is_json(t)).boxed(),
        }
    }

    /// One record's fields: every column present with a fitting value, in random order.
    fn fitting_fields() -> impl Strategy<Value = Vec<(String, String)>> {
        let values: Vec<BoxedStrategy<(String, String)>> = COLUMNS
            .iter()
            .map(|&(name, kind)| {
                fitting_text(kind)
                    .prop_map(move |v| (format!("\"{name}\""), v))
                    .boxed()
            })
            .collect();
        values.prop_shuffle()
    }

    /// One record's fields, fitting or not: values of other types, nulls, missing fields, an
    /// extra field, a repeated key, an escaped key.
    fn any_fields() -> impl Strategy<Value = Vec<(String, String)>> {
        let values: Vec<BoxedStrategy<Option<(String, String)>>> = COLUMNS
            .iter()
            .map(|&(name, kind)| {
                let value = prop_oneof![
                    6 => fitting_text(kind),
                    1 => Just("null".to_string()),
                    2 => value_text(),
                ];
                proptest::option::weighted(0.9, value)
                    .prop_map(move |v| v.map(|v| (format!("\"{name}\""), v)))
                    .boxed()
            })
            .collect();
        let odd_key = prop_oneof![
            Just("\"zzz\"".to_string()),
            Just("\"sc\\u006fre\"".to_string()),
            Just("\"name\"".to_string()),
            Just("\"extra\"".to_string()),
        ];
        (
            values,
            proptest::option::weighted(0.2, (odd_key, value_text())),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(values, odd, at)| {
                let mut fields: Vec<(String, String)> = values.into_iter().flatten().collect();
                if let Some(odd) = odd {
                    let at = at.index(fields.len() + 1);
                    fields.insert(at, odd);
                }
                fields
            })
            .prop_shuffle()
    }

    fn object_text(fields: &[(String, String)], ws: &str) -> String {
        let fields: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{ws}{k}{ws}:{ws}{v}{ws}"))
            .collect();
        format!("{ws}{{{}}}{ws}", fields.join(","))
    }

    fn record(offset: i64, text: &str) -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("t"),
            partition: 2,
            offset,
            timestamp: 1_795_600_800_000 + offset,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: Some(text.as_bytes().to_vec().into()),
            headers: vec![],
            leader_epoch: None,
        }
    }

    /// Pushes `texts` through the fast path and the same records' serde_json values through
    /// the general path; checks the accepted ones agree. Returns how many were accepted.
    fn compare(
        texts: &[String],
        extra: ExtraFields,
        kafka_metadata: bool,
    ) -> Result<usize, TestCaseError> {
        let schema = schema();
        let arrow = schema.arrow_schema(kafka_metadata);
        let mut decoder = JsonDecoder::new(&schema, &config(extra, kafka_metadata)).unwrap();
        let mut rows = Vec::new();
        for (offset, text) in texts.iter().enumerate() {
            let record = record(offset as i64, text);
            if !decoder.push(&record) {
                continue;
            }
            let fields: Map<String, Value> = serde_json::from_str(text)
                .map_err(|e| TestCaseError::fail(format!("accepted, serde_json: {e}: {text}")))?;
            prop_assert!(
                schema.check(&fields, extra).is_ok(),
                "accepted, but the schema check refuses: {text}"
            );
            let mut row = schema.prepare_row(fields);
            if kafka_metadata {
                row.insert("_kafka_partition".into(), record.partition.into());
                row.insert("_kafka_offset".into(), record.offset.into());
                row.insert("_kafka_timestamp".into(), record.timestamp.into());
            }
            rows.push(row);
        }
        let ours = decoder.finish().unwrap();
        prop_assert_eq!(ours.is_some(), !rows.is_empty());
        if let Some(ours) = ours {
            let (theirs, rejected) = rows_to_batch(&arrow, &rows).unwrap();
            prop_assert!(
                rejected.is_empty(),
                "accepted, but arrow refuses: {rejected:?}"
            );
            prop_assert_eq!(&ours, &theirs, "records: {:?}", texts);
        }
        Ok(rows.len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn what_the_scanner_accepts_is_what_serde_json_gives(
            records in proptest::collection::vec((any_fields(), ws()), 1..6),
            ignore_extra in any::<bool>(),
            kafka_metadata in any::<bool>(),
        ) {
            let extra = if ignore_extra { ExtraFields::Ignore } else { ExtraFields::DeadLetter };
            let texts: Vec<String> =
                records.iter().map(|(fields, ws)| object_text(fields, ws)).collect();
            compare(&texts, extra, kafka_metadata)?;
        }

        #[test]
        fn records_that_fit_plainly_are_accepted(
            records in proptest::collection::vec((fitting_fields(), ws()), 1..6),
            kafka_metadata in any::<bool>(),
        ) {
            let texts: Vec<String> =
                records.iter().map(|(fields, ws)| object_text(fields, ws)).collect();
            let accepted = compare(&texts, ExtraFields::DeadLetter, kafka_metadata)?;
            prop_assert_eq!(accepted, texts.len(), "declined some of {:?}", texts);
        }
    }
}
