//! Retention: deleting whole closed segments by age (`retention.ms`) and by total size
//! (`retention.bytes`), oldest first, moving the log start offset past them.

use tracing::info;

use super::checkpoint::sync_dir;
use super::config::LogConfig;
use super::error::LogError;
use super::partition_log::PartitionLog;
use super::segment::{LogSegment, NO_TIMESTAMP};

/// The timestamp retention judges a segment by: its newest record, or the file's modification
/// time when no record carries a timestamp (as Kafka does).
fn retention_timestamp(seg: &LogSegment) -> i64 {
    match seg.max_timestamp() {
        ts if ts == NO_TIMESTAMP || ts < 0 => seg.modified_ms(),
        ts => ts,
    }
}

impl PartitionLog {
    /// Deletes the closed segments that retention allows; returns (segments, bytes) deleted.
    pub(crate) fn apply_retention(
        &self,
        now_ms: i64,
        config: &LogConfig,
    ) -> Result<(usize, u64), LogError> {
        let _writer = self.writer_lock();
        let doomed = {
            let st = self.read_state();
            st.check_open()?;
            let mut by_time = 0;
            if config.retention_ms >= 0 {
                let horizon = now_ms.saturating_sub(config.retention_ms);
                by_time = st
                    .closed
                    .iter()
                    .take_while(|s| retention_timestamp(s) < horizon)
                    .count();
            }
            let mut by_size = 0;
            if config.retention_bytes >= 0 {
                let total: u64 = st.closed.iter().map(|s| s.size()).sum::<u64>() + st.active.size();
                let mut excess = total as i64 - config.retention_bytes;
                for s in &st.closed {
                    if excess - (s.size() as i64) < 0 {
                        break;
                    }
                    excess -= s.size() as i64;
                    by_size += 1;
                }
            }
            by_time.max(by_size)
        };
        if doomed == 0 {
            return Ok((0, 0));
        }
        let removed: Vec<_> = {
            let mut st = self.write_state();
            let removed: Vec<_> = st.closed.drain(..doomed).collect();
            let first = st
                .closed
                .first()
                .map_or(st.active.base_offset(), |s| s.base_offset());
            st.log_start_offset = st.log_start_offset.max(first);
            removed
        };
        let log_start = self.log_start_offset();
        self.epochs().truncate_from_start(log_start)?;
        let mut bytes = 0;
        for seg in &removed {
            bytes += seg.size();
            seg.delete_files()?;
        }
        sync_dir(self.dir())?;
        info!(dir = %self.dir().display(), segments = removed.len(), bytes, log_start = self.log_start_offset(), "retention deleted segments");
        Ok((removed.len(), bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::log::test_util::{encode_batch, read_all_records, records};
    use crate::log::{LogConfig, MaintenanceReport, PartitionLog};
    use kafka_protocol::records::Compression;

    /// Four segments of one 10-record batch each, with timestamps 1000.., 2000.., 3000.., 4000..
    fn four_segments(dir: &std::path::Path, config: LogConfig) -> std::sync::Arc<PartitionLog> {
        let len = encode_batch(&records(0, 10, 0), Compression::None).len() as u64;
        let log = PartitionLog::open(
            dir.to_path_buf(),
            LogConfig {
                segment_bytes: len,
                ..config
            },
        )
        .unwrap();
        for b in 1..=4 {
            log.append(
                encode_batch(&records(0, 10, 1000 * b), Compression::None),
                0,
            )
            .unwrap();
        }
        log
    }

    #[test]
    fn retention_by_time_deletes_old_closed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = four_segments(
            dir.path(),
            LogConfig {
                retention_ms: 1500,
                ..LogConfig::default()
            },
        );
        let size = log.size_bytes();
        let report = log.run_maintenance(4200).unwrap();
        assert_eq!(report.segments_deleted, 2);
        assert_eq!(report.bytes_deleted, size / 2);
        assert_eq!(log.log_start_offset(), 20);
        assert!(!dir.path().join("00000000000000000000.log").exists());
        assert!(!dir.path().join("00000000000000000010.index").exists());
        assert_eq!(read_all_records(&log).first().unwrap().offset, 20);
        assert!(log.read(19, 100).is_err());
    }

    #[test]
    fn retention_by_bytes_deletes_oldest_segments_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = four_segments(dir.path(), LogConfig::default());
        let quarter = log.size_bytes() / 4;
        log.set_config(LogConfig {
            retention_bytes: (quarter * 2) as i64,
            ..log.config()
        });
        let report = log.run_maintenance(4200).unwrap();
        assert_eq!(report.segments_deleted, 2);
        assert_eq!(log.log_start_offset(), 20);
        assert_eq!(log.size_bytes(), quarter * 2);
    }

    #[test]
    fn expired_active_segment_is_rolled_then_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(
            dir.path().to_path_buf(),
            LogConfig {
                retention_ms: 100,
                ..LogConfig::default()
            },
        )
        .unwrap();
        log.append(encode_batch(&records(0, 10, 1000), Compression::None), 0)
            .unwrap();
        let report = log.run_maintenance(5000).unwrap();
        assert_eq!(report.segments_rolled, 1);
        assert_eq!(report.segments_deleted, 1);
        assert_eq!(log.log_start_offset(), 10);
        assert!(log.read(10, 100).unwrap().is_empty());
        let info = log
            .append(encode_batch(&records(0, 1, 6000), Compression::None), 6000)
            .unwrap();
        assert_eq!(info.base_offset, 10);
        assert_eq!(info.log_start_offset, 10);
    }

    #[test]
    fn nothing_to_do_reports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = four_segments(dir.path(), LogConfig::default());
        assert_eq!(
            log.run_maintenance(5000).unwrap(),
            MaintenanceReport::default()
        );
        assert_eq!(log.log_start_offset(), 0);
    }

    #[test]
    fn segment_ms_rolls_from_maintenance() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(
            dir.path().to_path_buf(),
            LogConfig {
                segment_ms: 1000,
                retention_ms: -1,
                ..LogConfig::default()
            },
        )
        .unwrap();
        log.append(encode_batch(&records(0, 3, 0), Compression::None), 10_000)
            .unwrap();
        assert_eq!(log.run_maintenance(10_500).unwrap().segments_rolled, 0);
        assert_eq!(log.run_maintenance(11_000).unwrap().segments_rolled, 1);
        // The new active segment is empty: nothing to roll.
        assert_eq!(log.run_maintenance(20_000).unwrap().segments_rolled, 0);
        assert!(dir.path().join("00000000000000000003.log").exists());
        assert_eq!(read_all_records(&log).len(), 3);
    }
}
