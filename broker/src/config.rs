//! Broker settings, named as Kafka names them (`num.partitions`, `log.segment.bytes`, ...).
//!
//! Settings come from three places, later ones winning: built-in defaults, a TOML file
//! (`--config`), and `KEY=VALUE` overrides (`--override`). TOML tables are flattened into
//! dotted names, so `log.segment.bytes = 1048576` and `[log] segment.bytes = 1048576` mean
//! the same thing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::metadata::topic_config;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read or parsed.
    #[error("cannot read config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A setting name we do not know (a typo would otherwise be silently ignored).
    #[error("unknown setting `{0}`")]
    UnknownSetting(String),
    /// A setting whose value does not parse or is out of range.
    #[error("invalid value `{value}` for `{name}`: {reason}")]
    InvalidValue {
        /// Setting name.
        name: String,
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// An override that is not `KEY=VALUE`.
    #[error("override `{0}` is not KEY=VALUE")]
    BadOverride(String),
}

/// Everything a broker needs to start.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This broker's id (`node.id`, alias `broker.id`).
    pub node_id: i32,
    /// Address the listener binds.
    pub listen: SocketAddr,
    /// Host advertised to clients in Metadata (`advertised.listeners`), defaulting to the
    /// listen address.
    pub advertised_host: String,
    /// Port advertised to clients.
    pub advertised_port: u16,
    /// Where partition logs and the metadata log live (`log.dirs`).
    pub data_dir: PathBuf,
    /// Partitions of an auto-created topic, and the default for CreateTopics (`num.partitions`).
    pub num_partitions: i32,
    /// Default replication factor (`default.replication.factor`).
    pub default_replication_factor: i16,
    /// Create unknown topics when a client asks for their metadata
    /// (`auto.create.topics.enable`).
    pub auto_create_topics_enable: bool,
    /// Whether DeleteTopics is allowed (`delete.topic.enable`).
    pub delete_topic_enable: bool,
    /// Largest request frame accepted; a bigger one closes the connection unread
    /// (`socket.request.max.bytes`).
    pub socket_request_max_bytes: usize,
    /// How often retention, compaction and age-based rolling run
    /// (`log.retention.check.interval.ms`).
    pub log_retention_check_interval_ms: u64,
    /// How long the first rebalance of an empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest session timeout a consumer may ask for (`group.min.session.timeout.ms`).
    pub group_min_session_timeout_ms: i32,
    /// Largest session timeout a consumer may ask for (`group.max.session.timeout.ms`).
    pub group_max_session_timeout_ms: i32,
    /// Partitions of `__consumer_offsets` (`offsets.topic.num.partitions`).
    pub offsets_topic_num_partitions: i32,
    /// Longest commit metadata string accepted (`offset.metadata.max.bytes`).
    pub offset_metadata_max_bytes: usize,
    /// Broker-wide defaults of topic-level settings, keyed by the topic-level name
    /// (`segment.bytes`, `retention.ms`, ...), with the broker name it came from.
    pub log_defaults: BTreeMap<String, String>,
}

/// Broker-level settings that are not defaults of topic settings.
const BROKER_SETTINGS: &[&str] = &[
    "node.id",
    "broker.id",
    "listeners",
    "advertised.listeners",
    "log.dirs",
    "log.dir",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "delete.topic.enable",
    "socket.request.max.bytes",
    "log.retention.check.interval.ms",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "offsets.topic.num.partitions",
    "offset.metadata.max.bytes",
];

