//! ListTransactions: the transactional ids this broker coordinates, filtered by state,
//! producer id and (v1+) how long they have been open.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::access::Access;
use super::{now_ms, str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::NONE;
use crate::security::authorizer::{AclOperation, Resource};
use crate::txn::TxnState;

const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

/// Answers a ListTransactions request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: ListTransactionsRequest = ctx.decode(&mut body)?;
    broker.transactions.sync_coordination(broker);
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let access = Access::new(broker, ctx);
    let states = broker
        .transactions
        .transactions()
        .into_iter()
        // Only the transactions the principal may DESCRIBE, as in Kafka.
        .filter(|m| {
            access.allowed(
                AclOperation::Describe,
                Resource::transactional_id(&m.transactional_id),
            )
        })
        .filter(|m| {
            request.state_filters.is_empty()
                || request
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == m.state.name())
        })
        .filter(|m| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .contains(&ProducerId(m.producer_id))
        })
        // v1: only transactions open longer than the filter (-1: all).
        .filter(|m| {
            ctx.version < 1
                || request.duration_filter < 0
                || (m.state == TxnState::Ongoing
                    && now.saturating_sub(m.start_ms) > request.duration_filter)
        })
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ctx.respond(
        &ListTransactionsResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(NONE)
            .with_unknown_state_filters(unknown)
            .with_transaction_states(states),
    )
}
