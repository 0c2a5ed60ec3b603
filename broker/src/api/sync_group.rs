//! SyncGroup: the leader hands in the assignment; every member gets its part.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::access::Access;
use super::{str_bytes, Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::group::state::SyncOutcome;
use crate::group::{GroupError, SyncRequest};
use crate::security::authorizer::{AclOperation, Resource};

/// Handles a SyncGroup request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    let request: SyncGroupRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::Read, Resource::group(&request.group_id)) {
        let response = SyncGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
        return ctx.respond(&response).map(Reply::Now);
    }
    let sync = SyncRequest {
        group_id: request.group_id.0.to_string(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let (outcome, write) = broker.groups.sync_and_store(sync);
    let ctx = ctx.clone();
    let broker = broker.clone();
    Ok(Reply::Later(Box::pin(async move {
        // The leader's sync: members are answered once the new generation is durable.
        if let Some(write) = write {
            let result = broker
                .offsets
                .store_group(&broker.groups, &write.group_id, Some(write.value))
                .await;
            broker
                .groups
                .stored(&write.group_id, write.generation, result);
        }
        let outcome = outcome.await.unwrap_or_else(|_| SyncOutcome {
            error: Some(GroupError::RebalanceInProgress),
            ..Default::default()
        });
        // Always a well-formed (possibly empty) assignment blob: some clients fail on null.
        let response = SyncGroupResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(error_code(outcome.error))
            .with_protocol_type(outcome.protocol_type.map(str_bytes))
            .with_protocol_name(outcome.protocol_name.map(str_bytes))
            .with_assignment(outcome.assignment);
        match ctx.respond(&response) {
            Ok(frame) => Some(frame),
            Err(error) => {
                tracing::error!(%error, "cannot encode SyncGroup response");
                None
            }
        }
    })))
}
