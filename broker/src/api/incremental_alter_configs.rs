//! IncrementalAlterConfigs: set, delete, append to or subtract from topic settings.

use bytes::Bytes;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::access::Access;
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::controller::ConfigOp;
use crate::security::authorizer::{AclOperation, Resource};

/// Answers an IncrementalAlterConfigs request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: IncrementalAlterConfigsRequest = ctx.decode(&mut body)?;
    let mut responses = Vec::with_capacity(request.resources.len());
    let access = Access::new(broker, ctx);
    for resource in request.resources {
        // ALTER_CONFIGS on the topic, or on the cluster for a broker's settings.
        let denied = match resource.resource_type {
            RESOURCE_TOPIC => (!access.authorize(
                AclOperation::AlterConfigs,
                Resource::topic(&resource.resource_name),
            ))
            .then_some(ResponseError::TopicAuthorizationFailed),
            RESOURCE_BROKER => (!access.authorize(AclOperation::AlterConfigs, Resource::cluster()))
                .then_some(ResponseError::ClusterAuthorizationFailed),
            _ => None,
        };
        if let Some(error) = denied {
            responses.push(
                AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone())
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes("no ALTER_CONFIGS on the resource"))),
            );
            continue;
        }
        responses.push(alter_one(broker, resource, request.validate_only).await);
    }
    let response = IncrementalAlterConfigsResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(responses);
    ctx.respond(&response)
}

/// Changes (or checks) one resource's settings.
async fn alter_one(
    broker: &Broker,
    resource: AlterConfigsResource,
    validate_only: bool,
) -> AlterConfigsResourceResponse {
    let response = AlterConfigsResourceResponse::default()
        .with_resource_type(resource.resource_type)
        .with_resource_name(resource.resource_name.clone());
    let fail = |error: ResponseError, message: String| {
        response
            .clone()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
    };
    match resource.resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return fail(
                ResponseError::InvalidRequest,
                "broker settings are static: change the config file or --override and restart"
                    .to_string(),
            )
        }
        other => {
            return fail(
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )
        }
    }
    let mut ops = Vec::with_capacity(resource.configs.len());
    for config in &resource.configs {
        let value = config.value.as_ref().map(|v| v.to_string());
        let op = match (config.config_operation, value) {
            (0, Some(v)) => ConfigOp::Set(v),
            (1, _) => ConfigOp::Delete,
            (2, Some(v)) => ConfigOp::Append(v),
            (3, Some(v)) => ConfigOp::Subtract(v),
            (0 | 2 | 3, None) => {
                return fail(
                    ResponseError::InvalidConfig,
                    format!("`{}` needs a value", config.name),
                )
            }
            (op, _) => {
                return fail(
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {op}"),
                )
            }
        };
        ops.push((config.name.to_string(), op));
    }
    match broker
        .controller
        .alter_topic_configs(&resource.resource_name, &ops, validate_only)
        .await
    {
        Ok(()) => response.with_error_code(NONE),
        Err(error) => fail((&error).into(), error.to_string()),
    }
}
