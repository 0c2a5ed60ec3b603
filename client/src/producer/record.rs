//! What goes into the producer and what comes back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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

#[derive(Debug, Default)]
struct CompletionState {
    outcome: Option<Result<BatchAck>>,
    wakers: Vec<Waker>,
}

/// Shared by every record of a batch: set once when the batch is acknowledged or fails. One
/// allocation per batch rather than a channel per record keeps `send` cheap.
#[derive(Debug, Default)]
pub(crate) struct BatchCompletion {
    state: Mutex<CompletionState>,
}

impl BatchCompletion {
    pub(crate) fn complete(&self, outcome: Result<BatchAck>) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
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
        let mut state = this
            .completion
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(match outcome {
                Ok(ack) => Ok(RecordMetadata {
                    partition: this.partition,
                    offset: if ack.base_offset < 0 {
                        -1
                    } else {
                        ack.base_offset + i64::from(this.offset_delta)
                    },
                    timestamp: if ack.log_append_time >= 0 {
                        ack.log_append_time
                    } else {
                        this.timestamp
                    },
                }),
                Err(error) => Err(error.clone()),
            });
        }
        match this.waker_slot {
            Some(slot) if slot < state.wakers.len() => {
                if !state.wakers[slot].will_wake(cx.waker()) {
                    state.wakers[slot] = cx.waker().clone();
                }
            }
            _ => {
                this.waker_slot = Some(state.wakers.len());
                state.wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}
