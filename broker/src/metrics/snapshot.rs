//! The state gauges, read from the broker at each scrape: partition logs (`kafka.log:type=Log`),
//! the replica manager (`kafka.server:type=ReplicaManager`), the controller
//! (`kafka.controller:type=KafkaController`), the group coordinator and consumer lag (as the
//! kafka_exporter people run beside Kafka names it), and the log dir's disk space.
//!
//! Reading state when asked costs the hot path nothing. Labelled gauges are cleared and
//! refilled each scrape, so a deleted topic's series disappear with it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use super::{sync_counter, MetricsError};
use crate::metadata::{topic_config, Controller};
use crate::replica::Partition;
use crate::Broker;

/// Every state gauge of a broker.
pub(crate) struct SnapshotMetrics {
    /// Serializes refreshes: two scrapes at once must not interleave clear and refill.
    refreshing: Mutex<()>,
    partition_count: IntGauge,
    leader_count: IntGauge,
    under_replicated: IntGauge,
    under_min_isr: IntGauge,
    isr_shrinks: IntCounter,
    isr_expands: IntCounter,
    replication_bytes_in: IntCounter,
    pub(crate) controller: ControllerGauges,
    log_size: IntGaugeVec,
    log_start_offset: IntGaugeVec,
    log_end_offset: IntGaugeVec,
    log_segments: IntGaugeVec,
    partition_under_replicated: IntGaugeVec,
    num_groups: IntGauge,
    num_offsets: IntGauge,
    group_members: IntGaugeVec,
    group_offset: IntGaugeVec,
    group_lag: IntGaugeVec,
    group_lag_sum: IntGaugeVec,
    dir_available: IntGaugeVec,
    dir_total: IntGaugeVec,
    transactions: IntGaugeVec,
}

/// The active controller's view of the cluster. Kafka reports these on the active controller
/// only (0 elsewhere), so `sum()` over the cluster counts each once; so do we.
pub(crate) struct ControllerGauges {
    active: IntGauge,
    offline_partitions: IntGauge,
    global_topics: IntGauge,
    global_partitions: IntGauge,
    active_brokers: IntGauge,
    fenced_brokers: IntGauge,
    leader_elections: IntCounter,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let gauge = IntGauge::new(name, help)?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let counter = IntCounter::new(name, help)?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

const TP: &[&str] = &["topic", "partition"];
const GTP: &[&str] = &["consumergroup", "topic", "partition"];

impl ControllerGauges {
    pub(crate) fn new(r: &Registry) -> Result<Self, MetricsError> {
        Ok(ControllerGauges {
            active: gauge(r, "kafka_controller_kafkacontroller_activecontrollercount",
                "1 on the active controller, else 0 (Kafka: KafkaController ActiveControllerCount)")?,
            offline_partitions: gauge(r, "kafka_controller_kafkacontroller_offlinepartitionscount",
                "Partitions without a leader, on the active controller (Kafka: KafkaController OfflinePartitionsCount)")?,
            global_topics: gauge(r, "kafka_controller_kafkacontroller_globaltopiccount",
                "Topics in the cluster, on the active controller (Kafka: KafkaController GlobalTopicCount)")?,
            global_partitions: gauge(r, "kafka_controller_kafkacontroller_globalpartitioncount",
                "Partitions in the cluster, on the active controller (Kafka: KafkaController GlobalPartitionCount)")?,
            active_brokers: gauge(r, "kafka_controller_kafkacontroller_activebrokercount",
                "Registered, unfenced brokers, on the active controller (Kafka: KafkaController ActiveBrokerCount)")?,
            fenced_brokers: gauge(r, "kafka_controller_kafkacontroller_fencedbrokercount",
                "Registered, fenced brokers, on the active controller (Kafka: KafkaController FencedBrokerCount)")?,
            leader_elections: counter(r, "millrace_controller_leaderelections_total",
                "Leader changes of the cluster's partitions seen by this active controller (Kafka: ControllerStats LeaderElectionRateAndTimeMs, its count)")?,
        })
    }