impl BrokerConfig {
    /// Builds the configuration from raw `name -> value` settings, validating every one.
    ///
    /// `listen` and `data_dir` from the command line win over `listeners` and `log.dirs`.
    pub fn from_settings(
        settings: &BTreeMap<String, String>,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        for name in settings.keys() {
            let known = BROKER_SETTINGS.contains(&name.as_str())
                || topic_config::broker_setting(name).is_some();
            if !known {
                return Err(ConfigError::UnknownSetting(name.clone()));
            }
        }
        let get = |name: &str| settings.get(name).map(String::as_str);

        let node_id = match get("node.id").or(get("broker.id")) {
            Some(v) => parse_num::<i32>("node.id", v)?,
            None => 1,
        };
        let listen = match listen {
            Some(addr) => addr,
            None => match get("listeners") {
                Some(v) => parse_listener("listeners", v)?,
                None => default_listen(),
            },
        };
        let (advertised_host, advertised_port) = match get("advertised.listeners") {
            Some(v) => split_host_port("advertised.listeners", v)?,
            None => (listen.ip().to_string(), listen.port()),
        };
        let data_dir = data_dir
            .or_else(|| get("log.dirs").or(get("log.dir")).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./millrace-data"));
        let num_partitions = match get("num.partitions") {
            Some(v) => parse_positive::<i32>("num.partitions", v)?,
            None => 1,
        };
        let default_replication_factor = match get("default.replication.factor") {
            Some(v) => parse_positive::<i16>("default.replication.factor", v)?,
            None => 1,
        };
        let auto_create_topics_enable = match get("auto.create.topics.enable") {
            Some(v) => parse_bool("auto.create.topics.enable", v)?,
            None => true,
        };
        let delete_topic_enable = match get("delete.topic.enable") {
            Some(v) => parse_bool("delete.topic.enable", v)?,
            None => true,
        };
        let socket_request_max_bytes = match get("socket.request.max.bytes") {
            Some(v) => parse_positive::<usize>("socket.request.max.bytes", v)?,
            None => 104_857_600,
        };
        let log_retention_check_interval_ms = match get("log.retention.check.interval.ms") {
            Some(v) => parse_positive::<u64>("log.retention.check.interval.ms", v)?,
            None => 300_000,
        };

        let group_initial_rebalance_delay_ms = match get("group.initial.rebalance.delay.ms") {
            Some(v) => parse_num::<u64>("group.initial.rebalance.delay.ms", v)?,
            None => 3_000,
        };
        let group_min_session_timeout_ms = match get("group.min.session.timeout.ms") {
            Some(v) => parse_positive::<i32>("group.min.session.timeout.ms", v)?,
            None => 6_000,
        };
        let group_max_session_timeout_ms = match get("group.max.session.timeout.ms") {
            Some(v) => parse_positive::<i32>("group.max.session.timeout.ms", v)?,
            None => 1_800_000,
        };
        if group_min_session_timeout_ms > group_max_session_timeout_ms {
            return Err(invalid(
                "group.min.session.timeout.ms",
                &group_min_session_timeout_ms.to_string(),
                "larger than group.max.session.timeout.ms",
            ));
        }
        let offsets_topic_num_partitions = match get("offsets.topic.num.partitions") {
            Some(v) => parse_positive::<i32>("offsets.topic.num.partitions", v)?,
            None => 50,
        };
        let offset_metadata_max_bytes = match get("offset.metadata.max.bytes") {
            Some(v) => parse_positive::<usize>("offset.metadata.max.bytes", v)?,
            None => 4096,
        };

        let mut log_defaults = BTreeMap::new();
        for (name, value) in settings {
            if let Some((topic_name, normalized)) = topic_config::broker_setting(name) {
                let normalized = normalized(value).map_err(|reason| ConfigError::InvalidValue {
                    name: name.clone(),
                    value: value.clone(),
                    reason,
                })?;
                topic_config::validate(topic_name, &normalized).map_err(|reason| {
                    ConfigError::InvalidValue {
                        name: name.clone(),
                        value: value.clone(),
                        reason,
                    }
                })?;
                log_defaults.insert(topic_name.to_string(), normalized);
            }
        }

        Ok(BrokerConfig {
            node_id,
            listen,
            advertised_host,
            advertised_port,
            data_dir,
            num_partitions,
            default_replication_factor,
            auto_create_topics_enable,
            delete_topic_enable,
            socket_request_max_bytes,
            log_retention_check_interval_ms,
            group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            offsets_topic_num_partitions,
            offset_metadata_max_bytes,
            log_defaults,
        })
    }

    /// A configuration for tests and embedding: defaults, the given listener and data dir.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        // Defaults cannot fail validation.
        match Self::from_settings(&BTreeMap::new(), Some(listen), Some(data_dir.clone())) {
            Ok(config) => config,
            Err(_) => unreachable!("built-in defaults are valid"),
        }
    }
}

/// The default listener, `127.0.0.1:9092`.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9092))
}

