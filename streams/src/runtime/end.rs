//! End of input: telling a running job that its input is complete for now.
//!
//! A bounded run (the demo's `--events N`, a backfill, a test) needs final results for every
//! window, including the ones whose end the watermark would only pass once more input came.
//! [`EndOfInput::signal`] asks the job to process what exists, close every window and commit;
//! [`EndOfInput::drained`] waits until it did.

use std::sync::Arc;

use tokio::sync::watch;

/// A handle to a job's end of input; clone it freely. Get it with
/// [`Job::end_of_input`](super::Job::end_of_input) before calling `run`.
///
/// After [`signal`](EndOfInput::signal), each of the instance's tasks processes its input up
/// to the end offsets the source topics had at the signal (for a `Job::group_by` job: until
/// every source record has been forwarded through the repartition topic, by whichever
/// instance reads its partition, and the repartition topic has been read up to that point
/// too), then moves its watermark past everything: every open window closes and its final
/// result is emitted. Outputs are acknowledged and offsets committed, then
/// [`drained`](EndOfInput::drained) resolves. The job keeps running until shut down: state
/// stays queryable, and records produced later are processed as usual.
///
/// Signalling again starts another round (with the end offsets of that moment).
#[derive(Debug, Clone)]
pub struct EndOfInput {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// How many times the input was ended.
    signalled: watch::Sender<u64>,
    /// The latest signal this instance has finished draining.
    drained: watch::Sender<u64>,
}

impl Default for EndOfInput {
    fn default() -> Self {
        Self::new()
    }
}

impl EndOfInput {
    /// A handle that has not been signalled.
    pub(crate) fn new() -> Self {
        EndOfInput {
            inner: Arc::new(Inner {
                signalled: watch::Sender::new(0),
                drained: watch::Sender::new(0),
            }),
        }
    }

    /// Ends the input: the job processes what the source topics hold now, then closes every
    /// window and commits. Returns at once; await [`drained`](EndOfInput::drained) for the
    /// outcome.
    pub fn signal(&self) {
        self.inner.signalled.send_modify(|n| *n += 1);
        tracing::info!("end of input signalled");
    }

    /// Resolves once this instance has processed its input up to the ends taken at the latest
    /// [`signal`](EndOfInput::signal) (waiting for a first signal if there was none), closed
    /// every window, and committed the results.
    pub async fn drained(&self) {
        let wanted = (*self.inner.signalled.borrow()).max(1);
        let mut done = self.inner.drained.subscribe();
        // The sender lives in `inner`, which this handle keeps alive: the wait cannot fail.
        let _ = done.wait_for(|&n| n >= wanted).await;
    }

    /// The signal count now.
    pub(crate) fn signalled(&self) -> u64 {
        *self.inner.signalled.borrow()
    }

    /// Records that the round started by signal number `round` is complete.
    pub(crate) fn mark_drained(&self, round: u64) {
        self.inner.drained.send_modify(|n| *n = (*n).max(round));
        tracing::info!(round, "end of input drained");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_the_signalled_round() {
        let end = EndOfInput::new();
        let waiter = {
            let end = end.clone();
            tokio::spawn(async move { end.drained().await })
        };
        end.signal();
        assert_eq!(end.signalled(), 1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        end.mark_drained(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("drained() did not resolve")
            .expect("waiter panicked");
    }

    #[tokio::test]
    async fn drained_before_any_signal_waits_for_the_first() {
        let end = EndOfInput::new();
        let mut drained = std::pin::pin!(end.drained());
        assert!(futures_poll_once(drained.as_mut()).await.is_none());
        end.signal();
        end.mark_drained(1);
        drained.await;
    }

    /// Polls a future once without waiting.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(std::time::Duration::ZERO, f)
            .await
            .ok()
    }
}
