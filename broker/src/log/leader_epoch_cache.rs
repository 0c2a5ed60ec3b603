//! The leader epoch cache: which leader epoch began at which offset (Kafka's
//! `leader-epoch-checkpoint`, KIP-101/KIP-279).
//!
//! Followers truncate by it: a follower asks the leader where its last epoch ends
//! (OffsetForLeaderEpoch, or Fetch's `LastFetchedEpoch`/`DivergingEpoch`, KIP-320) and cuts its
//! log there. Both epochs and start offsets strictly increase along the list.
//!
//! The list is not derivable from the log alone: an epoch under which nothing was written (a
//! leader elected and replaced before any produce) has no batch carrying it, yet the leader must
//! still answer for it, or a follower that asks about it loops (KAFKA-20961). So the file is
//! the source of truth and is rebuilt from the batches' `partitionLeaderEpoch` fields only when
//! it is missing or unreadable.
//!
//! File layout (text, as Kafka's checkpoint files): a version line (`0`), an entry count line,
//! then one `<epoch> <start offset>` line per entry. Written atomically (temp file, fsync,
//! rename, directory fsync) on every change.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::checkpoint::sync_dir;
use super::segment::invalid_data;

/// Name of the cache file inside the partition directory.
pub(crate) const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
/// Version written on the first line of the file.
const FILE_VERSION: i32 = 0;
/// Kafka's `UNDEFINED_EPOCH`: no epoch is known.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`: no end offset is known.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One entry of the cache: `epoch` began with the record at `start_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// The first offset written (or to be written) under it.
    pub start_offset: i64,
}

/// The in-memory list and the file behind it.
#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    path: PathBuf,
    dir: PathBuf,
    entries: Vec<EpochEntry>,
}

/// What [`LeaderEpochCache::load`] found on disk.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// The file was read.
    Cache(LeaderEpochCache),
    /// There is no file (a new partition, or one written before the cache existed).
    Missing(LeaderEpochCache),
    /// The file exists but cannot be parsed or breaks the ordering rules.
    Corrupt(LeaderEpochCache, io::Error),
}

impl LeaderEpochCache {
    /// An empty cache for `dir` (nothing written yet).
    pub(crate) fn empty(dir: &Path) -> Self {
        LeaderEpochCache {
            path: dir.join(LEADER_EPOCH_FILE),
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        }
    }

