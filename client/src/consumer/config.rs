//! Consumer settings, named as in Kafka's consumer configs.

use std::time::Duration;

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::types::IsolationLevel;

use super::assignor::AssignmentStrategy;

/// Where to start reading a partition that has no committed offset, or whose offset is out of
/// range (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// The first record still stored.
    Earliest,
    /// The end of the log: only records produced from now on (Kafka's default).
    #[default]
    Latest,
    /// Fail with [`ClientError::NoOffsetForPartition`].
    None,
}

impl std::str::FromStr for AutoOffsetReset {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" | "smallest" | "beginning" => Ok(AutoOffsetReset::Earliest),
            "latest" | "largest" | "end" => Ok(AutoOffsetReset::Latest),
            "none" | "error" => Ok(AutoOffsetReset::None),
            other => Err(ClientError::InvalidArgument(format!(
                "auto_offset_reset must be earliest, latest or none, not {other:?}"
            ))),
        }
    }
}

/// Consumer settings. Build with [`ConsumerConfig::builder`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Connection settings.
    pub client: ClientConfig,
    /// `group.id`: the consumer group, needed for `subscribe` and for committing offsets.
    /// Without one the consumer reads assigned partitions only.
    pub group_id: Option<String>,
    /// `group.instance.id`: a static member keeps its assignment across restarts within the
    /// session timeout, and does not leave the group on close.
    pub group_instance_id: Option<String>,
    /// `auto.offset.reset` (default latest).
    pub auto_offset_reset: AutoOffsetReset,
    /// `enable.auto.commit` (default true): consumed positions are committed every
    /// `auto_commit_interval`, before partitions are revoked, and on close.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms` (default 5 s).
    pub auto_commit_interval: Duration,
    /// `session.timeout.ms` (default 45 s): a member not heard from this long is removed.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms` (default 3 s).
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms` (default 5 minutes): the rebalance timeout sent in JoinGroup, and
    /// the longest gap between two polls before this member leaves the group so that its
    /// partitions move to members that make progress.
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`, in order of preference (default range, then
    /// cooperative-sticky, as the Java client). The cooperative protocol is used only when
    /// every listed strategy supports it.
    pub assignment_strategies: Vec<AssignmentStrategy>,
    /// `fetch.min.bytes` (default 1).
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes` (default 50 MiB): the most one fetch response may hold.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes` (default 1 MiB): the most one partition may contribute to a
    /// fetch response (a larger first batch is still returned whole).
    pub max_partition_fetch_bytes: i32,
    /// `fetch.max.wait.ms` (default 500 ms): how long the broker may hold a fetch waiting for
    /// `fetch_min_bytes`.
    pub fetch_max_wait: Duration,
    /// `max.poll.records` (default 500): the most records one `poll` returns.
    pub max_poll_records: usize,
    /// `isolation.level` (default read_uncommitted).
    pub isolation_level: IsolationLevel,
    /// `check.crcs` (default true): verify each batch's CRC-32C.
    pub check_crcs: bool,
}

impl ConsumerConfig {
    /// Kafka's defaults with the given connection settings and no group.
    pub fn new(client: ClientConfig) -> Self {
        ConsumerConfig {
            client,
            group_id: None,
            group_instance_id: None,
            auto_offset_reset: AutoOffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            assignment_strategies: vec![
                AssignmentStrategy::Range,
                AssignmentStrategy::CooperativeSticky,
            ],
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            max_poll_records: 500,
            isolation_level: IsolationLevel::ReadUncommitted,
            check_crcs: true,
        }
    }

    /// Starts a builder with Kafka's defaults.
    pub fn builder(client: ClientConfig) -> ConsumerConfigBuilder {
        ConsumerConfigBuilder {
            config: ConsumerConfig::new(client),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.client.validate()?;
        let invalid = |message: &str| Err(ClientError::InvalidArgument(message.to_string()));
        if matches!(&self.group_id, Some(group) if group.is_empty()) {
            return invalid("group_id must not be empty");
        }
        if self.group_instance_id.is_some() && self.group_id.is_none() {
            return invalid("group_instance_id needs a group_id");
        }
        if self.heartbeat_interval >= self.session_timeout {
            return invalid("heartbeat_interval must be shorter than session_timeout");
        }
        if self.heartbeat_interval.is_zero() || self.auto_commit_interval.is_zero() {
            return invalid("heartbeat_interval and auto_commit_interval must be positive");
        }
        if self.assignment_strategies.is_empty() {
            return invalid("assignment_strategies must name at least one strategy");
        }
        if self.fetch_min_bytes < 1
            || self.fetch_max_bytes < 1
            || self.max_partition_fetch_bytes < 1
        {
            return invalid("fetch sizes must be positive");
        }
        if self.max_poll_records == 0 {
            return invalid("max_poll_records must be at least 1");
        }
        if self.session_timeout.as_millis() > i32::MAX as u128
            || self.max_poll_interval.as_millis() > i32::MAX as u128
            || self.fetch_max_wait.as_millis() > i32::MAX as u128
        {
            return invalid("timeouts must fit in 32-bit milliseconds");
        }
        Ok(())
    }
}

/// Builder for [`ConsumerConfig`].
#[derive(Debug, Clone)]
pub struct ConsumerConfigBuilder {
    config: ConsumerConfig,
}

impl ConsumerConfigBuilder {
    /// Sets `group.id`.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.config.group_id = Some(group.into());
        self
    }
    /// Sets `group.instance.id` (static membership).
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.config.group_instance_id = Some(id.into());
        self
    }
    /// Sets `auto.offset.reset`.
    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.config.auto_offset_reset = reset;
        self
    }
    /// Sets `enable.auto.commit`.
    pub fn enable_auto_commit(mut self, enable: bool) -> Self {
        self.config.enable_auto_commit = enable;
        self
    }
    /// Sets `auto.commit.interval.ms`.
    pub fn auto_commit_interval(mut self, interval: Duration) -> Self {
        self.config.auto_commit_interval = interval;
        self
    }
    /// Sets `session.timeout.ms`.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }
    /// Sets `heartbeat.interval.ms`.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }
    /// Sets `max.poll.interval.ms`.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.config.max_poll_interval = interval;
        self
    }
    /// Sets `partition.assignment.strategy` (in order of preference).
    pub fn assignment_strategies(mut self, strategies: Vec<AssignmentStrategy>) -> Self {
        self.config.assignment_strategies = strategies;
        self
    }
    /// Sets `fetch.min.bytes`.
    pub fn fetch_min_bytes(mut self, bytes: i32) -> Self {
        self.config.fetch_min_bytes = bytes;
        self
    }
    /// Sets `fetch.max.bytes`.
    pub fn fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }
    /// Sets `max.partition.fetch.bytes`.
    pub fn max_partition_fetch_bytes(mut self, bytes: i32) -> Self {
        self.config.max_partition_fetch_bytes = bytes;
        self
    }
    /// Sets `fetch.max.wait.ms`.
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.config.fetch_max_wait = wait;
        self
    }
    /// Sets `max.poll.records`.
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.config.max_poll_records = records;
        self
    }
    /// Sets `isolation.level`.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.config.isolation_level = level;
        self
    }
    /// Sets `check.crcs`.
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.config.check_crcs = check;
        self
    }
    /// Checks the combination and returns the config.
    pub fn build(self) -> Result<ConsumerConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}
