//! The cluster cache: one background task samples topics, offsets, sizes and groups about
//! once a second through the admin client and keeps a bounded history, so HTTP requests (and
//! every open browser tab) read memory instead of each hitting the broker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use millrace_client::admin::{ClusterDescription, GroupDescription};
use millrace_client::{
    Admin, ClientConfig, ClientError, IsolationLevel, OffsetSpec, TopicPartition,
};
use serde::Serialize;
use tokio::sync::{watch, Mutex};

use crate::error::ApiError;

/// How often the cluster is sampled.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per topic and group: five minutes at one a second.
pub(crate) const HISTORY_LEN: usize = 300;
/// The longest one sample may take before it is abandoned (the next tick tries again).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// What the dashboard shows for sizes when the broker cannot report them (it lacks
/// DescribeLogDirs, or refuses it).
pub const SIZE_NOT_REPORTED: &str = "size not reported by this broker";
/// How long a request waits for a first sample or a cluster connection.
pub(crate) const CLUSTER_WAIT: Duration = Duration::from_secs(10);
/// Rates are measured over about this span of history.
const RATE_SPAN_MS: i64 = 10_000;

/// One partition as last sampled.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionSample {
    /// Partition index.
    pub partition: i32,
    /// Leader's node id (-1: none).
    pub leader: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// The leader's epoch (bumped by every leader change; -1 if the broker did not say).
    pub leader_epoch: i32,
    /// Replicas whose log directory is offline.
    pub offline_replicas: Vec<i32>,
    /// Fewer in-sync replicas than replicas.
    pub under_replicated: bool,
    /// Log start offset.
    pub start_offset: i64,
    /// Log end offset (high watermark).
    pub end_offset: i64,
    /// Last stable offset: where a read_committed consumer stops (the first offset of the
    /// oldest open transaction, else the high watermark).
    pub last_stable_offset: i64,
    /// Bytes on disk (from DescribeLogDirs; `None` if the broker did not say).
    pub size_bytes: Option<i64>,
}

/// One topic as last sampled.
#[derive(Debug, Clone, Serialize)]
pub struct TopicSample {
    /// Topic name.
    pub name: String,
    /// Internal topic (`__consumer_offsets`).
    pub internal: bool,
    /// Partitions in index order.
    pub partitions: Vec<PartitionSample>,
    /// False when the broker could not report sizes: then every `size_bytes` is `None`
    /// because nobody knows it, not because the partition is new.
    pub sizes_reported: bool,
}

impl Sample {
    /// Every partition of every topic (internal ones too: a broker leads those as well).
    pub fn all_partitions(&self) -> impl Iterator<Item = &PartitionSample> {
        self.topics.values().flat_map(|t| t.partitions.iter())
    }

    /// Per broker id: partitions it leads, and of those the under-replicated ones (Kafka's
    /// per-broker `UnderReplicatedPartitions`: a leader counts the partitions whose ISR is
    /// smaller than the replica set).
    pub fn leadership(&self) -> BTreeMap<i32, (usize, usize)> {
        let mut counts: BTreeMap<i32, (usize, usize)> = self
            .cluster
            .brokers
            .iter()
            .map(|b| (b.id, (0, 0)))
            .collect();
        for p in self.all_partitions().filter(|p| p.leader >= 0) {
            let entry = counts.entry(p.leader).or_default();
            entry.0 += 1;
            if p.under_replicated {
                entry.1 += 1;
            }
        }
        counts
    }

    /// Partitions without a leader (Kafka's `OfflinePartitionsCount`).
    pub fn offline_partitions(&self) -> usize {
        self.all_partitions().filter(|p| p.leader < 0).count()
    }

    /// Partitions with fewer in-sync replicas than replicas, cluster-wide.
    pub fn under_replicated_partitions(&self) -> usize {
        self.all_partitions().filter(|p| p.under_replicated).count()
    }

