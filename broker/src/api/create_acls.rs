//! CreateAcls: new ACLs, checked here and recorded by the active controller in the metadata
//! log, so every broker enforces them. Needs ALTER on the cluster.

use bytes::Bytes;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclBinding, AclOperation};

/// Answers a CreateAcls request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: CreateAclsRequest = ctx.decode(&mut body)?;
    let refusal = Access::new(broker, ctx).acl_api_refusal(AclOperation::Alter);
    if let Some((error, message)) = refusal {
        let results = request
            .creations
            .iter()
            .map(|_| result(Some((error, message.clone()))))
            .collect();
        return respond(ctx, results);
    }

    let checked: Vec<Result<AclBinding, String>> = request
        .creations
        .iter()
        .map(|c| {
            AclBinding::from_wire(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
            .map_err(|e| e.0)
        })
        .collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let outcome = if valid.is_empty() {
        Ok(())
    } else {
        broker.controller.create_acls(valid.clone()).await
    };
    if outcome.is_ok() {
        for acl in &valid {
            tracing::info!(principal = %ctx.session.principal, %acl, "ACL created");
        }
    }
    let results = checked
        .into_iter()
        .map(|c| match (c, &outcome) {
            (Err(message), _) => result(Some((ResponseError::InvalidRequest, message))),
            (Ok(_), Ok(())) => result(None),
            (Ok(_), Err(error)) => result(Some((error.into(), error.to_string()))),
        })
        .collect();
    respond(ctx, results)
}

fn result(error: Option<(ResponseError, String)>) -> AclCreationResult {
    match error {
        None => AclCreationResult::default().with_error_code(NONE),
        Some((error, message)) => AclCreationResult::default()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message))),
    }
}

fn respond(ctx: &RequestContext, results: Vec<AclCreationResult>) -> Result<Bytes, RequestError> {
    ctx.respond(
        &CreateAclsResponse::default()
            .with_throttle_time_ms(0)
            .with_results(results),
    )
}
