//! ApiVersions: which APIs and versions this broker speaks.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

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
        .with_throttle_time_ms(0);
    ctx.respond(&response)
}

/// The answer to an ApiVersions request of a version we do not support: the v0 format (which
/// every client can read), error UNSUPPORTED_VERSION, and our list (KIP-511).
pub fn unsupported_version_response(correlation_id: i32) -> Result<Bytes, RequestError> {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list());
    encode_frame(ApiKey::ApiVersions, 0, correlation_id, &response)
}
