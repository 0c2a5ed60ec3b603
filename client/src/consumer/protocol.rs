//! The consumer's embedded protocol inside JoinGroup and SyncGroup: subscriptions and
//! assignments as bytes, each prefixed with its version (Kafka's `ConsumerProtocol`).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment;
use kafka_protocol::messages::consumer_protocol_subscription;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::{ClientError, Result};
use crate::offsets::topic_name;
use crate::types::TopicPartition;

/// The subscription version sent: v3 carries owned partitions (which cooperative rebalancing
/// needs) and the generation they were owned in. Readers of older versions ignore the tail.
const SUBSCRIPTION_VERSION: i16 = 3;
/// Highest subscription/assignment version this code decodes; newer ones are read as this one
/// (their extra fields are at the end, as Kafka requires).
const MAX_VERSION: i16 = 3;
/// Assignments are sent as v0, which every client reads (later versions add nothing needed).
const ASSIGNMENT_VERSION: i16 = 0;

/// One member's subscription as the group leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Topics the member subscribed to.
    pub topics: Vec<String>,
    /// Partitions the member owns now (cooperative rebalancing keeps them where possible).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which it owned them (-1 if unknown).
    pub generation: i32,
}

pub(crate) fn encode_subscription(subscription: &Subscription) -> Result<Bytes> {
    let message = ConsumerProtocolSubscription::default()
        .with_topics(
            subscription
                .topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_owned_partitions(group_partitions(
            &subscription.owned_partitions,
            |topic, partitions| {
                consumer_protocol_subscription::TopicPartition::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(partitions)
            },
        ))
        .with_generation_id(subscription.generation);
    encode_versioned(&message, SUBSCRIPTION_VERSION)
}

pub(crate) fn decode_subscription(bytes: &Bytes) -> Result<Subscription> {
    let (version, mut body) = split_version(bytes)?;
    let message = ConsumerProtocolSubscription::decode(&mut body, version)
        .map_err(|e| protocol_error(e.to_string()))?;
    Ok(Subscription {
        topics: message
            .topics
            .iter()
            .map(|t| t.as_str().to_string())
            .collect(),
        owned_partitions: message
            .owned_partitions
            .iter()
            .flat_map(|tp| {
                tp.partitions
                    .iter()
                    .map(|p| TopicPartition::new(tp.topic.0.as_str(), *p))
            })
            .collect(),
        generation: if version >= 2 {
            message.generation_id
        } else {
            -1
        },
    })
}

pub(crate) fn encode_assignment(partitions: &[TopicPartition]) -> Result<Bytes> {
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(group_partitions(
        partitions,
        |topic, partitions| {
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions)
        },
    ));
    encode_versioned(&message, ASSIGNMENT_VERSION)
}

/// Decodes an assignment; an empty blob (a member that got nothing, or a coordinator that sent
/// none) is an empty assignment.
pub(crate) fn decode_assignment(bytes: &Bytes) -> Result<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let (version, mut body) = split_version(bytes)?;
    let message = ConsumerProtocolAssignment::decode(&mut body, version)
        .map_err(|e| protocol_error(e.to_string()))?;
    Ok(message
        .assigned_partitions
        .iter()
        .flat_map(|tp| {
            tp.partitions
                .iter()
                .map(|p| TopicPartition::new(tp.topic.0.as_str(), *p))
        })
        .collect())
}

fn group_partitions<T>(
    partitions: &[TopicPartition],
    make: impl Fn(&str, Vec<i32>) -> T,
) -> Vec<T> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, mut partitions)| {
            partitions.sort_unstable();
            make(topic, partitions)
        })
        .collect()
}

fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| protocol_error(e.to_string()))?;
    Ok(buf.freeze())
}

fn split_version(bytes: &Bytes) -> Result<(i16, Bytes)> {
    if bytes.len() < 2 {
        return Err(protocol_error(
            "consumer protocol blob shorter than its version".to_string(),
        ));
    }
    let mut body = bytes.clone();
    let version = body.get_i16();
    if version < 0 {
        return Err(protocol_error(format!(
            "negative consumer protocol version {version}"
        )));
    }
    Ok((version.min(MAX_VERSION), body))
}

fn protocol_error(reason: String) -> ClientError {
    ClientError::Protocol {
        api: "ConsumerProtocol",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_round_trips() {
        let subscription = Subscription {
            topics: vec!["a".into(), "b".into()],
            owned_partitions: vec![TopicPartition::new("a", 0), TopicPartition::new("a", 2)],
            generation: 7,
        };
        let bytes = encode_subscription(&subscription).unwrap();
        assert_eq!(decode_subscription(&bytes).unwrap(), subscription);
    }

    #[test]
    fn assignment_round_trips_and_empty_blob_is_empty() {
        let partitions = vec![TopicPartition::new("a", 1), TopicPartition::new("b", 0)];
        let bytes = encode_assignment(&partitions).unwrap();
        assert_eq!(decode_assignment(&bytes).unwrap(), partitions);
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
    }
}
