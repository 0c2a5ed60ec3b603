//! The thread that encodes and writes a task's Parquet files.
//!
//! Decoding JSON and encoding Parquet (dictionaries, pages, zstd) each take a good share of a
//! record's cost. On a thread of its own the encoder works on one batch while the engine
//! decodes the next, so a task uses two cores where it has them.
//!
//! Nothing the exactly-once protocol depends on moves to this thread. The engine creates every
//! staged file itself (so the name exists before anything refers to it), and a closed file is
//! committed only once this thread reports it complete and fsynced ([`Finishing::wait`]),
//! which a commit waits for before it writes its log line. The thread touches files only
//! through their open handles: creating, renaming and deleting names stays on the engine's
//! thread, in the same order as before. An engine that is dropped (a crash in the tests, a
//! failed task) stops the thread and waits for it, so no write of an abandoned file can
//! follow a later recovery.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::error::{ConnectorError, IoContext, Result};

/// Batches queued for the thread at most. Two keep it busy while the engine fills the next;
/// more would only hold more memory when the disk is slower than the decoder.
const QUEUE: usize = 2;

/// What the thread has done to one file so far, for the size estimate of the rolling policy.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Encoded bytes: written to the file plus buffered in the open row group.
    encoded_bytes: AtomicU64,
    /// Input (JSON) bytes of the rows encoded so far.
    input_bytes: AtomicU64,
}

impl Progress {
    /// Estimated file size when `input_bytes` of input were handed over in all: what is
    /// encoded plus the input size of what is not yet.
    pub(crate) fn estimate(&self, input_bytes: u64) -> u64 {
        let encoded = self.encoded_bytes.load(Ordering::Relaxed);
        let done = self.input_bytes.load(Ordering::Relaxed);
        encoded + input_bytes.saturating_sub(done)
    }
}

/// A file the thread writes.
#[derive(Debug)]
pub(crate) struct FileHandle {
    id: u64,
    progress: Arc<Progress>,
}

impl FileHandle {
    /// The thread's progress on this file.
    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }
}

/// A file the thread is completing: footer, fsync, size.
#[derive(Debug)]
pub(crate) struct Finishing {
    done: Receiver<Result<u64>>,
    path: PathBuf,
}

impl Finishing {
    /// Waits until the file is complete and fsynced, and returns its size.
    pub(crate) fn wait(self) -> Result<u64> {
        self.done.recv().map_err(|_| {
            ConnectorError::Task(format!(
                "the Parquet encoder thread stopped before finishing {}",
                self.path.display()
            ))
        })?
    }
}

enum Job {
    Open {
        id: u64,
        writer: Box<ArrowWriter<File>>,
        path: PathBuf,
        progress: Arc<Progress>,
    },
    Write {
        id: u64,
        batch: RecordBatch,
        input_bytes: u64,
    },
    Finish {
        id: u64,
        done: SyncSender<Result<u64>>,
    },
    Discard {
        id: u64,
    },
}

/// The encoder thread of one engine.
pub(crate) struct Encoder {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    abort: Arc<AtomicBool>,
    next_id: u64,
}

impl Encoder {
    /// Starts the thread.
    pub(crate) fn start() -> Result<Self> {
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        let abort = Arc::new(AtomicBool::new(false));
        let stop = abort.clone();
        let thread = std::thread::Builder::new()
            .name("millrace-parquet-encoder".into())
            .spawn(move || run(queue, &stop))
            .map_err(|e| ConnectorError::Task(format!("starting the Parquet encoder: {e}")))?;
        Ok(Encoder {
            jobs: Some(jobs),
            thread: Some(thread),
            abort,
            next_id: 0,
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| ConnectorError::Task("the Parquet encoder thread stopped".into()))
    }

    /// Hands over a file the engine created, with its writer.
    pub(crate) fn open(&mut self, writer: ArrowWriter<File>, path: PathBuf) -> Result<FileHandle> {
        self.next_id += 1;
        let progress = Arc::new(Progress::default());
        self.send(Job::Open {
            id: self.next_id,
            writer: Box::new(writer),
            path,
            progress: progress.clone(),
        })?;
        Ok(FileHandle {
            id: self.next_id,
            progress,
        })
    }

    /// Queues a batch for `file` (blocks while the queue is full). A write error is reported
    /// when the file is finished.
    pub(crate) fn write(
        &self,
        file: &FileHandle,
        batch: RecordBatch,
        input_bytes: u64,
    ) -> Result<()> {
        self.send(Job::Write {
            id: file.id,
            batch,
            input_bytes,
        })
    }

    /// Queues the completion of `file` after its batches.
    pub(crate) fn finish(&self, file: FileHandle, path: PathBuf) -> Result<Finishing> {
        let (done, result) = mpsc::sync_channel(1);
        self.send(Job::Finish { id: file.id, done })?;
        Ok(Finishing { done: result, path })
    }

    /// Drops `file` without completing it (the engine deletes its name).
    pub(crate) fn discard(&self, file: FileHandle) {
        // A stopped thread has dropped the file already.
        let _ = self.send(Job::Discard { id: file.id });
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // Abandoned work is not finished: whatever is queued belongs to files nobody will
        // commit, and recovery may be about to delete and recreate their names.
        self.abort.store(true, Ordering::Relaxed);
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the Parquet encoder thread panicked");
            }
        }
    }
}

/// One file on the thread.
struct Slot {
    writer: Option<Box<ArrowWriter<File>>>,
    path: PathBuf,
    progress: Arc<Progress>,
    error: Option<ConnectorError>,
}

impl Slot {
    fn write(&mut self, batch: &RecordBatch, input_bytes: u64) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        match writer.write(batch) {
            Ok(()) => {
                let encoded = writer.bytes_written() + writer.in_progress_size();
                self.progress
                    .encoded_bytes
                    .store(encoded as u64, Ordering::Relaxed);
                self.progress
                    .input_bytes
                    .fetch_add(input_bytes, Ordering::Relaxed);
            }
            Err(error) => {
                self.error = Some(error.into());
                self.writer = None;
            }
        }
    }

    fn finish(self) -> Result<u64> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let writer = self.writer.ok_or_else(|| {
            ConnectorError::Task(format!("{} has no writer", self.path.display()))
        })?;
        let file = writer.into_inner()?;
        file.sync_all().io("syncing", &self.path)?;
        Ok(file.metadata().io("reading size of", &self.path)?.len())
    }
}

fn run(queue: Receiver<Job>, abort: &AtomicBool) {
    let mut files: HashMap<u64, Slot> = HashMap::new();
    while let Ok(job) = queue.recv() {
        if abort.load(Ordering::Relaxed) {
            break;
        }
        match job {
            Job::Open {
                id,
                writer,
                path,
                progress,
            } => {
                files.insert(
                    id,
                    Slot {
                        writer: Some(writer),
                        path,
                        progress,
                        error: None,
                    },
                );
            }
            Job::Write {
                id,
                batch,
                input_bytes,
            } => {
                if let Some(slot) = files.get_mut(&id) {
                    slot.write(&batch, input_bytes);
                }
            }
            Job::Finish { id, done } => {
                let result = match files.remove(&id) {
                    Some(slot) => slot.finish(),
                    None => Err(ConnectorError::Task(format!("encoder: no file {id}"))),
                };
                // The engine may have given up on the file meanwhile.
                let _ = done.send(result);
            }
            Job::Discard { id } => {
                files.remove(&id);
            }
        }
    }
}
