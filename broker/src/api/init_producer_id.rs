//! InitProducerId: a producer id and epoch for an idempotent producer. Transactional ids are
//! refused until transactions exist.

use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};

/// Answers an InitProducerId request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: InitProducerIdRequest = ctx.decode(&mut body)?;
    let response = InitProducerIdResponse::default().with_throttle_time_ms(0);
    let response = if request.transactional_id.is_some() {
        response
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    } else if request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        // KIP-360: an idempotent producer that lost track of its sequences bumps its epoch.
        match request.producer_epoch.checked_add(1) {
            Some(epoch) => response
                .with_error_code(NONE)
                .with_producer_id(request.producer_id)
                .with_producer_epoch(epoch),
            None => fresh(broker, response).await,
        }
    } else {
        fresh(broker, response).await
    };
    ctx.respond(&response)
}

async fn fresh(broker: &Broker, response: InitProducerIdResponse) -> InitProducerIdResponse {
    match broker.producer_ids.next_id(&broker.controller).await {
        Ok(id) => response
            .with_error_code(NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::error!(%error, "cannot allocate a producer id");
            response
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
