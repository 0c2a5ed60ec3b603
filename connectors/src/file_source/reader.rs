//! Reading complete records from a tailed file or a directory of files, from positions that
//! only move when the caller says the records were acknowledged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use millrace_client::producer::ProducerRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::csv::{parse_records, row_to_json};
use super::InputFormat;
use crate::error::{ConnectorError, IoContext, Result};
use crate::framework::source::RejectedInput;

/// Most bytes read from a file for one batch. A record longer than this is an error.
const MAX_READ: u64 = 8 << 20;

/// Where reading stands in one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// Bytes of the file already sent (always at a record boundary).
    pub offset: u64,
    /// The file's inode when it was read (unix), to notice a file replaced under its name
    /// (log rotation) and read the new one from its start.
    #[serde(default)]
    pub inode: Option<u64>,
}

/// Positions of every file, by name: the file name in directory mode, the path's file name
/// when tailing one file.
pub type Positions = BTreeMap<String, FilePosition>;

/// What to read and how to turn it into records.
#[derive(Debug, Clone)]
pub struct ReaderSettings {
    /// Connector name (errors).
    pub name: String,
    /// The tailed file, or the directory.
    pub path: PathBuf,
    /// Whether `path` is a directory.
    pub directory: bool,
    /// Directory mode: only names ending with this.
    pub suffix: Option<String>,
    /// JSON lines or CSV.
    pub format: InputFormat,
    /// CSV: numbers, booleans and nulls instead of strings only.
    pub csv_infer_types: bool,
    /// Field whose value becomes the record key.
    pub key_field: Option<String>,
    /// Destination topic.
    pub topic: String,
    /// Most records per batch.
    pub batch_records: usize,
}

/// A batch read from one file: records to produce, input to reject, and the positions to
/// store once both are acknowledged.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records for the topic.
    pub records: Vec<ProducerRecord>,
    /// Lines or rows that could not become records.
    pub rejected: Vec<RejectedInput>,
    /// Every file's position after this batch.
    pub positions: Positions,
}

impl Batch {
    /// Whether the batch moved nothing forward.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.rejected.is_empty()
    }
}

/// Reads batches; see the [module documentation](self).
#[derive(Debug)]
pub struct FileReader {
    settings: ReaderSettings,
    /// Positions acknowledged so far.
    positions: Positions,
    /// CSV headers by file name (read again from the file's start after a restart).
    headers: BTreeMap<String, Vec<String>>,
}

impl FileReader {
    /// A reader resuming at `positions`.
    pub fn new(settings: ReaderSettings, positions: Positions) -> Self {
        FileReader {
            settings,
            positions,
            headers: BTreeMap::new(),
        }
    }

    /// The acknowledged positions.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Takes `positions` (from a batch whose records were acknowledged) as the new ones.
    pub fn acknowledge(&mut self, positions: Positions) {
        self.positions = positions;
    }

    /// The files to read, in order, as (name, path).
    fn files(&self) -> Result<Vec<(String, PathBuf)>> {
        let s = &self.settings;
        if !s.directory {
            let name = s
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(vec![(name, s.path.clone())]);
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&s.path).io("listing", &s.path)? {
            let entry = entry.io("listing", &s.path)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Hidden files are skipped: the default position file lives here, and editors
            // and copy tools write their temporary files as dot files.
            if name.starts_with('.') || s.suffix.as_ref().is_some_and(|x| !name.ends_with(x)) {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push((name, entry.path()));
            }
        }
        files.sort();
        Ok(files)
    }

