//! The controller's decisions on SCRAM users (AlterUserScramCredentials): validate each
//! change with Kafka's rules and turn the valid ones into metadata records.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::metadata::{MetadataImage, MetadataRecord};
use crate::security::sasl::scram::{MAX_ITERATIONS, MIN_ITERATIONS};
use crate::security::{ScramCredential, ScramMechanism};

/// UNSUPPORTED_SASL_MECHANISM.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// RESOURCE_NOT_FOUND.
const RESOURCE_NOT_FOUND: i16 = 91;
/// DUPLICATE_RESOURCE.
const DUPLICATE_RESOURCE: i16 = 92;
/// UNACCEPTABLE_CREDENTIAL.
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

/// One credential to set, as AlterUserScramCredentials carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScramUpsertion {
    /// The user.
    pub name: String,
    /// Kafka's mechanism number (1 SHA-256, 2 SHA-512).
    pub mechanism: i8,
    /// PBKDF2 iterations.
    pub iterations: i32,
    /// The salt.
    pub salt: Vec<u8>,
    /// `Hi(password, salt, iterations)`, computed by the client.
    pub salted_password: Vec<u8>,
}

/// One credential to delete.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScramDeletion {
    /// The user.
    pub name: String,
    /// Kafka's mechanism number.
    pub mechanism: i8,
}

/// Per user (in order of first mention): `None` if its changes were taken, else the error
/// code and message.
pub type UserResults = Vec<(String, Option<(i16, String)>)>;

/// Validates the changes; returns the records of the users whose changes are all valid.
pub fn alter_scram_credentials(
    image: &MetadataImage,
    upsertions: &[ScramUpsertion],
    deletions: &[ScramDeletion],
) -> (Vec<MetadataRecord>, UserResults) {
    let mut order: Vec<String> = Vec::new();
    let mut errors: BTreeMap<String, (i16, String)> = BTreeMap::new();
    let mut records: BTreeMap<String, Vec<MetadataRecord>> = BTreeMap::new();
    let mut seen: BTreeSet<(String, i8)> = BTreeSet::new();
    let fail = |errors: &mut BTreeMap<String, (i16, String)>, name: &str, code, message: String| {
        errors.entry(name.to_string()).or_insert((code, message));
    };
    let changes = deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism, None))
        .chain(
            upsertions
                .iter()
                .map(|u| (u.name.as_str(), u.mechanism, Some(u))),
        );
    for (name, mechanism_number, upsertion) in changes {
        if !order.iter().any(|n| n == name) {
            order.push(name.to_string());
        }
        if name.is_empty() {
            fail(
                &mut errors,
                name,
                UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty".into(),
            );
            continue;
        }
        if !seen.insert((name.to_string(), mechanism_number)) {
            fail(
                &mut errors,
                name,
                DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request".into(),
            );
            continue;
        }
        let Some(mechanism) = ScramMechanism::from_wire(mechanism_number) else {
            fail(
                &mut errors,
                name,
                UNSUPPORTED_SASL_MECHANISM,
                format!("Unknown SCRAM mechanism {mechanism_number}"),
            );
            continue;
        };
        let record = match upsertion {
            None => {
                if image.scram_credential(name, mechanism).is_none() {
                    fail(
                        &mut errors,
                        name,
                        RESOURCE_NOT_FOUND,
                        format!(
                            "Attempt to delete a user credential that does not exist ({})",
                            mechanism.name()
                        ),
                    );
                    continue;
                }
                MetadataRecord::RemoveUserScramCredential {
                    name: name.to_string(),
                    mechanism,
                }
            }
            Some(upsertion) => {
                if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&upsertion.iterations) {
                    fail(
                        &mut errors,
                        name,
                        UNACCEPTABLE_CREDENTIAL,
                        format!(
                            "Iterations {} must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}",
                            upsertion.iterations
                        ),
                    );
                    continue;
                }
                if upsertion.salt.is_empty()
                    || upsertion.salted_password.len() != mechanism.hash_len()
                {
                    fail(
                        &mut errors,
                        name,
                        UNACCEPTABLE_CREDENTIAL,
                        "Salt must not be empty and the salted password must be one hash long"
                            .into(),
                    );
                    continue;
                }
                MetadataRecord::UserScramCredential {
                    name: name.to_string(),
                    mechanism,
                    credential: ScramCredential::from_salted_password(
                        mechanism,
                        &upsertion.salted_password,
                        upsertion.salt.clone(),
                        upsertion.iterations,
                    ),
                }
            }
        };
        records.entry(name.to_string()).or_default().push(record);
    }
    let mut taken = Vec::new();
    let mut results = Vec::with_capacity(order.len());
    for name in order {
        match errors.remove(&name) {
            Some(error) => results.push((name, Some(error))),
            None => {
                taken.extend(records.remove(&name).unwrap_or_default());
                results.push((name, None));
            }
        }
    }
    (taken, results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(name: &str, mechanism: i8, iterations: i32) -> ScramUpsertion {
        ScramUpsertion {
            name: name.into(),
            mechanism,
            iterations,
            salt: vec![1; 16],
            salted_password: vec![2; if mechanism == 2 { 64 } else { 32 }],
        }
    }

    #[test]
    fn a_user_with_one_bad_change_gets_none_of_its_changes() {
        let image = MetadataImage::default();
        let (records, results) = alter_scram_credentials(
            &image,
            &[
                upsert("alice", 1, 4096),
                upsert("alice", 2, 100),
                upsert("bob", 2, 8192),
            ],
            &[ScramDeletion {
                name: "carol".into(),
                mechanism: 1,
            }],
        );
        assert_eq!(records.len(), 1, "only bob's credential");
        let codes: Vec<(String, Option<i16>)> = results
            .into_iter()
            .map(|(n, e)| (n, e.map(|(c, _)| c)))
            .collect();
        assert_eq!(
            codes,
            [
                ("carol".to_string(), Some(RESOURCE_NOT_FOUND)),
                ("alice".to_string(), Some(UNACCEPTABLE_CREDENTIAL)),
                ("bob".to_string(), None),
            ]
        );
    }

    #[test]
    fn duplicates_unknown_mechanisms_and_empty_names_are_refused() {
        let image = MetadataImage::default();
        let (records, results) = alter_scram_credentials(
            &image,
            &[
                upsert("a", 1, 4096),
                upsert("a", 1, 4096),
                upsert("b", 3, 4096),
                upsert("", 1, 4096),
            ],
            &[],
        );
        assert!(records.is_empty());
        let codes: Vec<Option<i16>> = results
            .iter()
            .map(|(_, e)| e.as_ref().map(|e| e.0))
            .collect();
        assert_eq!(
            codes,
            [
                Some(DUPLICATE_RESOURCE),
                Some(UNSUPPORTED_SASL_MECHANISM),
                Some(UNACCEPTABLE_CREDENTIAL)
            ]
        );
    }
}
