//! DescribeClientQuotas: the quotas of the entities that match a filter, from the metadata
//! image (every broker has the same).

use bytes::Bytes;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::client_quotas::{QuotaEntity, CLIENT_ID, USER};
use crate::security::authorizer::{AclOperation, Resource};

/// A filter component: an entity type and what its name must be.
enum Match {
    /// Exactly this name.
    Exact(String),
    /// The default entity of the type.
    Default,
    /// Any name but the default (Kafka's "specified").
    Any,
}

/// Answers a DescribeClientQuotas request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeClientQuotasRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::DescribeConfigs, Resource::cluster()) {
        let response = DescribeClientQuotasResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(
                "describing quotas needs DESCRIBE_CONFIGS on the cluster",
            )))
            .with_entries(None);
        return ctx.respond(&response);
    }
    let mut components = Vec::with_capacity(request.components.len());
    for c in &request.components {
        let kind = c.entity_type.to_string();
        if kind != USER && kind != CLIENT_ID {
            return refuse(ctx, format!("unknown entity type `{kind}`"));
        }
        let matching = match (c.match_type, &c._match) {
            (0, Some(name)) => Match::Exact(name.to_string()),
            (0, None) => return refuse(ctx, format!("an exact match of `{kind}` needs a name")),
            (1, _) => Match::Default,
            (2, _) => Match::Any,
            (other, _) => return refuse(ctx, format!("unknown match type {other}")),
        };
        components.push((kind, matching));
    }
    let entries = broker.controller.with_image(|image| {
        image
            .client_quotas()
            .iter()
            .filter(|(entity, _)| matches(entity, &components, request.strict))
            .map(|(entity, values)| {
                EntryData::default()
                    .with_entity(
                        entity
                            .parts()
                            .into_iter()
                            .map(|(kind, name)| {
                                EntityData::default()
                                    .with_entity_type(str_bytes(kind))
                                    .with_entity_name(name.map(str_bytes))
                            })
                            .collect(),
                    )
                    .with_values(
                        values
                            .iter()
                            .map(|(key, value)| {
                                ValueData::default()
                                    .with_key(str_bytes(key.clone()))
                                    .with_value(*value)
                            })
                            .collect(),
                    )
            })
            .collect()
    });
    let response = DescribeClientQuotasResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(NONE)
        .with_error_message(None)
        .with_entries(Some(entries));
    ctx.respond(&response)
}

fn part<'a>(entity: &'a QuotaEntity, kind: &str) -> Option<&'a Option<String>> {
    if kind == USER {
        entity.user.as_ref()
    } else {
        entity.client_id.as_ref()
    }
}

/// Whether `entity` matches every component; with `strict`, it may have no other type.
fn matches(entity: &QuotaEntity, components: &[(String, Match)], strict: bool) -> bool {
    let all = components.iter().all(|(kind, matching)| {
        match (part(entity, kind), matching) {
            (Some(Some(name)), Match::Exact(wanted)) => name == wanted,
            (Some(None), Match::Default) => true,
            // Kafka's "any specified name": not the default entity.
            (Some(Some(_)), Match::Any) => true,
            _ => false,
        }
    });
    let types = entity.parts().len();
    all && (!strict || types == components.len())
}

fn refuse(ctx: &RequestContext, message: String) -> Result<Bytes, RequestError> {
    let response = DescribeClientQuotasResponse::default()
        .with_error_code(ResponseError::InvalidRequest.code())
        .with_error_message(Some(str_bytes(message)))
        .with_entries(None);
    ctx.respond(&response)
}