    /// The next batch: records from the first file (in name order) with unread complete
    /// records. Empty when there is nothing new.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let files = self.files()?;
        let mut positions = self.positions.clone();
        if self.settings.directory {
            // Forget files that are gone, so the position file does not grow forever.
            positions.retain(|name, _| files.iter().any(|(n, _)| n == name));
        }
        for (name, path) in files {
            let mut file = match File::open(&path) {
                Ok(file) => file,
                // Not there (yet, or any more): nothing to read from it now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).io("opening", &path),
            };
            let meta = file.metadata().io("reading metadata of", &path)?;
            let inode = inode_of(&meta);
            let mut position = positions.get(&name).copied().unwrap_or_default();
            if (position.inode.is_some() && position.inode != inode) || meta.len() < position.offset
            {
                tracing::warn!(
                    file = %path.display(),
                    "file replaced or truncated; reading it from the start"
                );
                position = FilePosition { offset: 0, inode };
                self.headers.remove(&name);
            }
            position.inode = inode;
            if meta.len() == position.offset {
                positions.insert(name, position);
                continue;
            }
            let data = read_from(&mut file, &path, position.offset)?;
            let (mut batch, used) = self.parse(&name, &path, &mut file, position.offset, &data)?;
            if used == 0 {
                if data.len() as u64 >= MAX_READ {
                    return Err(ConnectorError::Source {
                        name: self.settings.name.clone(),
                        reason: format!(
                            "{}: a record at byte {} is longer than {MAX_READ} bytes",
                            path.display(),
                            position.offset
                        ),
                    });
                }
                // Only the start of a record so far: wait for its newline.
                positions.insert(name, position);
                continue;
            }
            position.offset += used as u64;
            positions.insert(name, position);
            batch.positions = positions;
            return Ok(batch);
        }
        Ok(Batch {
            positions,
            ..Batch::default()
        })
    }

    /// Records from `data` (read at `offset` of the file), and the bytes they used.
    fn parse(
        &mut self,
        name: &str,
        path: &Path,
        file: &mut File,
        offset: u64,
        data: &[u8],
    ) -> Result<(Batch, usize)> {
        let mut batch = Batch::default();
        let max = self.settings.batch_records.max(1);
        match self.settings.format {
            InputFormat::JsonLines => {
                let mut used = 0;
                while batch.records.len() + batch.rejected.len() < max {
                    let Some(newline) = data[used..].iter().position(|&b| b == b'\n') else {
                        break;
                    };
                    let line = &data[used..used + newline];
                    let origin = format!("{name}:{}", offset + used as u64);
                    used += newline + 1;
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    self.json_line(line, origin, &mut batch);
                }
                Ok((batch, used))
            }
            InputFormat::Csv => {
                let mut skip_header = 0;
                if offset == 0 {
                    // The first record of the file is its header.
                    let (first, used) = parse_records(data, 1);
                    let Some(header) = first.into_iter().next() else {
                        return Ok((batch, 0));
                    };
                    let header = header_names(&header.fields, path)?;
                    self.headers.insert(name.to_string(), header);
                    skip_header = used;
                } else if !self.headers.contains_key(name) {
                    let header = read_header(file, path)?;
                    self.headers.insert(name.to_string(), header);
                }
                let (rows, used) = parse_records(&data[skip_header..], max);
                let header = self.headers.get(name).cloned().unwrap_or_default();
                for row in rows {
                    let at = offset + (skip_header + row.start) as u64;
                    let origin = format!("{name}:{at}");
                    if row.fields.len() != header.len() {
                        batch.rejected.push(RejectedInput {
                            value: row.fields.join(&b","[..]),
                            reason: format!(
                                "row has {} fields, the header has {}",
                                row.fields.len(),
                                header.len()
                            ),
                            origin,
                        });
                        continue;
                    }
                    match row_to_json(&header, &row.fields, self.settings.csv_infer_types) {
                        Some(json) => self.json_line(json.as_bytes(), origin, &mut batch),
                        None => batch.rejected.push(RejectedInput {
                            value: row.fields.join(&b","[..]),
                            reason: "row is not UTF-8".into(),
                            origin,
                        }),
                    }
                }
                Ok((batch, skip_header + used))
            }
        }
    }

    /// Adds one JSON text as a record, or rejects it.
    fn json_line(&self, line: &[u8], origin: String, batch: &mut Batch) {
        let key = match &self.settings.key_field {
            None => match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                Ok(_) => None,
                Err(e) => {
                    batch.rejected.push(RejectedInput {
                        value: line.to_vec(),
                        reason: format!("line is not valid JSON: {e}"),
                        origin,
                    });
                    return;
                }
            },
            Some(field) => match serde_json::from_slice::<Value>(line) {
                Ok(value) => match value.get(field) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(Bytes::from(s.clone().into_bytes())),
                    Some(other) => Some(Bytes::from(other.to_string().into_bytes())),
                },
                Err(e) => {
                    batch.rejected.push(RejectedInput {
                        value: line.to_vec(),
                        reason: format!("line is not valid JSON: {e}"),
                        origin,
                    });
                    return;
                }
            },
        };
        let mut record = ProducerRecord::new(self.settings.topic.clone(), line.to_vec());
        record.key = key;
        batch.records.push(record);
    }
}

/// Up to [`MAX_READ`] bytes of `file` from `offset`.
fn read_from(file: &mut File, path: &Path, offset: u64) -> Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset)).io("seeking in", path)?;
    let mut data = Vec::new();
    file.take(MAX_READ)
        .read_to_end(&mut data)
        .io("reading", path)?;
    Ok(data)
}

/// The header of a CSV file, read from its start.
fn read_header(file: &mut File, path: &Path) -> Result<Vec<String>> {
    let data = read_from(file, path, 0)?;
    match parse_records(&data, 1).0.into_iter().next() {
        Some(header) => header_names(&header.fields, path),
        None => Err(ConnectorError::Source {
            name: path.display().to_string(),
            reason: "the CSV header is not complete".into(),
        }),
    }
}

