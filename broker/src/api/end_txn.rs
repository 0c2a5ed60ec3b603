//! EndTxn: commit or abort the producer's transaction. v5 is transaction version 2 (KIP-890):
//! the transaction ends at a new epoch, which the answer carries.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::access::Access;
use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers an EndTxn request.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: EndTxnRequest = ctx.decode(&mut body)?;
    let transactional_id = request.transactional_id.0.to_string();
    let allowed = Access::new(broker, ctx).authorize(
        AclOperation::Write,
        Resource::transactional_id(&transactional_id),
    );
    let outcome = if !allowed {
        Err(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else {
        broker
            .transactions
            .end_txn(
                broker,
                &transactional_id,
                request.producer_id.0,
                request.producer_epoch,
                request.committed,
                ctx.version >= 5,
            )
            .await
            .map_err(|(error, message)| {
                tracing::debug!(%transactional_id, %error, %message, "EndTxn refused");
                error.code()
            })
    };
    let (code, (producer_id, producer_epoch)) = match outcome {
        Ok(continuation) => (NONE, continuation),
        Err(code) => (code, (-1, -1)),
    };
    let response = EndTxnResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(code)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch);
    ctx.respond(&response)
}
