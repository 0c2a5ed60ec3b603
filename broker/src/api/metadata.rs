//! Metadata: brokers, topics, partitions and their leaders; auto-creates topics when allowed.

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::controller::{validate_topic_name, TopicError};
use crate::metadata::TopicImage;

/// Answers a Metadata request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: MetadataRequest = ctx.decode(&mut body)?;
    let version = ctx.version;
    // Before v4 there was no flag: the broker setting alone decided.
    let allow_auto_create = broker.config.auto_create_topics_enable
        && (version < 4 || request.allow_auto_topic_creation);

    // v0 had no way to say "all topics" but an empty list.
    let requested = match request.topics {
        Some(list) if !(list.is_empty() && version == 0) => Some(list),
        _ => None,
    };
    let node_id = broker.config.node_id;
    let mut topics = Vec::new();
    match requested {
        None => {
            let all: Vec<TopicImage> = broker
                .controller
                .with_image(|i| i.topics().cloned().collect());
            topics.extend(all.iter().map(|t| topic_response(t, node_id)));
        }
        Some(list) => {
            for wanted in list {
                match wanted.name {
                    Some(name) => {
                        topics.push(named_topic(broker, name.0, allow_auto_create, node_id));
                    }
                    None => {
                        let id = wanted.topic_id;
                        let found = broker
                            .controller
                            .with_image(|i| i.topic_by_id(&id).cloned());
                        topics.push(match found {
                            Some(topic) => topic_response(&topic, node_id),
                            None => error_topic(None, id, ResponseError::UnknownTopicId),
                        });
                    }
                }
            }
        }
    }

    let response = MetadataResponse::default()
        .with_throttle_time_ms(0)
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node_id))
            .with_host(str_bytes(broker.config.advertised_host.clone()))
            .with_port(i32::from(broker.config.advertised_port))])
        .with_cluster_id(Some(str_bytes(broker.controller.cluster_id())))
        .with_controller_id(BrokerId(node_id))
        .with_topics(topics);
    ctx.respond(&response)
}

fn named_topic(
    broker: &Broker,
    name: StrBytes,
    allow_auto_create: bool,
    node_id: i32,
) -> MetadataResponseTopic {
    if let Some(topic) = broker.controller.topic(&name) {
        return topic_response(&topic, node_id);
    }
    if let Err(e) = validate_topic_name(&name) {
        return error_topic(Some(name), Uuid::nil(), (&e).into());
    }
    if !allow_auto_create {
        return error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    }
    match broker.controller.auto_create(&name) {
        Ok(topic) => topic_response(&topic, node_id),
        Err(e @ TopicError::Storage(_)) => {
            tracing::error!(topic = %name, error = %e, "auto-creating topic failed");
            error_topic(Some(name), Uuid::nil(), (&e).into())
        }
        Err(e) => error_topic(Some(name), Uuid::nil(), (&e).into()),
    }
}

fn error_topic(
    name: Option<StrBytes>,
    topic_id: Uuid,
    error: ResponseError,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(TopicName))
        .with_topic_id(topic_id)
}

fn topic_response(topic: &TopicImage, node_id: i32) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_error_code(NONE)
                .with_partition_index(index)
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node_id)])
                .with_isr_nodes(vec![BrokerId(node_id)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
}
