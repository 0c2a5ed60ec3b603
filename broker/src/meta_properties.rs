//! `meta.properties`: the file in a data dir that says which cluster and which node the dir
//! belongs to, in Kafka's format (Java properties text, `version=1`, `cluster.id`,
//! `node.id`).
//!
//! Written on a dir's first start and checked on every later one, so a node started with
//! another node's `log.dirs`, or a dir moved between clusters, stops instead of serving (and
//! then replicating) data that is not its own.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in a data dir.
pub const FILE_NAME: &str = "meta.properties";

/// The only version written and read: Kafka's KRaft-era version, keyed by `node.id`.
pub const VERSION: u32 = 1;

/// Why `meta.properties` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetaPropertiesError {
    /// Reading, writing or syncing the file failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or dir.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists but does not say what it must.
    #[error(
        "{} is malformed: {reason} (restore it; delete it only if this data dir really is this node's)",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value that cannot be stored in the file unescaped.
    #[error("cannot store cluster id `{0}` in meta.properties: only letters, digits, `-` and `_` are allowed")]
    InvalidClusterId(String),
    /// The dir belongs to another cluster or another node.
    #[error(
        "data dir {} belongs to cluster {found_cluster_id} node {found_node_id}, not cluster \
         {cluster_id} node {node_id} (see its meta.properties); point log.dirs at this node's own dir",
        dir.display()
    )]
    Mismatch {
        /// The data dir.
        dir: PathBuf,
        /// Cluster id in the file.
        found_cluster_id: String,
        /// Node id in the file.
        found_node_id: i32,
        /// This node's cluster id.
        cluster_id: String,
        /// This node's `node.id`.
        node_id: i32,
    },
    /// The dir belongs to another node; found before this node learnt its cluster id.
    #[error(
        "data dir {} belongs to cluster {found_cluster_id} node {found_node_id}, not node \
         {node_id} (node.id; see its meta.properties); point log.dirs at this node's own dir",
        dir.display()
    )]
    NodeMismatch {
        /// The data dir.
        dir: PathBuf,
        /// Cluster id in the file.
        found_cluster_id: String,
        /// Node id in the file.
        found_node_id: i32,
        /// This node's `node.id`.
        node_id: i32,
    },
}

/// The identity a data dir carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaProperties {
    /// File format version ([`VERSION`]).
    pub version: u32,
    /// The cluster the dir belongs to.
    pub cluster_id: String,
    /// The node the dir belongs to.
    pub node_id: i32,
}

impl MetaProperties {
    /// The current version's properties for this cluster and node.
    pub fn new(cluster_id: &str, node_id: i32) -> Self {
        MetaProperties {
            version: VERSION,
            cluster_id: cluster_id.to_string(),
            node_id,
        }
    }

    /// The file's text: a comment, then the keys in the sorted order Kafka writes them.
    pub fn to_text(&self) -> String {
        format!(
            "#\n# Written by Millrace on this data dir's first start: the cluster and node it belongs to.\n\
             cluster.id={}\nnode.id={}\nversion={}\n",
            self.cluster_id, self.node_id, self.version
        )
    }

    /// Parses the file's text (Java properties: `key=value`, `key: value` or `key value`,
    /// `#` and `!` comments). Unknown keys (Kafka's `directory.id`) are ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let properties = parse_properties(text);
        let field = |key: &str| {
            properties
                .get(key)
                .map(String::as_str)
                .ok_or_else(|| format!("no `{key}`"))
        };
        let version = field("version")?;
        let version: u32 = version
            .parse()
            .map_err(|_| format!("version `{version}` is not a number"))?;
        if version != VERSION {
            return Err(format!(
                "version {version} is not supported (only {VERSION}, Kafka's KRaft format)"
            ));
        }
        let cluster_id = field("cluster.id")?;
        if cluster_id.is_empty() {
            return Err("`cluster.id` is empty".to_string());
        }
        let node_id = field("node.id")?;
        let node_id: i32 = node_id
            .parse()
            .map_err(|_| format!("node.id `{node_id}` is not a 32-bit integer"))?;
        Ok(MetaProperties {
            version,
            cluster_id: cluster_id.to_string(),
            node_id,
        })
    }

    /// Writes the file into `dir` atomically: a temp file, fsync, rename, fsync of the dir,
    /// so a crash leaves either no file or a complete one.
    pub fn write(&self, dir: &Path) -> Result<(), MetaPropertiesError> {
        if self.cluster_id.is_empty()
            || !self
                .cluster_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(MetaPropertiesError::InvalidClusterId(
                self.cluster_id.clone(),
            ));
        }
        let path = dir.join(FILE_NAME);
        let temp = dir.join(format!("{FILE_NAME}.tmp"));
        let io = |context: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| MetaPropertiesError::Io {
                context,
                path,
                source,
            }
        };
        let mut file = File::create(&temp).map_err(io("creating", &temp))?;
        file.write_all(self.to_text().as_bytes())
            .map_err(io("writing", &temp))?;
        file.sync_all().map_err(io("syncing", &temp))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(io("renaming into place", &path))?;
        // The rename is durable only once the directory entry is.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))?;
        Ok(())
    }
}

/// Reads `dir`'s `meta.properties`: `None` if there is none (a dir never started).
pub fn read(dir: &Path) -> Result<Option<MetaProperties>, MetaPropertiesError> {
    let path = dir.join(FILE_NAME);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MetaPropertiesError::Io {
                context: "reading",
                path,
                source,
            })
        }
    };
    let text = String::from_utf8(text).map_err(|_| MetaPropertiesError::Malformed {
        path: path.clone(),
        reason: "not UTF-8 text".to_string(),
    })?;
    MetaProperties::parse(&text)
        .map(Some)
        .map_err(|reason| MetaPropertiesError::Malformed { path, reason })
}

