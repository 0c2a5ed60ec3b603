//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use bytes::Bytes;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::access::Access;
use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a Heartbeat request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: HeartbeatRequest = ctx.decode(&mut body)?;
    let outcome = if Access::new(broker, ctx)
        .authorize(AclOperation::Read, Resource::group(&request.group_id))
    {
        broker
            .groups
            .heartbeat(
                &request.group_id,
                request.generation_id,
                &request.member_id,
                request.group_instance_id.as_deref(),
            )
            .map_err(ResponseError::from)
    } else {
        Err(ResponseError::GroupAuthorizationFailed)
    };
    ctx.respond(
        &HeartbeatResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(error_code(outcome.err())),
    )
}
