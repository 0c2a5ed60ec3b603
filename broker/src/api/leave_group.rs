//! LeaveGroup: one member (v0-2) or a batch of members (v3+).

use bytes::Bytes;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a LeaveGroup request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: LeaveGroupRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::Read, Resource::group(&request.group_id)) {
        return ctx.respond(
            &LeaveGroupResponse::default()
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
        );
    }
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let response = match broker.groups.leave(&request.group_id, &members) {
        Err(error) => LeaveGroupResponse::default().with_error_code(error_code(Some(error))),
        Ok(outcomes) if ctx.version >= 3 => {
            let responses = members
                .iter()
                .zip(outcomes)
                .map(|((member_id, instance), outcome)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member_id.clone()))
                        .with_group_instance_id(instance.clone().map(str_bytes))
                        .with_error_code(error_code(outcome.err()))
                })
                .collect();
            LeaveGroupResponse::default()
                .with_error_code(NONE)
                .with_members(responses)
        }
        Ok(outcomes) => LeaveGroupResponse::default()
            .with_error_code(error_code(outcomes.first().copied().and_then(Result::err))),
    };
    ctx.respond(&response.with_throttle_time_ms(0))
}
