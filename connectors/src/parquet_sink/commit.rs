//! The commit log of one Kafka partition, and how a checkpoint is made visible.
//!
//! A checkpoint commits a set of staged files and the partition's resume point together:
//!
//! 1. every file is complete and fsynced in the staging directory (and the staging directory
//!    fsynced, so the names are durable);
//! 2. one line describing the checkpoint is appended to `checkpoints.log` and fsynced. This is
//!    the commit point: before it the checkpoint never happened, after it, it did;
//! 3. the staged files are renamed into the output tree and the directories fsynced.
//!
//! A crash before 2 leaves staged files that recovery deletes (rolled back); a crash after 2
//! leaves some files renamed and some still staged, and recovery finishes the renames from the
//! last line (rolled forward). Each line carries the whole state recovery needs, so only the
//! last line matters and the log can be compacted to it; nothing in it depends on files that
//! a user may have deleted from the output tree since.
//!
//! Line format: `<crc32c of the JSON, 8 hex digits> <JSON>\n`. A last line without its newline
//! or with a bad checksum is a write torn by a crash and is cut off.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::sync_dir;
use crate::error::{ConnectorError, IoContext, Result};

/// Lines after which the log is rewritten as its last line.
const COMPACT_AFTER_LINES: usize = 1000;

/// One committed file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    /// Name in the partition's staging directory.
    pub staged: String,
    /// Path relative to the output root, `/`-separated.
    pub path: String,
    /// First Kafka offset in the file.
    pub first_offset: i64,
    /// Last Kafka offset in the file.
    pub last_offset: i64,
    /// Rows in the file.
    pub records: u64,
}

/// One line of the commit log: the state of the partition after this checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number, one more than the previous line's.
    pub seq: u64,
    /// Where to resume: every record before this offset is in a committed file or was
    /// dead-lettered or skipped.
    pub next_offset: i64,
    /// For records at or after `next_offset`: per partition directory, the last offset that a
    /// committed file of that directory covers. Records of that directory up to it are done
    /// (files of one directory hold consecutive runs of its records), later ones are not.
    pub directory_high: BTreeMap<String, i64>,
    /// The files this checkpoint commits.
    pub files: Vec<CommittedFile>,
}

/// The append-only commit log of one Kafka partition.
#[derive(Debug)]
pub struct CheckpointLog {
    path: PathBuf,
    lines: usize,
}

impl CheckpointLog {
    /// Opens the log at `path` (creating nothing yet) and returns its last complete
    /// checkpoint. A torn last line is cut off so later appends follow a whole line.
    pub fn open(path: &Path) -> Result<(CheckpointLog, Option<Checkpoint>)> {
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).io("reading", path),
        };
        let mut last = None;
        let mut lines = 0;
        let mut valid_len = 0;
        let mut rest = text.as_slice();
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                break; // torn: no newline
            };
            match parse_line(&rest[..end]) {
                Some(checkpoint) => {
                    last = Some(checkpoint);
                    lines += 1;
                    valid_len += end + 1;
                    rest = &rest[end + 1..];
                }
                None if rest[end + 1..].is_empty() => break, // torn last line
                None => {
                    return Err(ConnectorError::CommitLog {
                        path: path.to_path_buf(),
                        reason: format!("corrupt line {} (not the last one)", lines + 1),
                    })
                }
            }
        }
        if valid_len < text.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = text.len() - valid_len,
                "cutting off a torn checkpoint line (that checkpoint is rolled back)"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .io("opening", path)?;
            file.set_len(valid_len as u64).io("truncating", path)?;
            file.sync_all().io("syncing", path)?;
        }
        Ok((
            CheckpointLog {
                path: path.to_path_buf(),
                lines,
            },
            last,
        ))
    }

    /// Appends `checkpoint` durably. When this returns, the checkpoint is committed.
    pub fn append(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        if self.lines >= COMPACT_AFTER_LINES {
            return self.rewrite(checkpoint);
        }
        let line = encode_line(checkpoint)?;
        let new = !self.path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .io("opening", &self.path)?;
        file.write_all(&line).io("appending to", &self.path)?;
        file.sync_all().io("syncing", &self.path)?;
        if new {
            sync_parent(&self.path)?;
        }
        self.lines += 1;
        Ok(())
    }

    /// Replaces the log by one line (atomically: temp file, fsync, rename, fsync directory).
    fn rewrite(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let tmp = self.path.with_extension("log.compacting");
        let mut file = File::create(&tmp).io("creating", &tmp)?;
        file.write_all(&encode_line(checkpoint)?)
            .io("writing", &tmp)?;
        file.sync_all().io("syncing", &tmp)?;
        std::fs::rename(&tmp, &self.path).io("renaming", &tmp)?;
        sync_parent(&self.path)?;
        self.lines = 1;
        Ok(())
    }
}

