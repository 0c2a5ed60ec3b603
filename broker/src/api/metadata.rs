//! Metadata: brokers, topics, partitions and their leaders; auto-creates topics when allowed.

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::controller::{validate_topic_name, TopicError};
use crate::metadata::{BrokerEndpoint, BrokerRegistration, MetadataImage, TopicImage};
use crate::security::authorizer::{AclOperation, Resource};

/// The listener a broker-to-broker call uses when it has no other to go by.
pub const CLIENT_LISTENER: &str = "PLAINTEXT";

/// The endpoint of `broker` on `listener`, the listener the asking client came in on (as in
/// Kafka: a client on the SASL_SSL listener is sent to the other brokers' SASL_SSL
/// listeners); failing that the PLAINTEXT listener, or its first.
pub fn client_endpoint<'a>(
    broker: &'a BrokerRegistration,
    listener: &str,
) -> Option<&'a BrokerEndpoint> {
    broker
        .endpoint(listener)
        .or_else(|| broker.endpoint(CLIENT_LISTENER))
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
    let access = Access::new(broker, ctx);
    let mut topics = Vec::new();
    match requested {
        None => {
            // All topics: those the principal may not DESCRIBE are left out, not refused.
            topics.extend(broker.controller.with_image(|i| {
                i.topics()
                    .filter(|t| access.allowed(AclOperation::Describe, Resource::topic(&t.name)))
                    .map(|t| topic_response(t, i))
                    .collect::<Vec<_>>()
            }));
        }
        Some(list) => {
            for wanted in list {
                match wanted.name {
                    Some(name) => {
                        topics.push(named_topic(broker, &access, name.0, allow_auto_create).await);
                    }
                    None => {
                        let id = wanted.topic_id;
                        let found = broker.controller.with_image(|i| {
                            i.topic_by_id(&id).map(|topic| {
                                let allowed = access.authorize(
                                    AclOperation::Describe,
                                    Resource::topic(&topic.name),
                                );
                                allowed.then(|| topic_response(topic, i))
                            })
                        });
                        topics.push(match found {
                            Some(Some(topic)) => topic,
                            Some(None) => {
                                error_topic(None, id, ResponseError::TopicAuthorizationFailed)
                            }
                            None => error_topic(None, id, ResponseError::UnknownTopicId),
                        });
                    }
                }
            }
        }
    }
    // KIP-430: the operations the principal may do on each topic, when asked (v8+).
    if version >= 8 && request.include_topic_authorized_operations {
        for topic in &mut topics {
            if topic.error_code == NONE {
                if let Some(name) = &topic.name {
                    topic.topic_authorized_operations =
                        access.authorized_operations(Resource::topic(name));
                }
            }
        }
    }

    // Fenced brokers are left out, as Kafka does: clients must not connect to them. A broker
    // in controlled shutdown still lists itself until it stops: it is fenced when its
    // leaderships are gone but still answers, and a client told that the only broker it knows
    // is gone (librdkafka) forgets it and waits minutes before bootstrapping again.
    let node_id = broker.config.node_id;
    let shutting_down = broker.lifecycle.shutting_down();
    let brokers = broker.controller.with_image(|image| {
        image
            .brokers()
            .filter(|b| !b.fenced || (shutting_down && b.broker_id == node_id))
            .filter_map(|b| {
                let endpoint = client_endpoint(b, &ctx.session.listener_name)?;
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
    access: &Access<'_>,
    name: StrBytes,
    allow_auto_create: bool,
) -> MetadataResponseTopic {
    // Without DESCRIBE, whether the topic exists is not revealed.
    if !access.authorize(AclOperation::Describe, Resource::topic(&name)) {
        return error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::TopicAuthorizationFailed,
        );
    }
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
    // Auto-creation needs CREATE on the cluster or on the topic, as CreateTopics does.
    if !access.allowed(AclOperation::Create, Resource::cluster())
        && !access.authorize(AclOperation::Create, Resource::topic(&name))
    {
        return error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::TopicAuthorizationFailed,
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
