//! Topic-level settings: their names, defaults, broker-level synonyms, validation, and how
//! they become a [`LogConfig`].
//!
//! Each topic setting has a broker-level default under Kafka's broker name
//! (`log.segment.bytes` for `segment.bytes`); a topic override wins over it.

use std::collections::BTreeMap;

use crate::log::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};

/// The kind of value a setting takes; also its DescribeConfigs `config_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    /// A 32-bit integer at least `min`.
    Int {
        /// Smallest allowed value.
        min: i64,
    },
    /// A 64-bit integer at least `min`.
    Long {
        /// Smallest allowed value.
        min: i64,
    },
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A comma-separated non-empty list drawn from a fixed set.
    List(&'static [&'static str]),
    /// `true` or `false`.
    Bool,
}

impl ConfigKind {
    /// The `config_type` code DescribeConfigs v3+ reports.
    pub fn type_code(self) -> i8 {
        match self {
            ConfigKind::Int { .. } => 3,
            ConfigKind::Long { .. } => 5,
            ConfigKind::Choice(_) => 2,
            ConfigKind::List(_) => 7,
            ConfigKind::Bool => 1,
        }
    }
}

/// One topic-level setting.
#[derive(Clone, Copy, Debug)]
pub struct ConfigDef {
    /// Topic-level name (`segment.bytes`).
    pub name: &'static str,
    /// Broker-level name of its default (`log.segment.bytes`).
    pub broker_name: &'static str,
    /// Built-in default value.
    pub default: &'static str,
    /// Value kind.
    pub kind: ConfigKind,
    /// One-line documentation, served by DescribeConfigs.
    pub doc: &'static str,
}

/// Every topic-level setting Millrace knows.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        default: "delete",
        kind: ConfigKind::List(&["delete", "compact"]),
        doc: "delete: drop old segments by retention; compact: keep the last record per key",
    },
    ConfigDef {
        name: "compression.type",
        broker_name: "compression.type",
        default: "producer",
        kind: ConfigKind::Choice(&["producer"]),
        doc: "Batches are stored as the producer compressed them (no re-compression)",
    },
    ConfigDef {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        default: "86400000",
        kind: ConfigKind::Long { min: 0 },
        doc: "How long tombstones survive compaction",
    },
    ConfigDef {
        name: "flush.policy",
        broker_name: "flush.policy",
        default: "fsync",
        kind: ConfigKind::Choice(&["fsync", "page-cache"]),
        doc: "fsync: acknowledge acks=1/all produces after fsync (group commit); page-cache: after the write",
    },
    ConfigDef {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        default: "4096",
        kind: ConfigKind::Int { min: 0 },
        doc: "Bytes of log between two offset index entries",
    },
    ConfigDef {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        default: "1048588",
        kind: ConfigKind::Int { min: 0 },
        doc: "Largest record batch accepted",
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        default: "CreateTime",
        kind: ConfigKind::Choice(&["CreateTime", "LogAppendTime"]),
        doc: "Whether record timestamps are the producer's or the broker's append time",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        default: "0",
        kind: ConfigKind::Long { min: 0 },
        doc: "Minimum age of a record before compaction may remove it",
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        default: "1",
        kind: ConfigKind::Int { min: 1 },
        doc: "Replicas that must acknowledge an acks=all produce",
    },
    ConfigDef {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        default: "-1",
        kind: ConfigKind::Long { min: -1 },
        doc: "Size a partition may grow to before old segments are deleted; -1 for no limit",
    },
    ConfigDef {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        default: "604800000",
        kind: ConfigKind::Long { min: -1 },
        doc: "Age after which old segments are deleted; -1 for no limit",
    },
    ConfigDef {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        default: "1073741824",
        kind: ConfigKind::Int { min: 1024 },
        doc: "Size at which the active segment rolls",
    },
    ConfigDef {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        default: "604800000",
        kind: ConfigKind::Long { min: 1 },
        doc: "Age at which the active segment rolls",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        default: "false",
        kind: ConfigKind::Bool,
        doc: "Whether a replica outside the ISR may become leader, losing acknowledged records (not acted on until replication)",
    },
];

/// Looks up a topic-level setting.
pub fn def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Normalizes a broker-level value into the topic-level value (e.g. hours into ms).
pub type Normalizer = fn(&str) -> Result<String, String>;

fn identity(value: &str) -> Result<String, String> {
    Ok(value.trim().to_string())
}

fn hours_to_ms(value: &str) -> Result<String, String> {
    scale(value, 3_600_000)
}

fn minutes_to_ms(value: &str) -> Result<String, String> {
    scale(value, 60_000)
}

fn scale(value: &str, factor: i64) -> Result<String, String> {
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    if n < 0 {
        return Ok("-1".to_string());
    }
    n.checked_mul(factor)
        .map(|v| v.to_string())
        .ok_or_else(|| "too large".to_string())
}

/// If `broker_name` is the broker-level default of a topic setting, returns the topic-level
/// name and how to convert the value.
pub fn broker_setting(broker_name: &str) -> Option<(&'static str, Normalizer)> {
    match broker_name {
        "log.retention.hours" => return Some(("retention.ms", hours_to_ms)),
        "log.retention.minutes" => return Some(("retention.ms", minutes_to_ms)),
        "log.roll.hours" => return Some(("segment.ms", hours_to_ms)),
        _ => {}
    }
    TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_name == broker_name)
        .map(|d| (d.name, identity as Normalizer))
}

