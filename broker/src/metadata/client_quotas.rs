//! Client quotas as the metadata keeps them (Kafka's ClientQuotaRecord, KIP-546): an entity
//! (a user, a client id, or a user and a client id; either may be the default) and its
//! limits (`producer_byte_rate`, `consumer_byte_rate`, `request_percentage`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `producer_byte_rate`: bytes per second a quota entity may produce.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
/// `consumer_byte_rate`: bytes per second a quota entity may fetch.
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
/// `request_percentage`: the share of one request handler's time (in percent) per window.
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
/// The quota keys this broker accepts.
pub const QUOTA_KEYS: &[&str] = &[PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];

/// Who a quota applies to. `Some(None)` is the default entity of that type (`<default>`),
/// `None` that the type is not part of the entity. Stored as its (type, name) parts, as the
/// quota APIs carry it (a nested option would not survive JSON: `Some(None)` reads back as
/// `None`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(
    try_from = "Vec<(String, Option<String>)>",
    into = "Vec<(String, Option<String>)>"
)]
pub struct QuotaEntity {
    /// The user (`user` entity type).
    pub user: Option<Option<String>>,
    /// The client id (`client-id` entity type).
    pub client_id: Option<Option<String>>,
}

/// Kafka's entity type of a user.
pub const USER: &str = "user";
/// Kafka's entity type of a client id.
pub const CLIENT_ID: &str = "client-id";

impl QuotaEntity {
    /// An entity from its (type, name) parts as the quota APIs send them (a null name is the
    /// default); an unknown or repeated type, or no part at all, is an error.
    pub fn from_parts(parts: &[(String, Option<String>)]) -> Result<QuotaEntity, String> {
        let mut entity = QuotaEntity {
            user: None,
            client_id: None,
        };
        for (kind, name) in parts {
            let slot = match kind.as_str() {
                USER => &mut entity.user,
                CLIENT_ID => &mut entity.client_id,
                other => {
                    return Err(format!(
                        "unknown entity type `{other}` (known: {USER}, {CLIENT_ID}; ip quotas are not supported)"
                    ))
                }
            };
            if slot.is_some() {
                return Err(format!("entity type `{kind}` appears twice"));
            }
            *slot = Some(name.clone());
        }
        if entity.user.is_none() && entity.client_id.is_none() {
            return Err("an entity needs a user, a client id, or both".into());
        }
        Ok(entity)
    }

    /// The (type, name) parts, user first.
    pub fn parts(&self) -> Vec<(&'static str, Option<String>)> {
        let mut parts = Vec::with_capacity(2);
        if let Some(user) = &self.user {
            parts.push((USER, user.clone()));
        }
        if let Some(client_id) = &self.client_id {
            parts.push((CLIENT_ID, client_id.clone()));
        }
        parts
    }
}

impl TryFrom<Vec<(String, Option<String>)>> for QuotaEntity {
    type Error = String;

    fn try_from(parts: Vec<(String, Option<String>)>) -> Result<Self, String> {
        QuotaEntity::from_parts(&parts)
    }
}

impl From<QuotaEntity> for Vec<(String, Option<String>)> {
    fn from(entity: QuotaEntity) -> Self {
        entity
            .parts()
            .into_iter()
            .map(|(kind, name)| (kind.to_string(), name))
            .collect()
    }
}

impl fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |name: &Option<String>| name.clone().unwrap_or_else(|| "<default>".into());
        match (&self.user, &self.client_id) {
            (Some(u), Some(c)) => write!(f, "user {} client-id {}", part(u), part(c)),
            (Some(u), None) => write!(f, "user {}", part(u)),
            (None, Some(c)) => write!(f, "client-id {}", part(c)),
            (None, None) => write!(f, "no entity"),
        }
    }
}

/// Every entity's quotas.
pub type ClientQuotas = BTreeMap<QuotaEntity, BTreeMap<String, f64>>;

/// The quota of `key` that applies to a connection of `user` with `client_id`, and the
/// entity it belongs to (whose clients share it), in Kafka's order of precedence (KIP-55):
/// user and client id, user and default client id, user, default user and client id, default
/// user and default client id, default user, client id, default client id.
pub fn resolve(
    quotas: &ClientQuotas,
    user: &str,
    client_id: &str,
    key: &str,
) -> Option<(QuotaEntity, f64)> {
    let named = |s: &str| Some(Some(s.to_string()));
    let default = || Some(None);
    let candidates = [
        (named(user), named(client_id)),
        (named(user), default()),
        (named(user), None),
        (default(), named(client_id)),
        (default(), default()),
        (default(), None),
        (None, named(client_id)),
        (None, default()),
    ];
    candidates.into_iter().find_map(|(u, c)| {
        let entity = QuotaEntity {
            user: u,
            client_id: c,
        };
        let value = quotas.get(&entity)?.get(key).copied()?;
        // The sharing key: a default entity is shared per actual user/client, as in Kafka.
        let shared = QuotaEntity {
            user: entity.user.as_ref().map(|_| Some(user.to_string())),
            client_id: entity
                .client_id
                .as_ref()
                .map(|_| Some(client_id.to_string())),
        };
        Some((shared, value))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entity(user: Option<Option<&str>>, client: Option<Option<&str>>) -> QuotaEntity {
        QuotaEntity {
            user: user.map(|u| u.map(str::to_string)),
            client_id: client.map(|c| c.map(str::to_string)),
        }
    }

    #[test]
    fn the_most_specific_entity_wins() {
        let mut quotas = ClientQuotas::new();
        let mut set = |e: QuotaEntity, v: f64| {
            quotas
                .entry(e)
                .or_default()
                .insert(PRODUCER_BYTE_RATE.to_string(), v);
        };
        set(entity(None, Some(None)), 1.0);
        set(entity(None, Some(Some("app"))), 2.0);
        set(entity(Some(Some("alice")), None), 3.0);
        set(entity(Some(Some("alice")), Some(Some("app"))), 4.0);
        let q = |u, c| resolve(&quotas, u, c, PRODUCER_BYTE_RATE).map(|(_, v)| v);
        assert_eq!(q("alice", "app"), Some(4.0));
        assert_eq!(q("alice", "other"), Some(3.0));
        assert_eq!(q("bob", "app"), Some(2.0));
        assert_eq!(q("bob", "other"), Some(1.0));
        assert_eq!(resolve(&quotas, "bob", "x", CONSUMER_BYTE_RATE), None);
        // Default entities survive the JSON of the metadata log.
        let default = entity(Some(None), Some(None));
        let json = serde_json::to_string(&default).unwrap();
        assert_eq!(serde_json::from_str::<QuotaEntity>(&json).unwrap(), default);
        // A default client-id quota is shared per client id, not by every client.
        let (shared, _) = resolve(&quotas, "bob", "other", PRODUCER_BYTE_RATE).unwrap();
        assert_eq!(shared, entity(None, Some(Some("other"))));
    }
}
