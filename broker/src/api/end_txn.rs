//! EndTxn: commit or abort the producer's transaction.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::NONE;

/// Answers an EndTxn request.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: EndTxnRequest = ctx.decode(&mut body)?;
    let transactional_id = request.transactional_id.0.to_string();
    let code = match broker
        .transactions
        .end_txn(
            broker,
            &transactional_id,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .await
    {
        Ok(()) => NONE,
        Err((error, message)) => {
            tracing::debug!(%transactional_id, %error, %message, "EndTxn refused");
            error.code()
        }
    };
    let response = EndTxnResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(code);
    ctx.respond(&response)
}