    /// Reads the controller's metadata image.
    pub(crate) fn refresh(&self, controller: &Controller, node_id: i32) {
        let active = controller.active_controller_id() == node_id;
        self.active.set(i64::from(active));
        if !active {
            for g in [
                &self.offline_partitions,
                &self.global_topics,
                &self.global_partitions,
                &self.active_brokers,
                &self.fenced_brokers,
            ] {
                g.set(0);
            }
            return;
        }
        let image = controller.image();
        let (mut topics, mut partitions, mut offline, mut epochs) = (0i64, 0i64, 0i64, 0u64);
        for topic in image.topics() {
            topics += 1;
            for state in topic.partition_states.values() {
                partitions += 1;
                if state.leader < 0 {
                    offline += 1;
                }
                // A leader epoch counts the leader changes since the partition was created.
                epochs += u64::try_from(state.leader_epoch).unwrap_or(0);
            }
        }
        self.global_topics.set(topics);
        self.global_partitions.set(partitions);
        self.offline_partitions.set(offline);
        let (fenced, unfenced) =
            image.brokers().fold(
                (0i64, 0i64),
                |(f, u), b| {
                    if b.fenced {
                        (f + 1, u)
                    } else {
                        (f, u + 1)
                    }
                },
            );
        self.active_brokers.set(unfenced);
        self.fenced_brokers.set(fenced);
        sync_counter(&self.leader_elections, epochs);
    }
}

impl SnapshotMetrics {
    pub(crate) fn new(r: &Registry) -> Result<Self, MetricsError> {
        Ok(SnapshotMetrics {
            refreshing: Mutex::new(()),
            partition_count: gauge(r, "kafka_server_replicamanager_partitioncount",
                "Partition replicas hosted by this broker (Kafka: ReplicaManager PartitionCount)")?,
            leader_count: gauge(r, "kafka_server_replicamanager_leadercount",
                "Partitions this broker leads (Kafka: ReplicaManager LeaderCount)")?,
            under_replicated: gauge(r, "kafka_server_replicamanager_underreplicatedpartitions",
                "Partitions led here whose ISR is smaller than their replica set (Kafka: ReplicaManager UnderReplicatedPartitions)")?,
            under_min_isr: gauge(r, "kafka_server_replicamanager_underminisrpartitioncount",
                "Partitions led here whose ISR is below min.insync.replicas (Kafka: ReplicaManager UnderMinIsrPartitionCount)")?,
            isr_shrinks: counter(r, "kafka_server_replicamanager_isrshrinks_total",
                "ISR shrinks of partitions led here, by this leader or by the controller fencing a follower (Kafka: ReplicaManager IsrShrinksPerSec)")?,
            isr_expands: counter(r, "kafka_server_replicamanager_isrexpands_total",
                "ISR expansions of partitions led here (Kafka: ReplicaManager IsrExpandsPerSec)")?,
            replication_bytes_in: counter(r, "kafka_server_brokertopicmetrics_replicationbytesin_total",
                "Record batch bytes this broker's followers appended from their leaders (Kafka: BrokerTopicMetrics ReplicationBytesInPerSec)")?,
            controller: ControllerGauges::new(r)?,
            log_size: gauge_vec(r, "kafka_log_log_size",
                "Bytes of a partition's log on disk (Kafka: Log Size)", TP)?,
            log_start_offset: gauge_vec(r, "kafka_log_log_logstartoffset",
                "First offset of a partition's log (Kafka: Log LogStartOffset)", TP)?,
            log_end_offset: gauge_vec(r, "kafka_log_log_logendoffset",
                "Offset after the last record of a partition's log (Kafka: Log LogEndOffset)", TP)?,
            log_segments: gauge_vec(r, "kafka_log_log_numlogsegments",
                "Segments of a partition's log (Kafka: Log NumLogSegments)", TP)?,
            partition_under_replicated: gauge_vec(r, "kafka_cluster_partition_underreplicated",
                "1 if this partition, led here, has an ISR smaller than its replica set (Kafka: Partition UnderReplicated)", TP)?,
            num_groups: gauge(r, "kafka_coordinator_group_groupmetadatamanager_numgroups",
                "Groups this broker coordinates (Kafka: GroupMetadataManager NumGroups)")?,
            num_offsets: gauge(r, "kafka_coordinator_group_groupmetadatamanager_numoffsets",
                "Committed offsets of the groups this broker coordinates (Kafka: GroupMetadataManager NumOffsets)")?,
            group_members: gauge_vec(r, "kafka_consumergroup_members",
                "Members of a group coordinated here (kafka_exporter: kafka_consumergroup_members)", &["consumergroup"])?,
            group_offset: gauge_vec(r, "kafka_consumergroup_current_offset",
                "A group's committed offset of a partition (kafka_exporter: kafka_consumergroup_current_offset)", GTP)?,
            group_lag: gauge_vec(r, "kafka_consumergroup_lag",
                "High watermark minus the group's committed offset (kafka_exporter: kafka_consumergroup_lag)", GTP)?,
            group_lag_sum: gauge_vec(r, "kafka_consumergroup_topic_lag",
                "A group's lag summed over a topic's partitions (kafka_exporter: kafka_consumergroup_lag_sum, renamed: a gauge must not end in _sum)", &["consumergroup", "topic"])?,
            dir_available: gauge_vec(r, "millrace_log_dir_available_bytes",
                "Bytes free to this broker on the file system of its data dir (log.dirs)", &["dir"])?,
            dir_total: gauge_vec(r, "millrace_log_dir_size_bytes",
                "Size in bytes of the file system of this broker's data dir (log.dirs)", &["dir"])?,
            transactions: gauge_vec(r, "millrace_transactions",
                "Transactional ids this broker coordinates, by state (Kafka's: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, ...)", &["state"])?,
        })
    }

