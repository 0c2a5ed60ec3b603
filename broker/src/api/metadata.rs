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
use crate::metadata::{BrokerEndpoint, BrokerRegistration, MetadataImage, TopicImage};

/// The listener clients reach the brokers on (the one Metadata answers with).
pub const CLIENT_LISTENER: &str = "PLAINTEXT";

/// The endpoint of `broker` that clients use: the client listener, or (for a registration
/// without one) its first listener.
pub fn client_endpoint(broker: &BrokerRegistration) -> Option<&BrokerEndpoint> {
    broker
        .endpoint(CLIENT_LISTENER)
        .or_else(|| broker.listeners.first())
}

/// Answers a Metadata request.
pub async fn handle(
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
    let mut topics = Vec::new();
    match requested {
        None => {
            topics.extend(
                broker
                    .controller
                    .with_image(|i| i.topics().map(|t| topic_response(t, i)).collect::<Vec<_>>()),
            );
        }
        Some(list) => {
            for wanted in list {
                match wanted.name {
                    Some(name) => {
                        topics.push(named_topic(broker, name.0, allow_auto_create).await);
                    }
                    None => {
                        let id = wanted.topic_id;
                        let found = broker.controller.with_image(|i| {
                            i.topic_by_id(&id).map(|topic| topic_response(topic, i))
                        });
                        topics.push(match found {
                            Some(topic) => topic,
                            None => error_topic(None, id, ResponseError::UnknownTopicId),
                        });
                    }
                }
            }
        }
    }

    // Fenced brokers are left out, as Kafka does: clients must not connect to them.
    let brokers = broker.controller.with_image(|image| {
        image
            .unfenced_brokers()
            .filter_map(|b| {
                let endpoint = client_endpoint(b)?;
                Some(
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.broker_id))
                        .with_host(str_bytes(endpoint.host.clone()))
                        .with_port(i32::from(endpoint.port))
                        .with_rack(b.rack.clone().map(str_bytes)),
                )
            })
            .collect::<Vec<_>>()
    });
    let response = MetadataResponse::default()
        .with_throttle_time_ms(0)
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(broker.controller.cluster_id())))
        .with_controller_id(BrokerId(broker.controller.controller_id_for_clients()))
        .with_topics(topics);
    ctx.respond(&response)
}

async fn named_topic(
    broker: &Broker,
    name: StrBytes,
    allow_auto_create: bool,
) -> MetadataResponseTopic {
    let existing = broker
        .controller
        .with_image(|i| i.topic(&name).map(|topic| topic_response(topic, i)));
    if let Some(topic) = existing {
        return topic;
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
    match broker.controller.auto_create(&name).await {
        Ok(topic) => broker.controller.with_image(|i| topic_response(&topic, i)),
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

fn topic_response(topic: &TopicImage, image: &MetadataImage) -> MetadataResponseTopic {
    let ids = |brokers: &[i32]| brokers.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let partitions = (0..topic.partitions)
        .map(|index| {
            let partition = MetadataResponsePartition::default().with_partition_index(index);
            let Some(state) = topic.partition(index) else {
                return partition
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1);
            };
            let offline: Vec<i32> = state
                .replicas
                .iter()
                .copied()
                .filter(|r| image.broker(*r).is_none_or(|b| b.fenced))
                .collect();
            let error = if state.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                NONE
            };
            partition
                .with_error_code(error)
                .with_leader_id(BrokerId(state.leader))
                .with_leader_epoch(state.leader_epoch)
                .with_replica_nodes(ids(&state.replicas))
                .with_isr_nodes(ids(&state.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
}
