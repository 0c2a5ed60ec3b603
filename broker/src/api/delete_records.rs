//! DeleteRecords: raise a partition's log start offset.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, TopicName};

use super::access::Access;
use super::{Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::replica::{Partition, Refusal};
use crate::security::authorizer::{AclOperation, Resource};

/// A partition's deletion on the leader: the replica, the offset, and the leader epoch.
type Deleted = Result<(Arc<Partition>, i64, i32), Refusal>;

/// Answers a DeleteRecords request: the leader moves its log start offset at once, and the
/// answer waits (up to the request's timeout) until the in-sync followers have moved theirs,
/// as Kafka's does, so that a next leader does not serve the deleted records again.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    let request: DeleteRecordsRequest = ctx.decode(&mut body)?;
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let access = Access::new(broker, ctx);
    let topics: Vec<(TopicName, Vec<(i32, Deleted)>)> = request
        .topics
        .into_iter()
        .map(|topic| {
            let allowed = access.authorize(AclOperation::Delete, Resource::topic(&topic.name));
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let replica = broker.replicas.replica(&topic.name, p.partition_index);
                    let deleted = match replica {
                        _ if !allowed => Err((
                            ResponseError::TopicAuthorizationFailed,
                            String::from("no DELETE on the topic"),
                        )),
                        None => Err((
                            ResponseError::UnknownTopicOrPartition,
                            String::from("no such partition here"),
                        )),
                        Some(replica) => replica
                            .delete_records_as_leader(p.offset)
                            .map(|(offset, epoch)| (replica, offset, epoch)),
                    };
                    (p.partition_index, deleted)
                })
                .collect();
            (topic.name, partitions)
        })
        .collect();

    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        let mut results = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let topic = &name;
            let waits = partitions.into_iter().map(|(index, deleted)| async move {
                let result = DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_low_watermark(-1);
                let outcome = match deleted {
                    Ok((replica, offset, epoch)) => {
                        replica.wait_low_watermark(offset, epoch, timeout).await
                    }
                    Err(refusal) => Err(refusal),
                };
                match outcome {
                    Ok(low_watermark) => result
                        .with_error_code(NONE)
                        .with_low_watermark(low_watermark),
                    Err((error, message)) => {
                        if error != ResponseError::NotLeaderOrFollower {
                            tracing::debug!(topic = %topic.0, partition = index, %message, "delete records failed");
                        }
                        result.with_error_code(error.code())
                    }
                }
            });
            let partitions = join_all(waits).await;
            results.push(
                DeleteRecordsTopicResult::default()
                    .with_name(name)
                    .with_partitions(partitions),
            );
        }
        let response = DeleteRecordsResponse::default()
            .with_throttle_time_ms(0)
            .with_topics(results);
        match ctx.respond(&response) {
            Ok(frame) => Some(frame),
            Err(error) => {
                tracing::error!(%error, "cannot encode delete records response");
                None
            }
        }
    })))
}
