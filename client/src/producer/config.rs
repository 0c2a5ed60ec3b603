//! Producer settings, named as in Kafka's producer configs.

use std::time::Duration;

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::record::Compression;

/// How many acknowledgements the producer waits for (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=0`: fire and forget. Records are reported sent once written to the socket;
    /// offsets are unknown (-1) and failures go unnoticed.
    None,
    /// `acks=1`: the leader wrote the batch.
    Leader,
    /// `acks=all`: every in-sync replica has it (on this broker: on disk, per its flush policy).
    #[default]
    All,
}

impl Acks {
    pub(crate) fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(ClientError::InvalidArgument(format!(
                "acks must be 0, 1 or all, not {other:?}"
            ))),
        }
    }
}

/// Producer settings. Build with [`ProducerConfig::builder`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Connection settings.
    pub client: ClientConfig,
    /// `acks` (default all).
    pub acks: Acks,
    /// `batch.size`: a partition's batch is sent once it holds this many bytes (or `linger`
    /// passed). Default 1,000,000 bytes, like librdkafka rather than Java's 16 KiB: the
    /// broker fsyncs each produce before answering, so large batches are what make
    /// acks=all fast; batches start small and grow, so quiet partitions do not pay for it.
    pub batch_size: usize,
    /// `linger.ms`: how long a batch waits for more records before it is sent although not
    /// full (default 5 ms, as Kafka 4 and librdkafka).
    pub linger: Duration,
    /// `compression.type` (default none).
    pub compression: Compression,
    /// `enable.idempotence` (default true): a producer id and per-partition sequence numbers
    /// let the broker drop a retried batch it already has, so retries neither duplicate nor
    /// reorder records. Needs `acks=all` and at most 5 requests in flight per connection.
    pub enable_idempotence: bool,
    /// Whether `enable_idempotence` was asked for explicitly (the builder's
    /// `enable_idempotence` sets it). As in the Java client (KIP-679), an explicit request is
    /// an error where it cannot be honoured; the default quietly steps down instead: it is
    /// off with `acks` other than all or more than 5 requests in flight, and off with a
    /// warning on a broker without InitProducerId.
    pub idempotence_explicit: bool,
    /// `retries` (default unlimited, bounded by `delivery_timeout`).
    pub retries: u32,
    /// `delivery.timeout.ms`: the longest a record may wait for its acknowledgement,
    /// retries included (default 120 s).
    pub delivery_timeout: Duration,
    /// `buffer.memory`: bytes of records waiting to be sent or acknowledged; `send` waits
    /// when it is used up (default 32 MiB).
    pub buffer_memory: usize,
    /// `max.request.size`: the largest Produce request, and so the largest record (default
    /// 1 MiB).
    pub max_request_size: usize,
    /// `max.in.flight.requests.per.connection` (default 5, the most idempotence allows).
    pub max_in_flight_requests_per_connection: usize,
    /// `max.block.ms`: how long `send` waits for metadata of a new topic (default 60 s).
    pub max_block: Duration,
    /// `transactional.id` (default none): makes the producer transactional (see
    /// [`crate::producer::Producer::begin_transaction`]); needs idempotence.
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`: how long the coordinator lets a transaction stay open
    /// before aborting it (default 60 s).
    pub transaction_timeout: Duration,
}

impl ProducerConfig {
    /// Defaults with the given connection settings.
    pub fn new(client: ClientConfig) -> Self {
        ProducerConfig {
            client,
            acks: Acks::All,
            batch_size: 1_000_000,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            enable_idempotence: true,
            idempotence_explicit: false,
            retries: u32::MAX,
            delivery_timeout: Duration::from_secs(120),
            buffer_memory: 32 * 1024 * 1024,
            max_request_size: 1024 * 1024,
            max_in_flight_requests_per_connection: 5,
            max_block: Duration::from_secs(60),
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }

    /// A builder starting from the defaults.
    pub fn builder(client: ClientConfig) -> ProducerConfigBuilder {
        ProducerConfigBuilder {
            config: ProducerConfig::new(client),
        }
    }

    /// The configuration with a default (not explicit) idempotence turned off where the other
    /// settings conflict with it, as the Java client does.
    pub(crate) fn resolve_idempotence(mut self) -> Self {
        if self.enable_idempotence
            && !self.idempotence_explicit
            && (self.acks != Acks::All || self.max_in_flight_requests_per_connection > 5)
        {
            self.enable_idempotence = false;
        }
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |m: &str| Err(ClientError::InvalidArgument(m.to_string()));
        if self.enable_idempotence && self.acks != Acks::All {
            return invalid("enable_idempotence needs acks=all (or disable idempotence)");
        }
        if self.enable_idempotence && self.max_in_flight_requests_per_connection > 5 {
            return invalid(
                "enable_idempotence allows at most 5 requests in flight per connection",
            );
        }
        if self.transactional_id.is_some() && !self.enable_idempotence {
            return invalid("transactional_id needs idempotence (acks=all, at most 5 in flight)");
        }
        if self.transactional_id.as_deref() == Some("") {
            return invalid("transactional_id must not be empty");
        }
        if self.max_in_flight_requests_per_connection == 0 {
            return invalid("max_in_flight_requests_per_connection must be at least 1");
        }
        if self.batch_size == 0 || self.buffer_memory == 0 || self.max_request_size < 128 {
            return invalid("batch_size, buffer_memory and max_request_size must be positive");
        }
        self.client.validate()
    }
}

/// Builder for [`ProducerConfig`]; methods are Kafka's setting names.
#[derive(Debug, Clone)]
pub struct ProducerConfigBuilder {
    config: ProducerConfig,
}

impl ProducerConfigBuilder {
    /// `acks`.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.config.acks = acks;
        self
    }
    /// `batch.size` in bytes.
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.config.batch_size = bytes;
        self
    }
    /// `linger.ms`.
    pub fn linger_ms(mut self, ms: u64) -> Self {
        self.config.linger = Duration::from_millis(ms);
        self
    }
    /// `compression.type`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config.compression = compression;
        self
    }
    /// `enable.idempotence`.
    pub fn enable_idempotence(mut self, enable: bool) -> Self {
        self.config.enable_idempotence = enable;
        self.config.idempotence_explicit = true;
        self
    }
    /// `retries`.
    pub fn retries(mut self, retries: u32) -> Self {
        self.config.retries = retries;
        self
    }
    /// `delivery.timeout.ms`.
    pub fn delivery_timeout_ms(mut self, ms: u64) -> Self {
        self.config.delivery_timeout = Duration::from_millis(ms);
        self
    }
    /// `buffer.memory` in bytes.
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.config.buffer_memory = bytes;
        self
    }
    /// `max.request.size` in bytes.
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.config.max_request_size = bytes;
        self
    }
    /// `max.in.flight.requests.per.connection`.
    pub fn max_in_flight_requests_per_connection(mut self, n: usize) -> Self {
        self.config.max_in_flight_requests_per_connection = n;
        self
    }
    /// `max.block.ms`.
    pub fn max_block_ms(mut self, ms: u64) -> Self {
        self.config.max_block = Duration::from_millis(ms);
        self
    }
    /// `transactional.id`: a transactional producer (idempotence is then required).
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.config.transactional_id = Some(id.into());
        self
    }
    /// `transaction.timeout.ms`.
    pub fn transaction_timeout_ms(mut self, ms: u64) -> Self {
        self.config.transaction_timeout = Duration::from_millis(ms);
        self
    }
    /// Checks the combination and returns the config.
    pub fn build(self) -> Result<ProducerConfig> {
        let config = self.config.resolve_idempotence();
        config.validate()?;
        Ok(config)
    }
}
