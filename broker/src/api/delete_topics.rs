//! DeleteTopics, by name (v1-5) or by name or id (v6).

use bytes::Bytes;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a DeleteTopics request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DeleteTopicsRequest = ctx.decode(&mut body)?;
    let targets: Vec<(Option<TopicName>, Uuid)> = if ctx.version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let access = Access::new(broker, ctx);
    let mut responses = Vec::with_capacity(targets.len());
    for (name, topic_id) in targets {
        // DELETE on the topic; by id, the name is looked up first (and not revealed when
        // the principal may not delete it).
        let target_name = match &name {
            Some(name) => Some(name.0.to_string()),
            None => broker
                .controller
                .with_image(|i| i.topic_by_id(&topic_id).map(|t| t.name.clone())),
        };
        let allowed = target_name
            .as_deref()
            .is_none_or(|n| access.authorize(AclOperation::Delete, Resource::topic(n)));
        if !allowed {
            responses.push(
                DeletableTopicResult::default()
                    .with_name(name)
                    .with_topic_id(topic_id)
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes("no DELETE on the topic"))),
            );
            continue;
        }
        let outcome = match &name {
            Some(name) => broker
                .controller
                .delete_topic(&name.0)
                .await
                .map(|id| (name.clone(), id)),
            None => broker
                .controller
                .delete_topic_by_id(topic_id)
                .await
                .map(|n| (TopicName(str_bytes(n)), topic_id)),
        };
        responses.push(match outcome {
            Ok((name, id)) => DeletableTopicResult::default()
                .with_name(Some(name))
                .with_topic_id(id)
                .with_error_code(NONE),
            Err(error) => DeletableTopicResult::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_error_code(ResponseError::from(&error).code())
                .with_error_message(Some(str_bytes(error.to_string()))),
        });
    }
    let response = DeleteTopicsResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(responses);
    ctx.respond(&response)
}
