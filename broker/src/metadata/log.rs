//! The metadata log: an append-only file of [`MetadataRecord`]s, fsynced per append.
//!
//! Frame: 4-byte big-endian length, 4-byte CRC-32C of the payload, JSON payload. Replay stops
//! at the first torn or corrupt frame and truncates it, as the partition logs do.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::records::MetadataRecord;

/// Largest metadata record accepted on replay; anything bigger is corruption.
const MAX_RECORD_BYTES: usize = 16 << 20;

/// Why the metadata log failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataLogError {
    /// Disk error.
    #[error("metadata log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("metadata record encoding failed: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The open metadata log.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: File,
    next_offset: u64,
}

impl MetadataLog {
    /// Opens (or creates) the log at `path`, returning it with the records replayed from it.
    pub fn open(path: &Path) -> Result<(Self, Vec<MetadataRecord>), MetadataLogError> {
        let io = |source| MetadataLogError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;

        let mut records = Vec::new();
        let mut pos = 0usize;
        while let Some((record, len)) = decode_frame(&bytes[pos..]) {
            records.push(record);
            pos += len;
        }
        if pos < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - pos,
                "truncating torn tail of the metadata log"
            );
            file.set_len(pos as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        let log = MetadataLog {
            path: path.to_path_buf(),
            file,
            next_offset: records.len() as u64,
        };
        Ok((log, records))
    }

    /// Appends records durably (one write, one fsync): when this returns they survive a crash.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataLogError> {
        let mut buf = Vec::new();
        for record in records {
            let payload = serde_json::to_vec(record)?;
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
            buf.extend_from_slice(&payload);
        }
        let io = |source| MetadataLogError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.next_offset += records.len() as u64;
        Ok(())
    }

    /// Offset the next record will get (records so far).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
}

/// Decodes one frame from the front of `bytes`: the record and the frame's length.
fn decode_frame(bytes: &[u8]) -> Option<(MetadataRecord, usize)> {
    let len = u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = bytes.get(8..8 + len)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let record = serde_json::from_slice(payload).ok()?;
    Some((record, 8 + len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use uuid::Uuid;

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta/metadata.log");
        let first = MetadataRecord::Cluster {
            cluster_id: "abc".into(),
        };
        let second = MetadataRecord::RemoveTopic {
            topic_id: Uuid::new_v4(),
        };
        {
            let (mut log, replayed) = MetadataLog::open(&path).unwrap();
            assert!(replayed.is_empty());
            log.append(&[first.clone(), second.clone()]).unwrap();
        }
        // Simulate a crash in the middle of a third append.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(file);

        let (mut log, replayed) = MetadataLog::open(&path).unwrap();
        assert_eq!(replayed, vec![first.clone(), second.clone()]);
        log.append(std::slice::from_ref(&first)).unwrap();
        drop(log);
        let (_, replayed) = MetadataLog::open(&path).unwrap();
        assert_eq!(replayed, vec![first.clone(), second, first]);
    }
}