    /// Reads the cache file of `dir`. Only real I/O failures are errors; a missing or corrupt
    /// file is reported (with an empty cache) so the caller can rebuild it from the log.
    pub(crate) fn load(dir: &Path) -> io::Result<Loaded> {
        let mut cache = Self::empty(dir);
        let text = match std::fs::read(&cache.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing(cache)),
            Err(e) => return Err(e),
        };
        match parse(&text) {
            Ok(entries) => {
                cache.entries = entries;
                Ok(Loaded::Cache(cache))
            }
            Err(e) => Ok(Loaded::Corrupt(cache, e)),
        }
    }

    /// The entries, oldest first.
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry, if any.
    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch, if any.
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.latest().map(|e| e.epoch)
    }

    /// Whether `assign(epoch, _)` would change anything: cheap, so appends can ask it every
    /// time and pay for a file write only when a new epoch begins.
    pub(crate) fn is_new_epoch(&self, epoch: i32) -> bool {
        epoch >= 0 && self.latest_epoch().is_none_or(|latest| epoch > latest)
    }

    /// Records that `epoch` begins at `start_offset`, and persists it. Ignored (`Ok(false)`)
    /// when `epoch` is negative or not newer than the latest epoch. Entries starting at or after
    /// `start_offset` are dropped first, keeping start offsets strictly increasing: they are
    /// epochs under which nothing was written before this one began (Kafka does the same).
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> io::Result<bool> {
        if !self.is_new_epoch(epoch) {
            return Ok(false);
        }
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < start_offset);
        if keep < self.entries.len() {
            debug!(path = %self.path.display(), epoch, start_offset, dropped = ?&self.entries[keep..], "new leader epoch replaces epochs without records");
        }
        self.replace_from(keep, epoch, start_offset)
    }

    /// Records the epoch of a batch a follower received at `start_offset`. The leader's log is
    /// the truth: unless `epoch` is already the latest, entries that contradict it (a newer or
    /// equal epoch, or one starting at or after `start_offset`: left over from this replica's
    /// own leadership and not removed by truncation) are dropped first. Persists only on change.
    pub(crate) fn assign_replicated(&mut self, epoch: i32, start_offset: i64) -> io::Result<bool> {
        if epoch < 0 || self.latest_epoch() == Some(epoch) {
            return Ok(false);
        }
        let keep = self
            .entries
            .partition_point(|e| e.epoch < epoch && e.start_offset < start_offset);
        if keep < self.entries.len() {
            warn!(path = %self.path.display(), epoch, start_offset, dropped = ?&self.entries[keep..], "replicated batch contradicts leader epoch cache entries; dropping them");
        }
        self.replace_from(keep, epoch, start_offset)
    }

    /// Keeps the first `keep` entries, appends `(epoch, start_offset)` and persists.
    fn replace_from(&mut self, keep: usize, epoch: i32, start_offset: i64) -> io::Result<bool> {
        self.entries.truncate(keep);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()?;
        Ok(true)
    }

    /// Kafka's OffsetForLeaderEpoch answer for `requested` on a log ending at `log_end`:
    /// `(epoch, end offset)` where epoch is the largest known epoch `<= requested` and the end
    /// offset is the start of the next larger epoch, or `log_end` for the latest epoch.
    ///
    /// As in Kafka (KIP-279): a requested epoch below the first known one answers
    /// `(requested, start of the first epoch)`, so a follower truncates to where this log's
    /// history begins; `UNDEFINED_EPOCH` requested, an empty cache, or a requested epoch above
    /// the latest answer `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`.
    pub(crate) fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return undefined;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end);
        }
        // First entry with a larger epoch.
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return undefined;
        };
        match higher.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested, next.start_offset),
        }
    }

    /// Removes the entries starting at or after `offset` (the log was truncated to end there).
    pub(crate) fn truncate_from_end(&mut self, offset: i64) -> io::Result<()> {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        if keep < self.entries.len() {
            debug!(path = %self.path.display(), offset, removed = ?&self.entries[keep..], "truncated leader epoch cache from the end");
            self.entries.truncate(keep);
            self.persist()?;
        }
        Ok(())
    }

    /// Removes entries wholly below a new log start `offset`; the epoch in force at `offset`
    /// is kept, starting at `offset`.
    pub(crate) fn truncate_from_start(&mut self, offset: i64) -> io::Result<()> {
        // Entries before the last one starting at or below `offset` ended before it.
        let drop = self
            .entries
            .partition_point(|e| e.start_offset <= offset)
            .saturating_sub(1);
        let mut changed = drop > 0;
        self.entries.drain(..drop);
        if let Some(first) = self.entries.first_mut() {
            if first.start_offset < offset {
                first.start_offset = offset;
                changed = true;
            }
        }
        if changed {
            debug!(path = %self.path.display(), offset, "truncated leader epoch cache from the start");
            self.persist()?;
        }
        Ok(())
    }

    /// Removes every entry (the log was emptied).
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.persist()?;
        }
        Ok(())
    }

    /// Replaces the whole list (a rebuild from the log) and persists it. `entries` must already
    /// be ordered; out-of-order ones are skipped.
    pub(crate) fn replace(
        &mut self,
        entries: impl IntoIterator<Item = EpochEntry>,
    ) -> io::Result<()> {
        self.entries.clear();
        for e in entries {
            if e.epoch >= 0
                && self
                    .entries
                    .last()
                    .is_none_or(|l| e.epoch > l.epoch && e.start_offset > l.start_offset)
            {
                self.entries.push(e);
            }
        }
        self.persist()
    }

    /// Writes the file atomically: temp file, fsync, rename, directory fsync.
    pub(crate) fn persist(&self) -> io::Result<()> {
        let mut text = format!("{FILE_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        let tmp = self.dir.join(format!("{LEADER_EPOCH_FILE}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        sync_dir(&self.dir)
    }
}