/// Fails if `dir` belongs to a node other than `node_id`; for use before the cluster id is
/// known, so nothing of another node's dir is read or changed.
pub fn check_node_id(
    dir: &Path,
    node_id: i32,
) -> Result<Option<MetaProperties>, MetaPropertiesError> {
    match read(dir)? {
        Some(found) if found.node_id != node_id => Err(MetaPropertiesError::NodeMismatch {
            dir: dir.to_path_buf(),
            found_cluster_id: found.cluster_id,
            found_node_id: found.node_id,
            node_id,
        }),
        found => Ok(found),
    }
}

/// On a dir's first start writes its `meta.properties`; later, checks that the dir belongs to
/// this cluster and node, and refuses it otherwise.
pub fn check_or_write(
    dir: &Path,
    cluster_id: &str,
    node_id: i32,
) -> Result<MetaProperties, MetaPropertiesError> {
    match read(dir)? {
        Some(found) if found.cluster_id == cluster_id && found.node_id == node_id => Ok(found),
        Some(found) => Err(MetaPropertiesError::Mismatch {
            dir: dir.to_path_buf(),
            found_cluster_id: found.cluster_id,
            found_node_id: found.node_id,
            cluster_id: cluster_id.to_string(),
            node_id,
        }),
        None => {
            let properties = MetaProperties::new(cluster_id, node_id);
            properties.write(dir)?;
            tracing::info!(dir = %dir.display(), %cluster_id, node_id, "wrote meta.properties");
            Ok(properties)
        }
    }
}

/// Java properties, as far as `meta.properties` needs: one `key=value` (or `key: value`, or
/// `key value`) per line, `#`/`!` comments; a later duplicate wins, as in Java.
fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line
            .find(|c: char| c == '=' || c == ':' || c.is_whitespace())
            .unwrap_or(line.len());
        let (key, rest) = line.split_at(split);
        let rest = rest.trim_start();
        // `key = value`: the separator may follow whitespace.
        let value = rest.strip_prefix(['=', ':']).unwrap_or(rest).trim_start();
        out.insert(key.to_string(), value.trim_end().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn written_file_reads_back_in_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let written = check_or_write(dir.path(), "MkU3OEVBNTcwNTJENDM2Qg", 3).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.starts_with('#'), "{text}");
        assert!(
            text.contains("\ncluster.id=MkU3OEVBNTcwNTJENDM2Qg\n"),
            "{text}"
        );
        assert!(text.contains("\nnode.id=3\n"), "{text}");
        assert!(text.contains("\nversion=1\n"), "{text}");
        assert!(!dir.path().join("meta.properties.tmp").exists());
        assert_eq!(read(dir.path()).unwrap(), Some(written.clone()));
        // A second start with the same identity is accepted and changes nothing.
        assert_eq!(
            check_or_write(dir.path(), "MkU3OEVBNTcwNTJENDM2Qg", 3).unwrap(),
            written
        );
    }

    #[test]
    fn a_file_written_by_kafka_is_understood() {
        let text = "#\n#Thu Jan 01 00:00:00 UTC 2026\nnode.id=2\ndirectory.id=abc\n\
                    version = 1\ncluster.id: J8qXrGm9QmCJvOaY1-LEfA\n";
        assert_eq!(
            MetaProperties::parse(text).unwrap(),
            MetaProperties::new("J8qXrGm9QmCJvOaY1-LEfA", 2)
        );
    }

    #[test]
    fn another_cluster_or_node_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        check_or_write(dir.path(), "clusterA", 1).unwrap();
        let err = check_or_write(dir.path(), "clusterB", 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("belongs to cluster clusterA node 1, not cluster clusterB node 2"),
            "{err}"
        );
        let err = check_or_write(dir.path(), "clusterB", 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clusterA") && err.contains("clusterB"),
            "{err}"
        );
        let err = check_node_id(dir.path(), 5).unwrap_err().to_string();
        assert!(err.contains("cluster clusterA node 1, not node 5"), "{err}");
        assert!(check_node_id(dir.path(), 1).unwrap().is_some());
        // Refusals leave the file as it was.
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(MetaProperties::new("clusterA", 1))
        );
    }

    #[test]
    fn malformed_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("cluster.id=a\nnode.id=1\n", "no `version`"),
            ("version=1\nnode.id=1\n", "no `cluster.id`"),
            ("version=1\ncluster.id=a\n", "no `node.id`"),
            ("version=1\ncluster.id=a\nnode.id=one\n", "node.id `one`"),
            (
                "version=0\ncluster.id=a\nbroker.id=1\n",
                "version 0 is not supported",
            ),
            ("version=x\ncluster.id=a\nnode.id=1\n", "version `x`"),
            (
                "version=1\ncluster.id=\nnode.id=1\n",
                "`cluster.id` is empty",
            ),
        ] {
            std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
            let err = read(dir.path()).unwrap_err();
            assert!(
                matches!(err, MetaPropertiesError::Malformed { .. }),
                "{err}"
            );
            let message = err.to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(message.contains("meta.properties"), "{message}");
        }
        std::fs::write(dir.path().join(FILE_NAME), [0xff, 0xfe, 0x00]).unwrap();
        assert!(read(dir.path()).unwrap_err().to_string().contains("UTF-8"));
    }

    #[test]
    fn cluster_ids_that_would_need_escaping_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "a=b", "a\nnode.id=9", "a b"] {
            assert!(matches!(
                MetaProperties::new(bad, 1).write(dir.path()),
                Err(MetaPropertiesError::InvalidClusterId(_))
            ));
        }
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
