//! What goes into the producer and what comes back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::error::{ClientError, Result};

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Destination topic.
    pub topic: String,
    /// Destination partition; `None` lets the partitioner choose (murmur2 of the key, or
    /// sticky for records without a key).
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Bytes>,
    /// The value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Headers; a name may repeat.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation time in milliseconds since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), Some(value.into())));
        self
    }

    /// Sets the timestamp.
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: i32,
    /// The record's offset (-1 with acks=0, which gets no answer).
    pub offset: i64,
    /// The record's timestamp: its creation time, or the broker's append time when the topic
    /// uses `LogAppendTime`.
    pub timestamp: i64,
}

/// The broker's answer for a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchAck {
    pub(crate) base_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub(crate) log_append_time: i64,
}

/// Shared by every record of a batch: set once when the batch is acknowledged or fails. One
/// allocation per batch rather than a channel per record keeps `send` cheap, and a completed
/// batch is read without a lock (each of its records' futures looks once).
#[derive(Debug, Default)]
pub(crate) struct BatchCompletion {
    outcome: OnceLock<Result<BatchAck>>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchCompletion {
    pub(crate) fn complete(&self, outcome: Result<BatchAck>) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        // Taken after the outcome is set: a future registering after this sees the outcome.
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Resolves when the record is acknowledged (to where it was written) or has failed.
///
/// Dropping it does not cancel the send.
#[derive(Debug)]
#[must_use = "the record is sent either way; await this to learn whether it arrived"]
pub struct DeliveryFuture {
    pub(crate) completion: Arc<BatchCompletion>,
    pub(crate) partition: i32,
    pub(crate) offset_delta: i32,
    pub(crate) timestamp: i64,
    pub(crate) waker_slot: Option<usize>,
}

impl DeliveryFuture {
    /// The partition the record was put in.
    pub fn partition(&self) -> i32 {
        self.partition
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(outcome) = this.completion.outcome.get() {
            return Poll::Ready(this.metadata(outcome));
        }
        let mut wakers = this
            .completion
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Completion sets the outcome before it takes the wakers: look again under the lock.
        if let Some(outcome) = this.completion.outcome.get() {
            return Poll::Ready(this.metadata(outcome));
        }
        match this.waker_slot {
            Some(slot) if slot < wakers.len() => {
                if !wakers[slot].will_wake(cx.waker()) {
                    wakers[slot] = cx.waker().clone();
                }
            }
            _ => {
                this.waker_slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl DeliveryFuture {
    fn metadata(&self, outcome: &Result<BatchAck>) -> Result<RecordMetadata, ClientError> {
        match outcome {
            Ok(ack) => Ok(RecordMetadata {
                partition: self.partition,
                offset: if ack.base_offset < 0 {
                    -1
                } else {
                    ack.base_offset + i64::from(self.offset_delta)
                },
                timestamp: if ack.log_append_time >= 0 {
                    ack.log_append_time
                } else {
                    self.timestamp
                },
            }),
            Err(error) => Err(error.clone()),
        }
    }
}