fn header_names(fields: &[Vec<u8>], path: &Path) -> Result<Vec<String>> {
    fields
        .iter()
        .map(|f| {
            std::str::from_utf8(f)
                .map(|s| s.trim().to_string())
                .map_err(|_| ConnectorError::Source {
                    name: path.display().to_string(),
                    reason: "the CSV header is not UTF-8".into(),
                })
        })
        .collect()
}

#[cfg(unix)]
fn inode_of(meta: &std::fs::Metadata) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.ino())
}

#[cfg(not(unix))]
fn inode_of(_meta: &std::fs::Metadata) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Write;

    fn settings(path: &Path, directory: bool, format: InputFormat) -> ReaderSettings {
        ReaderSettings {
            name: "test".into(),
            path: path.to_path_buf(),
            directory,
            suffix: None,
            format,
            csv_infer_types: true,
            key_field: Some("user".into()),
            topic: "events".into(),
            batch_records: 100,
        }
    }

    fn values(batch: &Batch) -> Vec<String> {
        batch
            .records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_tailed_file_yields_complete_lines_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"{\"user\":\"a\",\"n\":1}\n\n{bad\n{\"user\":2,\"n\":2}\n{\"n\":")
            .unwrap();
        let mut reader = FileReader::new(
            settings(&path, false, InputFormat::JsonLines),
            Positions::new(),
        );
        let batch = reader.next_batch().unwrap();
        assert_eq!(
            values(&batch),
            [r#"{"user":"a","n":1}"#, r#"{"user":2,"n":2}"#]
        );
        let keys: Vec<_> = batch.records.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, [Some(Bytes::from("a")), Some(Bytes::from("2"))]);
        assert_eq!(batch.rejected.len(), 1);
        assert_eq!(batch.rejected[0].origin, "events.jsonl:20");
        assert!(batch.rejected[0]
            .reason
            .starts_with("line is not valid JSON"));
        // Not acknowledged: the same batch again.
        assert_eq!(values(&reader.next_batch().unwrap()).len(), 2);
        reader.acknowledge(batch.positions.clone());
        assert!(reader.next_batch().unwrap().is_empty());
        // The half line is finished later.
        file.write_all(b"3}\n").unwrap();
        let batch = reader.next_batch().unwrap();
        assert_eq!(values(&batch), [r#"{"n":3}"#]);
        assert_eq!(
            batch.positions["events.jsonl"].offset,
            std::fs::metadata(&path).unwrap().len()
        );
    }

    #[test]
    fn a_replaced_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\n").unwrap();
        let mut reader = FileReader::new(
            settings(&path, false, InputFormat::JsonLines),
            Positions::new(),
        );
        let batch = reader.next_batch().unwrap();
        reader.acknowledge(batch.positions);
        // Rotated: a new file under the old name, shorter than the old position.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "{\"n\":3}\n").unwrap();
        assert_eq!(values(&reader.next_batch().unwrap()), [r#"{"n":3}"#]);
    }

    #[test]
    fn a_directory_of_csv_files_in_name_order_with_headers_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.csv"), "user,n\nb,2\n").unwrap();
        std::fs::write(
            dir.path().join("a.csv"),
            "user,n,ok\na,1,true\nx,1\n\"c\",007,\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden.csv"), "user\nz\n").unwrap();
        let mut s = settings(dir.path(), true, InputFormat::Csv);
        s.batch_records = 2;
        let mut reader = FileReader::new(s.clone(), Positions::new());
        let batch = reader.next_batch().unwrap();
        assert_eq!(values(&batch), [r#"{"user":"a","n":1,"ok":true}"#]);
        assert_eq!(
            batch.rejected[0].reason,
            "row has 2 fields, the header has 3"
        );
        assert_eq!(batch.rejected[0].origin, "a.csv:19");
        // A restart after the first batch: the header is read again from the file.
        let mut reader = FileReader::new(s, batch.positions);
        let batch = reader.next_batch().unwrap();
        assert_eq!(values(&batch), [r#"{"user":"c","n":"007","ok":null}"#]);
        reader.acknowledge(batch.positions);
        let batch = reader.next_batch().unwrap();
        assert_eq!(values(&batch), [r#"{"user":"b","n":2}"#]);
        reader.acknowledge(batch.positions);
        assert!(reader.next_batch().unwrap().is_empty());
        // A file that disappears is forgotten.
        std::fs::remove_file(dir.path().join("a.csv")).unwrap();
        let batch = reader.next_batch().unwrap();
        assert_eq!(batch.positions.keys().collect::<Vec<_>>(), ["b.csv"]);
    }
}
