//! The log start offset checkpoint: DeleteRecords can move the start offset into the middle of
//! a segment, which the segment files alone cannot express, so it is persisted in a small file.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use tracing::warn;

/// Name of the checkpoint file inside the partition directory.
pub(crate) const LOG_START_FILE: &str = "log-start-offset.checkpoint";

/// Reads the persisted log start offset, if any. An unreadable file is ignored with a warning:
/// the start offset then falls back to the first segment's base offset.
pub(crate) fn read_log_start(dir: &Path) -> io::Result<Option<i64>> {
    let path = dir.join(LOG_START_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(v) if v >= 0 => Ok(Some(v)),
            _ => {
                warn!(path = %path.display(), "ignoring malformed log start offset checkpoint");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Persists the log start offset atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_log_start(dir: &Path, offset: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{LOG_START_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    writeln!(f, "{offset}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(LOG_START_FILE))?;
    sync_dir(dir)
}

/// fsyncs a directory so that file creations, renames and deletions in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_tolerates_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_log_start(dir.path()).unwrap(), None);
        write_log_start(dir.path(), 42).unwrap();
        assert_eq!(read_log_start(dir.path()).unwrap(), Some(42));
        std::fs::write(dir.path().join(LOG_START_FILE), "nonsense").unwrap();
        assert_eq!(read_log_start(dir.path()).unwrap(), None);
    }
}