/// Parses the file layout of the module docs, checking the ordering rules.
fn parse(bytes: &[u8]) -> io::Result<Vec<EpochEntry>> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid_data("not UTF-8".into()))?;
    let mut lines = text.lines();
    let mut next_line = |what: &str| {
        lines
            .next()
            .ok_or_else(|| invalid_data(format!("missing {what}")))
    };
    let version: i32 = parse_number(next_line("version")?)?;
    if version != FILE_VERSION {
        return Err(invalid_data(format!("unknown version {version}")));
    }
    let count: usize = parse_number(next_line("entry count")?)?;
    let mut entries: Vec<EpochEntry> = Vec::new();
    for i in 0..count {
        let line = next_line(&format!("entry {i}"))?;
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(invalid_data(format!("malformed entry {line:?}")));
        };
        let entry = EpochEntry {
            epoch: parse_number(epoch)?,
            start_offset: parse_number(start)?,
        };
        let ordered = entry.epoch >= 0
            && entry.start_offset >= 0
            && entries
                .last()
                .is_none_or(|l| entry.epoch > l.epoch && entry.start_offset > l.start_offset);
        if !ordered {
            return Err(invalid_data(format!(
                "entry {entry:?} does not follow {:?}",
                entries.last()
            )));
        }
        entries.push(entry);
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(invalid_data("more entries than the count says".into()));
    }
    Ok(entries)
}

fn parse_number<T: std::str::FromStr>(s: &str) -> io::Result<T> {
    s.trim()
        .parse()
        .map_err(|_| invalid_data(format!("not a number: {s:?}")))
}

