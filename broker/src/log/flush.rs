//! Group commit: one background task fsyncs the active segment on behalf of every waiter.
//!
//! A produce handler calls `wait_durable(last_offset)`. If that offset is not yet durable it
//! records the request and wakes the flusher task; while an fsync is running, further requests
//! just queue up, and the next fsync (which covers everything appended so far) answers all of
//! them at once. Under load that is one fsync per fsync-duration, not one per produce.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{watch, Notify};
use tracing::error;

use super::error::LogError;

/// Where durability stands, published to waiters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Durability {
    /// Every offset below this is on disk.
    pub durable_end: i64,
    /// Set (for good) when an fsync failed: the log's data on disk is in doubt.
    pub failed: Option<String>,
    /// The log was closed; nothing further will become durable.
    pub closed: bool,
    /// Bumped by every [`Flusher::reset`]: an fsync begun before a truncation must not mark
    /// offsets durable that the truncation removed and new appends may reuse.
    pub generation: u64,
}

/// Something whose appended data the flusher can make durable.
pub(crate) trait FlushTarget: Send + Sync + 'static {
    /// The active segment's file and the log end offset it holds everything below, or `None`
    /// once the log is closed.
    fn flush_target(&self) -> Option<(Arc<File>, i64)>;
}

/// The shared state between waiters and the flusher task of one partition.
#[derive(Debug)]
pub(crate) struct Flusher {
    /// Highest offset any waiter asked for.
    requested: Mutex<i64>,
    durability: watch::Sender<Durability>,
    wake: Arc<Notify>,
    started: AtomicBool,
    /// fsyncs issued by the task, for observing group commit.
    fsyncs: AtomicU64,
}

impl Flusher {
    /// A flusher for a log whose offsets below `durable_end` are already on disk.
    pub(crate) fn new(durable_end: i64) -> Self {
        let (durability, _) = watch::channel(Durability {
            durable_end,
            ..Durability::default()
        });
        Flusher {
            requested: Mutex::new(-1),
            durability,
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            fsyncs: AtomicU64::new(0),
        }
    }

    /// Waits until `last_offset` is durable. Spawns the flusher task on first use, so logs
    /// that never need fsync (or are opened outside a runtime) never start one.
    pub(crate) async fn wait_durable<T: FlushTarget>(
        self: &Arc<Self>,
        target: Weak<T>,
        last_offset: i64,
    ) -> Result<(), LogError> {
        let mut rx = self.durability.subscribe();
        if let Some(done) = Self::check(&rx.borrow_and_update(), last_offset) {
            return done;
        }
        self.request(target, last_offset);
        loop {
            if let Some(done) = Self::check(&rx.borrow_and_update(), last_offset) {
                return done;
            }
            if rx.changed().await.is_err() {
                return Err(LogError::Closed);
            }
        }
    }

    /// Asks for `last_offset` to become durable without waiting: the fsync starts now, while
    /// the caller may wait for it later. Must be called inside a tokio runtime.
    pub(crate) fn request<T: FlushTarget>(self: &Arc<Self>, target: Weak<T>, last_offset: i64) {
        if self.durability.borrow().durable_end > last_offset {
            return;
        }
        {
            let mut requested = self
                .requested
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *requested = (*requested).max(last_offset);
        }
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(Arc::clone(self), target));
        }
        self.wake.notify_one();
    }

    fn check(d: &Durability, last_offset: i64) -> Option<Result<(), LogError>> {
        if d.durable_end > last_offset {
            Some(Ok(()))
        } else if let Some(e) = &d.failed {
            Some(Err(LogError::Io(std::io::Error::other(e.clone()))))
        } else if d.closed {
            Some(Err(LogError::Closed))
        } else {
            None
        }
    }

    /// Records that everything below `end` is durable (a roll or close fsynced it).
    pub(crate) fn mark_durable(&self, end: i64) {
        self.durability.send_if_modified(|d| {
            let grew = end > d.durable_end;
            d.durable_end = d.durable_end.max(end);
            grew
        });
    }

    /// Sets the durable end after a truncation, which fsynced everything below `durable_end`
    /// and removed what was above it; an fsync already under way no longer counts.
    pub(crate) fn reset(&self, durable_end: i64) {
        self.durability.send_modify(|d| {
            d.durable_end = durable_end;
            d.generation += 1;
        });
    }

    /// [`Self::mark_durable`] for an fsync begun at `generation`: ignored if a truncation
    /// happened since.
    fn mark_durable_at(&self, end: i64, generation: u64) {
        self.durability.send_if_modified(|d| {
            if d.generation != generation {
                return false;
            }
            let grew = end > d.durable_end;
            d.durable_end = d.durable_end.max(end);
            grew
        });
    }

    /// Marks the log closed: waiters beyond the durable end fail, the task exits.
    pub(crate) fn mark_closed(&self, durable_end: i64) {
        self.durability.send_modify(|d| {
            d.durable_end = d.durable_end.max(durable_end);
            d.closed = true;
        });
        self.wake.notify_one();
    }

    /// Wakes the task so it notices the log is gone (called when the log is dropped).
    pub(crate) fn shutdown(&self) {
        self.durability.send_modify(|d| d.closed = true);
        self.wake.notify_one();
    }

    /// Number of fsyncs the flusher task has issued.
    pub(crate) fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Highest offset any waiter asked for.
    fn requested(&self) -> i64 {
        *self
            .requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Lets a later waiter start a new flusher task if this one ends, including when its runtime
/// shuts down under it (tests and embedded brokers create and drop runtimes).
struct RunningGuard(Arc<Flusher>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.started.store(false, Ordering::Release);
    }
}

/// The flusher task: sleeps until woken, then fsyncs until no waiter is left behind.
async fn run<T: FlushTarget>(flusher: Arc<Flusher>, target: Weak<T>) {
    let _running = RunningGuard(Arc::clone(&flusher));
    loop {
        flusher.wake.notified().await;
        loop {
            // The generation is read before the target: see `Flusher::reset`.
            let (durable_end, closed, generation) = {
                let d = flusher.durability.borrow();
                (d.durable_end, d.closed || d.failed.is_some(), d.generation)
            };
            if closed {
                return;
            }
            if flusher.requested() < durable_end {
                break; // everyone asking is already served
            }
            // Hold the log only to find what to sync, so dropping it is never delayed.
            let Some((file, end)) = target.upgrade().and_then(|t| t.flush_target()) else {
                return;
            };
            if end <= durable_end {
                break; // the requested offsets are not appended yet; a later wake will do
            }
            flusher.fsyncs.fetch_add(1, Ordering::Relaxed);
            let began = std::time::Instant::now();
            let synced = tokio::task::spawn_blocking(move || file.sync_data()).await;
            match synced {
                Ok(Ok(())) => {
                    // Offsets made durable by this fsync: the group commit's size in records.
                    let records = u64::try_from(end - durable_end).unwrap_or(0);
                    crate::metrics::log_flush::observe(began.elapsed(), records);
                    flusher.mark_durable_at(end, generation)
                }
                Ok(Err(e)) => {
                    error!(error = %e, "fsync of log segment failed");
                    flusher
                        .durability
                        .send_modify(|d| d.failed = Some(format!("fsync failed: {e}")));
                    return;
                }
                Err(e) => {
                    flusher
                        .durability
                        .send_modify(|d| d.failed = Some(format!("fsync task failed: {e}")));
                    return;
                }
            }
        }
    }
}
