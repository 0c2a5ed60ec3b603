//! A source's durable position: a small checksummed file replaced atomically.
//!
//! Format: one header line `millrace-position 1 <crc32c of the body, 8 hex digits>` then the
//! body, the position as JSON. A write goes to `<name>.tmp`, is fsynced, renamed over the old
//! file, and the directory fsynced, so a crash leaves either the old position or the new one,
//! never a mix. The checksum catches what rename cannot (a disk or a person changing the
//! file): a file that fails it is an error rather than a silent restart from the beginning,
//! which would send everything again.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::durable::sync_dir;
use crate::error::{ConnectorError, IoContext, Result};

const MAGIC: &str = "millrace-position 1";

/// Where a source keeps its position.
#[derive(Debug, Clone)]
pub struct PositionFile {
    path: PathBuf,
}

impl PositionFile {
    /// A position file at `path` (its directory is created on the first store).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PositionFile { path: path.into() }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored position, or `None` when nothing was stored yet.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).io("reading", &self.path),
        };
        let bad = |reason: String| ConnectorError::Position {
            path: self.path.clone(),
            reason,
        };
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header line".into()))?;
        let header =
            std::str::from_utf8(&bytes[..newline]).map_err(|_| bad("header is not text".into()))?;
        let body = &bytes[newline + 1..];
        let crc = header
            .strip_prefix(MAGIC)
            .map(str::trim)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| bad(format!("header `{header}` is not `{MAGIC} <crc32c>`")))?;
        if crc32c::crc32c(body) != crc {
            return Err(bad(
                "checksum mismatch (the file was changed or damaged; delete it to start over \
                 from the beginning)"
                    .into(),
            ));
        }
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| bad(format!("body: {e}")))
    }

    /// Replaces the stored position with `position`, durably.
    pub fn store<T: Serialize>(&self, position: &T) -> Result<()> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).io("creating", &dir)?;
        let body = serde_json::to_vec(position).map_err(|e| ConnectorError::Position {
            path: self.path.clone(),
            reason: format!("encoding: {e}"),
        })?;
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut file = std::fs::File::create(&tmp).io("creating", &tmp)?;
        let header = format!("{MAGIC} {:08x}\n", crc32c::crc32c(&body));
        file.write_all(header.as_bytes())
            .and_then(|_| file.write_all(&body))
            .io("writing", &tmp)?;
        file.sync_all().io("syncing", &tmp)?;
        std::fs::rename(&tmp, &self.path).io("renaming", &tmp)?;
        sync_dir(&dir)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_stored_position_loads_back_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = PositionFile::new(dir.path().join("state/pos"));
        assert_eq!(file.load::<BTreeMap<String, u64>>().unwrap(), None);
        let mut pos = BTreeMap::from([("a.jsonl".to_string(), 10u64)]);
        file.store(&pos).unwrap();
        pos.insert("b.jsonl".into(), 7);
        file.store(&pos).unwrap();
        assert_eq!(file.load::<BTreeMap<String, u64>>().unwrap(), Some(pos));
        assert!(!dir.path().join("state/pos.tmp").exists());
    }

    #[test]
    fn a_changed_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let file = PositionFile::new(dir.path().join("pos"));
        file.store(&BTreeMap::from([("a", 1000u64)])).unwrap();
        let mut bytes = std::fs::read(file.path()).unwrap();
        let last = bytes.len() - 3;
        bytes[last] = b'9'; // 1000 -> 1090: still valid JSON, wrong checksum
        std::fs::write(file.path(), &bytes).unwrap();
        let err = file.load::<BTreeMap<String, u64>>().unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn a_file_without_the_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = PositionFile::new(dir.path().join("pos"));
        std::fs::write(file.path(), "{\"a\":1}").unwrap();
        assert!(file.load::<BTreeMap<String, u64>>().is_err());
    }
}
