//! DescribeGroups: state, protocol and members with their assignments.

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a DescribeGroups request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeGroupsRequest = ctx.decode(&mut body)?;
    let access = Access::new(broker, ctx);
    let groups = request
        .groups
        .iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            let group = Resource::group(group_id);
            if !access.authorize(AclOperation::Describe, group) {
                return described
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code())
                    .with_authorized_operations(i32::MIN);
            }
            // KIP-430 (v3+): what the principal may do on the group, when asked.
            let authorized_operations = if ctx.version >= 3 && request.include_authorized_operations
            {
                access.authorized_operations(group)
            } else {
                i32::MIN
            };
            let described = described.with_authorized_operations(authorized_operations);
            let Some(description) = broker.groups.describe(group_id) else {
                // Kafka answers an unknown group as Dead; v6 adds an explicit error.
                let dead = described.with_group_state(str_bytes("Dead"));
                return if ctx.version >= 6 {
                    dead.with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(format!(
                            "group `{}` does not exist",
                            group_id.0
                        ))))
                } else {
                    dead.with_error_code(NONE)
                };
            };
            let members = description
                .members
                .into_iter()
                .map(|m| {
                    let member = DescribedGroupMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_client_id(str_bytes(m.client_id))
                        .with_client_host(str_bytes(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if ctx.version >= 4 {
                        member.with_group_instance_id(m.group_instance_id.map(str_bytes))
                    } else {
                        member
                    }
                })
                .collect();
            described
                .with_error_code(NONE)
                .with_group_state(str_bytes(description.state))
                .with_protocol_type(str_bytes(description.protocol_type))
                .with_protocol_data(str_bytes(description.protocol))
                .with_members(members)
        })
        .collect();
    ctx.respond(
        &DescribeGroupsResponse::default()
            .with_throttle_time_ms(0)
            .with_groups(groups),
    )
}
