//! IncrementalAlterConfigs: set, delete, append to or subtract from topic settings.

use bytes::Bytes;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::controller::ConfigOp;

/// Answers an IncrementalAlterConfigs request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: IncrementalAlterConfigsRequest = ctx.decode(&mut body)?;
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
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
                RESOURCE_BROKER => return fail(
                    ResponseError::InvalidRequest,
                    "broker settings are static: change the config file or --override and restart"
                        .to_string(),
                ),
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
            match broker.controller.alter_topic_configs(
                &resource.resource_name,
                &ops,
                request.validate_only,
            ) {
                Ok(()) => response.with_error_code(NONE),
                Err(error) => fail((&error).into(), error.to_string()),
            }
        })
        .collect();
    let response = IncrementalAlterConfigsResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(responses);
    ctx.respond(&response)
}