fn encode_line(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(checkpoint)
        .map_err(|e| ConnectorError::Config(format!("encoding checkpoint: {e}")))?;
    let mut line = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

fn parse_line(line: &[u8]) -> Option<Checkpoint> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32c::crc32c(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Renames the files of `checkpoint` from `staging` into `out` and fsyncs the directories.
/// Safe to repeat: a file already in place is left alone, which is what makes recovery's
/// roll-forward idempotent.
pub fn apply(out: &Path, staging: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let mut touched: Vec<PathBuf> = Vec::new();
    for file in &checkpoint.files {
        let target = out.join(&file.path);
        let Some(directory) = target.parent() else {
            continue;
        };
        ensure_dir(out, directory)?;
        let staged = staging.join(&file.staged);
        match std::fs::rename(&staged, &target) {
            Ok(()) => {
                if !touched.iter().any(|d| d == directory) {
                    touched.push(directory.to_path_buf());
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound && target.exists() => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Only possible if someone removed both the staged and the committed file.
                tracing::error!(
                    file = %file.path,
                    "a committed file is neither staged nor in place; its records are missing"
                );
            }
            Err(e) => return Err(e).io("renaming", &staged),
        }
    }
    for directory in &touched {
        sync_dir(directory)?;
    }
    if !touched.is_empty() {
        sync_dir(staging)?;
    }
    Ok(())
}

/// Creates `directory` (under `root`) and any missing parents, fsyncing each new entry's
/// parent so the directories survive a crash along with the files renamed into them.
pub fn ensure_dir(root: &Path, directory: &Path) -> Result<()> {
    if directory.is_dir() {
        return Ok(());
    }
    let relative = directory.strip_prefix(root).unwrap_or(directory);
    let mut current = root.to_path_buf();
    for component in relative.components() {
        let parent = current.clone();
        current.push(component);
        match std::fs::create_dir(&current) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).io("creating directory", &current),
        }
    }
    Ok(())
}

fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn checkpoint(seq: u64) -> Checkpoint {
        Checkpoint {
            seq,
            next_offset: seq as i64 * 10,
            directory_high: BTreeMap::from([("topic=t/dt=2026-11-25".to_string(), 12)]),
            files: vec![],
        }
    }

    #[test]
    fn the_last_complete_line_is_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.log");
        let (mut log, last) = CheckpointLog::open(&path).unwrap();
        assert_eq!(last, None);
        log.append(&checkpoint(1)).unwrap();
        log.append(&checkpoint(2)).unwrap();
        let (_, last) = CheckpointLog::open(&path).unwrap();
        assert_eq!(last, Some(checkpoint(2)));
    }

    #[test]
    fn a_torn_last_line_is_rolled_back_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.log");
        let (mut log, _) = CheckpointLog::open(&path).unwrap();
        log.append(&checkpoint(1)).unwrap();
        let whole = std::fs::read(&path).unwrap();
        let torn = encode_line(&checkpoint(2)).unwrap();
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();

        let (mut log, last) = CheckpointLog::open(&path).unwrap();
        assert_eq!(last, Some(checkpoint(1)));
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        log.append(&checkpoint(2)).unwrap();
        assert_eq!(CheckpointLog::open(&path).unwrap().1, Some(checkpoint(2)));
    }

    #[test]
    fn a_bad_checksum_on_the_last_line_is_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.log");
        let (mut log, _) = CheckpointLog::open(&path).unwrap();
        log.append(&checkpoint(1)).unwrap();
        let mut line = encode_line(&checkpoint(2)).unwrap();
        line[0] = if line[0] == b'0' { b'1' } else { b'0' };
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&line);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(CheckpointLog::open(&path).unwrap().1, Some(checkpoint(1)));
    }

    #[test]
    fn a_corrupt_line_before_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.log");
        let mut bytes = b"00000000 {}\n".to_vec();
        bytes.extend_from_slice(&encode_line(&checkpoint(1)).unwrap());
        std::fs::write(&path, &bytes).unwrap();
        assert!(CheckpointLog::open(&path).is_err());
    }

    #[test]
    fn compaction_keeps_the_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.log");
        let (mut log, _) = CheckpointLog::open(&path).unwrap();
        for seq in 1..=(COMPACT_AFTER_LINES as u64 + 5) {
            log.append(&checkpoint(seq)).unwrap();
        }
        let (log, last) = CheckpointLog::open(&path).unwrap();
        assert!(log.lines < COMPACT_AFTER_LINES);
        assert_eq!(last, Some(checkpoint(COMPACT_AFTER_LINES as u64 + 5)));
    }

    #[test]
    fn applying_twice_is_harmless() {
        let root = tempfile::tempdir().unwrap();
        let staging = root.path().join("_millrace/t/0/staging");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("a.inprogress"), b"data").unwrap();
        let mut cp = checkpoint(1);
        cp.files.push(CommittedFile {
            staged: "a.inprogress".into(),
            path: "topic=t/dt=2026-11-25/a.parquet".into(),
            first_offset: 0,
            last_offset: 9,
            records: 10,
        });
        apply(root.path(), &staging, &cp).unwrap();
        apply(root.path(), &staging, &cp).unwrap();
        let target = root.path().join("topic=t/dt=2026-11-25/a.parquet");
        assert_eq!(std::fs::read(target).unwrap(), b"data");
        assert!(!staging.join("a.inprogress").exists());
    }
}