    /// Sets every gauge from `broker`'s current state.
    pub(crate) fn refresh(&self, broker: &Broker, partition_level: bool) {
        let _refreshing = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let node_id = broker.config.node_id;
        self.controller.refresh(&broker.controller, node_id);
        let (shrinks, expands) = broker.replicas.isr_changes();
        sync_counter(&self.isr_shrinks, shrinks);
        sync_counter(&self.isr_expands, expands);
        sync_counter(
            &self.replication_bytes_in,
            broker.replicas.replicated_bytes(),
        );

        for vec in [
            &self.log_size,
            &self.log_start_offset,
            &self.log_end_offset,
            &self.log_segments,
            &self.partition_under_replicated,
            &self.group_offset,
            &self.group_lag,
            &self.group_lag_sum,
            &self.group_members,
            &self.transactions,
        ] {
            vec.reset();
        }
        for transaction in broker.transactions.transactions() {
            self.transactions
                .with_label_values(&[transaction.state.name()])
                .inc();
        }
        let image = broker.controller.image();
        let defaults = &broker.config.log_defaults;
        let mut hosted = 0;
        let (mut leaders, mut under_replicated, mut under_min_isr) = (0, 0, 0);
        // High watermarks of the hosted partitions, for the lag below.
        let mut high_watermarks: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for (topic, hosted_topic) in broker.replicas.all() {
            let topic_image = image.topic(&topic);
            let min_isr = topic_image
                .map(|t| topic_config::min_insync_replicas(defaults, &t.configs))
                .unwrap_or(1);
            for (&index, replica) in &hosted_topic.partitions {
                hosted += 1;
                high_watermarks.insert((topic.clone(), index), replica.high_watermark());
                let state = topic_image.and_then(|t| t.partition(index));
                let mut partition_under_replicated = false;
                if let Some(state) = state.filter(|s| s.leader == node_id) {
                    leaders += 1;
                    partition_under_replicated = state.isr.len() < state.replicas.len();
                    under_replicated += i64::from(partition_under_replicated);
                    under_min_isr += i64::from(state.isr.len() < min_isr);
                }
                if partition_level {
                    self.set_partition(&topic, index, replica, partition_under_replicated);
                }
            }
        }
        self.partition_count.set(hosted);
        self.leader_count.set(leaders);
        self.under_replicated.set(under_replicated);
        self.under_min_isr.set(under_min_isr);
        self.refresh_groups(broker, &high_watermarks, partition_level);
        self.refresh_disk(broker);
    }

