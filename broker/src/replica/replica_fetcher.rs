//! The replica fetchers: how followers copy their leaders' logs (Kafka's
//! `ReplicaFetcherManager` and `ReplicaFetcherThread`).
//!
//! One task per leader broker fetches every partition this broker follows there, with Fetch
//! v15 as a replica (topics by id, this broker's epoch in `ReplicaState`, KIP-903): the fetch offset is the follower's log end and `LastFetchedEpoch` its
//! latest leader epoch, so the leader can answer with the point where the logs diverge
//! (KIP-320) and the follower truncates exactly there, after every epoch change (KAFKA-7164),
//! never blindly to the high watermark. What it appends is fsynced (per `flush.policy`)
//! before the next fetch reports the new log end, so the leader only counts records toward
//! the high watermark that survive a crash of this broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use super::broker_connection::BrokerConnection;
use super::partition::Partition;
use crate::error::ResponseError;

/// The Fetch version followers use: `LastFetchedEpoch`/`DivergingEpoch` (v12), topic ids
/// (v13), and the follower's broker epoch (v15), so a leader can tell an earlier incarnation.
pub const REPLICA_FETCH_VERSION: i16 = 15;

/// How followers fetch (`replica.fetch.*`).
#[derive(Clone, Debug)]
pub struct FetcherConfig {
    /// This broker's id, sent as the fetch's replica id.
    pub local_id: i32,
    /// This broker's epoch once registered (-1 before), sent with every fetch; shared with
    /// the lifecycle that registers.
    pub broker_epoch: Arc<AtomicI64>,
    /// Record bytes this broker's followers have appended from their leaders (Kafka's
    /// ReplicationBytesInPerSec), for the metrics to read.
    pub replicated_bytes: Arc<AtomicU64>,
    /// `replica.fetch.wait.max.ms`.
    pub max_wait: Duration,
    /// `replica.fetch.max.bytes` (per partition).
    pub max_bytes_per_partition: i32,
    /// `replica.fetch.response.max.bytes`.
    pub response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: the pause after an error.
    pub backoff: Duration,
    /// How long a connection attempt or an answer may take beyond `max_wait`.
    pub request_timeout: Duration,
    /// TLS and SASL toward the leaders (the inter-broker listener's).
    pub security: Arc<crate::security::inter_broker::InterBrokerSecurity>,
}

/// Finds the inter-broker address (`host:port`) of a broker id.
pub type ResolveBroker = Arc<dyn Fn(i32) -> Option<String> + Send + Sync>;

/// Key of a followed partition.
type PartitionKey = (String, i32);

/// A partition a fetcher copies, and the leader epoch it follows.
#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    epoch: i32,
    /// Set after an answer that says this fetcher's view is stale (fenced, not leader):
    /// nothing is fetched until the metadata moves the partition on.
    paused: bool,
}

