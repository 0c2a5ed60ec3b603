//! DescribeProducers: the producers a partition leader knows, with their open transactions
//! (what `kafka-transactions.sh find-hanging` reads).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a DescribeProducers request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeProducersRequest = ctx.decode(&mut body)?;
    let access = Access::new(broker, ctx);
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let allowed = access.authorize(AclOperation::Read, Resource::topic(&topic.name));
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let response = PartitionResponse::default().with_partition_index(index);
                    if !allowed {
                        return response
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    let Some(replica) = broker.replicas.replica(&topic.name, index) else {
                        return response
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    if let Err((error, message)) = replica.check_leader(-1) {
                        return response
                            .with_error_code(error.code())
                            .with_error_message(Some(str_bytes(message)));
                    }
                    let producers = replica
                        .log()
                        .active_producers()
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.producer_epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(p.current_txn_start_offset)
                        })
                        .collect();
                    response
                        .with_error_code(NONE)
                        .with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(
        &DescribeProducersResponse::default()
            .with_throttle_time_ms(0)
            .with_topics(topics),
    )
}