    fn set_partition(&self, topic: &str, index: i32, replica: &Partition, under_replicated: bool) {
        let partition = index.to_string();
        let labels = [topic, partition.as_str()];
        let log = replica.log();
        let size = i64::try_from(log.size_bytes()).unwrap_or(i64::MAX);
        self.log_size.with_label_values(&labels).set(size);
        self.log_start_offset
            .with_label_values(&labels)
            .set(log.log_start_offset());
        self.log_end_offset
            .with_label_values(&labels)
            .set(log.log_end_offset());
        self.log_segments
            .with_label_values(&labels)
            .set(i64::try_from(log.segment_count()).unwrap_or(i64::MAX));
        self.partition_under_replicated
            .with_label_values(&labels)
            .set(i64::from(under_replicated));
    }

    /// Groups coordinated here, their committed offsets and their lag against the high
    /// watermark of partitions hosted here (every partition on a single broker; on a cluster,
    /// those with a replica on the coordinator, which is all of them when the replication
    /// factor is the broker count).
    fn refresh_groups(
        &self,
        broker: &Broker,
        high_watermarks: &BTreeMap<(String, i32), i64>,
        partition_level: bool,
    ) {
        let groups = broker.groups.list();
        self.num_groups
            .set(i64::try_from(groups.len()).unwrap_or(i64::MAX));
        let mut offsets = 0i64;
        for (group, _, _) in &groups {
            if let Some(description) = broker.groups.describe(group) {
                self.group_members
                    .with_label_values(&[group.as_str()])
                    .set(i64::try_from(description.members.len()).unwrap_or(i64::MAX));
            }
            for (topic, partitions) in broker.groups.committed(group, None) {
                let mut lag_sum = None;
                for (partition, committed) in partitions {
                    let Some(committed) = committed else { continue };
                    offsets += 1;
                    let partition_label = partition.to_string();
                    let labels = [group.as_str(), topic.as_str(), partition_label.as_str()];
                    let lag = high_watermarks
                        .get(&(topic.clone(), partition))
                        .map(|hw| (hw - committed.offset).max(0));
                    if let Some(lag) = lag {
                        *lag_sum.get_or_insert(0) += lag;
                    }
                    if partition_level {
                        self.group_offset
                            .with_label_values(&labels)
                            .set(committed.offset);
                        if let Some(lag) = lag {
                            self.group_lag.with_label_values(&labels).set(lag);
                        }
                    }
                }
                if let Some(sum) = lag_sum {
                    self.group_lag_sum
                        .with_label_values(&[group.as_str(), topic.as_str()])
                        .set(sum);
                }
            }
        }
        self.num_offsets.set(offsets);
    }

    fn refresh_disk(&self, broker: &Broker) {
        let dir = broker.config.data_dir.display().to_string();
        match rustix::fs::statvfs(&broker.config.data_dir) {
            Ok(stat) => {
                let available = stat.f_bavail.saturating_mul(stat.f_frsize);
                let total = stat.f_blocks.saturating_mul(stat.f_frsize);
                self.dir_available
                    .with_label_values(&[dir.as_str()])
                    .set(i64::try_from(available).unwrap_or(i64::MAX));
                self.dir_total
                    .with_label_values(&[dir.as_str()])
                    .set(i64::try_from(total).unwrap_or(i64::MAX));
            }
            Err(error) => tracing::debug!(%error, %dir, "statvfs of the data dir failed"),
        }
    }
}
