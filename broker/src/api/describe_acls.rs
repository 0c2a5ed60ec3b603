//! DescribeAcls: the ACLs a filter selects, from the metadata image (every broker has the
//! same), grouped by resource pattern. Needs DESCRIBE on the cluster.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{
    AccessControlEntry, AclBindingFilter, AclOperation, ResourcePattern,
};

/// Answers a DescribeAcls request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeAclsRequest = ctx.decode(&mut body)?;
    if let Some((error, message)) = Access::new(broker, ctx).acl_api_refusal(AclOperation::Describe)
    {
        return refuse(ctx, error, message);
    }
    let filter = match AclBindingFilter::from_wire(
        request.resource_type_filter,
        request.resource_name_filter.as_deref(),
        request.pattern_type_filter,
        request.principal_filter.as_deref(),
        request.host_filter.as_deref(),
        request.operation,
        request.permission_type,
    ) {
        Ok(filter) => filter,
        Err(e) => return refuse(ctx, ResponseError::InvalidRequest, e.0),
    };
    let mut by_pattern: BTreeMap<ResourcePattern, Vec<AccessControlEntry>> = BTreeMap::new();
    broker.controller.with_image(|image| {
        for (_, acl) in image.acls().matching(&filter) {
            by_pattern
                .entry(acl.pattern.clone())
                .or_default()
                .push(acl.entry.clone());
        }
    });
    let resources = by_pattern
        .into_iter()
        .map(|(pattern, entries)| {
            DescribeAclsResource::default()
                .with_resource_type(pattern.resource_type.code())
                .with_resource_name(str_bytes(pattern.name))
                .with_pattern_type(pattern.pattern_type.code())
                .with_acls(
                    entries
                        .into_iter()
                        .map(|e| {
                            AclDescription::default()
                                .with_principal(str_bytes(e.principal))
                                .with_host(str_bytes(e.host))
                                .with_operation(e.operation.code())
                                .with_permission_type(e.permission.code())
                        })
                        .collect(),
                )
        })
        .collect();
    ctx.respond(
        &DescribeAclsResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(NONE)
            .with_resources(resources),
    )
}

fn refuse(
    ctx: &RequestContext,
    error: ResponseError,
    message: String,
) -> Result<Bytes, RequestError> {
    ctx.respond(
        &DescribeAclsResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message))),
    )
}
