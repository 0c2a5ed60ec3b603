//! The observability settings: where the metrics and health endpoint listens
//! (`metrics.listener`), whether per-partition series are exported, and the slow-request log
//! threshold (`log.slow.request.ms`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use super::{invalid, parse_bool, parse_positive, ConfigError};

/// `metrics.listener`: `http://HOST:PORT` (or `HOST:PORT`) of the HTTP endpoint serving
/// `/metrics`, `/health/live`, `/health/ready` and `/v1/cluster`. Off unless set.
pub const METRICS_LISTENER: &str = "metrics.listener";

/// `metrics.partition.level.enable`: export per-partition series (log size and offsets,
/// consumer lag per partition). A broker with many thousands of partitions turns it off to
/// keep each scrape small; the per-topic and broker-wide series stay.
pub const PARTITION_LEVEL_ENABLE: &str = "metrics.partition.level.enable";

/// `log.slow.request.ms`: a request whose total time exceeds this is logged at WARN with its
/// API, client id, partitions and the time in each stage. Off unless set.
pub const LOG_SLOW_REQUEST_MS: &str = "log.slow.request.ms";

/// The observability part of [`super::BrokerConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where the HTTP endpoint binds, or `None` for no endpoint.
    pub listener: Option<SocketAddr>,
    /// Whether per-partition series are exported.
    pub partition_level: bool,
    /// The slow-request threshold in ms, or `None` for no slow-request log.
    pub slow_request_ms: Option<u64>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listener: None,
            partition_level: true,
            slow_request_ms: None,
        }
    }
}

impl MetricsConfig {
    /// Reads the three settings from the flat settings map.
    pub(crate) fn from_settings(settings: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut config = MetricsConfig::default();
        if let Some(value) = settings.get(METRICS_LISTENER) {
            config.listener = parse_listener(value)?;
        }
        if let Some(value) = settings.get(PARTITION_LEVEL_ENABLE) {
            config.partition_level = parse_bool(PARTITION_LEVEL_ENABLE, value)?;
        }
        if let Some(value) = settings.get(LOG_SLOW_REQUEST_MS) {
            config.slow_request_ms = Some(parse_positive::<u64>(LOG_SLOW_REQUEST_MS, value)?);
        }
        Ok(config)
    }
}

/// Parses `http://HOST:PORT` or `HOST:PORT`; an empty value means no endpoint.
fn parse_listener(value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.starts_with("https://") {
        return Err(invalid(
            METRICS_LISTENER,
            value,
            "the metrics endpoint speaks plain HTTP; put a TLS proxy in front of it",
        ));
    }
    let address = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let address = address.strip_suffix('/').unwrap_or(address);
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(Some)
        .ok_or_else(|| invalid(METRICS_LISTENER, value, "expected http://HOST:PORT"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<MetricsConfig, ConfigError> {
        let settings = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        MetricsConfig::from_settings(&settings)
    }

    #[test]
    fn the_endpoint_is_off_unless_set() {
        assert_eq!(config(&[]).unwrap(), MetricsConfig::default());
        assert_eq!(config(&[]).unwrap().listener, None);
    }

    #[test]
    fn the_listener_takes_a_url_or_a_bare_address() {
        for value in [
            "http://127.0.0.1:9644",
            "127.0.0.1:9644",
            "http://127.0.0.1:9644/",
        ] {
            let parsed = config(&[(METRICS_LISTENER, value)]).unwrap();
            assert_eq!(
                parsed.listener,
                Some("127.0.0.1:9644".parse().unwrap()),
                "{value}"
            );
        }
    }

    #[test]
    fn bad_values_are_rejected_naming_the_setting() {
        for (name, value) in [
            (METRICS_LISTENER, "https://127.0.0.1:9644"),
            (METRICS_LISTENER, "http://nowhere"),
            (PARTITION_LEVEL_ENABLE, "maybe"),
            (LOG_SLOW_REQUEST_MS, "0"),
        ] {
            let error = config(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
    }
}
