//! The durable snapshot file: the metadata image as of a log id, with openraft's snapshot
//! metadata (last log id, membership).
//!
//! Once a snapshot exists openraft may purge the log it covers, so the snapshot is the only
//! copy of that history: it is written under a temporary name, fsynced, renamed over the old
//! one and the directory fsynced, so a crash leaves either the old snapshot or the new one.
//!
//! File layout: 4-byte big-endian length of the meta JSON, 4-byte CRC-32C of meta and data,
//! the meta JSON, then the data (the image JSON, exactly as sent to followers).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::type_config::SnapshotMeta;

/// File name of the current snapshot in the quorum dir.
const FILE_NAME: &str = "snapshot.bin";

/// A snapshot as kept on disk and in memory.
#[derive(Clone, Debug)]
pub struct StoredSnapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The serialized image (JSON).
    pub data: Vec<u8>,
}

/// Where snapshots of one quorum dir live.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    dir: PathBuf,
}

impl SnapshotFile {
    /// Snapshots in `dir`.
    pub fn new(dir: &Path) -> Self {
        SnapshotFile {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Reads the current snapshot, if any. A damaged file is an error, not "no snapshot": the
    /// log it replaced may be purged, so starting without it would lose committed metadata.
    pub fn load(&self) -> io::Result<Option<StoredSnapshot>> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        decode(&bytes).map(Some).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot {}: {why}", path.display()),
            )
        })
    }

    /// Replaces the current snapshot durably (blocking: call it off the async threads).
    pub fn save(&self, snapshot: &StoredSnapshot) -> io::Result<()> {
        let encoded = encode(snapshot)?;
        let tmp = self
            .dir
            .join(format!("{FILE_NAME}.tmp-{}", std::process::id()));
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&encoded)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)?.sync_all()
    }
}

fn encode(snapshot: &StoredSnapshot) -> io::Result<Vec<u8>> {
    let meta = serde_json::to_vec(&snapshot.meta).map_err(io::Error::other)?;
    let meta_len = u32::try_from(meta.len()).map_err(io::Error::other)?;
    let mut crc = crc32c::crc32c(&meta);
    crc = crc32c::crc32c_append(crc, &snapshot.data);
    let mut out = Vec::with_capacity(8 + meta.len() + snapshot.data.len());
    out.extend_from_slice(&meta_len.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&snapshot.data);
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<StoredSnapshot, String> {
    let header = |range: std::ops::Range<usize>| -> Result<u32, String> {
        let slice = bytes.get(range).ok_or("truncated header")?;
        let array: [u8; 4] = slice.try_into().map_err(|_| "truncated header")?;
        Ok(u32::from_be_bytes(array))
    };
    let meta_len = header(0..4)? as usize;
    let crc = header(4..8)?;
    let meta_end = 8usize
        .checked_add(meta_len)
        .filter(|end| *end <= bytes.len())
        .ok_or("meta length past the end of the file")?;
    let meta_bytes = &bytes[8..meta_end];
    let data = &bytes[meta_end..];
    if crc32c::crc32c_append(crc32c::crc32c(meta_bytes), data) != crc {
        return Err("checksum mismatch".into());
    }
    let meta = serde_json::from_slice(meta_bytes).map_err(|e| format!("meta: {e}"))?;
    Ok(StoredSnapshot {
        meta,
        data: data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    #[test]
    fn a_saved_snapshot_loads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::new(dir.path());
        assert!(file.load().unwrap().is_none());
        let snapshot = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
                last_membership: Default::default(),
                snapshot_id: "2-9-1".into(),
            },
            data: b"{\"image\":1}".to_vec(),
        };
        file.save(&snapshot).unwrap();
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded.meta, snapshot.meta);
        assert_eq!(loaded.data, snapshot.data);

        let mut bytes = fs::read(dir.path().join(FILE_NAME)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        assert!(file.load().is_err());
        fs::write(dir.path().join(FILE_NAME), [0, 0, 0xff, 0xff, 1]).unwrap();
        assert!(file.load().is_err());
    }
}