    /// The ISR changes from `previous` to this sample, per leader (as Kafka's leader counts
    /// them): (shrinks, expansions). A partition whose ISR lost a member counts one shrink,
    /// one that gained a member one expansion (both, if it did both between samples).
    pub fn isr_changes_since(&self, previous: &Sample) -> BTreeMap<i32, (u64, u64)> {
        let mut changes: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
        for (name, topic) in &self.topics {
            let Some(before) = previous.topics.get(name) else {
                continue;
            };
            for partition in &topic.partitions {
                // Both lists are in partition order.
                let Ok(found) = before
                    .partitions
                    .binary_search_by_key(&partition.partition, |p| p.partition)
                else {
                    continue;
                };
                let old = &before.partitions[found];
                let shrank = old.isr.iter().any(|r| !partition.isr.contains(r));
                let grew = partition.isr.iter().any(|r| !old.isr.contains(r));
                if shrank || grew {
                    let entry = changes.entry(partition.leader).or_default();
                    entry.0 += u64::from(shrank);
                    entry.1 += u64::from(grew);
                }
            }
        }
        changes
    }
}

impl TopicSample {
    /// Records stored now (end minus start offsets).
    pub fn messages(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| (p.end_offset - p.start_offset).max(0))
            .sum()
    }

    /// Sum of the end offsets: records ever produced, the base of the produce rate.
    pub fn end_offsets(&self) -> i64 {
        self.partitions.iter().map(|p| p.end_offset).sum()
    }

    /// Bytes on disk over all partitions (those with a known size); `None` when the broker
    /// could not report sizes.
    pub fn size_bytes(&self) -> Option<i64> {
        self.sizes_reported
            .then(|| self.partitions.iter().filter_map(|p| p.size_bytes).sum())
    }
}

/// A group member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberSample {
    /// Member id.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Assigned partitions as `topic-partition`.
    pub assignment: Vec<String>,
}

/// Committed offset and lag of one partition of a group.
#[derive(Debug, Clone, Serialize)]
pub struct LagSample {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset.
    pub committed: i64,
    /// Log end offset.
    pub log_end: i64,
    /// Records behind the end.
    pub lag: i64,
}

/// One consumer group as last sampled.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSample {
    /// Group id.
    pub group_id: String,
    /// `Stable`, `Empty`, `PreparingRebalance`, ...
    pub state: String,
    /// `consumer` for Kafka consumer groups.
    pub protocol_type: String,
    /// The assignor in use.
    pub protocol: String,
    /// Members with their assignments.
    pub members: Vec<MemberSample>,
    /// Committed offsets and lag per partition, sorted.
    pub partitions: Vec<LagSample>,
}

impl GroupSample {
    /// Total lag over the group's partitions.
    pub fn lag(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// Everything one sample saw.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken (ms since the epoch).
    pub at_ms: i64,
    /// Cluster id, controller, brokers.
    pub cluster: ClusterDescription,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicSample>,
    /// Groups by id.
    pub groups: BTreeMap<String, GroupSample>,
    /// What this cluster could not report because its brokers lack an optional API
    /// (DescribeLogDirs, ListGroups, DescribeGroups), one sentence each; empty when
    /// everything was sampled.
    pub notes: Vec<String>,
}

/// One point of a topic's history.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TopicPoint {
    /// Sample time (ms since the epoch).
    pub ts: i64,
    /// Sum of end offsets.
    pub end_offsets: i64,
    /// Bytes on disk (`None` when the broker could not report sizes).
    pub size_bytes: Option<i64>,
}

/// One point of a group's lag history.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPoint {
    /// Sample time (ms since the epoch).
    pub ts: i64,
    /// Total lag.
    pub lag: i64,
    /// Lag per `topic-partition`.
    pub partitions: BTreeMap<String, i64>,
}

/// The cache readers see.
#[derive(Debug, Default)]
struct Cached {
    latest: Option<Arc<Sample>>,
    last_error: Option<String>,
    topic_history: HashMap<String, VecDeque<TopicPoint>>,
    group_history: HashMap<String, VecDeque<GroupPoint>>,
    /// ISR (shrinks, expansions) seen between samples since start, per leader.
    isr_changes: BTreeMap<i32, (u64, u64)>,
}

/// The shared cluster view and the admin connection behind it.
#[derive(Debug)]
pub(crate) struct ClusterCache {
    client: ClientConfig,
    admin: Mutex<Option<Admin>>,
    cached: RwLock<Cached>,
    /// Bumped after every attempt (success or not), so waiters wake.
    samples: watch::Sender<u64>,
}

