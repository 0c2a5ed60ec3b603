//! CreatePartitions: grow a topic.

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a CreatePartitions request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: CreatePartitionsRequest = ctx.decode(&mut body)?;
    let access = Access::new(broker, ctx);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let current = broker
            .controller
            .topic(&topic.name)
            .map_or(0, |t| t.partitions);
        let assignments: Vec<(i32, Vec<i32>)> = topic
            .assignments
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let index = current + i32::try_from(i).unwrap_or(i32::MAX);
                (index, a.broker_ids.iter().map(|b| b.0).collect())
            })
            .collect();
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        if !access.authorize(AclOperation::Alter, Resource::topic(&topic.name)) {
            results.push(
                result
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes("no ALTER on the topic"))),
            );
            continue;
        }
        let outcome = broker
            .controller
            .create_partitions(
                &topic.name,
                topic.count,
                &assignments,
                request.validate_only,
            )
            .await;
        results.push(match outcome {
            Ok(()) => result.with_error_code(NONE),
            Err(error) => result
                .with_error_code(ResponseError::from(&error).code())
                .with_error_message(Some(str_bytes(error.to_string()))),
        });
    }
    let response = CreatePartitionsResponse::default()
        .with_throttle_time_ms(0)
        .with_results(results);
    ctx.respond(&response)
}
