//! Making names on disk survive a crash, for every part of the crate that writes files (the
//! sink's commits, a source's position file).

use std::fs::File;
use std::path::Path;

use crate::error::{IoContext, Result};

/// fsyncs a directory, making the names in it durable (a file's own fsync covers its bytes,
/// not the entry that names it).
pub(crate) fn sync_dir(directory: &Path) -> Result<()> {
    File::open(directory)
        .and_then(|d| d.sync_all())
        .io("syncing directory", directory)
}
