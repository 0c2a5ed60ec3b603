//! Broker settings, named as Kafka names them (`num.partitions`, `log.segment.bytes`, ...).
//!
//! Settings come from three places, later ones winning: built-in defaults, a TOML file
//! (`--config`), and `KEY=VALUE` overrides (`--override`). TOML tables are flattened into
//! dotted names, so `log.segment.bytes = 1048576` and `[log] segment.bytes = 1048576` mean
//! the same thing.
//!
//! The cluster settings (`process.roles`, named `listeners`, `controller.quorum.voters`, ...)
//! live in their own files: [`listeners`], [`quorum_voters`], [`process_roles`], and the rules
//! that tie them together in `cluster.rs`.

mod cluster;
pub mod listeners;
pub mod metrics;
pub mod process_roles;
pub mod quorum_voters;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::metadata::topic_config;
use crate::security::authorizer::{self, AuthorizerConfig};
use crate::security::inter_broker::{InterBrokerSecurity, SASL_MECHANISM_INTER_BROKER_PROTOCOL};
use crate::security::{ListenerSecurity, SaslMechanism};

pub use listeners::{Listener, SecurityProtocol};
pub use process_roles::ProcessRoles;
pub use quorum_voters::QuorumVoter;

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
    /// A valid Kafka value for a feature Millrace does not implement yet.
    #[error("`{name}` = `{value}`: {what} is not supported yet")]
    Unsupported {
        /// Setting name.
        name: String,
        /// The setting's value.
        value: String,
        /// The unsupported feature, in the setting's words.
        what: String,
    },
    /// A setting with no default that this node's other settings require.
    #[error("`{name}` must be set: {reason}")]
    Missing {
        /// Setting name.
        name: String,
        /// Why it is needed.
        reason: String,
    },
}