/// Checks a topic-level value; `Err` carries a message for the client.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = def(name) else {
        return Err(format!("unknown topic config `{name}`"));
    };
    let value = value.trim();
    match def.kind {
        ConfigKind::Int { min } => {
            let n: i32 = value
                .parse()
                .map_err(|_| format!("`{name}` must be a 32-bit integer, got `{value}`"))?;
            if i64::from(n) < min {
                return Err(format!("`{name}` must be at least {min}, got {n}"));
            }
        }
        ConfigKind::Long { min } => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("`{name}` must be an integer, got `{value}`"))?;
            if n < min {
                return Err(format!("`{name}` must be at least {min}, got {n}"));
            }
        }
        ConfigKind::Choice(choices) => {
            if !choices.contains(&value) {
                return Err(format!(
                    "`{name}` must be one of {}, got `{value}`",
                    choices.join(", ")
                ));
            }
        }
        ConfigKind::Bool => {
            if !matches!(value, "true" | "false") {
                return Err(format!("`{name}` must be true or false, got `{value}`"));
            }
        }
        ConfigKind::List(choices) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if items.is_empty() || items.iter().any(|i| !choices.contains(i)) {
                return Err(format!(
                    "`{name}` must be a list of {}, got `{value}`",
                    choices.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Where an effective value came from, as DescribeConfigs reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A topic override (`DYNAMIC_TOPIC_CONFIG`, 1).
    Topic,
    /// The broker's config file or flags (`STATIC_BROKER_CONFIG`, 4).
    StaticBroker,
    /// The built-in default (`DEFAULT_CONFIG`, 5).
    Default,
}

impl ConfigSource {
    /// The protocol's `config_source` code.
    pub fn code(self) -> i8 {
        match self {
            ConfigSource::Topic => 1,
            ConfigSource::StaticBroker => 4,
            ConfigSource::Default => 5,
        }
    }
}

/// The effective value of topic setting `def` and where it came from.
pub fn effective(
    def: &ConfigDef,
    broker_defaults: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> (String, ConfigSource) {
    if let Some(v) = overrides.get(def.name) {
        return (v.clone(), ConfigSource::Topic);
    }
    if let Some(v) = broker_defaults.get(def.name) {
        return (v.clone(), ConfigSource::StaticBroker);
    }
    (def.default.to_string(), ConfigSource::Default)
}

/// The effective `min.insync.replicas` of a topic (1 where unparsable: values were validated
/// when accepted).
pub fn min_insync_replicas(
    broker_defaults: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> usize {
    def("min.insync.replicas")
        .map(|d| effective(d, broker_defaults, overrides).0)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1)
}

/// The log settings of a topic with these overrides on a broker with these defaults.
///
/// Values were validated when they were accepted, so a value that still fails to parse falls
/// back to the built-in default rather than failing the partition.
pub fn log_config(
    broker_defaults: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> LogConfig {
    let value = |name: &str| -> String {
        match def(name) {
            Some(d) => effective(d, broker_defaults, overrides).0,
            None => String::new(),
        }
    };
    let long = |name: &str| -> i64 {
        value(name).trim().parse::<i64>().unwrap_or_else(|_| {
            def(name)
                .and_then(|d| d.default.parse().ok())
                .unwrap_or_default()
        })
    };
    let cleanup = value("cleanup.policy");
    let has = |item: &str| cleanup.split(',').any(|p| p.trim() == item);
    let cleanup_policy = match (has("compact"), has("delete")) {
        (true, true) => CleanupPolicy::CompactDelete,
        (true, false) => CleanupPolicy::Compact,
        _ => CleanupPolicy::Delete,
    };
    LogConfig {
        segment_bytes: u64::try_from(long("segment.bytes")).unwrap_or(1 << 30),
        segment_ms: long("segment.ms"),
        retention_ms: long("retention.ms"),
        retention_bytes: long("retention.bytes"),
        index_interval_bytes: u32::try_from(long("index.interval.bytes")).unwrap_or(4096),
        cleanup_policy,
        delete_retention_ms: long("delete.retention.ms"),
        min_compaction_lag_ms: long("min.compaction.lag.ms"),
        max_message_bytes: u32::try_from(long("max.message.bytes")).unwrap_or(1_048_588),
        message_timestamp_type: if value("message.timestamp.type") == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        flush_policy: if value("flush.policy") == "page-cache" {
            FlushPolicy::PageCache
        } else {
            FlushPolicy::Fsync
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_valid() {
        for d in TOPIC_CONFIGS {
            assert!(validate(d.name, d.default).is_ok(), "{}", d.name);
        }
    }

    #[test]
    fn override_beats_broker_default_beats_builtin() {
        let mut broker = BTreeMap::new();
        broker.insert("retention.ms".to_string(), "1000".to_string());
        let mut topic = BTreeMap::new();
        let d = def("retention.ms").unwrap();
        assert_eq!(
            effective(d, &broker, &topic),
            ("1000".to_string(), ConfigSource::StaticBroker)
        );
        topic.insert("retention.ms".to_string(), "5".to_string());
        assert_eq!(
            effective(d, &broker, &topic),
            ("5".to_string(), ConfigSource::Topic)
        );
        assert_eq!(log_config(&broker, &topic).retention_ms, 5);
    }

    #[test]
    fn cleanup_policy_list_maps_to_policy() {
        let mut topic = BTreeMap::new();
        topic.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        assert_eq!(
            log_config(&BTreeMap::new(), &topic).cleanup_policy,
            CleanupPolicy::CompactDelete
        );
        assert!(validate("cleanup.policy", "compact, delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(validate("segment.bytes", "12")
            .unwrap_err()
            .contains("at least"));
        assert!(validate("retention.ms", "soon")
            .unwrap_err()
            .contains("integer"));
        assert!(validate("no.such.config", "1")
            .unwrap_err()
            .contains("unknown"));
    }
}
