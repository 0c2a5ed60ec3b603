//! JoinGroup: the answer waits until the group's join phase completes.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::access::Access;
use super::{str_bytes, Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::group::state::JoinOutcome;
use crate::group::{GroupError, JoinRequest};
use crate::security::authorizer::{AclOperation, Resource};

/// Handles a JoinGroup request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    let request: JoinGroupRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::Read, Resource::group(&request.group_id)) {
        let response = JoinGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code())
            .with_generation_id(-1)
            .with_protocol_name(Some(str_bytes("")))
            .with_member_id(request.member_id.clone());
        return ctx.respond(&response).map(Reply::Now);
    }
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: ctx.client_host.clone(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        // KIP-394 arrived with v4.
        requires_known_member_id: ctx.version >= 4,
    };
    let outcome = broker.groups.join(join);
    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        let outcome = outcome.await.unwrap_or_else(|_| JoinOutcome {
            error: Some(GroupError::RebalanceInProgress),
            generation_id: -1,
            ..Default::default()
        });
        let members = outcome
            .members
            .into_iter()
            .map(|(member_id, instance, metadata)| {
                JoinGroupResponseMember::default()
                    .with_member_id(str_bytes(member_id))
                    .with_group_instance_id(instance.map(str_bytes))
                    .with_metadata(metadata)
            })
            .collect();
        let response = JoinGroupResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(error_code(outcome.error))
            .with_generation_id(outcome.generation_id)
            .with_protocol_type(outcome.protocol_type.map(str_bytes))
            .with_protocol_name(Some(str_bytes(outcome.protocol_name.unwrap_or_default())))
            .with_leader(str_bytes(outcome.leader))
            .with_member_id(str_bytes(outcome.member_id))
            .with_members(members);
        match ctx.respond(&response) {
            Ok(frame) => Some(frame),
            Err(error) => {
                tracing::error!(%error, "cannot encode JoinGroup response");
                None
            }
        }
    })))
}
