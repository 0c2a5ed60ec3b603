//! DescribeConfigs: topic settings with their sources and synonyms, and the broker's settings.

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::topic_config::{self, ConfigSource};
use crate::security::authorizer::{AclOperation, Resource};

/// Resource type codes of the protocol.
pub const RESOURCE_TOPIC: i8 = 2;
/// The broker resource type.
pub const RESOURCE_BROKER: i8 = 4;

/// Answers a DescribeConfigs request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeConfigsRequest = ctx.decode(&mut body)?;
    let with_docs = ctx.version >= 3 && request.include_documentation;
    let access = Access::new(broker, ctx);
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let wanted = |name: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            // DESCRIBE_CONFIGS on the topic, or on the cluster for a broker's settings.
            let (target, denied) = match resource.resource_type {
                RESOURCE_TOPIC => (
                    Some(Resource::topic(&resource.resource_name)),
                    ResponseError::TopicAuthorizationFailed,
                ),
                RESOURCE_BROKER => (
                    Some(Resource::cluster()),
                    ResponseError::ClusterAuthorizationFailed,
                ),
                _ => (None, ResponseError::InvalidRequest),
            };
            if target.is_some_and(|t| !access.authorize(AclOperation::DescribeConfigs, t)) {
                return result
                    .with_error_code(denied.code())
                    .with_error_message(Some(str_bytes("no DESCRIBE_CONFIGS on the resource")));
            }
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = broker.controller.topic(&resource.resource_name) else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!(
                                "unknown topic `{}`",
                                resource.resource_name
                            ))));
                    };
                    let configs = topic_config::TOPIC_CONFIGS
                        .iter()
                        .filter(|def| wanted(def.name))
                        .map(|def| {
                            let (value, source) = topic_config::effective(
                                def,
                                &broker.config.log_defaults,
                                &topic.configs,
                            );
                            let mut synonyms = Vec::new();
                            if request.include_synonyms {
                                if let Some(v) = topic.configs.get(def.name) {
                                    synonyms.push(synonym(def.name, v, ConfigSource::Topic));
                                }
                                if let Some(v) = broker.config.log_defaults.get(def.name) {
                                    synonyms.push(synonym(
                                        def.broker_name,
                                        v,
                                        ConfigSource::StaticBroker,
                                    ));
                                }
                                synonyms.push(synonym(
                                    def.broker_name,
                                    def.default,
                                    ConfigSource::Default,
                                ));
                            }
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(def.name))
                                .with_value(Some(str_bytes(value)))
                                .with_read_only(false)
                                .with_config_source(source.code())
                                .with_is_sensitive(false)
                                .with_synonyms(synonyms)
                                .with_config_type(def.kind.type_code())
                                .with_documentation(with_docs.then(|| str_bytes(def.doc)))
                        })
                        .collect();
                    result.with_error_code(NONE).with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let ours = broker.config.node_id.to_string();
                    if !resource.resource_name.is_empty() && resource.resource_name.as_str() != ours
                    {
                        return result
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(str_bytes(format!(
                                "this is broker {ours}, not `{}`",
                                resource.resource_name
                            ))));
                    }
                    let configs = broker_settings(broker)
                        .into_iter()
                        .filter(|(name, _, _)| wanted(name))
                        .map(|(name, value, type_code)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(name))
                                .with_value(Some(str_bytes(value)))
                                .with_read_only(true)
                                .with_config_source(ConfigSource::StaticBroker.code())
                                .with_is_sensitive(false)
                                .with_config_type(type_code)
                        })
                        .collect();
                    result.with_error_code(NONE).with_configs(configs)
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!(
                        "resource type {other} is not supported; use 2 (topic) or 4 (broker)"
                    )))),
            }
        })
        .collect();
    let response = DescribeConfigsResponse::default()
        .with_throttle_time_ms(0)
        .with_results(results);
    ctx.respond(&response)
}

fn synonym(name: &str, value: &str, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_source(source.code())
}

