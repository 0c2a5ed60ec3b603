//! Settings shared by the producer, the consumer and the admin client.

use std::time::Duration;

use crate::error::{ClientError, Result};
use crate::network::SecurityConfig;

/// How to reach a cluster and how patiently to talk to it.
///
/// Built with [`ClientConfig::builder`]; the names follow Kafka's client settings
/// (`bootstrap.servers`, `client.id`, `request.timeout.ms`, `retry.backoff.ms`,
/// `metadata.max.age.ms`).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of brokers to ask for the cluster's metadata first. One reachable broker is
    /// enough; the rest of the cluster is learned from it.
    pub bootstrap_servers: Vec<String>,
    /// Sent with every request; brokers log it and quotas key on it.
    pub client_id: String,
    /// How long to wait for a broker's answer before failing the request (Kafka: 30 s).
    pub request_timeout: Duration,
    /// How long to wait before retrying a failed request or reconnecting to a broker (Kafka:
    /// 100 ms). Reconnects back off exponentially from here up to `reconnect_backoff_max`.
    pub retry_backoff: Duration,
    /// The longest pause between attempts to reconnect to an unreachable broker (Kafka: 1 s).
    pub reconnect_backoff_max: Duration,
    /// Metadata older than this is refreshed even without an error (Kafka: 5 minutes), so new
    /// partitions and brokers are noticed.
    pub metadata_max_age: Duration,
    /// How long to wait for a TCP connection to open.
    pub connect_timeout: Duration,
    /// TLS and SASL (`security.protocol`, `ssl.*`, `sasl.*`); plaintext by default.
    pub security: SecurityConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap_servers: vec!["localhost:9092".to_string()],
            client_id: "millrace-client".to_string(),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(1),
            metadata_max_age: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            security: SecurityConfig::new(),
        }
    }
}

impl ClientConfig {
    /// Starts a builder with Kafka's defaults and the given bootstrap servers.
    pub fn builder<S: Into<String>>(
        bootstrap_servers: impl IntoIterator<Item = S>,
    ) -> ClientConfigBuilder {
        ClientConfigBuilder {
            config: ClientConfig {
                bootstrap_servers: bootstrap_servers.into_iter().map(Into::into).collect(),
                ..ClientConfig::default()
            },
        }
    }

    /// A config with defaults for the given bootstrap servers (a comma-separated list such as
    /// `"b1:9092,b2:9092"` also works as a single entry). Takes a `&str` or a `String`, such as
    /// an address read from the command line:
    ///
    /// ```
    /// use millrace_client::ClientConfig;
    ///
    /// let from_args: String = std::env::args().nth(1).unwrap_or_else(|| "b1:9092, b2:9092".into());
    /// let config = ClientConfig::new(from_args);
    /// assert!(!config.bootstrap_servers.is_empty());
    /// assert_eq!(ClientConfig::new("b1:9092,b2:9092").bootstrap_servers, ["b1:9092", "b2:9092"]);
    /// ```
    pub fn new(bootstrap_servers: impl AsRef<str>) -> Self {
        ClientConfig::builder(bootstrap_servers.as_ref().split(',').map(str::trim))
            .build_unchecked()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.iter().all(|s| s.trim().is_empty()) {
            return Err(ClientError::InvalidArgument(
                "bootstrap_servers is empty".to_string(),
            ));
        }
        self.security.validate()?;
        if self.request_timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "request_timeout must be positive".to_string(),
            ));
        }
        Ok(())
    }
}

/// Builder for [`ClientConfig`].
#[derive(Debug, Clone)]
pub struct ClientConfigBuilder {
    config: ClientConfig,
}

impl ClientConfigBuilder {
    /// Sets `client.id`.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }

    /// Sets `request.timeout.ms`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Sets `retry.backoff.ms`.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff = backoff;
        self
    }

    /// Sets `reconnect.backoff.max.ms`.
    pub fn reconnect_backoff_max(mut self, backoff: Duration) -> Self {
        self.config.reconnect_backoff_max = backoff;
        self
    }

    /// Sets `metadata.max.age.ms`.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.config.metadata_max_age = age;
        self
    }

    /// Sets the TCP connect timeout (`socket.connection.setup.timeout.ms`).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Applies one Kafka-style security setting (`security.protocol`, `ssl.ca.location`,
    /// `sasl.mechanism`, `sasl.username`, ...); see [`SecurityConfig::set`].
    pub fn set(mut self, name: &str, value: &str) -> Result<Self> {
        self.config.security.set(name, value)?;
        Ok(self)
    }

    /// Sets all security settings at once.
    pub fn security(mut self, security: SecurityConfig) -> Self {
        self.config.security = security;
        self
    }

    /// Checks the settings and returns the config.
    pub fn build(self) -> Result<ClientConfig> {
        self.config.validate()?;
        Ok(self.config)
    }

    fn build_unchecked(self) -> ClientConfig {
        self.config
    }
}