impl ClusterCache {
    pub(crate) fn new(client: ClientConfig) -> Self {
        ClusterCache {
            client,
            admin: Mutex::new(None),
            cached: RwLock::new(Cached::default()),
            samples: watch::channel(0).0,
        }
    }

    /// A cache whose admin client is already connected (a logged-in session's: the login
    /// opened it, so the first sample needs no second SASL exchange).
    pub(crate) fn connected(client: ClientConfig, admin: Admin) -> Self {
        ClusterCache {
            client,
            admin: Mutex::new(Some(admin)),
            cached: RwLock::new(Cached::default()),
            samples: watch::channel(0).0,
        }
    }

    /// The client settings (for consumers of the message browser).
    pub(crate) fn client_config(&self) -> &ClientConfig {
        &self.client
    }

    /// The admin client, connecting on first use (and again after a failed connect).
    pub(crate) async fn admin(&self) -> Result<Admin, ApiError> {
        let mut admin = self.admin.lock().await;
        if let Some(admin) = admin.as_ref() {
            return Ok(admin.clone());
        }
        let connected = tokio::time::timeout(CLUSTER_WAIT, Admin::connect(self.client.clone()))
            .await
            .map_err(|_| ApiError::unavailable("cannot reach the cluster: connect timed out"))?
            .map_err(|e| ApiError::unavailable(format!("cannot reach the cluster: {e}")))?;
        *admin = Some(connected.clone());
        Ok(connected)
    }

    /// The latest sample, waiting (bounded) for the first one.
    pub(crate) async fn latest(&self) -> Result<Arc<Sample>, ApiError> {
        let mut samples = self.samples.subscribe();
        let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
        loop {
            {
                let cached = self.read();
                if let Some(sample) = &cached.latest {
                    return Ok(sample.clone());
                }
            }
            let waited = tokio::time::timeout_at(deadline, samples.changed()).await;
            if !matches!(waited, Ok(Ok(()))) {
                let reason = self
                    .read()
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no answer yet".to_string());
                return Err(ApiError::unavailable(format!(
                    "cluster not reachable: {reason}"
                )));
            }
        }
    }

    /// The latest sample if there is one, without waiting.
    pub(crate) fn peek(&self) -> Option<Arc<Sample>> {
        self.read().latest.clone()
    }

    /// The error of the last failed sample, if the last sample failed.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.read().last_error.clone()
    }

    /// A topic's history, oldest first.
    pub(crate) fn topic_history(&self, topic: &str) -> Vec<TopicPoint> {
        self.read()
            .topic_history
            .get(topic)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A group's lag history, oldest first.
    pub(crate) fn group_history(&self, group: &str) -> Vec<GroupPoint> {
        self.read()
            .group_history
            .get(group)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records per second produced to `topic` over the last ~10 s (0 until two samples).
    pub(crate) fn topic_rate(&self, topic: &str) -> f64 {
        let cached = self.read();
        cached
            .topic_history
            .get(topic)
            .map(|h| rate(h.iter().map(|p| (p.ts, p.end_offsets))))
            .unwrap_or(0.0)
    }

    /// ISR (shrinks, expansions) observed between samples since the console started, per
    /// leader.
    pub(crate) fn isr_changes(&self) -> BTreeMap<i32, (u64, u64)> {
        self.read().isr_changes.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        // A panic while holding the lock cannot leave the cache half-updated (updates
        // replace whole values), so a poisoned lock is still safe to read.
        self.cached.read().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, result: Result<Sample, String>) {
        {
            let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(sample) => {
                    for topic in sample.topics.values() {
                        push_bounded(
                            cached.topic_history.entry(topic.name.clone()).or_default(),
                            TopicPoint {
                                ts: sample.at_ms,
                                end_offsets: topic.end_offsets(),
                                size_bytes: topic.size_bytes(),
                            },
                        );
                    }
                    for group in sample.groups.values() {
                        push_bounded(
                            cached
                                .group_history
                                .entry(group.group_id.clone())
                                .or_default(),
                            GroupPoint {
                                ts: sample.at_ms,
                                lag: group.lag(),
                                partitions: group
                                    .partitions
                                    .iter()
                                    .map(|p| (format!("{}-{}", p.topic, p.partition), p.lag))
                                    .collect(),
                            },
                        );
                    }
                    if let Some(previous) = &cached.latest {
                        for (leader, (shrinks, expands)) in sample.isr_changes_since(previous) {
                            let total = cached.isr_changes.entry(leader).or_default();
                            total.0 += shrinks;
                            total.1 += expands;
                        }
                    }
                    // Forget deleted topics and groups, so history stays bounded overall.
                    cached
                        .topic_history
                        .retain(|name, _| sample.topics.contains_key(name));
                    cached
                        .group_history
                        .retain(|id, _| sample.groups.contains_key(id));
                    cached.latest = Some(Arc::new(sample));
                    cached.last_error = None;
                }
                Err(error) => cached.last_error = Some(error),
            }
        }
        self.samples.send_modify(|n| *n += 1);
    }

    /// Samples until `stop` turns true.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
            let attempt = async {
                let admin = self.admin().await.map_err(|e| e.message)?;
                tokio::time::timeout(SAMPLE_TIMEOUT, sample(&admin))
                    .await
                    .map_err(|_| "sampling the cluster timed out".to_string())?
                    .map_err(|e| e.to_string())
            };
            let result = tokio::select! {
                result = attempt => result,
                _ = stop.wait_for(|stopped| *stopped) => break,
            };
            if let Err(error) = &result {
                tracing::warn!(%error, "cluster sample failed");
            }
            self.record(result);
        }
    }
}

