//! One member of a sink connector's consumer group: the Kafka loop around a [`Sink`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerEvent};
use millrace_client::{ClientConfig, IsolationLevel, TopicPartition};
use serde::{Deserialize, Serialize};

use super::{DeadLetterQueue, Shutdown, Sink};
use crate::error::Result;
use crate::metrics::SinkMetrics;

/// How long one poll waits; also how often [`Sink::tick`] runs on a quiet topic.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a partition the sink has no record of starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The first record still stored (default).
    #[default]
    Earliest,
    /// Only records produced after the sink started.
    Latest,
}

/// What a sink task needs to know about the Kafka side.
#[derive(Debug, Clone)]
pub struct SinkTaskSettings {
    /// Connector name (logs).
    pub name: String,
    /// Connection settings for the consumer and the dead-letter producer.
    pub client: ClientConfig,
    /// The consumer group all tasks of the connector join.
    pub group: String,
    /// Static membership id of this task, if any.
    pub group_instance_id: Option<String>,
    /// How long the group waits for a silent member.
    pub session_timeout: Duration,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Where partitions the sink has no record of start.
    pub start: StartFrom,
    /// Topic for records the sink cannot write (logged and counted without one).
    pub dead_letter_topic: Option<String>,
    /// `isolation.level` of the consumer: read_committed never hands the sink a record of an
    /// aborted transaction, nor one past the last stable offset.
    pub isolation_level: IsolationLevel,
}

/// Runs `sink` as one member of its group until `shutdown` is triggered, then closes and
/// commits what it holds and leaves the group.
pub async fn run_sink_task<S: Sink>(
    mut sink: S,
    settings: &SinkTaskSettings,
    metrics: Arc<SinkMetrics>,
    mut shutdown: Shutdown,
) -> Result<()> {
    let mut consumer_config = ConsumerConfig::builder(settings.client.clone())
        .group_id(settings.group.clone())
        .session_timeout(settings.session_timeout)
        // Kafka's rule of thumb: a third of the session timeout.
        .heartbeat_interval(settings.session_timeout / 3)
        .enable_auto_commit(false)
        .isolation_level(settings.isolation_level)
        .auto_offset_reset(match settings.start {
            StartFrom::Earliest => AutoOffsetReset::Earliest,
            StartFrom::Latest => AutoOffsetReset::Latest,
        });
    if let Some(id) = &settings.group_instance_id {
        consumer_config = consumer_config.group_instance_id(id.clone());
    }
    let mut consumer = Consumer::connect(consumer_config.build()?).await?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let mut dead_letters =
        DeadLetterQueue::connect(&settings.client, settings.dead_letter_topic.as_deref()).await?;
    tracing::info!(name = %settings.name, topics = ?settings.topics, "sink task started");

    let mut lag = LagShare::new(metrics.clone());
    loop {
        let event = tokio::select! {
            _ = shutdown.wait() => break,
            event = consumer.poll_event(POLL_TIMEOUT) => event?,
        };
        match event {
            Some(ConsumerEvent::Assigned(partitions)) => {
                for tp in &partitions {
                    match sink.open(tp)? {
                        Some(offset) => consumer.seek(tp, offset)?,
                        None => match settings.start {
                            StartFrom::Earliest => {
                                consumer.seek_to_beginning(std::slice::from_ref(tp))?
                            }
                            StartFrom::Latest => consumer.seek_to_end(std::slice::from_ref(tp))?,
                        },
                    }
                }
            }
            Some(ConsumerEvent::Revoked(partitions)) => {
                sink.close(&partitions)?;
                commit(&mut sink, &mut dead_letters, &mut consumer, &metrics).await?;
                sink.release(&partitions);
            }
            Some(ConsumerEvent::Lost(partitions)) => {
                tracing::warn!(?partitions, "partitions lost; uncommitted work discarded");
                sink.release(&partitions);
            }
            Some(ConsumerEvent::Records(records)) => {
                sink.put(records)?;
                dead_letters.send(sink.take_dead_letters()).await?;
            }
            None => {}
        }
        sink.tick(Instant::now())?;
        if sink.wants_commit() {
            commit(&mut sink, &mut dead_letters, &mut consumer, &metrics).await?;
        }
        lag.set(
            consumer
                .assignment()
                .iter()
                .filter_map(|tp| consumer.lag(tp))
                .sum(),
        );
    }

    tracing::info!(name = %settings.name, "sink task stopping");
    let assigned = consumer.assignment();
    sink.close(&assigned)?;
    commit(&mut sink, &mut dead_letters, &mut consumer, &metrics).await?;
    sink.release(&assigned);
    dead_letters.close().await?;
    if let Err(error) = consumer.close().await {
        tracing::warn!(%error, "leaving the group failed");
    }
    Ok(())
}

/// Delivers dead letters, commits the sink, then the group's offsets.
async fn commit<S: Sink>(
    sink: &mut S,
    dead_letters: &mut DeadLetterQueue,
    consumer: &mut Consumer,
    metrics: &SinkMetrics,
) -> Result<()> {
    dead_letters.send(sink.take_dead_letters()).await?;
    dead_letters.flush().await?;
    let committed = sink.commit()?;
    if committed.is_empty() {
        return Ok(());
    }
    let offsets: HashMap<TopicPartition, i64> = committed.into_iter().collect();
    // The sink's commit is what restarts resume from; the group's offsets only make lag
    // visible to tools, so a failure here (a rebalance in progress, say) is counted and
    // logged, not worth stopping for.
    if let Err(error) = consumer.commit_offsets(&offsets).await {
        metrics.add_error();
        tracing::warn!(%error, "committing group offsets failed");
    }
    Ok(())
}

/// This task's part of the connector's summed lag; removed again when the task ends.
struct LagShare {
    metrics: Arc<SinkMetrics>,
    mine: i64,
}

impl LagShare {
    fn new(metrics: Arc<SinkMetrics>) -> Self {
        LagShare { metrics, mine: 0 }
    }

    fn set(&mut self, lag: i64) {
        self.metrics.add_lag(lag - self.mine);
        self.mine = lag;
    }
}

impl Drop for LagShare {
    fn drop(&mut self) {
        self.metrics.add_lag(-self.mine);
    }
}