/// Reads a TOML file into flat dotted `name -> value` settings.
pub fn read_settings_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_settings_toml(&text).map_err(|reason| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses TOML text into flat dotted settings.
pub fn parse_settings_toml(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = BTreeMap::new();
    flatten("", &toml::Value::Table(table), &mut out)?;
    Ok(out)
}

fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    match value {
        toml::Value::Table(table) => {
            for (key, inner) in table {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, inner, out)?;
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        toml::Value::Integer(i) => {
            out.insert(prefix.to_string(), i.to_string());
        }
        toml::Value::Boolean(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        toml::Value::Float(f) => {
            out.insert(prefix.to_string(), f.to_string());
        }
        toml::Value::Array(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    toml::Value::String(s) => parts.push(s.clone()),
                    toml::Value::Integer(i) => parts.push(i.to_string()),
                    other => return Err(format!("`{prefix}`: unsupported list item {other}")),
                }
            }
            out.insert(prefix.to_string(), parts.join(","));
        }
        toml::Value::Datetime(_) => return Err(format!("`{prefix}`: dates are not settings")),
    }
    Ok(())
}

/// Parses `KEY=VALUE` overrides into settings.
pub fn parse_overrides(overrides: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in overrides {
        let Some((key, value)) = item.split_once('=') else {
            return Err(ConfigError::BadOverride(item.clone()));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::BadOverride(item.clone()));
        }
        out.insert(key.to_string(), value.trim().to_string());
    }
    Ok(out)
}

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse::<T>()
        .map_err(|e| invalid(name, value, e.to_string()))
}

fn parse_positive<T>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Default,
    T::Err: std::fmt::Display,
{
    let parsed = parse_num::<T>(name, value)?;
    if parsed <= T::default() {
        return Err(invalid(name, value, "must be positive"));
    }
    Ok(parsed)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(name, value, "expected true or false")),
    }
}

/// Accepts `HOST:PORT` or Kafka's `PLAINTEXT://HOST:PORT` (the first listener of a list).
fn split_host_port(name: &str, value: &str) -> Result<(String, u16), ConfigError> {
    let first = value.split(',').next().unwrap_or_default().trim();
    let without_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
    let Some((host, port)) = without_scheme.rsplit_once(':') else {
        return Err(invalid(name, value, "expected HOST:PORT"));
    };
    let port = port
        .parse::<u16>()
        .map_err(|e| invalid(name, value, e.to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok((host.to_string(), port))
}

fn parse_listener(name: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = split_host_port(name, value)?;
    let joined = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    joined
        .parse::<SocketAddr>()
        .map_err(|e| invalid(name, value, e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn toml_tables_and_dotted_keys_mean_the_same_setting() {
        let a = parse_settings_toml("log.segment.bytes = 1048576\nnum.partitions = 3").unwrap();
        let b =
            parse_settings_toml("[log]\nsegment.bytes = 1048576\n[num]\npartitions = 3").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.get("log.segment.bytes").map(String::as_str),
            Some("1048576")
        );
    }

    #[test]
    fn broker_log_settings_become_topic_defaults() {
        let settings = parse_overrides(&[
            "log.segment.bytes=2048".to_string(),
            "log.retention.hours=1".to_string(),
            "num.partitions=4".to_string(),
        ])
        .unwrap();
        let config = BrokerConfig::from_settings(&settings, None, None).unwrap();
        assert_eq!(config.num_partitions, 4);
        assert_eq!(
            config.log_defaults.get("segment.bytes").map(String::as_str),
            Some("2048")
        );
        assert_eq!(
            config.log_defaults.get("retention.ms").map(String::as_str),
            Some("3600000")
        );
    }

    #[test]
    fn unknown_setting_is_rejected() {
        let settings = parse_overrides(&["num.partition=4".to_string()]).unwrap();
        let err = BrokerConfig::from_settings(&settings, None, None).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownSetting(name) if name == "num.partition"));
    }

    #[test]
    fn invalid_values_are_rejected() {
        for bad in [
            "num.partitions=0",
            "auto.create.topics.enable=yes",
            "log.segment.bytes=-5",
        ] {
            let settings = parse_overrides(&[bad.to_string()]).unwrap();
            assert!(
                BrokerConfig::from_settings(&settings, None, None).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn advertised_listener_accepts_kafka_syntax() {
        let settings =
            parse_overrides(&["advertised.listeners=PLAINTEXT://example.com:9093".to_string()])
                .unwrap();
        let config = BrokerConfig::from_settings(&settings, None, None).unwrap();
        assert_eq!(config.advertised_host, "example.com");
        assert_eq!(config.advertised_port, 9093);
    }
}
