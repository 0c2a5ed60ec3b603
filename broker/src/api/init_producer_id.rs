//! InitProducerId: a producer id and epoch. An idempotent producer gets a fresh id (or, after
//! KIP-360's epoch bump request, the next epoch); a transactional one gets its transactional
//! id's producer from the transaction coordinator, fencing the previous one.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::access::Access;
use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource, ResourceType};

/// Answers an InitProducerId request.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: InitProducerIdRequest = ctx.decode(&mut body)?;
    let response = InitProducerIdResponse::default().with_throttle_time_ms(0);
    // An empty transactional id means none, as in Kafka.
    let transactional_id = request
        .transactional_id
        .as_ref()
        .map(|id| id.0.to_string())
        .filter(|id| !id.is_empty());
    // A transactional producer needs WRITE on its id; an idempotent one IDEMPOTENT_WRITE on
    // the cluster or WRITE on some topic (KIP-679).
    let access = Access::new(broker, ctx);
    let denied = match &transactional_id {
        Some(id) => (!access.authorize(AclOperation::Write, Resource::transactional_id(id)))
            .then_some(ResponseError::TransactionalIdAuthorizationFailed),
        None => (!access.allowed(AclOperation::IdempotentWrite, Resource::cluster())
            && !access.allowed_on_any(AclOperation::Write, ResourceType::Topic))
        .then_some(ResponseError::ClusterAuthorizationFailed),
    };
    drop(access);
    if let Some(error) = denied {
        return ctx.respond(
            &response
                .with_error_code(error.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
    }
    let response = if let Some(transactional_id) = transactional_id {
        let requested = if ctx.version >= 3 {
            (request.producer_id.0, request.producer_epoch)
        } else {
            (-1, -1)
        };
        match broker
            .transactions
            .init_producer_id(
                broker,
                &transactional_id,
                request.transaction_timeout_ms,
                requested,
            )
            .await
        {
            Ok((producer_id, epoch)) => response
                .with_error_code(NONE)
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Err((error, message)) => {
                tracing::debug!(%transactional_id, %error, %message, "InitProducerId refused");
                response
                    .with_error_code(error.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        }
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
