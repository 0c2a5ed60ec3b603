//! [`StreamsConfig`]: how a job runs.

use std::time::Duration;

use millrace_client::ClientConfig;

use crate::state::backend::StateBackend;

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
