//! The controller's decisions on client quotas (AlterClientQuotas): each entity's changes are
//! validated with Kafka's rules and taken whole, or refused whole with an error code.

use serde::{Deserialize, Serialize};

use crate::metadata::client_quotas::{QuotaEntity, QUOTA_KEYS, REQUEST_PERCENTAGE};
use crate::metadata::{MetadataImage, MetadataRecord};

/// INVALID_REQUEST.
const INVALID_REQUEST: i16 = 42;

/// One entity's changes, as AlterClientQuotas carries them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuotaAlteration {
    /// Who.
    pub entity: QuotaEntity,
    /// (key, new value or `None` to remove).
    pub ops: Vec<(String, Option<f64>)>,
}

/// Per entity, in request order: `None` if its changes were taken, else (error code, message).
pub type QuotaResults = Vec<(QuotaEntity, Option<(i16, String)>)>;

/// Validates every entity's changes; returns the records of the valid ones.
pub fn alter_client_quotas(
    _image: &MetadataImage,
    alterations: &[QuotaAlteration],
) -> (Vec<MetadataRecord>, QuotaResults) {
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(alterations.len());
    for alteration in alterations {
        match validate(alteration) {
            Ok(()) => {
                records.extend(alteration.ops.iter().map(|(key, value)| {
                    MetadataRecord::ClientQuota {
                        entity: alteration.entity.clone(),
                        key: key.clone(),
                        value: *value,
                    }
                }));
                results.push((alteration.entity.clone(), None));
            }
            Err(message) => {
                results.push((alteration.entity.clone(), Some((INVALID_REQUEST, message))))
            }
        }
    }
    (records, results)
}

fn validate(alteration: &QuotaAlteration) -> Result<(), String> {
    let entity = &alteration.entity;
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("a quota entity names a user, a client id, or both".into());
    }
    if matches!(&entity.user, Some(Some(u)) if u.is_empty())
        || matches!(&entity.client_id, Some(Some(c)) if c.is_empty())
    {
        return Err("an entity name must not be empty (null means the default)".into());
    }
    let mut seen = Vec::new();
    for (key, value) in &alteration.ops {
        if !QUOTA_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown quota `{key}` (known: {})",
                QUOTA_KEYS.join(", ")
            ));
        }
        if seen.contains(key) {
            return Err(format!("quota `{key}` is changed twice"));
        }
        seen.push(key.clone());
        if let Some(value) = value {
            if !value.is_finite() || *value <= 0.0 {
                return Err(format!(
                    "quota `{key}` must be a positive number, not {value}"
                ));
            }
            if key != REQUEST_PERCENTAGE && value.fract() != 0.0 {
                return Err(format!(
                    "quota `{key}` is a whole number of bytes per second"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn client(name: &str) -> QuotaEntity {
        QuotaEntity {
            user: None,
            client_id: Some(Some(name.to_string())),
        }
    }

    #[test]
    fn valid_changes_become_records_and_invalid_entities_are_refused_whole() {
        let image = MetadataImage::default();
        let (records, results) = alter_client_quotas(
            &image,
            &[
                QuotaAlteration {
                    entity: client("a"),
                    ops: vec![("producer_byte_rate".into(), Some(1024.0))],
                },
                QuotaAlteration {
                    entity: client("b"),
                    ops: vec![
                        ("consumer_byte_rate".into(), Some(10.0)),
                        ("bogus".into(), Some(1.0)),
                    ],
                },
                QuotaAlteration {
                    entity: client("c"),
                    ops: vec![("producer_byte_rate".into(), Some(-1.0))],
                },
            ],
        );
        assert_eq!(records.len(), 1);
        assert!(results[0].1.is_none());
        assert!(results[1].1.as_ref().unwrap().1.contains("bogus"));
        assert!(results[2].1.as_ref().unwrap().1.contains("positive"));
        let mut image = image;
        for r in &records {
            image.apply(r);
        }
        assert_eq!(
            image.client_quotas()[&client("a")]["producer_byte_rate"],
            1024.0
        );
    }
}
