//! [`StreamsConfig`]: how a job runs.

use std::time::Duration;

use millrace_client::{ClientConfig, IsolationLevel};

use crate::state::backend::StateBackend;

/// `processing.guarantee`: what a commit promises about output records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// `at_least_once`: output is sent as it is produced and input offsets are committed
    /// after it is acknowledged, so a crash replays the input since the last commit and a
    /// window emitted after that commit may be emitted again (with the same value).
    AtLeastOnce,
    /// `exactly_once_v2` (the default): per commit interval, everything the instance writes
    /// (output, changelog, repartition, dead letter and late records) and its input offsets
    /// commit in one transaction of one transactional producer per instance; a crash or a
    /// fenced producer aborts it. Consumers reading the output with `read_committed` see
    /// each result once. Output becomes visible at each commit, so the commit interval is
    /// the output's latency.
    #[default]
    ExactlyOnceV2,
}

/// How a job runs. Build with [`StreamsConfig::new`] and the setters.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group, and the prefix of the changelog topics.
    pub application_id: String,
    /// How to reach the cluster.
    pub client: ClientConfig,
    /// How often state, outputs and offsets are committed (default 5 s).
    pub commit_interval: Duration,
    /// Bounded out-of-orderness of event time (default 5 s).
    pub max_out_of_orderness: Duration,
    /// A partition without records for this long stops holding windows open (default 30 s).
    pub idle_timeout: Option<Duration>,
    /// Where records that cannot be decoded or encoded go, with the reason in the
    /// `millrace.error` header. Without one, they are counted and skipped; with
    /// `fail_on_bad_record` the job stops instead.
    pub dead_letter_topic: Option<String>,
    /// Stop the job on a bad record instead of routing it.
    pub fail_on_bad_record: bool,
    /// Where records that arrive after their windows closed go (the original bytes, with the
    /// refusing operator in the `millrace.late.operator` header). They are counted either way.
    pub late_topic: Option<String>,
    /// Longest a task may take to restore its state.
    pub restore_timeout: Duration,
    /// The consumer's session timeout (default 45 s): how soon the group notices an instance
    /// that died and moves its tasks.
    pub session_timeout: Duration,
    /// Where the tasks' state stores live (default: in memory). Set with
    /// [`StreamsConfig::state_dir`].
    pub state_backend: StateBackend,
    /// `processing.guarantee` (default [`ProcessingGuarantee::ExactlyOnceV2`]).
    pub processing_guarantee: ProcessingGuarantee,
    /// The instance's stable id, part of its `transactional.id`
    /// (`<application id>-<instance id>`) under exactly-once. Give each instance its own
    /// and keep it across restarts: a restarted instance then aborts its predecessor's open
    /// transaction at once. It is also the consumer's `group.instance.id` (static
    /// membership, KIP-345), so a restarted instance takes its place in the group back
    /// without a rebalance, at either guarantee. Without one a random id is used,
    /// and a crashed instance's open transaction holds read_committed readers back until
    /// [`StreamsConfig::transaction_timeout`] aborts it.
    pub instance_id: Option<String>,
    /// `transaction.timeout.ms` of the exactly-once producer (default 10 s, as Kafka
    /// Streams sets it): how long a dead instance's transaction may stay open.
    pub transaction_timeout: Duration,
}

impl StreamsConfig {
    /// Defaults for `application_id` on `client`.
    pub fn new(application_id: impl Into<String>, client: ClientConfig) -> Self {
        StreamsConfig {
            application_id: application_id.into(),
            client,
            commit_interval: Duration::from_secs(5),
            max_out_of_orderness: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(30)),
            dead_letter_topic: None,
            fail_on_bad_record: false,
            late_topic: None,
            restore_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(45),
            state_backend: StateBackend::InMemory,
            processing_guarantee: ProcessingGuarantee::default(),
            instance_id: None,
            transaction_timeout: Duration::from_secs(10),
        }
    }

    /// `processing.guarantee = exactly_once_v2` (the default; see
    /// [`ProcessingGuarantee::ExactlyOnceV2`]).
    #[must_use]
    pub fn exactly_once(mut self) -> Self {
        self.processing_guarantee = ProcessingGuarantee::ExactlyOnceV2;
        self
    }

    /// `processing.guarantee = at_least_once` (see [`ProcessingGuarantee::AtLeastOnce`]).
    #[must_use]
    pub fn at_least_once(mut self) -> Self {
        self.processing_guarantee = ProcessingGuarantee::AtLeastOnce;
        self
    }

    /// Sets `processing.guarantee`.
    #[must_use]
    pub fn processing_guarantee(mut self, guarantee: ProcessingGuarantee) -> Self {
        self.processing_guarantee = guarantee;
        self
    }

    /// Sets the instance's stable id (see [`StreamsConfig::instance_id`]).
    #[must_use]
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets the exactly-once producer's transaction timeout.
    #[must_use]
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    /// Whether the job runs exactly-once.
    pub fn is_exactly_once(&self) -> bool {
        self.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    /// How the job's consumers read: read_committed exactly-once (aborted transactions'
    /// records are never input), read_uncommitted at-least-once.
    pub fn isolation_level(&self) -> IsolationLevel {
        if self.is_exactly_once() {
            IsolationLevel::ReadCommitted
        } else {
            IsolationLevel::ReadUncommitted
        }
    }

    /// Keeps every state store of the job on disk, under `dir/<application id>/` (Kafka
    /// Streams' `state.dir`): a redb file per store and task, a working copy restored from
    /// the changelog when the task starts and removed when it goes. For state larger than
    /// memory; steps can still choose `.in_memory()`. See [`crate::state::backend`].
    #[must_use]
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        let dir = dir.into().join(&self.application_id);
        self.state_backend = StateBackend::OnDisk(dir);
        self
    }

    /// Sets the consumer's session timeout (heartbeats go at a third of it, at most 3 s).
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets the commit interval.
    #[must_use]
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Sets the bounded out-of-orderness and the idle timeout of event time.
    #[must_use]
    pub fn event_time(mut self, max_out_of_orderness: Duration, idle: Option<Duration>) -> Self {
        self.max_out_of_orderness = max_out_of_orderness;
        self.idle_timeout = idle;
        self
    }

    /// Routes bad records to `topic`.
    #[must_use]
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Routes late records to `topic`.
    #[must_use]
    pub fn late_topic(mut self, topic: impl Into<String>) -> Self {
        self.late_topic = Some(topic.into());
        self
    }

    /// Stops the job on a bad record.
    #[must_use]
    pub fn fail_on_bad_record(mut self, fail: bool) -> Self {
        self.fail_on_bad_record = fail;
        self
    }
}
