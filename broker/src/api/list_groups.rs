//! ListGroups, with the state (v4) and type (v5) filters.

use bytes::Bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::NONE;
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a ListGroups request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: ListGroupsRequest = ctx.decode(&mut body)?;
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    // DESCRIBE on the cluster lists every group; otherwise those the principal may DESCRIBE.
    let access = Access::new(broker, ctx);
    let all = access.allowed(AclOperation::Describe, Resource::cluster());
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(id, _, _)| all || access.allowed(AclOperation::Describe, Resource::group(id)))
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.to_lowercase()))
        // Every group here is a classic group.
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, protocol_type, state)| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            let listed = if ctx.version >= 4 {
                listed.with_group_state(str_bytes(state))
            } else {
                listed
            };
            if ctx.version >= 5 {
                listed.with_group_type(str_bytes("classic"))
            } else {
                listed
            }
        })
        .collect();
    ctx.respond(
        &ListGroupsResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(NONE)
            .with_groups(groups),
    )
}
