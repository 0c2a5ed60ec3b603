//! AlterClientQuotas: set or remove quotas of users and client ids. The active controller
//! validates each entity's changes and records them in the metadata log, so every broker
//! enforces them.

use bytes::Bytes;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::client_quotas::QuotaEntity;
use crate::metadata::controller::quotas::QuotaAlteration;
use crate::security::authorizer::{AclOperation, Resource};

/// Answers an AlterClientQuotas request through the active controller.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: AlterClientQuotasRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::AlterConfigs, Resource::cluster()) {
        let entries = request
            .entries
            .iter()
            .map(|e| {
                refused(
                    e,
                    ResponseError::ClusterAuthorizationFailed,
                    "changing quotas needs ALTER_CONFIGS on the cluster",
                )
            })
            .collect();
        return ctx.respond(&AlterClientQuotasResponse::default().with_entries(entries));
    }
    // Entities that do not parse are answered at once; the rest go to the controller.
    let mut answers: Vec<Option<EntryData>> = Vec::with_capacity(request.entries.len());
    let mut alterations = Vec::new();
    for entry in &request.entries {
        let parts: Vec<(String, Option<String>)> = entry
            .entity
            .iter()
            .map(|e| {
                (
                    e.entity_type.to_string(),
                    e.entity_name.as_ref().map(ToString::to_string),
                )
            })
            .collect();
        let wire_entity: Vec<EntityData> = entry
            .entity
            .iter()
            .map(|e| {
                EntityData::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect();
        match QuotaEntity::from_parts(&parts) {
            Ok(entity) => {
                alterations.push(QuotaAlteration {
                    entity,
                    ops: entry
                        .ops
                        .iter()
                        .map(|op| (op.key.to_string(), (!op.remove).then_some(op.value)))
                        .collect(),
                });
                answers.push(None);
            }
            Err(message) => answers.push(Some(
                EntryData::default()
                    .with_entity(wire_entity)
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(message))),
            )),
        }
    }
    let results = broker
        .controller
        .alter_client_quotas(alterations, request.validate_only)
        .await;
    let mut results = match results {
        Ok(results) => results
            .into_iter()
            .map(|(entity, error)| entry(&entity, error))
            .collect::<Vec<_>>()
            .into_iter(),
        Err(error) => {
            let code: ResponseError = (&error).into();
            let message = error.to_string();
            request
                .entries
                .iter()
                .zip(&answers)
                .filter(|(_, answered)| answered.is_none())
                .map(|(e, _)| refused(e, code, &message))
                .collect::<Vec<_>>()
                .into_iter()
        }
    };
    let entries = answers
        .into_iter()
        .filter_map(|answered| answered.or_else(|| results.next()))
        .collect();
    let response = AlterClientQuotasResponse::default()
        .with_throttle_time_ms(0)
        .with_entries(entries);
    ctx.respond(&response)
}

/// An entry of the request answered with `error`.
fn refused(
    entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
    error: ResponseError,
    message: &str,
) -> EntryData {
    EntryData::default()
        .with_entity(
            entry
                .entity
                .iter()
                .map(|p| {
                    EntityData::default()
                        .with_entity_type(p.entity_type.clone())
                        .with_entity_name(p.entity_name.clone())
                })
                .collect(),
        )
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
}

fn entry(entity: &QuotaEntity, error: Option<(i16, String)>) -> EntryData {
    let data = EntryData::default().with_entity(
        entity
            .parts()
            .into_iter()
            .map(|(kind, name)| {
                EntityData::default()
                    .with_entity_type(str_bytes(kind))
                    .with_entity_name(name.map(str_bytes))
            })
            .collect(),
    );
    match error {
        None => data.with_error_code(NONE).with_error_message(None),
        Some((code, message)) => data
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message))),
    }
}
