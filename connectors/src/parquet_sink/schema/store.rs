//! Inferred schemas on disk: `<out>/_millrace/<topic>/schema.json`, next to the sink's commit
//! logs, so that a restart, or another task of the sink, writes the topic's files with the
//! schema the first inference fixed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::SinkSchema;
use crate::durable::sync_dir;
use crate::error::{ConnectorError, IoContext, Result};
use crate::parquet_sink::recovery::STATE_DIR;

/// Where a sink's inferred schemas are kept, one file per topic.
#[derive(Debug, Clone)]
pub(crate) struct SchemaStore {
    state_dir: PathBuf,
}

impl SchemaStore {
    /// The store of the sink writing under `out`.
    pub(crate) fn new(out: &Path) -> Self {
        SchemaStore {
            state_dir: out.join(STATE_DIR),
        }
    }

    fn path(&self, topic: &str) -> PathBuf {
        self.state_dir.join(topic).join("schema.json")
    }

    /// The schema saved for `topic`, if any.
    pub(crate) fn load(&self, topic: &str) -> Result<Option<SinkSchema>> {
        let path = self.path(topic);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                ConnectorError::Config(format!("reading saved schema {}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).io("reading", &path),
        }
    }

    /// Saves an inferred schema unless one is saved already, and returns the schema in
    /// force. Tasks of one sink (or instances sharing an output root) may infer at the same
    /// time: the first to link its file wins and the others adopt its schema, so every file
    /// of a topic has one schema. The file is complete and fsynced before the link makes it
    /// visible.
    pub(crate) fn save(&self, topic: &str, schema: &SinkSchema) -> Result<SinkSchema> {
        static ATTEMPT: AtomicU64 = AtomicU64::new(0);
        let path = self.path(topic);
        let dir = path
            .parent()
            .ok_or_else(|| ConnectorError::Config(format!("bad schema path {}", path.display())))?;
        std::fs::create_dir_all(dir).io("creating", dir)?;
        let tmp = path.with_extension(format!(
            "json.{}-{}.tmp",
            std::process::id(),
            ATTEMPT.fetch_add(1, Ordering::Relaxed)
        ));
        let json = serde_json::to_vec_pretty(schema)
            .map_err(|e| ConnectorError::Config(format!("encoding schema: {e}")))?;
        let mut file = std::fs::File::create(&tmp).io("creating", &tmp)?;
        file.write_all(&json).io("writing", &tmp)?;
        file.sync_all().io("syncing", &tmp)?;
        // A hard link fails if the name exists, unlike a rename: first writer wins.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(dir)?;
                Ok(schema.clone())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .load(topic)?
                .ok_or_else(|| ConnectorError::Config(format!("{} vanished", path.display()))),
            Err(e) => Err(e).io("linking", &path),
        }
    }
}
