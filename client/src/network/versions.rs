//! Which version of each API to speak with a broker.
//!
//! The client lists the versions its code handles; the broker lists its own in ApiVersions; per
//! API the highest version in both wins. Capping the client's maximum matters: newer versions
//! change meaning (Fetch 13 and Produce 13 name topics by id), so a version is listed here only
//! once the code that builds and reads it handles every field it has.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use crate::error::{ClientError, Result};

/// The versions this client can speak: (API, lowest, highest).
pub(crate) const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    // v10-11 add only answer fields and error codes; v12 is transaction version 2 (a
    // transactional producer on version 1 sends at most v11, see the sender).
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // Transactions: version 1 (the producer adds partitions with AddPartitionsToTxn, and
    // speaks EndTxn and TxnOffsetCommit at most v3), and version 2 when the broker finalized
    // `transaction.version` 2 (EndTxn v5, TxnOffsetCommit v5, Produce v12; KIP-890).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::TxnOffsetCommit, 0, 5),
    // Transactions for operators (`millrace transactions`).
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    // Security: SASL (KIP-152; SaslHandshake is sent at v1) and SCRAM users (KIP-554).
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // Client quotas for operators (`millrace quotas`, KIP-546).
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The version chosen per API for one broker, or the reason none could be.
#[derive(Debug, Clone)]
pub(crate) struct ApiVersions {
    /// Indexed by API key; `None` where the broker or the client lacks the API.
    chosen: Vec<Option<i16>>,
    /// The broker's own ranges, for error messages.
    offered: Vec<Option<(i16, i16)>>,
    /// The `transaction.version` the broker's cluster finalized (0: none).
    transaction_version: i16,
}

impl ApiVersions {
    /// Intersects the broker's advertised ranges with [`CLIENT_VERSIONS`], and notes the
    /// finalized `transaction.version` of its answer.
    pub(crate) fn from_response(response: &ApiVersionsResponse) -> Self {
        let mut versions = Self::negotiate(&response.api_keys);
        versions.transaction_version = response
            .finalized_features
            .iter()
            .find(|f| f.name.as_str() == "transaction.version")
            .map_or(0, |f| f.max_version_level);
        versions
    }

    /// Whether a transactional producer may use transaction version 2 with this broker: the
    /// feature is finalized and the versions of it are spoken both sides.
    pub(crate) fn transaction_version_2(&self) -> bool {
        let at_least = |api: ApiKey, version: i16| matches!(self.chosen.get(api as usize), Some(Some(v)) if *v >= version);
        self.transaction_version >= 2
            && at_least(ApiKey::EndTxn, 5)
            && at_least(ApiKey::Produce, 12)
            && at_least(ApiKey::TxnOffsetCommit, 5)
    }

    /// Intersects the broker's advertised ranges with [`CLIENT_VERSIONS`].
    pub(crate) fn negotiate(broker: &[ApiVersion]) -> Self {
        let size = CLIENT_VERSIONS
            .iter()
            .map(|(key, _, _)| *key as usize + 1)
            .max()
            .unwrap_or(0);
        let mut chosen = vec![None; size];
        let mut offered = vec![None; size];
        for advertised in broker {
            let Ok(key) = ApiKey::try_from(advertised.api_key) else {
                continue;
            };
            let Some((_, min, max)) = CLIENT_VERSIONS.iter().find(|(k, _, _)| *k == key) else {
                continue;
            };
            let index = key as usize;
            offered[index] = Some((advertised.min_version, advertised.max_version));
            let high = (*max).min(advertised.max_version);
            let low = (*min).max(advertised.min_version);
            if high >= low {
                chosen[index] = Some(high);
            }
        }
        ApiVersions {
            chosen,
            offered,
            transaction_version: 0,
        }
    }

    /// The version to use for `api` with this broker.
    pub(crate) fn version(&self, api: ApiKey, broker: &str) -> Result<i16> {
        if let Some(Some(version)) = self.chosen.get(api as usize) {
            return Ok(*version);
        }
        let needed = CLIENT_VERSIONS
            .iter()
            .find(|(k, _, _)| *k == api)
            .map(|(_, min, max)| format!("v{min}-v{max}"))
            .unwrap_or_else(|| "(not implemented by this client)".to_string());
        let offered = match self.offered.get(api as usize) {
            Some(Some((min, max))) => format!("v{min}-v{max}"),
            _ => "none".to_string(),
        };
        Err(ClientError::UnsupportedVersion {
            api: api_name(api),
            broker: broker.to_string(),
            needed,
            offered,
        })
    }
}

/// The API's name as Kafka writes it, for errors and logs.
pub(crate) fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        ApiKey::DescribeClientQuotas => "DescribeClientQuotas",
        ApiKey::AlterClientQuotas => "AlterClientQuotas",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        _ => "other API",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(key: ApiKey, min: i16, max: i16) -> ApiVersion {
        ApiVersion::default()
            .with_api_key(key as i16)
            .with_min_version(min)
            .with_max_version(max)
    }

    #[test]
    fn picks_the_highest_version_both_sides_speak() {
        let versions =
            ApiVersions::negotiate(&[offer(ApiKey::Fetch, 0, 17), offer(ApiKey::Produce, 3, 7)]);
        assert_eq!(versions.version(ApiKey::Fetch, "b").ok(), Some(12));
        assert_eq!(versions.version(ApiKey::Produce, "b").ok(), Some(7));
    }

    #[test]
    fn disjoint_ranges_are_unsupported() {
        let versions = ApiVersions::negotiate(&[offer(ApiKey::Produce, 0, 2)]);
        let error = versions.version(ApiKey::Produce, "b").unwrap_err();
        assert!(
            matches!(error, ClientError::UnsupportedVersion { .. }),
            "{error}"
        );
    }
}
