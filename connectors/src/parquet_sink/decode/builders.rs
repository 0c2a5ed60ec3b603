//! Arrow column builders for the rows of one open file: the fast path's cells go straight
//! into them, and every 4096 rows they become a batch for the encoder.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use millrace_client::record::ConsumerRecord;

use super::{cell_of, convert, Cell, RowLayout, Scalar};
use crate::error::{ConnectorError, Result};

/// Rows per batch the builders start with room for (the open file converts 4096 at a time).
const INITIAL_ROWS: usize = 4096;

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
    #[inline]
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
