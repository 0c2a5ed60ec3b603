//! One open Parquet file: rows collected as Arrow columns, handed to the task's
//! [`encoder`](super::encoder) thread in batches, written into the partition's staging
//! directory.
//!
//! The file is invisible to readers until [`commit`](super::commit) renames it into the
//! output tree; until then it is just a staged file that recovery may delete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use millrace_client::record::ConsumerRecord;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::decode::{Cell, RowBuilders, RowLayout};
use super::encoder::{Encoder, FileHandle, Finishing};
use super::rolling::FileStats;
use crate::error::{IoContext, Result};

/// Rows handed to the encoder at a time: large enough to amortise the writer's per-batch
/// work, small enough that a file's unencoded rows stay a few MB.
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

/// A file being written.
pub(crate) struct OpenFile {
    /// Partition directory relative to the output root.
    pub directory: String,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record added.
    pub last_offset: i64,
    /// What the rolling policy looks at.
    pub stats: FileStats,
    staged_path: PathBuf,
    handle: FileHandle,
    builders: RowBuilders,
    /// Input bytes of every row added (part of the size estimate).
    input_bytes: u64,
    /// Input bytes of the rows in `builders`, handed over with their batch.
    unsent_input_bytes: u64,
    /// Rows added.
    written: u64,
}

/// A file that is complete in the staging directory, or being completed by the encoder.
#[derive(Debug)]
pub(crate) struct ClosedFile {
    /// Partition directory relative to the output root.
    pub directory: String,
    /// Name in the staging directory.
    pub staged_name: String,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Rows in the file.
    pub records: u64,
    size: FileSize,
}

#[derive(Debug)]
enum FileSize {
    Finishing(Finishing),
    Durable(u64),
    /// Waited for and failed (the error went to the caller then).
    Failed,
}

impl ClosedFile {
    /// Waits until the file is complete and fsynced; returns its size on disk.
    pub(crate) fn durable(&mut self) -> Result<u64> {
        match std::mem::replace(&mut self.size, FileSize::Failed) {
            FileSize::Durable(bytes) => {
                self.size = FileSize::Durable(bytes);
                Ok(bytes)
            }
            FileSize::Finishing(finishing) => {
                let bytes = finishing.wait()?;
                self.size = FileSize::Durable(bytes);
                Ok(bytes)
            }
            FileSize::Failed => Err(crate::error::ConnectorError::Task(format!(
                "staged file {} failed earlier",
                self.staged_name
            ))),
        }
    }

    /// Its size, once [`Self::durable`] returned.
    pub(crate) fn bytes(&self) -> u64 {
        match self.size {
            FileSize::Durable(bytes) => bytes,
            _ => 0,
        }
    }
}

impl OpenFile {
    /// Creates the staged file `staged_path` for records of `layout` from `first_offset` on
    /// and hands it to `encoder`.
    pub(crate) fn create(
        encoder: &mut Encoder,
        staged_path: PathBuf,
        directory: String,
        layout: &RowLayout,
        format: &FileFormat,
        first_offset: i64,
        first_event_ms: i64,
    ) -> Result<Self> {
        let builders = RowBuilders::new(layout)?;
        let file = File::create(&staged_path).io("creating", &staged_path)?;
        let writer = ArrowWriter::try_new(
            file,
            layout.arrow_schema().clone(),
            Some(format.properties()),
        )?;
        let handle = encoder.open(writer, staged_path.clone())?;
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
            handle,
            builders,
            input_bytes: 0,
            unsent_input_bytes: 0,
            written: 0,
        })
    }

    /// Adds a parsed record that [`RowLayout::fits`].
    pub(crate) fn append_cells(
        &mut self,
        encoder: &Encoder,
        layout: &RowLayout,
        cells: &[Cell<'_>],
        record: &ConsumerRecord,
        event_ms: i64,
    ) -> Result<()> {
        self.builders.push(layout, cells, record);
        self.added(record, event_ms);
        if self.builders.len() >= CONVERT_ROWS {
            self.flush(encoder)?;
        }
        Ok(())
    }

    /// Adds a record converted by arrow's JSON decoder (the general path's rare cases), after
    /// the rows collected so far, so rows stay in offset order.
    pub(crate) fn append_batch(
        &mut self,
        encoder: &Encoder,
        batch: RecordBatch,
        record: &ConsumerRecord,
        event_ms: i64,
    ) -> Result<()> {
        self.flush(encoder)?;
        self.added(record, event_ms);
        let input = std::mem::take(&mut self.unsent_input_bytes);
        encoder.write(&self.handle, batch, input)
    }

    fn added(&mut self, record: &ConsumerRecord, event_ms: i64) {
        let input = record.value.as_ref().map_or(0, |v| v.len() as u64);
        self.last_offset = record.offset;
        self.input_bytes += input;
        self.unsent_input_bytes += input;
        self.written += 1;
        self.stats.records += 1;
        self.stats.max_event_ms = self.stats.max_event_ms.max(event_ms);
        self.stats.bytes = self.handle.progress().estimate(self.input_bytes);
    }

    /// Hands the collected rows to the encoder.
    fn flush(&mut self, encoder: &Encoder) -> Result<()> {
        if let Some(batch) = self.builders.finish()? {
            let input = std::mem::take(&mut self.unsent_input_bytes);
            encoder.write(&self.handle, batch, input)?;
        }
        Ok(())
    }

    /// Hands over what is collected and has the encoder write the footer and fsync the file.
    /// `None` when the file has no rows: it is discarded instead.
    pub(crate) fn finish(mut self, encoder: &Encoder) -> Result<Option<ClosedFile>> {
        if self.written == 0 {
            self.discard(encoder);
            return Ok(None);
        }
        self.flush(encoder)?;
        let staged_name = file_name_of(&self.staged_path);
        let finishing = encoder.finish(self.handle, self.staged_path)?;
        Ok(Some(ClosedFile {
            directory: self.directory,
            staged_name,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            records: self.written,
            size: FileSize::Finishing(finishing),
        }))
    }

    /// Drops the file without committing it.
    pub(crate) fn discard(self, encoder: &Encoder) {
        encoder.discard(self.handle);
        if let Err(error) = std::fs::remove_file(&self.staged_path) {
            tracing::debug!(path = %self.staged_path.display(), %error, "staged file already gone");
        }
    }
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
