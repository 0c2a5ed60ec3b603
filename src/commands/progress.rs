//! Waiting on the cluster with something to show for it. A command that waits on brokers
//! (records to be acknowledged, a connection to open) shows its progress; when nothing moves
//! for a few seconds it says why, with the broker's error and what that error means; and it
//! gives up after the stated `--timeout` without progress, with a non-zero exit.
//!
//! The client retries silently by design (a producer's record waits up to its delivery
//! timeout, two minutes by default); this module is where the command line reads those
//! retries ([`Producer::last_retry`]) and turns them into sentences.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use millrace_client::producer::RetriedBatch;
use millrace_client::{Admin, ClientError, Producer, ResponseError};

/// How long nothing may move before the command says what it is waiting for.
pub const EXPLAIN_AFTER: Duration = Duration::from_secs(3);

/// What a Kafka error code means to someone at the command line, for the errors a write or a
/// read typically keeps failing with.
pub fn meaning(error: &ResponseError) -> Option<&'static str> {
    Some(match error {
        ResponseError::KafkaStorageError => {
            "the broker cannot write its log directory: its disk is full or failing"
        }
        ResponseError::NotEnoughReplicas | ResponseError::NotEnoughReplicasAfterAppend => {
            "fewer replicas are in sync than min.insync.replicas asks for: brokers are down or behind"
        }
        ResponseError::NotLeaderOrFollower | ResponseError::LeaderNotAvailable => {
            "the partition has no reachable leader right now: an election is under way or the leader is down"
        }
        ResponseError::RequestTimedOut => {
            "the broker did not complete the request in time: its replicas are slow to follow"
        }
        ResponseError::UnknownTopicOrPartition => {
            "the broker does not host the partition: the topic is missing or still being created"
        }
        ResponseError::TopicAuthorizationFailed | ResponseError::ClusterAuthorizationFailed => {
            "this client is not allowed to do that"
        }
        ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => {
            "the records are larger than the broker or topic accepts (max.message.bytes)"
        }
        ResponseError::ThrottlingQuotaExceeded => "a quota throttles this client",
        ResponseError::CoordinatorLoadInProgress | ResponseError::CoordinatorNotAvailable => {
            "the group coordinator is starting or moving"
        }
        _ => return None,
    })
}

/// A Kafka error's protocol name (`KAFKA_STORAGE_ERROR`), as brokers' logs and Kafka's docs
/// spell it.
pub fn error_name(error: &ResponseError) -> String {
    if let ResponseError::Unknown(code) = error {
        return format!("error code {code}");
    }
    let camel = format!("{error:?}");
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// One sentence about a failing write: "broker 1 rejects writes to fill-0:
/// KAFKA_STORAGE_ERROR (the broker cannot write its log directory: its disk is full or
/// failing)". `leader` is the partition's leader, when known.
pub fn explain_write(retried: &RetriedBatch, leader: Option<i32>) -> String {
    let partition = format!("{}-{}", retried.topic, retried.partition);
    let broker = leader.map_or_else(|| "the broker".to_string(), |id| format!("broker {id}"));
    match &retried.error {
        ClientError::Kafka { error, message, .. } => {
            let mut line = format!(
                "{broker} rejects writes to {partition}: {}",
                error_name(error)
            );
            match meaning(error) {
                Some(meaning) => line.push_str(&format!(" ({meaning})")),
                None => line.push_str(&format!(" ({error})")),
            }
            if let Some(message) = message.as_deref().filter(|m| !m.is_empty()) {
                line.push_str(&format!("; it says: {message}"));
            }
            line
        }
        other => format!("writes to {partition} fail: {other}"),
    }
}

/// Watches the producers of one command: while records are acknowledged (the progress bar
/// moves) it stays quiet; when none are for [`EXPLAIN_AFTER`] while writes keep failing, it
/// prints why (the latest retried batch, explained); after `timeout` of that it gives up.
/// Without failures it waits quietly: nothing to send (a terminal nobody types into) is not a
/// stall.
pub struct ProduceWatch {
    producers: Mutex<Vec<Producer>>,
    bar: Arc<ProgressBar>,
    timeout: Duration,
}

impl ProduceWatch {
    /// A watch over `bar` (its position counts acknowledged records).
    pub fn new(bar: Arc<ProgressBar>, timeout: Duration) -> Arc<Self> {
        Arc::new(ProduceWatch {
            producers: Mutex::new(Vec::new()),
            bar,
            timeout,
        })
    }

    /// Adds a producer whose retries explain a stall.
    pub fn watch(&self, producer: &Producer) {
        self.producers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(producer.clone());
    }

    /// The most recent retry of any watched producer.
    fn last_retry(&self) -> Option<RetriedBatch> {
        self.producers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Producer::last_retry)
            .max_by_key(|r| r.at)
    }

    /// Runs `work` to its end, or fails once no record has been acknowledged for the
    /// timeout. `admin` looks up the leader of a failing partition.
    pub async fn run<T>(
        &self,
        admin: &Admin,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut position = self.bar.position();
        let mut moved_at = Instant::now();
        let mut explained_at: Option<Instant> = None;
        loop {
            tokio::select! {
                result = &mut work => return result,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            if self.bar.position() != position {
                position = self.bar.position();
                moved_at = now;
                explained_at = None;
                continue;
            }
            let stalled = now.duration_since(moved_at);
            if stalled < EXPLAIN_AFTER {
                continue;
            }
            let Some(retried) = self.last_retry().filter(|r| r.at >= moved_at) else {
                continue;
            };
            let leader = leader_of(admin, &retried.topic, retried.partition).await;
            let why = explain_write(&retried, leader);
            if stalled >= self.timeout {
                anyhow::bail!(
                    "gave up after {} s without an acknowledged record (--timeout): {why}",
                    self.timeout.as_secs()
                );
            }
            // Again every few seconds, so the line stays current while the stall lasts.
            if explained_at.is_none_or(|at| now.duration_since(at) >= EXPLAIN_AFTER) {
                explained_at = Some(now);
                let line = format!(
                    "no record acknowledged for {} s: {why}; giving up after {} s (--timeout)",
                    stalled.as_secs(),
                    self.timeout.as_secs()
                );
                // Above the bar when it is drawn; plain stderr otherwise (--json).
                self.bar.suspend(|| eprintln!("{line}"));
            }
        }
    }
}

/// The leader of `topic`-`partition` by the cluster's metadata, if it has one.
async fn leader_of(admin: &Admin, topic: &str, partition: i32) -> Option<i32> {
    let described = admin.describe_topics(&[topic]).await.ok()?;
    described
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.id == partition)
        .map(|p| p.leader)
        .filter(|leader| *leader >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_spelled_as_in_kafka() {
        assert_eq!(
            error_name(&ResponseError::KafkaStorageError),
            "KAFKA_STORAGE_ERROR"
        );
        assert_eq!(
            error_name(&ResponseError::NotLeaderOrFollower),
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert_eq!(error_name(&ResponseError::Unknown(999)), "error code 999");
    }

    #[test]
    fn a_rejected_write_names_the_broker_the_partition_and_the_meaning() {
        let retried = RetriedBatch {
            topic: "fill".to_string(),
            partition: 0,
            error: ClientError::Kafka {
                api: "Produce",
                resource: "fill-0".to_string(),
                error: ResponseError::KafkaStorageError,
                message: None,
            },
            attempts: 3,
            at: Instant::now(),
        };
        assert_eq!(
            explain_write(&retried, Some(1)),
            "broker 1 rejects writes to fill-0: KAFKA_STORAGE_ERROR (the broker cannot write \
             its log directory: its disk is full or failing)"
        );
    }
}