/// The cluster settings (`process.roles`, `listeners`, the quorum, replication timings) as
/// (name, value, config type code); `broker.rack` only when set.
fn cluster_settings(c: &crate::config::BrokerConfig) -> Vec<(String, String, i8)> {
    fn joined<T: ToString>(items: &[T]) -> String {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
    let protocol_map: Vec<String> = c
        .listener_security_protocol_map
        .iter()
        .map(|(name, protocol)| format!("{name}:{protocol}"))
        .collect();
    let mut out = vec![
        ("process.roles", c.process_roles.to_string(), 7),
        ("listeners", joined(&c.listeners), 2),
        ("listener.security.protocol.map", protocol_map.join(","), 2),
        (
            "controller.listener.names",
            joined(&c.controller_listener_names),
            2,
        ),
        (
            "inter.broker.listener.name",
            c.inter_broker_listener_name.clone(),
            2,
        ),
        ("controller.quorum.voters", joined(&c.quorum_voters), 7),
        (
            "offsets.topic.replication.factor",
            c.offsets_topic_replication_factor.to_string(),
            4,
        ),
        (
            "replica.lag.time.max.ms",
            c.replica_lag_time_max_ms.to_string(),
            5,
        ),
        (
            "broker.session.timeout.ms",
            c.broker_session_timeout_ms.to_string(),
            3,
        ),
        (
            "broker.heartbeat.interval.ms",
            c.broker_heartbeat_interval_ms.to_string(),
            3,
        ),
        (
            "auto.leader.rebalance.enable",
            c.auto_leader_rebalance_enable.to_string(),
            1,
        ),
        (
            "leader.imbalance.check.interval.seconds",
            c.leader_imbalance_check_interval_seconds.to_string(),
            5,
        ),
        (
            "controller.quorum.election.timeout.ms",
            c.controller_quorum_election_timeout_ms.to_string(),
            3,
        ),
        (
            "controller.quorum.fetch.timeout.ms",
            c.controller_quorum_fetch_timeout_ms.to_string(),
            3,
        ),
        (
            "replica.fetch.max.bytes",
            c.replica_fetch_max_bytes.to_string(),
            3,
        ),
        (
            "replica.fetch.wait.max.ms",
            c.replica_fetch_wait_max_ms.to_string(),
            3,
        ),
        (
            "num.replica.fetchers",
            c.num_replica_fetchers.to_string(),
            3,
        ),
    ];
    if let Some(rack) = &c.broker_rack {
        out.push(("broker.rack", rack.clone(), 2));
    }
    out.into_iter()
        .map(|(name, value, kind)| (name.to_string(), value, kind))
        .collect()
}

/// The broker's effective settings as (name, value, config type code).
fn broker_settings(broker: &Broker) -> Vec<(String, String, i8)> {
    let c = &broker.config;
    let mut out = vec![
        ("node.id".to_string(), c.node_id.to_string(), 3),
        (
            "num.partitions".to_string(),
            c.num_partitions.to_string(),
            3,
        ),
        (
            "default.replication.factor".to_string(),
            c.default_replication_factor.to_string(),
            4,
        ),
        (
            "auto.create.topics.enable".to_string(),
            c.auto_create_topics_enable.to_string(),
            1,
        ),
        (
            "delete.topic.enable".to_string(),
            c.delete_topic_enable.to_string(),
            1,
        ),
        (
            "socket.request.max.bytes".to_string(),
            c.socket_request_max_bytes.to_string(),
            3,
        ),
        (
            "log.retention.check.interval.ms".to_string(),
            c.log_retention_check_interval_ms.to_string(),
            5,
        ),
        ("log.dirs".to_string(), c.data_dir.display().to_string(), 2),
        (
            "advertised.listeners".to_string(),
            c.advertised_listeners
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            2,
        ),
    ];
    out.extend(cluster_settings(c));
    // Where this broker's metrics and health endpoint is bound (consoles find it here).
    if let Some(address) = broker.metrics.endpoint() {
        out.push((
            crate::config::metrics::METRICS_LISTENER.to_string(),
            format!("http://{address}"),
            2,
        ));
    }
    out.push((
        crate::config::metrics::PARTITION_LEVEL_ENABLE.to_string(),
        c.metrics.partition_level.to_string(),
        1,
    ));
    if let Some(ms) = c.metrics.slow_request_ms {
        out.push((
            crate::config::metrics::LOG_SLOW_REQUEST_MS.to_string(),
            ms.to_string(),
            5,
        ));
    }
    for def in topic_config::TOPIC_CONFIGS {
        let value = c
            .log_defaults
            .get(def.name)
            .map_or(def.default, String::as_str);
        out.push((
            def.broker_name.to_string(),
            value.to_string(),
            def.kind.type_code(),
        ));
    }
    out
}
