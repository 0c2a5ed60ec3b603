//! ApiVersions: which APIs and versions this broker speaks.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{encode_frame, RequestContext, RequestError, SUPPORTED_APIS};
use crate::error::{ResponseError, NONE};

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// Answers a supported ApiVersions request.
pub fn handle(ctx: &RequestContext, mut body: Bytes) -> Result<Bytes, RequestError> {
    // The v3+ body only names the client software; a body that fails to decode still gets the
    // version list, as Kafka does, because clients need it to talk at all.
    let _request: Option<ApiVersionsRequest> = ctx.decode(&mut body).ok();
    let response = ApiVersionsResponse::default()
        .with_error_code(NONE)
        .with_api_keys(api_list())
        .with_throttle_time_ms(0)
        .with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(StrBytes::from_static_str(TRANSACTION_VERSION))
            .with_min_version(0)
            .with_max_version(TRANSACTION_VERSION_LEVEL)])
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(vec![FinalizedFeatureKey::default()
            .with_name(StrBytes::from_static_str(TRANSACTION_VERSION))
            .with_min_version_level(TRANSACTION_VERSION_LEVEL)
            .with_max_version_level(TRANSACTION_VERSION_LEVEL)]);
    ctx.respond(&response)
}

/// The feature clients read to know they may use transaction version 2 (KIP-890: EndTxn v5,
/// Produce v12, TxnOffsetCommit v5), as Kafka 4's clients do.
pub const TRANSACTION_VERSION: &str = "transaction.version";

/// The `transaction.version` every broker supports and the cluster has finalized.
pub const TRANSACTION_VERSION_LEVEL: i16 = 2;

/// The epoch of the finalized features: they never change at run time here.
const FINALIZED_FEATURES_EPOCH: i64 = 1;

/// The answer to an ApiVersions request of a version we do not support: the v0 format (which
/// every client can read), error UNSUPPORTED_VERSION, and our list (KIP-511).
pub fn unsupported_version_response(correlation_id: i32) -> Result<Bytes, RequestError> {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list());
    encode_frame(ApiKey::ApiVersions, 0, correlation_id, &response)
}