fn push_bounded<T>(history: &mut VecDeque<T>, point: T) {
    if history.len() == HISTORY_LEN {
        history.pop_front();
    }
    history.push_back(point);
}

/// Per-second growth of a counter over the last [`RATE_SPAN_MS`] of `(ts, value)` points.
fn rate(points: impl DoubleEndedIterator<Item = (i64, i64)> + Clone) -> f64 {
    let Some((last_ts, last)) = points.clone().next_back() else {
        return 0.0;
    };
    let first = points
        .rev()
        .take_while(|(ts, _)| last_ts - ts <= RATE_SPAN_MS)
        .last();
    match first {
        Some((ts, value)) if ts < last_ts => {
            // A deleted and re-created topic starts again from 0: no negative rates.
            (last - value).max(0) as f64 * 1000.0 / (last_ts - ts) as f64
        }
        _ => 0.0,
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One full sample of the cluster.
async fn sample(admin: &Admin) -> Result<Sample, ClientError> {
    let cluster = admin.describe_cluster().await?;
    let listings = admin.list_topics(true).await?;
    let names: Vec<&str> = listings.iter().map(|t| t.name.as_str()).collect();
    let descriptions = if names.is_empty() {
        Vec::new()
    } else {
        admin.describe_topics(&names).await?
    };
    let partitions: Vec<TopicPartition> = descriptions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.name.as_str(), p.id))
        })
        .collect();
    let (starts, ends, stable) = if partitions.is_empty() {
        (HashMap::new(), HashMap::new(), HashMap::new())
    } else {
        let spec = |spec: OffsetSpec| -> Vec<(TopicPartition, OffsetSpec)> {
            partitions.iter().map(|tp| (tp.clone(), spec)).collect()
        };
        (
            admin.list_offsets(&spec(OffsetSpec::Earliest)).await?,
            admin.list_offsets(&spec(OffsetSpec::Latest)).await?,
            // The last stable offsets are a nicety too: a broker that cannot answer them
            // (ListOffsets before v2) shows the high watermark in their place.
            match admin
                .list_offsets_with_isolation(
                    &spec(OffsetSpec::Latest),
                    IsolationLevel::ReadCommitted,
                )
                .await
            {
                Ok(stable) => stable,
                Err(error) => {
                    tracing::debug!(%error, "read_committed ListOffsets failed; LSO unknown");
                    HashMap::new()
                }
            },
        )
    };
    let mut notes = Vec::new();
    // Sizes are a nicety: a cluster that lacks or refuses DescribeLogDirs still gets a
    // dashboard, with the sizes marked as not reported.
    let mut sizes: HashMap<TopicPartition, i64> = HashMap::new();
    let sizes_reported = match admin.describe_log_dirs(None).await {
        Ok(dirs) => {
            for dir in dirs {
                for p in dir.partitions {
                    *sizes.entry(p.partition).or_insert(0) += p.size;
                }
            }
            true
        }
        Err(error) => {
            tracing::debug!(%error, "DescribeLogDirs failed; sizes unknown");
            notes.push(format!("{SIZE_NOT_REPORTED}: {error}"));
            false
        }
    };
    let mut topics = BTreeMap::new();
    for topic in descriptions {
        let mut parts: Vec<PartitionSample> = topic
            .partitions
            .iter()
            .map(|p| {
                let tp = TopicPartition::new(topic.name.as_str(), p.id);
                PartitionSample {
                    partition: p.id,
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader_epoch: p.leader_epoch,
                    offline_replicas: p.offline_replicas.clone(),
                    under_replicated: p.under_replicated(),
                    start_offset: starts.get(&tp).map(|o| o.offset).unwrap_or(0),
                    end_offset: ends.get(&tp).map(|o| o.offset).unwrap_or(0),
                    last_stable_offset: stable
                        .get(&tp)
                        .or_else(|| ends.get(&tp))
                        .map(|o| o.offset)
                        .unwrap_or(0),
                    size_bytes: sizes.get(&tp).copied(),
                }
            })
            .collect();
        parts.sort_by_key(|p| p.partition);
        topics.insert(
            topic.name.clone(),
            TopicSample {
                name: topic.name,
                internal: topic.internal,
                partitions: parts,
                sizes_reported,
            },
        );
    }
    let described = sample_groups(admin, &mut notes).await?;
    let mut groups = BTreeMap::new();
    for group in described {
        // Lag from the end offsets sampled above: one OffsetFetch per group, no extra
        // ListOffsets. A group whose offsets cannot be read still shows its members.
        let committed = match admin.list_group_offsets(&group.group_id).await {
            Ok(committed) => committed,
            Err(error) => {
                tracing::debug!(group = %group.group_id, %error, "cannot read committed offsets");
                HashMap::new()
            }
        };
        let mut lag: Vec<LagSample> = committed
            .into_iter()
            .map(|(tp, committed)| {
                let log_end = ends.get(&tp).map(|o| o.offset).unwrap_or(committed);
                LagSample {
                    lag: (log_end - committed).max(0),
                    topic: tp.topic,
                    partition: tp.partition,
                    committed,
                    log_end,
                }
            })
            .collect();
        lag.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let members = group
            .members
            .into_iter()
            .map(|m| MemberSample {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                assignment: m.assignment.iter().map(|tp| tp.to_string()).collect(),
            })
            .collect();
        groups.insert(
            group.group_id.clone(),
            GroupSample {
                group_id: group.group_id,
                state: group.state,
                protocol_type: group.protocol_type,
                protocol: group.protocol,
                members,
                partitions: lag,
            },
        );
    }
    Ok(Sample {
        at_ms: now_ms(),
        cluster,
        topics,
        groups,
        notes,
    })
}

