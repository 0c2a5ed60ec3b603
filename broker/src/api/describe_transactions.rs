//! DescribeTransactions: the state of transactional ids this broker coordinates.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a DescribeTransactions request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeTransactionsRequest = ctx.decode(&mut body)?;
    let access = Access::new(broker, ctx);
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let state = TransactionState::default().with_transactional_id(id.clone());
            let described =
                if access.authorize(AclOperation::Describe, Resource::transactional_id(&id.0)) {
                    broker.transactions.describe(broker, &id.0)
                } else {
                    Err((
                        ResponseError::TransactionalIdAuthorizationFailed,
                        String::new(),
                    ))
                };
            match described {
                Err((error, _)) => state
                    .with_error_code(error.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
                Ok(meta) => {
                    let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                    for (topic, partition) in &meta.partitions {
                        topics.entry(topic.clone()).or_default().push(*partition);
                    }
                    state
                        .with_error_code(NONE)
                        .with_transaction_state(str_bytes(meta.state.name()))
                        .with_transaction_timeout_ms(meta.timeout_ms)
                        .with_transaction_start_time_ms(meta.start_ms)
                        .with_producer_id(ProducerId(meta.producer_id))
                        .with_producer_epoch(meta.producer_epoch)
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(t, ps)| {
                                    TopicData::default()
                                        .with_topic(TopicName(str_bytes(t)))
                                        .with_partitions(ps)
                                })
                                .collect(),
                        )
                }
            }
        })
        .collect();
    ctx.respond(
        &DescribeTransactionsResponse::default()
            .with_throttle_time_ms(0)
            .with_transaction_states(states),
    )
}
