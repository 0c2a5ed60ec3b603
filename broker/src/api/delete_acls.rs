//! DeleteAcls: removes the ACLs each filter selects, through the active controller; each
//! filter's answer lists what it deleted. Needs ALTER on the cluster.

use bytes::Bytes;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclBinding, AclBindingFilter, AclOperation};

/// Answers a DeleteAcls request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DeleteAclsRequest = ctx.decode(&mut body)?;
    let refusal = Access::new(broker, ctx).acl_api_refusal(AclOperation::Alter);
    if let Some((error, message)) = refusal {
        let results = request
            .filters
            .iter()
            .map(|_| failed(error, message.clone()))
            .collect();
        return respond(ctx, results);
    }

    let checked: Vec<Result<AclBindingFilter, String>> = request
        .filters
        .iter()
        .map(|f| {
            AclBindingFilter::from_wire(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
            .map_err(|e| e.0)
        })
        .collect();
    let valid: Vec<AclBindingFilter> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let outcome = if valid.is_empty() {
        Ok(Vec::new())
    } else {
        broker.controller.delete_acls(valid).await
    };
    let results = match outcome {
        Ok(deleted) => {
            let mut deleted = deleted.into_iter();
            checked
                .into_iter()
                .map(|c| match c {
                    Err(message) => failed(ResponseError::InvalidRequest, message),
                    Ok(_) => {
                        let acls = deleted.next().unwrap_or_default();
                        for acl in &acls {
                            tracing::info!(principal = %ctx.session.principal, %acl, "ACL deleted");
                        }
                        DeleteAclsFilterResult::default()
                            .with_error_code(NONE)
                            .with_matching_acls(acls.into_iter().map(matching).collect())
                    }
                })
                .collect()
        }
        Err(error) => {
            let code: ResponseError = (&error).into();
            checked
                .into_iter()
                .map(|c| match c {
                    Err(message) => failed(ResponseError::InvalidRequest, message),
                    Ok(_) => failed(code, error.to_string()),
                })
                .collect()
        }
    };
    respond(ctx, results)
}

fn matching(acl: AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_error_code(NONE)
        .with_resource_type(acl.pattern.resource_type.code())
        .with_resource_name(str_bytes(acl.pattern.name))
        .with_pattern_type(acl.pattern.pattern_type.code())
        .with_principal(str_bytes(acl.entry.principal))
        .with_host(str_bytes(acl.entry.host))
        .with_operation(acl.entry.operation.code())
        .with_permission_type(acl.entry.permission.code())
}

fn failed(error: ResponseError, message: String) -> DeleteAclsFilterResult {
    DeleteAclsFilterResult::default()
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
}

fn respond(
    ctx: &RequestContext,
    results: Vec<DeleteAclsFilterResult>,
) -> Result<Bytes, RequestError> {
    ctx.respond(
        &DeleteAclsResponse::default()
            .with_throttle_time_ms(0)
            .with_filter_results(results),
    )
}