/// The consumer groups with their state and members. A broker without ListGroups shows no
/// groups, and one without DescribeGroups shows the listed groups without members (their lag
/// still comes from OffsetFetch); each with a note instead of a failed sample.
async fn sample_groups(
    admin: &Admin,
    notes: &mut Vec<String>,
) -> Result<Vec<GroupDescription>, ClientError> {
    let listed = match admin.list_groups().await {
        Ok(listed) => listed,
        Err(error @ ClientError::UnsupportedVersion { .. }) => {
            notes.push(format!(
                "consumer groups not reported by this broker: {error}"
            ));
            return Ok(Vec::new());
        }
        Err(error) => return Err(error),
    };
    let ids: Vec<&str> = listed.iter().map(|g| g.group_id.as_str()).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    match admin.describe_groups(&ids).await {
        Ok(described) => Ok(described),
        Err(error @ ClientError::UnsupportedVersion { .. }) => {
            notes.push(format!(
                "group states and members not reported by this broker: {error}"
            ));
            Ok(listed
                .into_iter()
                .map(|g| GroupDescription {
                    group_id: g.group_id,
                    state: g.state.unwrap_or_else(|| "Unknown".to_string()),
                    protocol_type: g.protocol_type,
                    protocol: String::new(),
                    members: Vec::new(),
                })
                .collect())
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionSample {
        PartitionSample {
            partition,
            leader,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader_epoch: 2,
            offline_replicas: Vec::new(),
            under_replicated: isr.len() < replicas.len(),
            start_offset: 0,
            end_offset: 0,
            last_stable_offset: 0,
            size_bytes: None,
        }
    }

    #[test]
    fn leaders_count_their_partitions_and_under_replicated_ones_and_leaderless_are_offline() {
        let broker = |id: i32| millrace_client::network::metadata::BrokerInfo {
            id,
            host: "h".into(),
            port: 9000,
            rack: None,
            fenced: id == 3,
        };
        let topic = TopicSample {
            name: "t".into(),
            internal: false,
            partitions: vec![
                partition(0, 1, &[1, 2], &[1, 2]),
                partition(1, 1, &[1, 2], &[1]),
                partition(2, 2, &[2, 3], &[2]),
                partition(3, -1, &[3], &[]),
            ],
            sizes_reported: false,
        };
        let sample = Sample {
            at_ms: 0,
            cluster: ClusterDescription {
                cluster_id: "c".into(),
                controller_id: 1,
                brokers: vec![broker(1), broker(2), broker(3)],
            },
            topics: BTreeMap::from([("t".to_string(), topic)]),
            groups: BTreeMap::new(),
            notes: Vec::new(),
        };

        let leadership = sample.leadership();

        assert_eq!(
            leadership,
            BTreeMap::from([(1, (2, 1)), (2, (1, 1)), (3, (0, 0))])
        );
        assert_eq!(sample.offline_partitions(), 1);
        assert_eq!(sample.under_replicated_partitions(), 3);
    }

    #[test]
    fn isr_shrinks_and_expansions_are_counted_per_leader_between_samples() {
        let sample = |partitions: Vec<PartitionSample>| Sample {
            at_ms: 0,
            cluster: ClusterDescription {
                cluster_id: "c".into(),
                controller_id: 1,
                brokers: Vec::new(),
            },
            topics: BTreeMap::from([(
                "t".to_string(),
                TopicSample {
                    name: "t".into(),
                    internal: false,
                    partitions,
                    sizes_reported: false,
                },
            )]),
            groups: BTreeMap::new(),
            notes: Vec::new(),
        };
        let before = sample(vec![
            partition(0, 1, &[1, 2, 3], &[1, 2, 3]),
            partition(1, 2, &[1, 2, 3], &[2]),
            partition(2, 3, &[1, 2, 3], &[3, 1]),
            partition(3, 1, &[1, 2, 3], &[1, 2]),
        ]);
        let after = sample(vec![
            // 3 left: a shrink on leader 1.
            partition(0, 1, &[1, 2, 3], &[1, 2]),
            // 1 and 3 joined: one expansion on leader 2.
            partition(1, 2, &[1, 2, 3], &[2, 1, 3]),
            // Unchanged (order aside).
            partition(2, 3, &[1, 2, 3], &[1, 3]),
            // The leader moved and the ISR swapped a member: both, counted on the new leader.
            partition(3, 2, &[1, 2, 3], &[2, 3]),
        ]);
        assert_eq!(
            after.isr_changes_since(&before),
            BTreeMap::from([(1, (1, 0)), (2, (1, 2))])
        );
        assert!(before.isr_changes_since(&before).is_empty());
    }

    #[test]
    fn rate_uses_the_last_ten_seconds_and_never_goes_negative() {
        let points = [(0, 0), (5_000, 100), (10_000, 200), (15_000, 300)];
        // From 5 s to 15 s: 200 records in 10 s.
        assert!((rate(points.iter().copied()) - 20.0).abs() < 1e-9);
        assert_eq!(rate([(0, 50), (1_000, 0)].iter().copied()), 0.0);
        assert_eq!(rate([(0, 5)].iter().copied()), 0.0);
        assert_eq!(rate(std::iter::empty::<(i64, i64)>()), 0.0);
    }

    #[test]
    fn history_is_bounded() {
        let mut history = VecDeque::new();
        for i in 0..(HISTORY_LEN + 10) {
            push_bounded(&mut history, i);
        }
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history.front(), Some(&10));
    }
}
