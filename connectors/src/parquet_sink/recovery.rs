//! Where a Kafka partition's sink state lives, and how it is brought back after a stop or a
//! crash: finish the last checkpoint's renames, delete everything staged after it, and read
//! the resume point from it.
//!
//! Everything recovery reads is under `<out>/_millrace/<topic>/<partition>/`, which only the
//! sink writes. It never looks at the consumer group's committed offsets (they may have
//! expired or been reset) nor at the committed files (a user may have moved or deleted old
//! ones), so cleaning up the output tree cannot make a restart duplicate or skip records.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::commit::{apply, ensure_dir, Checkpoint, CheckpointLog};
use crate::durable::sync_dir;
use crate::error::{IoContext, Result};

/// Name of the directory under the output root that holds the sink's own state. Readers
/// (pyarrow, DuckDB's globs, DataFusion's `.parquet` listing) skip it: it starts with `_` and
/// holds no `.parquet` files.
pub const STATE_DIR: &str = "_millrace";

/// The state files of one Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// `<out>/_millrace/<topic>/<partition>`.
    pub partition_dir: PathBuf,
    /// Where files are written until they are committed.
    pub staging: PathBuf,
    /// The commit log.
    pub log: PathBuf,
}

impl StatePaths {
    /// The state paths of `topic`-`partition` under the output root `out`.
    pub fn new(out: &Path, topic: &str, partition: i32) -> Self {
        let partition_dir = out.join(STATE_DIR).join(topic).join(partition.to_string());
        StatePaths {
            staging: partition_dir.join("staging"),
            log: partition_dir.join("checkpoints.log"),
            partition_dir,
        }
    }
}

/// What a partition's sink knows after recovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveredState {
    /// Resume from this offset; `None` if nothing was ever committed.
    pub next_offset: Option<i64>,
    /// See [`Checkpoint::directory_high`].
    pub directory_high: BTreeMap<String, i64>,
    /// Sequence number of the last checkpoint (0 if none).
    pub seq: u64,
}

/// Recovers `topic`-`partition` under `out`: rolls the last checkpoint forward, rolls back
/// anything staged after it, and returns the open log with the recovered state.
pub fn recover(
    out: &Path,
    topic: &str,
    partition: i32,
) -> Result<(StatePaths, CheckpointLog, RecoveredState)> {
    let paths = StatePaths::new(out, topic, partition);
    ensure_dir(out, &paths.staging)?;
    let (log, last) = CheckpointLog::open(&paths.log)?;
    if let Some(checkpoint) = &last {
        apply(out, &paths.staging, checkpoint)?;
    }
    clear_staging(&paths.staging)?;
    let state = match last {
        Some(Checkpoint {
            seq,
            next_offset,
            directory_high,
            ..
        }) => RecoveredState {
            next_offset: Some(next_offset),
            directory_high,
            seq,
        },
        None => RecoveredState::default(),
    };
    tracing::info!(
        topic,
        partition,
        next_offset = ?state.next_offset,
        checkpoint = state.seq,
        "recovered partition"
    );
    Ok((paths, log, state))
}

/// Deletes every staged file: after the roll-forward, whatever is still staged belongs to no
/// committed checkpoint.
pub fn clear_staging(staging: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).io("listing", staging),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry.io("listing", staging)?.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).io("removing", &path),
        }
    }
    if removed > 0 {
        tracing::info!(staging = %staging.display(), removed, "rolled back uncommitted files");
        sync_dir(staging)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::parquet_sink::commit::CommittedFile;

    fn staged_checkpoint(root: &Path, names: &[&str]) -> Checkpoint {
        let paths = StatePaths::new(root, "t", 0);
        std::fs::create_dir_all(&paths.staging).unwrap();
        let files = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                std::fs::write(paths.staging.join(format!("{name}.inprogress")), name).unwrap();
                CommittedFile {
                    staged: format!("{name}.inprogress"),
                    path: format!("topic=t/dt=2026-11-2{i}/{name}.parquet"),
                    first_offset: i as i64,
                    last_offset: i as i64,
                    records: 1,
                }
            })
            .collect();
        Checkpoint {
            seq: 1,
            next_offset: names.len() as i64,
            directory_high: BTreeMap::new(),
            files,
        }
    }

    #[test]
    fn a_crash_between_renames_is_rolled_forward() {
        let root = tempfile::tempdir().unwrap();
        let checkpoint = staged_checkpoint(root.path(), &["a", "b", "c"]);
        let paths = StatePaths::new(root.path(), "t", 0);
        let (mut log, _) = CheckpointLog::open(&paths.log).unwrap();
        log.append(&checkpoint).unwrap();
        // The crash: only the first file was renamed.
        let first = &checkpoint.files[0];
        let target = root.path().join(&first.path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::rename(paths.staging.join(&first.staged), &target).unwrap();

        let (_, _, state) = recover(root.path(), "t", 0).unwrap();
        assert_eq!(state.next_offset, Some(3));
        for file in &checkpoint.files {
            assert!(
                root.path().join(&file.path).exists(),
                "{} missing",
                file.path
            );
        }
        assert_eq!(std::fs::read_dir(&paths.staging).unwrap().count(), 0);
    }

    #[test]
    fn files_staged_after_the_last_checkpoint_are_rolled_back() {
        let root = tempfile::tempdir().unwrap();
        let checkpoint = staged_checkpoint(root.path(), &["a", "b"]);
        // The crash came before the checkpoint line was written.
        let (_, _, state) = recover(root.path(), "t", 0).unwrap();
        assert_eq!(state, RecoveredState::default());
        for file in &checkpoint.files {
            assert!(!root.path().join(&file.path).exists());
        }
        let paths = StatePaths::new(root.path(), "t", 0);
        assert_eq!(std::fs::read_dir(&paths.staging).unwrap().count(), 0);
    }

    #[test]
    fn recovery_does_not_need_the_committed_files() {
        let root = tempfile::tempdir().unwrap();
        let checkpoint = staged_checkpoint(root.path(), &["a"]);
        let paths = StatePaths::new(root.path(), "t", 0);
        let (mut log, _) = CheckpointLog::open(&paths.log).unwrap();
        log.append(&checkpoint).unwrap();
        apply(root.path(), &paths.staging, &checkpoint).unwrap();
        // A retention job deletes the whole day.
        std::fs::remove_dir_all(root.path().join("topic=t")).unwrap();

        let (_, _, state) = recover(root.path(), "t", 0).unwrap();
        assert_eq!(state.next_offset, Some(1));
    }
}
