//! DeleteTopics, by name (v1-5) or by name or id (v6).

use bytes::Bytes;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};

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
    let mut responses = Vec::with_capacity(targets.len());
    for (name, topic_id) in targets {
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