/// Logs a corrupt cache file before it is rebuilt.
pub(crate) fn warn_corrupt(dir: &Path, error: &io::Error) {
    warn!(dir = %dir.display(), %error, "leader epoch cache file is corrupt; rebuilding it from the log's batches (epochs without records are lost)");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn e(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    fn reload(dir: &Path) -> Vec<EpochEntry> {
        match LeaderEpochCache::load(dir).unwrap() {
            Loaded::Cache(c) => c.entries().to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_increasing_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::empty(dir.path());
        assert!(c.assign(1, 0).unwrap());
        assert!(c.assign(3, 10).unwrap());
        // Not newer: ignored.
        assert!(!c.assign(3, 20).unwrap());
        assert!(!c.assign(2, 20).unwrap());
        assert!(!c.assign(-1, 20).unwrap());
        assert_eq!(c.entries(), &[e(1, 0), e(3, 10)]);
        assert_eq!(reload(dir.path()), vec![e(1, 0), e(3, 10)]);
        // An epoch without records (4 at 15) is kept ...
        assert!(c.assign(4, 15).unwrap());
        assert_eq!(reload(dir.path()), vec![e(1, 0), e(3, 10), e(4, 15)]);
        // ... until a newer epoch begins at the same offset.
        assert!(c.assign(5, 15).unwrap());
        assert_eq!(c.entries(), &[e(1, 0), e(3, 10), e(5, 15)]);
        assert_eq!(c.latest_epoch(), Some(5));
    }

    #[test]
    fn replicated_epochs_override_contradicting_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::empty(dir.path());
        c.assign(1, 0).unwrap();
        c.assign(5, 100).unwrap();
        assert!(!c.assign_replicated(5, 120).unwrap());
        // The leader says epoch 4 begins at 100: this replica's own epoch 5 there was never
        // the leader's.
        assert!(c.assign_replicated(4, 100).unwrap());
        assert_eq!(c.entries(), &[e(1, 0), e(4, 100)]);
        assert!(c.assign_replicated(6, 130).unwrap());
        assert_eq!(reload(dir.path()), vec![e(1, 0), e(4, 100), e(6, 130)]);
    }

    #[test]
    fn end_offset_for_follows_offset_for_leader_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::empty(dir.path());
        assert_eq!(c.end_offset_for(0, 0), (-1, -1));
        c.assign(2, 5).unwrap();
        c.assign(4, 20).unwrap();
        c.assign(7, 30).unwrap();
        let end = 42;
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(7, end), (7, 42));
        // A known epoch ends where the next begins.
        assert_eq!(c.end_offset_for(2, end), (2, 20));
        assert_eq!(c.end_offset_for(4, end), (4, 30));
        // An unknown epoch between known ones: the largest one below it.
        assert_eq!(c.end_offset_for(3, end), (2, 20));
        assert_eq!(c.end_offset_for(6, end), (4, 30));
        // Below the first: where this log's history begins (KIP-279).
        assert_eq!(c.end_offset_for(1, end), (1, 5));
        assert_eq!(c.end_offset_for(0, end), (0, 5));
        // Undefined, or above the latest.
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, end), (-1, -1));
        assert_eq!(c.end_offset_for(8, end), (-1, -1));
    }

    #[test]
    fn truncation_from_both_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::empty(dir.path());
        for (epoch, start) in [(1, 0), (2, 10), (3, 20), (4, 30)] {
            c.assign(epoch, start).unwrap();
        }
        c.truncate_from_end(20).unwrap();
        assert_eq!(c.entries(), &[e(1, 0), e(2, 10)]);
        c.truncate_from_end(100).unwrap();
        assert_eq!(c.entries(), &[e(1, 0), e(2, 10)]);
        c.truncate_from_start(5).unwrap();
        assert_eq!(c.entries(), &[e(1, 5), e(2, 10)]);
        c.truncate_from_start(10).unwrap();
        assert_eq!(c.entries(), &[e(2, 10)]);
        c.truncate_from_start(15).unwrap();
        assert_eq!(reload(dir.path()), vec![e(2, 15)]);
        c.clear().unwrap();
        assert_eq!(reload(dir.path()), vec![]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any sequence of changes keeps both columns strictly increasing, and the file always
        /// says what memory says.
        #[test]
        fn changes_keep_the_cache_ordered_and_durable(
            ops in proptest::collection::vec((0u8..5, 0i32..12, 0i64..200), 1..24),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut c = LeaderEpochCache::empty(dir.path());
            for (op, epoch, offset) in ops {
                match op {
                    0 => { c.assign(epoch, offset).unwrap(); }
                    1 => { c.assign_replicated(epoch, offset).unwrap(); }
                    2 => c.truncate_from_end(offset).unwrap(),
                    3 => c.truncate_from_start(offset).unwrap(),
                    _ => {
                        let (found, end) = c.end_offset_for(epoch, 500);
                        if let Some(first) = c.entries().first() {
                            if epoch >= first.epoch && epoch <= c.latest_epoch().unwrap() {
                                proptest::prop_assert!(found <= epoch && found >= first.epoch);
                                proptest::prop_assert!(end >= first.start_offset);
                            }
                        }
                    }
                }
                for w in c.entries().windows(2) {
                    proptest::prop_assert!(w[0].epoch < w[1].epoch);
                    proptest::prop_assert!(w[0].start_offset < w[1].start_offset);
                }
                if op < 4 && !c.entries().is_empty() {
                    proptest::prop_assert_eq!(reload(dir.path()), c.entries().to_vec());
                }
            }
        }
    }

    #[test]
    fn corrupt_or_missing_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            LeaderEpochCache::load(dir.path()).unwrap(),
            Loaded::Missing(_)
        ));
        for bad in [
            "",
            "0\n2\n1 0\n",
            "1\n1\n1 0\n",
            "0\n2\n3 10\n2 20\n",
            "0\n2\n1 10\n2 10\n",
            "0\n1\n1 x\n",
            "0\n1\n1 0\n2 5\n",
            "0\n1\n-2 0\n",
        ] {
            std::fs::write(dir.path().join(LEADER_EPOCH_FILE), bad).unwrap();
            assert!(
                matches!(
                    LeaderEpochCache::load(dir.path()).unwrap(),
                    Loaded::Corrupt(..)
                ),
                "{bad:?}"
            );
        }
        std::fs::write(dir.path().join(LEADER_EPOCH_FILE), "0\n2\n1 0\n4 7\n").unwrap();
        assert_eq!(reload(dir.path()), vec![e(1, 0), e(4, 7)]);
    }
}
