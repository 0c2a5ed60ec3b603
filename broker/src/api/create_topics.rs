//! CreateTopics.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::controller::NewTopic;
use crate::metadata::topic_config;
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a CreateTopics request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: CreateTopicsRequest = ctx.decode(&mut body)?;
    let mut seen = HashSet::new();
    let duplicated: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();

    // CREATE on the cluster allows every topic; otherwise CREATE on each topic.
    let access = Access::new(broker, ctx);
    let cluster_create = access.allowed(AclOperation::Create, Resource::cluster());
    let denied: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| {
            !cluster_create && !access.authorize(AclOperation::Create, Resource::topic(&t.name))
        })
        .map(|t| t.name.0.to_string())
        .collect();
    drop(access);

    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        if denied.contains(&name) {
            results.push(
                result
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(format!(
                        "no CREATE on topic `{name}` or on the cluster"
                    )))),
            );
            continue;
        }
        if duplicated.contains(&name) {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!(
                        "topic `{name}` appears more than once in the request"
                    )))),
            );
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut null_config = None;
        for config in &topic.configs {
            match &config.value {
                Some(value) => {
                    configs.insert(config.name.to_string(), value.to_string());
                }
                None => null_config = Some(config.name.to_string()),
            }
        }
        if let Some(key) = null_config {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidConfig.code())
                    .with_error_message(Some(str_bytes(format!(
                        "config `{key}` has a null value"
                    )))),
            );
            continue;
        }
        let new = NewTopic {
            name: name.clone(),
            partitions: (topic.num_partitions != -1).then_some(topic.num_partitions),
            replication_factor: (topic.replication_factor != -1)
                .then_some(topic.replication_factor),
            assignments: topic
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs,
        };
        match broker
            .controller
            .create_topic(new, request.validate_only)
            .await
        {
            Ok(created) => {
                let mut result = result
                    .with_error_code(NONE)
                    .with_topic_id(created.topic_id)
                    .with_num_partitions(created.partitions)
                    .with_replication_factor(
                        created
                            .partition(0)
                            .map_or(-1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX)),
                    );
                if ctx.version >= 5 {
                    let configs = topic_config::TOPIC_CONFIGS
                        .iter()
                        .map(|def| {
                            let (value, source) = topic_config::effective(
                                def,
                                &broker.config.log_defaults,
                                &created.configs,
                            );
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(def.name))
                                .with_value(Some(str_bytes(value)))
                                .with_read_only(false)
                                .with_config_source(source.code())
                                .with_is_sensitive(false)
                        })
                        .collect();
                    result = result.with_configs(Some(configs));
                }
                results.push(result);
            }
            Err(error) => {
                tracing::info!(topic = %name, %error, "create topic refused");
                results.push(
                    result
                        .with_error_code(ResponseError::from(&error).code())
                        .with_error_message(Some(str_bytes(error.to_string()))),
                );
            }
        }
    }
    let response = CreateTopicsResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(results);
    ctx.respond(&response)
}
