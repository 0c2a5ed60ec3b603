//! Client quotas for operators (Kafka's `kafka-configs.sh --entity-type users|clients`):
//! AlterClientQuotas and DescribeClientQuotas, sent to the active controller and to any broker.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;

use super::Admin;
use crate::error::{check, Result};

/// One part of a quota entity: `user` or `client-id`, and a name (`None`: the default).
pub type QuotaEntityPart = (String, Option<String>);

/// One entity's quota changes: (key, new value or `None` to remove).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaAlteration {
    /// The entity: one or two parts.
    pub entity: Vec<QuotaEntityPart>,
    /// The changes.
    pub ops: Vec<(String, Option<f64>)>,
}

/// A filter component of [`Admin::describe_client_quotas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaMatch {
    /// Entities of this type with exactly this name.
    Exact(String, String),
    /// The default entity of this type.
    Default(String),
    /// Entities of this type with any name but the default.
    Any(String),
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

impl Admin {
    /// Sets and removes client quotas; an entity refused by the controller is an error naming it.
    pub async fn alter_client_quotas(&self, alterations: &[QuotaAlteration]) -> Result<()> {
        let request = AlterClientQuotasRequest::default().with_entries(
            alterations
                .iter()
                .map(|a| {
                    EntryData::default()
                        .with_entity(
                            a.entity
                                .iter()
                                .map(|(kind, name)| {
                                    EntityData::default()
                                        .with_entity_type(s(kind))
                                        .with_entity_name(name.as_deref().map(s))
                                })
                                .collect(),
                        )
                        .with_ops(
                            a.ops
                                .iter()
                                .map(|(key, value)| {
                                    OpData::default()
                                        .with_key(s(key))
                                        .with_value(value.unwrap_or(0.0))
                                        .with_remove(value.is_none())
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        let response = self.send_to_controller(&request).await?;
        for entry in response.entries {
            let entity: Vec<String> = entry
                .entity
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e.entity_type,
                        e.entity_name.as_ref().map_or("<default>", |n| n.as_str())
                    )
                })
                .collect();
            check(
                "AlterClientQuotas",
                || entity.join(", "),
                entry.error_code,
                entry.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// The quotas of every entity matching all of `filter` (with `strict`, entities with no
    /// other part), as (entity parts, key -> value).
    pub async fn describe_client_quotas(
        &self,
        filter: &[QuotaMatch],
        strict: bool,
    ) -> Result<Vec<(Vec<QuotaEntityPart>, BTreeMap<String, f64>)>> {
        let request = DescribeClientQuotasRequest::default()
            .with_strict(strict)
            .with_components(
                filter
                    .iter()
                    .map(|m| match m {
                        QuotaMatch::Exact(kind, name) => ComponentData::default()
                            .with_entity_type(s(kind))
                            .with_match_type(0)
                            .with_match(Some(s(name))),
                        QuotaMatch::Default(kind) => ComponentData::default()
                            .with_entity_type(s(kind))
                            .with_match_type(1)
                            .with_match(None),
                        QuotaMatch::Any(kind) => ComponentData::default()
                            .with_entity_type(s(kind))
                            .with_match_type(2)
                            .with_match(None),
                    })
                    .collect(),
            );
        let response = self.send_any(&request).await?;
        check(
            "DescribeClientQuotas",
            || "the filter".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        Ok(response
            .entries
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    e.entity
                        .into_iter()
                        .map(|p| {
                            (
                                p.entity_type.to_string(),
                                p.entity_name.map(|n| n.to_string()),
                            )
                        })
                        .collect(),
                    e.values
                        .into_iter()
                        .map(|v| (v.key.to_string(), v.value))
                        .collect(),
                )
            })
            .collect())
    }
}