/// Everything a broker needs to start.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This broker's id (`node.id`, alias `broker.id`).
    pub node_id: i32,
    /// Address the client listener binds: the first listener that is not a controller
    /// listener (for a controller-only node, its first listener).
    pub listen: SocketAddr,
    /// Host advertised to clients in Metadata: the client listener's entry of
    /// `advertised.listeners`, defaulting to the listen address.
    pub advertised_host: String,
    /// Port advertised to clients.
    pub advertised_port: u16,
    /// Whether this node is a broker, a controller or both (`process.roles`, default both).
    pub process_roles: ProcessRoles,
    /// Every listener this node binds (`listeners`: `NAME://HOST:PORT,...`; a bare
    /// `HOST:PORT` is a PLAINTEXT listener). Its client listener is [`Self::listen`].
    pub listeners: Vec<Listener>,
    /// What each listener is advertised as, one per entry of [`Self::listeners`] and in the
    /// same order (`advertised.listeners`, each defaulting to the listener itself).
    pub advertised_listeners: Vec<Listener>,
    /// Security protocol of each listener name (`listener.security.protocol.map`). Only
    /// PLAINTEXT is implemented; a listener mapped to another protocol is rejected.
    pub listener_security_protocol_map: BTreeMap<String, SecurityProtocol>,
    /// Names of the listeners the metadata quorum speaks on (`controller.listener.names`,
    /// default `CONTROLLER`). On a broker-only node they name the controllers' listeners.
    pub controller_listener_names: Vec<String>,
    /// The listener other brokers reach this one on, for replication
    /// (`inter.broker.listener.name`, default PLAINTEXT or the first broker listener).
    pub inter_broker_listener_name: String,
    /// The metadata quorum's voters (`controller.quorum.voters`; default this node alone, on
    /// its controller listener or else its client listener).
    pub quorum_voters: Vec<QuorumVoter>,
    /// Rack of this broker, for rack-aware replica placement (`broker.rack`).
    pub broker_rack: Option<String>,
    /// Replication factor of `__consumer_offsets` (`offsets.topic.replication.factor`,
    /// default 3). As in Kafka, not clamped to the number of brokers.
    pub offsets_topic_replication_factor: i16,
    /// A follower not caught up for this long leaves the ISR (`replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// A broker not heard from for this long is fenced by the controller
    /// (`broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// How often a broker heartbeats to the controller (`broker.heartbeat.interval.ms`).
    pub broker_heartbeat_interval_ms: u64,
    /// Whether the controller moves leadership back to preferred replicas
    /// (`auto.leader.rebalance.enable`).
    pub auto_leader_rebalance_enable: bool,
    /// How often leader imbalance is checked (`leader.imbalance.check.interval.seconds`).
    pub leader_imbalance_check_interval_seconds: u64,
    /// A voter that hears no leader for this long starts an election
    /// (`controller.quorum.election.timeout.ms`).
    pub controller_quorum_election_timeout_ms: u64,
    /// A quorum leader not fetched from by a majority for this long resigns, and a follower
    /// that cannot fetch for this long looks for a new leader
    /// (`controller.quorum.fetch.timeout.ms`).
    pub controller_quorum_fetch_timeout_ms: u64,
    /// Bytes a follower asks for per partition in one fetch (`replica.fetch.max.bytes`).
    pub replica_fetch_max_bytes: i32,
    /// Longest a follower's fetch waits at the leader for data (`replica.fetch.wait.max.ms`).
    pub replica_fetch_wait_max_ms: u64,
    /// Fetcher tasks per source broker (`num.replica.fetchers`).
    pub num_replica_fetchers: usize,
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
    /// Partitions of `__transaction_state` (`transaction.state.log.num.partitions`).
    pub transaction_state_log_num_partitions: i32,
    /// Replication factor of `__transaction_state`
    /// (`transaction.state.log.replication.factor`, default 3, capped at the brokers there
    /// are when the topic is created, like `__consumer_offsets`).
    pub transaction_state_log_replication_factor: i16,
    /// Longest `transaction.timeout.ms` a producer may ask for (`transaction.max.timeout.ms`).
    pub transaction_max_timeout_ms: i32,
    /// How often transactions past their timeout are looked for and aborted
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// How long a transactional id with no transaction going on is kept after its last
    /// transaction (`transactional.id.expiration.ms`, 7 days as in Kafka).
    pub transactional_id_expiration_ms: u64,
    /// How often expired transactional ids are removed
    /// (`transaction.remove.expired.transaction.cleanup.interval.ms`, 1 hour).
    pub transaction_remove_expired_transaction_cleanup_interval_ms: u64,
    /// Broker-wide defaults of topic-level settings, keyed by the topic-level name
    /// (`segment.bytes`, `retention.ms`, ...), with the broker name it came from.
    pub log_defaults: BTreeMap<String, String>,
    /// What each client listener asks of its connections (TLS, SASL), by listener name:
    /// `ssl.*`, `sasl.*` and `connections.max.reauth.ms`, each also per listener as
    /// `listener.name.<name>.<setting>`.
    pub listener_security: BTreeMap<String, ListenerSecurity>,
    /// The metrics and health endpoint, and what it exposes (`metrics.listener`,
    /// `metrics.partition.level.enable`, `log.slow.request.ms`).
    pub metrics: metrics::MetricsConfig,
    /// The authorizer (ACLs), when `authorizer.class.name` is set; `None` allows everything.
    pub authorizer: Option<AuthorizerConfig>,
    /// How this broker connects to the others: the inter-broker listener's TLS and SASL, with
    /// `sasl.mechanism.inter.broker.protocol` and this broker's own credentials.
    pub inter_broker: Arc<InterBrokerSecurity>,
    /// TLS and SASL of the controller listener (the metadata quorum's), when it is mapped to
    /// SSL, SASL_PLAINTEXT or SASL_SSL.
    pub controller_security: Option<Arc<crate::security::controller_security::ControllerSecurity>>,
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
    "transaction.state.log.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.max.timeout.ms",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "transactional.id.expiration.ms",
    "transaction.remove.expired.transaction.cleanup.interval.ms",
    "process.roles",
    "controller.quorum.voters",
    "listener.security.protocol.map",
    "controller.listener.names",
    "inter.broker.listener.name",
    "broker.rack",
    "offsets.topic.replication.factor",
    "replica.lag.time.max.ms",
    "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms",
    "auto.leader.rebalance.enable",
    "leader.imbalance.check.interval.seconds",
    "controller.quorum.election.timeout.ms",
    "controller.quorum.fetch.timeout.ms",
    "replica.fetch.max.bytes",
    "replica.fetch.wait.max.ms",
    "num.replica.fetchers",
    metrics::METRICS_LISTENER,
    metrics::PARTITION_LEVEL_ENABLE,
    metrics::LOG_SLOW_REQUEST_MS,
    authorizer::AUTHORIZER_CLASS_NAME,
    authorizer::SUPER_USERS,
    authorizer::ALLOW_EVERYONE_IF_NO_ACL_FOUND,
    SASL_MECHANISM_INTER_BROKER_PROTOCOL,
    crate::security::controller_security::SASL_MECHANISM_CONTROLLER_PROTOCOL,
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
                || topic_config::broker_setting(name).is_some()
                || crate::security::config::is_security_setting(name);
            if !known {
                return Err(ConfigError::UnknownSetting(name.clone()));
            }
        }
        let get = |name: &str| settings.get(name).map(String::as_str);

        let node_id = match get("node.id").or(get("broker.id")) {
            Some(v) => parse_num::<i32>("node.id", v)?,
            None => 1,
        };
        if node_id < 0 {
            // -1 means "no node" in Kafka's protocol (a partition without a leader).
            return Err(invalid(
                "node.id",
                &node_id.to_string(),
                "must not be negative",
            ));
        }
        if let (Some(_), Some(alias)) = (get("node.id"), get("broker.id")) {
            if parse_num::<i32>("broker.id", alias)? != node_id {
                return Err(invalid(
                    "broker.id",
                    alias,
                    format!("differs from node.id ({node_id}); set one of them"),
                ));
            }
        }
        let process_roles = match get("process.roles") {
            Some(v) => ProcessRoles::parse(v)?,
            None => ProcessRoles::default(),
        };
        let network = cluster::resolve(settings, node_id, process_roles, listen)?;
        let client_listeners: Vec<&Listener> = network
            .listeners
            .iter()
            .filter(|l| !network.controller_listener_names.contains(&l.name))
            .collect();
        let listener_security = crate::security::config::resolve(
            settings,
            &client_listeners,
            &network.security_protocol_map,
        )?;
        let client = client_listener_index(&network.listeners, &network.controller_listener_names);
        let (listen, advertised_host, advertised_port) = match (
            network.listeners.get(client),
            network.advertised_listeners.get(client),
        ) {
            (Some(bound), Some(advertised)) => (
                bound.socket_addr().unwrap_or_else(default_listen),
                advertised.host.clone(),
                advertised.port,
            ),
            // `resolve` returns at least one listener, advertised one for one.
            _ => unreachable!("resolved listeners are never empty"),
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
        let transaction_state_log_num_partitions = match get("transaction.state.log.num.partitions")
        {
            Some(v) => parse_positive::<i32>("transaction.state.log.num.partitions", v)?,
            None => 50,
        };
        let transaction_state_log_replication_factor =
            match get("transaction.state.log.replication.factor") {
                Some(v) => parse_positive::<i16>("transaction.state.log.replication.factor", v)?,
                None => 3,
            };
        let transaction_max_timeout_ms = match get("transaction.max.timeout.ms") {
            Some(v) => parse_positive::<i32>("transaction.max.timeout.ms", v)?,
            None => 900_000,
        };
        let transaction_abort_timed_out_transaction_cleanup_interval_ms =
            match get("transaction.abort.timed.out.transaction.cleanup.interval.ms") {
                Some(v) => parse_positive::<u64>(
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                    v,
                )?,
                None => 10_000,
            };
        let broker_rack = get("broker.rack")
            .map(str::trim)
            .filter(|rack| !rack.is_empty())
            .map(str::to_string);
        let positive_or = |name: &str, default: u64| -> Result<u64, ConfigError> {
            get(name).map_or(Ok(default), |v| parse_positive::<u64>(name, v))
        };
        let offsets_topic_replication_factor = match get("offsets.topic.replication.factor") {
            Some(v) => parse_positive::<i16>("offsets.topic.replication.factor", v)?,
            None => 3,
        };
        let replica_lag_time_max_ms = positive_or("replica.lag.time.max.ms", 30_000)?;
        let transactional_id_expiration_ms =
            positive_or("transactional.id.expiration.ms", 604_800_000)?;
        let transaction_remove_expired_transaction_cleanup_interval_ms = positive_or(
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            3_600_000,
        )?;
        // Shorter than Kafka's 9 s / 2 s: the session timeout is most of the failover time
        // after a crash, and the target is a new leader within 3 s.
        let broker_session_timeout_ms = positive_or("broker.session.timeout.ms", 2_000)?;
        let broker_heartbeat_interval_ms = positive_or("broker.heartbeat.interval.ms", 400)?;
        if broker_heartbeat_interval_ms >= broker_session_timeout_ms {
            // A heartbeat interval as long as the session would fence a healthy broker.
            return Err(invalid(
                "broker.heartbeat.interval.ms",
                &broker_heartbeat_interval_ms.to_string(),
                format!(
                    "must be less than broker.session.timeout.ms ({broker_session_timeout_ms})"
                ),
            ));
        }
        let auto_leader_rebalance_enable = match get("auto.leader.rebalance.enable") {
            Some(v) => parse_bool("auto.leader.rebalance.enable", v)?,
            None => true,
        };
        let leader_imbalance_check_interval_seconds =
            positive_or("leader.imbalance.check.interval.seconds", 300)?;
        let controller_quorum_election_timeout_ms =
            positive_or("controller.quorum.election.timeout.ms", 1_000)?;
        let controller_quorum_fetch_timeout_ms =
            positive_or("controller.quorum.fetch.timeout.ms", 2_000)?;
        let replica_fetch_max_bytes = match get("replica.fetch.max.bytes") {
            Some(v) => parse_positive::<i32>("replica.fetch.max.bytes", v)?,
            None => 1_048_576,
        };
        let replica_fetch_wait_max_ms = match get("replica.fetch.wait.max.ms") {
            Some(v) => parse_num::<u64>("replica.fetch.wait.max.ms", v)?,
            None => 500,
        };
        if replica_fetch_wait_max_ms > replica_lag_time_max_ms {
            // Kafka's rule: a follower parked in a fetch longer than the lag limit would drop
            // out of the ISR while waiting.
            return Err(invalid(
                "replica.fetch.wait.max.ms",
                &replica_fetch_wait_max_ms.to_string(),
                format!("must not exceed replica.lag.time.max.ms ({replica_lag_time_max_ms})"),
            ));
        }
        let num_replica_fetchers = match get("num.replica.fetchers") {
            Some(v) => parse_positive::<usize>("num.replica.fetchers", v)?,
            None => 1,
        };

        let metrics = metrics::MetricsConfig::from_settings(settings)?;

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

        let authorizer = resolve_authorizer(&get)?;
        let controller_security =
            resolve_controller_security(settings, &network, process_roles, authorizer.as_ref())?;
        // Only a cluster has other brokers to connect to; a single node needs no credentials.
        let inter_broker = match listener_security.get(&network.inter_broker_listener_name) {
            Some(listener) if network.quorum_voters.len() > 1 || !process_roles.is_controller() => {
                InterBrokerSecurity::resolve(settings, listener)
                    .map_err(|e| login_setting_error(settings, e))?
            }
            _ => InterBrokerSecurity::default(),
        };

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
            transaction_state_log_num_partitions,
            transaction_state_log_replication_factor,
            transaction_max_timeout_ms,
            transaction_abort_timed_out_transaction_cleanup_interval_ms,
            transactional_id_expiration_ms,
            transaction_remove_expired_transaction_cleanup_interval_ms,
            log_defaults,
            process_roles,
            listeners: network.listeners,
            advertised_listeners: network.advertised_listeners,
            listener_security_protocol_map: network.security_protocol_map,
            controller_listener_names: network.controller_listener_names,
            inter_broker_listener_name: network.inter_broker_listener_name,
            quorum_voters: network.quorum_voters,
            broker_rack,
            offsets_topic_replication_factor,
            replica_lag_time_max_ms,
            broker_session_timeout_ms,
            broker_heartbeat_interval_ms,
            auto_leader_rebalance_enable,
            leader_imbalance_check_interval_seconds,
            controller_quorum_election_timeout_ms,
            controller_quorum_fetch_timeout_ms,
            replica_fetch_max_bytes,
            replica_fetch_wait_max_ms,
            num_replica_fetchers,
            listener_security,
            metrics,
            authorizer,
            inter_broker: Arc::new(inter_broker),
            controller_security,
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

    /// The listener clients connect to: the first that is not a controller listener (for a
    /// controller-only node, its first listener). [`Self::listen`] is its address.
    pub fn client_listener(&self) -> &Listener {
        let index = client_listener_index(&self.listeners, &self.controller_listener_names);
        match self.listeners.get(index) {
            Some(listener) => listener,
            None => unreachable!("a BrokerConfig always has a listener"),
        }
    }

    /// The listener the metadata quorum speaks on: the first name of
    /// `controller.listener.names` that this node defines. `None` on a broker-only node and
    /// on a single-node quorum run without one.
    pub fn controller_listener(&self) -> Option<&Listener> {
        self.controller_listener_names
            .iter()
            .find_map(|name| self.listeners.iter().find(|l| &l.name == name))
    }

    /// What `listener` is advertised as (the listener itself when it is not one of ours).
    pub fn advertised<'a>(&'a self, listener: &'a Listener) -> &'a Listener {
        self.listeners
            .iter()
            .position(|l| l.name == listener.name)
            .and_then(|i| self.advertised_listeners.get(i))
            .unwrap_or(listener)
    }

    /// Host and port other brokers replicate from: the advertised address of
    /// `inter.broker.listener.name`, or of the client listener on a controller-only node.
    pub fn inter_broker_advertised(&self) -> (&str, u16) {
        let listener = self
            .listeners
            .iter()
            .find(|l| l.name == self.inter_broker_listener_name)
            .unwrap_or_else(|| self.client_listener());
        let advertised = self.advertised(listener);
        (advertised.host.as_str(), advertised.port)
    }

    /// Each voter's `host:port` by node id, as an openraft membership wants it.
    pub fn voter_addresses(&self) -> BTreeMap<i32, String> {
        self.quorum_voters
            .iter()
            .map(|voter| (voter.id, voter.address()))
            .collect()
    }

    /// Whether this node is one of the quorum's voters.
    pub fn is_voter(&self) -> bool {
        self.quorum_voters.iter().any(|v| v.id == self.node_id)
    }

    /// The broker-wide default of topic setting `min.insync.replicas` (a topic may override
    /// it, as in Kafka).
    pub fn min_insync_replicas(&self) -> i32 {
        self.topic_default("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    /// The broker-wide default of topic setting `unclean.leader.election.enable` (a topic may
    /// override it, as in Kafka).
    pub fn unclean_leader_election_enable(&self) -> bool {
        self.topic_default("unclean.leader.election.enable") == Some("true")
    }

    fn topic_default(&self, name: &str) -> Option<&str> {
        match self.log_defaults.get(name) {
            Some(value) => Some(value.as_str()),
            None => topic_config::def(name).map(|d| d.default),
        }
    }

    /// What `listener` asks of its connections (PLAINTEXT when it is not a client listener).
    pub fn security_of(&self, listener: &str) -> ListenerSecurity {
        self.listener_security
            .get(listener)
            .cloned()
            .unwrap_or_else(|| ListenerSecurity::plaintext(listener))
    }

    /// Records that `listener` (a client listener other than the first) bound `port`, when it
    /// was configured as port 0, so that it is advertised dialable.
    pub fn set_bound_port(&mut self, listener: &str, port: u16) {
        if let Some(index) = self.listeners.iter().position(|l| l.name == listener) {
            if let Some(advertised) = self.advertised_listeners.get_mut(index) {
                if advertised.port == 0 {
                    advertised.port = port;
                }
            }
        }
    }

    /// Records the port the client listener actually bound when it was configured as port 0,
    /// so what is advertised (Metadata, the inter-broker address, a default voter on the
    /// client listener) is dialable.
    pub fn set_bound_client_port(&mut self, port: u16) {
        if self.advertised_port == 0 {
            self.advertised_port = port;
        }
        let index = client_listener_index(&self.listeners, &self.controller_listener_names);
        if let Some(advertised) = self.advertised_listeners.get_mut(index) {
            if advertised.port == 0 {
                advertised.port = port;
            }
        }
        // Only a defaulted voter has port 0 (a given one is rejected), and without a
        // controller listener the default voter is the client listener.
        if self.controller_listener().is_none() {
            let node_id = self.node_id;
            for voter in &mut self.quorum_voters {
                if voter.id == node_id && voter.port == 0 {
                    voter.port = port;
                }
            }
        }
    }
}

/// Index of the client listener: the first non-controller listener, else the first.
fn client_listener_index(listeners: &[Listener], controller_listener_names: &[String]) -> usize {
    listeners
        .iter()
        .position(|l| !controller_listener_names.contains(&l.name))
        .unwrap_or(0)
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

/// A login setting's error (setting, reason) as a [`ConfigError`] naming its value, except a
/// JAAS line's: it holds passwords.
fn login_setting_error(
    settings: &BTreeMap<String, String>,
    (name, reason): crate::security::sasl_login::LoginSettingError,
) -> ConfigError {
    let value = if name.ends_with("sasl.jaas.config") {
        "(hidden)".to_string()
    } else {
        settings.get(&name).cloned().unwrap_or_default()
    };
    ConfigError::InvalidValue {
        value,
        name,
        reason,
    }
}

/// Security of the controller listener (the first of `controller.listener.names`) unless the
/// map says PLAINTEXT: its `ssl.*` and `sasl.*` settings, per listener or global, as for any
/// listener, and the login of `sasl.mechanism.controller.protocol`.
fn resolve_controller_security(
    settings: &BTreeMap<String, String>,
    network: &cluster::ClusterNetwork,
    roles: ProcessRoles,
    authorizer: Option<&AuthorizerConfig>,
) -> Result<Option<Arc<crate::security::controller_security::ControllerSecurity>>, ConfigError> {
    use crate::security::controller_security::{
        ControllerSecurity, SASL_MECHANISM_CONTROLLER_PROTOCOL,
    };
    let Some(name) = network.controller_listener_names.first() else {
        return Ok(None);
    };
    let protocol = network
        .security_protocol_map
        .get(name)
        .copied()
        .unwrap_or(SecurityProtocol::Plaintext);
    if protocol == SecurityProtocol::Plaintext {
        return Ok(None);
    }
    let listener = Listener {
        name: name.clone(),
        host: String::new(),
        port: 0,
    };
    let resolved =
        crate::security::config::resolve(settings, &[&listener], &network.security_protocol_map)?;
    let Some(security) = resolved.get(name) else {
        return Ok(None);
    };
    let login = match &security.sasl {
        None => None,
        Some(sasl) => {
            if sasl
                .enabled_mechanisms
                .contains(&SaslMechanism::OAuthBearer)
            {
                return Err(ConfigError::Unsupported {
                    name: format!("listener.name.{}.sasl.enabled.mechanisms", name.to_lowercase()),
                    value: "OAUTHBEARER".into(),
                    what: "OAUTHBEARER on the controller listener (its members log in with PLAIN or SCRAM)".into(),
                });
            }
            let login = crate::security::sasl_login::SaslLogin::resolve(
                settings,
                name,
                SASL_MECHANISM_CONTROLLER_PROTOCOL,
            )
            .map_err(|e| login_setting_error(settings, e))?;
            // SCRAM credentials live in the metadata the voters have yet to agree on, so a
            // voter could never log in to the others on a new cluster (Kafka bootstraps them
            // with `kafka-storage format --add-scram`, which Millrace does not have).
            if roles.is_controller() && login.mechanism != SaslMechanism::Plain {
                return Err(ConfigError::Unsupported {
                    name: SASL_MECHANISM_CONTROLLER_PROTOCOL.into(),
                    value: login.mechanism.name().into(),
                    what: "SCRAM between the quorum's voters: their SCRAM credentials live in the metadata they replicate to each other; voters log in with PLAIN (broker-only nodes may use SCRAM)".into(),
                });
            }
            Some(login)
        }
    };
    ControllerSecurity::new(security, login, authorizer.cloned())
        .map(|security| Some(Arc::new(security)))
        .map_err(|e| ConfigError::InvalidValue {
            name: format!("listener.name.{}.ssl.*", name.to_lowercase()),
            value: String::new(),
            reason: e.to_string(),
        })
}

/// The authorizer settings: on when `authorizer.class.name` is non-empty; `super.users` and
/// `allow.everyone.if.no.acl.found` without it are refused, since they would do nothing.
fn resolve_authorizer<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<AuthorizerConfig>, ConfigError> {
    let class = get(authorizer::AUTHORIZER_CLASS_NAME)
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let super_users = match get(authorizer::SUPER_USERS) {
        Some(v) => AuthorizerConfig::parse_super_users(v)
            .map_err(|reason| invalid(authorizer::SUPER_USERS, v, reason))?,
        None => Default::default(),
    };
    let allow_everyone = match get(authorizer::ALLOW_EVERYONE_IF_NO_ACL_FOUND) {
        Some(v) => parse_bool(authorizer::ALLOW_EVERYONE_IF_NO_ACL_FOUND, v)?,
        None => false,
    };
    if class.is_none() {
        for name in [
            authorizer::SUPER_USERS,
            authorizer::ALLOW_EVERYONE_IF_NO_ACL_FOUND,
        ] {
            if let Some(v) = get(name) {
                return Err(invalid(
                    name,
                    v,
                    format!(
                        "has no effect without {}",
                        authorizer::AUTHORIZER_CLASS_NAME
                    ),
                ));
            }
        }
        return Ok(None);
    }
    Ok(Some(AuthorizerConfig {
        super_users,
        allow_everyone_if_no_acl_found: allow_everyone,
    }))
}

/// An invalid-value error for setting `name`.
pub(crate) fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
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
