//! One open Parquet file: rows buffered as JSON, converted to Arrow in batches, written with
//! the `parquet` crate's `ArrowWriter` into the partition's staging directory.
//!
//! The file is invisible to readers until [`commit`](super::commit) renames it into the
//! output tree; until then it is just a staged file that recovery may delete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use millrace_client::record::ConsumerRecord;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::convert::rows_to_batch;
use super::rolling::FileStats;
use crate::error::{IoContext, Result};

/// Rows converted to Arrow at a time. Large enough to amortise the decoder, small enough that
/// the JSON values waiting for conversion stay a few MB per open file.
const CONVERT_ROWS: usize = 4096;

/// Compression codec of the Parquet pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Zstandard at its default level (default): the best ratio of the three, fast to read.
    #[default]
    Zstd,
    /// Snappy: the fastest to write, larger files.
    Snappy,
    /// No compression.
    None,
}

/// How files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFormat {
    /// Page compression.
    pub codec: Codec,
    /// Most rows in one row group.
    pub row_group_rows: usize,
}

impl FileFormat {
    fn properties(&self) -> WriterProperties {
        let compression = match self.codec {
            Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Codec::Snappy => Compression::SNAPPY,
            Codec::None => Compression::UNCOMPRESSED,
        };
        WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .build()
    }
}

/// A record the writer refused at conversion, to be dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// The record as read from Kafka.
    pub record: ConsumerRecord,
    /// Why.
    pub reason: String,
}

/// A file being written.
pub struct OpenFile {
    /// Partition directory relative to the output root.
    pub directory: String,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record added.
    pub last_offset: i64,
    /// What the rolling policy looks at.
    pub stats: FileStats,
    staged_path: PathBuf,
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    rows: Vec<Map<String, Value>>,
    /// The Kafka records behind `rows` (cheap clones: the bytes are shared), so that a row
    /// refused at conversion can still be dead-lettered as it was read.
    origins: Vec<ConsumerRecord>,
    /// Input bytes of the buffered rows (part of the size estimate).
    buffered_bytes: u64,
    /// Rows that reached the writer.
    written: u64,
}

/// A file that is complete and durable in the staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedFile {
    /// Partition directory relative to the output root.
    pub directory: String,
    /// Name in the staging directory.
    pub staged_name: String,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Rows in the file (rejected rows are not).
    pub records: u64,
    /// Size on disk.
    pub bytes: u64,
}

impl OpenFile {
    /// Creates the staged file `staged_path` for records from `first_offset` on.
    pub fn create(
        staged_path: PathBuf,
        directory: String,
        schema: SchemaRef,
        format: &FileFormat,
        first_offset: i64,
        first_event_ms: i64,
    ) -> Result<Self> {
        let file = File::create(&staged_path).io("creating", &staged_path)?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(format.properties()))?;
        Ok(OpenFile {
            directory,
            first_offset,
            last_offset: first_offset,
            stats: FileStats {
                records: 0,
                bytes: 0,
                first_event_ms,
                max_event_ms: first_event_ms,
                opened_at: Instant::now(),
            },
            staged_path,
            writer,
            schema,
            rows: Vec::new(),
            origins: Vec::new(),
            buffered_bytes: 0,
            written: 0,
        })
    }

    /// Adds a row (already checked against the schema). Rows the decoder refuses when the
    /// buffer is converted are returned, to be dead-lettered.
    pub fn append(
        &mut self,
        row: Map<String, Value>,
        origin: ConsumerRecord,
        event_ms: i64,
    ) -> Result<Vec<RejectedRecord>> {
        let input_bytes = origin.value.as_ref().map_or(0, |v| v.len() as u64);
        self.last_offset = origin.offset;
        self.rows.push(row);
        self.origins.push(origin);
        self.buffered_bytes += input_bytes;
        self.stats.records += 1;
        self.stats.max_event_ms = self.stats.max_event_ms.max(event_ms);
        let rejected = if self.rows.len() >= CONVERT_ROWS {
            self.convert()?
        } else {
            Vec::new()
        };
        self.stats.bytes = self.writer.bytes_written() as u64
            + self.writer.in_progress_size() as u64
            + self.buffered_bytes;
        Ok(rejected)
    }

    /// Converts the buffered rows and hands them to the Parquet writer.
    fn convert(&mut self) -> Result<Vec<RejectedRecord>> {
        if self.rows.is_empty() {
            return Ok(Vec::new());
        }
        let (batch, rejected) = rows_to_batch(&self.schema, &self.rows)?;
        self.writer.write(&batch)?;
        self.written += batch.num_rows() as u64;
        let rejected = rejected
            .into_iter()
            .filter_map(|r| {
                Some(RejectedRecord {
                    record: self.origins.get(r.index)?.clone(),
                    reason: r.reason,
                })
            })
            .collect();
        self.rows.clear();
        self.origins.clear();
        self.buffered_bytes = 0;
        Ok(rejected)
    }

    /// Writes what is buffered, the footer, and fsyncs the file.
    pub fn finish(mut self) -> Result<(ClosedFile, Vec<RejectedRecord>)> {
        let rejected = self.convert()?;
        let file = self.writer.into_inner()?;
        file.sync_all().io("syncing", &self.staged_path)?;
        let bytes = file
            .metadata()
            .io("reading size of", &self.staged_path)?
            .len();
        let staged_name = file_name_of(&self.staged_path);
        Ok((
            ClosedFile {
                directory: self.directory,
                staged_name,
                first_offset: self.first_offset,
                last_offset: self.last_offset,
                records: self.written,
                bytes,
            },
            rejected,
        ))
    }

    /// Drops the file without committing it.
    pub fn discard(self) {
        let path = self.staged_path.clone();
        drop(self);
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::debug!(path = %path.display(), %error, "staged file already gone");
        }
    }
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