/// The partitions fetched from one leader.
struct Fetcher {
    partitions: Arc<Mutex<BTreeMap<PartitionKey, Followed>>>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts, feeds and stops one fetcher per leader broker.
pub struct ReplicaFetcherManager {
    config: FetcherConfig,
    resolve: ResolveBroker,
    fetchers: Mutex<HashMap<i32, Fetcher>>,
    shutdown: watch::Sender<bool>,
}

impl ReplicaFetcherManager {
    /// A manager with no fetchers yet.
    pub fn new(config: FetcherConfig, resolve: ResolveBroker) -> Self {
        let (shutdown, _) = watch::channel(false);
        ReplicaFetcherManager {
            config,
            resolve,
            fetchers: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    /// Record bytes appended from leaders so far.
    pub fn replicated_bytes(&self) -> u64 {
        self.config.replicated_bytes.load(Ordering::Relaxed)
    }

    /// Follows `partition` at `leader` in leader epoch `epoch` (moving it from any other
    /// fetcher). Must be called inside a tokio runtime.
    pub fn add(&self, leader: i32, partition: Arc<Partition>, epoch: i32) {
        let key = (partition.topic().to_string(), partition.index());
        let mut fetchers = lock(&self.fetchers);
        for (id, fetcher) in fetchers.iter() {
            if *id != leader {
                lock(&fetcher.partitions).remove(&key);
            }
        }
        let fetcher = fetchers.entry(leader).or_insert_with(|| {
            let partitions = Arc::new(Mutex::new(BTreeMap::new()));
            let wake = Arc::new(Notify::new());
            let task = tokio::spawn(run_fetcher(
                leader,
                self.config.clone(),
                self.resolve.clone(),
                partitions.clone(),
                wake.clone(),
                self.shutdown.subscribe(),
            ));
            Fetcher {
                partitions,
                wake,
                task,
            }
        });
        lock(&fetcher.partitions).insert(
            key,
            Followed {
                partition,
                epoch,
                paused: false,
            },
        );
        fetcher.wake.notify_one();
    }

    /// Stops following a partition (it became leader, or left this broker).
    pub fn remove(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        let mut fetchers = lock(&self.fetchers);
        for fetcher in fetchers.values() {
            lock(&fetcher.partitions).remove(&key);
        }
        // A fetcher with nothing left to fetch stops; a later `add` starts a fresh one.
        fetchers.retain(|_, f| {
            let keep = !lock(&f.partitions).is_empty();
            if !keep {
                f.task.abort();
            }
            keep
        });
    }

    /// The leader each followed partition is fetched from, for tests and diagnostics.
    pub fn followed(&self) -> Vec<(String, i32, i32)> {
        let fetchers = lock(&self.fetchers);
        let mut out = Vec::new();
        for (leader, fetcher) in fetchers.iter() {
            for (topic, partition) in lock(&fetcher.partitions).keys() {
                out.push((topic.clone(), *partition, *leader));
            }
        }
        out.sort();
        out
    }

    /// Stops every fetcher.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
        for (_, fetcher) in lock(&self.fetchers).drain() {
            fetcher.task.abort();
        }
    }
}

impl Drop for ReplicaFetcherManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn run_fetcher(
    leader: i32,
    config: FetcherConfig,
    resolve: ResolveBroker,
    partitions: Arc<Mutex<BTreeMap<PartitionKey, Followed>>>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connection: Option<BrokerConnection> = None;
    // The answer that last brought each partition records. The leader serves a fetch in
    // request order, and once the response is full (or a batch exceeds the per-partition
    // limit, KIP-74) only the first partition with data still gets a batch: asking first
    // for the partitions served longest ago keeps busy ones from starving the others, as
    // Kafka's fetcher does by moving a partition that got data to the end.
    let mut last_served: HashMap<PartitionKey, u64> = HashMap::new();
    let mut answers: u64 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut active: Vec<(PartitionKey, Followed)> = {
            let followed = lock(&partitions);
            last_served.retain(|k, _| followed.contains_key(k));
            followed
                .iter()
                .filter(|(_, f)| !f.paused)
                .map(|(k, f)| (k.clone(), f.clone()))
                .collect()
        };
        // Stable: never served (0) first, then in key order.
        active.sort_by_key(|(k, _)| last_served.get(k).copied().unwrap_or(0));
        if active.is_empty() {
            tokio::select! {
                _ = wake.notified() => continue,
                _ = shutdown.changed() => return,
            }
        }
        if connection.is_none() {
            let Some(address) = resolve(leader) else {
                tracing::debug!(leader, "no address for the leader yet");
                pause(&config, &mut shutdown).await;
                continue;
            };
            match BrokerConnection::connect(
                &address,
                format!("replica-fetcher-{}", config.local_id),
                config.request_timeout,
                &config.security,
            )
            .await
            {
                Ok(c) => connection = Some(c),
                Err(error) => {
                    tracing::debug!(leader, %error, "cannot reach the leader");
                    pause(&config, &mut shutdown).await;
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let request = build_request(&config, &active);
        let answer = tokio::select! {
            answer = conn.call(REPLICA_FETCH_VERSION, &request, config.max_wait + config.request_timeout) => answer,
            _ = shutdown.changed() => return,
        };
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(leader, %error, "replica fetch failed");
                connection = None;
                pause(&config, &mut shutdown).await;
                continue;
            }
        };
        if response.error_code != 0 {
            tracing::warn!(
                leader,
                error_code = response.error_code,
                "replica fetch refused"
            );
            pause(&config, &mut shutdown).await;
            continue;
        }
        let mut back_off = false;
        answers += 1;
        for topic in response.responses {
            for data in topic.partitions {
                // Answers name topics by id; a partition of a topic re-created under the
                // same name meanwhile matches nothing and is asked again.
                let Some((key, followed)) = active.iter().find(|((_, index), f)| {
                    *index == data.partition_index && f.partition.topic_id() == topic.topic_id
                }) else {
                    continue;
                };
                let key = key.clone();
                let fetched = data.records.as_ref().map_or(0, |r| r.len());
                if fetched > 0 {
                    last_served.insert(key.clone(), answers);
                }
                match handle_partition(followed, data).await {
                    Outcome::Continue => {
                        config
                            .replicated_bytes
                            .fetch_add(fetched as u64, Ordering::Relaxed);
                    }
                    Outcome::BackOff => back_off = true,
                    Outcome::Pause => {
                        if let Some(f) = lock(&partitions).get_mut(&key) {
                            if f.epoch == followed.epoch {
                                f.paused = true;
                            }
                        }
                    }
                }
            }
        }
        if back_off {
            pause(&config, &mut shutdown).await;
        }
    }
}

async fn pause(config: &FetcherConfig, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(config.backoff) => {}
        _ = shutdown.changed() => {}
    }
}

/// A replica Fetch for `active`, asked in exactly that order: consecutive partitions of one
/// topic share a topic entry, and a topic may have several (our leaders serve entries in
/// request order, whatever their names).
fn build_request(config: &FetcherConfig, active: &[(PartitionKey, Followed)]) -> FetchRequest {
    let mut topics: Vec<(Uuid, Vec<FetchPartition>)> = Vec::new();
    for ((_, index), followed) in active {
        let log = followed.partition.log();
        let topic_id = followed.partition.topic_id();
        if topics.last().is_none_or(|(id, _)| *id != topic_id) {
            topics.push((topic_id, Vec::new()));
        }
        let Some((_, partitions)) = topics.last_mut() else {
            continue;
        };
        partitions.push(
            FetchPartition::default()
                .with_partition(*index)
                .with_current_leader_epoch(followed.epoch)
                .with_fetch_offset(log.log_end_offset())
                .with_last_fetched_epoch(log.latest_epoch().unwrap_or(-1))
                .with_log_start_offset(log.log_start_offset())
                .with_partition_max_bytes(config.max_bytes_per_partition),
        );
    }
    FetchRequest::default()
        // From v15 the replica id travels in `ReplicaState`; the old field must say -1.
        .with_replica_id(BrokerId(-1))
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(config.local_id))
                .with_replica_epoch(config.broker_epoch.load(Ordering::Acquire)),
        )
        .with_max_wait_ms(i32::try_from(config.max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(config.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

enum Outcome {
    Continue,
    BackOff,
    Pause,
}

async fn handle_partition(
    followed: &Followed,
    data: kafka_protocol::messages::fetch_response::PartitionData,
) -> Outcome {
    let partition = &followed.partition;
    let (topic, index) = (partition.topic(), partition.index());
    let error = ResponseError::try_from_code(data.error_code);
    match error {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            let log = partition.log();
            if log.log_end_offset() < data.log_start_offset {
                // Everything we have is older than the leader's log: start over where it starts.
                tracing::info!(
                    topic,
                    partition = index,
                    leader_start = data.log_start_offset,
                    "follower is behind the leader's log start; starting there"
                );
                if let Err(error) = log.truncate_fully_and_start_at(data.log_start_offset) {
                    tracing::error!(topic, partition = index, %error, "cannot reset the follower log");
                    return Outcome::BackOff;
                }
                return Outcome::Continue;
            }
            tracing::warn!(
                topic,
                partition = index,
                "fetch offset out of range on the leader"
            );
            return Outcome::BackOff;
        }
        Some(ResponseError::FencedLeaderEpoch) => {
            // Our epoch is older than the leader's: the metadata will bring the new one (and
            // re-add the partition with it).
            tracing::debug!(
                topic,
                partition = index,
                "fenced leader epoch; waiting for metadata"
            );
            return Outcome::Pause;
        }
        Some(
            ResponseError::NotLeaderOrFollower
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::UnknownLeaderEpoch,
        ) => {
            // The leader has not applied the metadata that makes it leader yet (or it moved
            // on, which the metadata will tell us): try again shortly.
            tracing::debug!(
                topic,
                partition = index,
                code = data.error_code,
                "leader not ready for this epoch"
            );
            return Outcome::BackOff;
        }
        Some(other) => {
            tracing::debug!(topic, partition = index, error = ?other, "replica fetch error");
            return Outcome::BackOff;
        }
    }
    let diverging = &data.diverging_epoch;
    if diverging.epoch >= 0 || diverging.end_offset >= 0 {
        let log = partition.log();
        let target = if diverging.epoch < 0 {
            diverging.end_offset
        } else {
            let (local_epoch, local_end) = log.end_offset_for_epoch(diverging.epoch);
            if local_epoch == diverging.epoch {
                local_end.min(diverging.end_offset)
            } else {
                // We do not have that epoch: cut where our last epoch before it ends; the next
                // fetch narrows it further if needed.
                local_end
            }
        };
        let target = target.max(0);
        tracing::info!(
            topic,
            partition = index,
            leader_epoch = diverging.epoch,
            leader_end = diverging.end_offset,
            truncate_to = target,
            "truncating the divergent suffix"
        );
        if let Err(error) = partition.truncate_to(target) {
            tracing::error!(topic, partition = index, %error, "truncation failed");
            return Outcome::BackOff;
        }
        return Outcome::Continue;
    }
    if let Some(records) = data.records.filter(|r| !r.is_empty()) {
        match partition.append_as_follower(records) {
            Ok(info) => {
                if let Err(error) = partition.log().wait_durable(info.last_offset).await {
                    tracing::error!(topic, partition = index, %error, "fsync of replicated records failed");
                    return Outcome::BackOff;
                }
            }
            Err(error) => {
                tracing::warn!(topic, partition = index, %error, "records from the leader refused");
                return Outcome::BackOff;
            }
        }
    }
    partition.follower_high_watermark(data.high_watermark);
    // DeleteRecords and retention on the leader move its log start; followers follow.
    let log = partition.log();
    if data.log_start_offset > log.log_start_offset() {
        let target = data.log_start_offset.min(log.log_end_offset());
        if let Err(error) = log.delete_records_before(target) {
            tracing::warn!(topic, partition = index, %error, "cannot follow the leader's log start");
        }
    }
    Outcome::Continue
}
