//! Errors: [`DashboardError`] for the library's callers, [`ApiError`] for HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What can stop the dashboard from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The HTTP address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server failed while serving.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// A configuration value is unusable (for example an empty bootstrap list).
    #[error("invalid dashboard configuration: {0}")]
    Config(String),
}

/// An HTTP error answer: a status and a message, sent as `{"error": "..."}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status (always 4xx or 5xx).
    pub status: StatusCode,
    /// What went wrong, for a person to read.
    pub message: String,
    /// Kafka's name of the error code the cluster answered (`TOPIC_AUTHORIZATION_FAILED`),
    /// when the error came from a broker.
    pub kafka_error: Option<String>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kafka_error: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such topic, group or page.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 503: the cluster cannot be reached (yet).
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// A client error as an answer: the caller's mistakes (unknown topic, topic exists,
    /// invalid partitions or configs, a group still active) are 4xx, refusals by the
    /// broker's ACLs 403 and a failed authentication 401, each naming Kafka's error;
    /// anything else means the cluster failed us (502).
    pub fn cluster(error: millrace_client::ClientError) -> Self {
        use millrace_client::ClientError;
        let status = match &error {
            ClientError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ClientError::Authentication { .. } => StatusCode::UNAUTHORIZED,
            ClientError::Kafka { error: code, .. } => match code.code() {
                // UNKNOWN_TOPIC_OR_PARTITION, GROUP_ID_NOT_FOUND, RESOURCE_NOT_FOUND
                3 | 69 | 91 => StatusCode::NOT_FOUND,
                // TOPIC_ALREADY_EXISTS, NON_EMPTY_GROUP, REBALANCE_IN_PROGRESS
                36 | 68 | 27 => StatusCode::CONFLICT,
                // INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR,
                // INVALID_CONFIG, INVALID_REQUEST, POLICY_VIOLATION, UNSUPPORTED_SASL_MECHANISM,
                // UNACCEPTABLE_CREDENTIAL, DUPLICATE_RESOURCE
                17 | 37 | 38 | 40 | 42 | 44 | 33 | 93 | 92 => StatusCode::BAD_REQUEST,
                // TOPIC_, GROUP_, CLUSTER_, TRANSACTIONAL_ID_, DELEGATION_TOKEN_AUTHORIZATION_FAILED
                29 | 30 | 31 | 53 | 65 => StatusCode::FORBIDDEN,
                // SECURITY_DISABLED: ACLs asked of a cluster without an authorizer.
                54 => StatusCode::CONFLICT,
                // SASL_AUTHENTICATION_FAILED
                58 => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_GATEWAY,
            },
            _ => StatusCode::BAD_GATEWAY,
        };
        match error.kafka_error() {
            Some(code) => {
                let name = kafka_error_name(code);
                ApiError {
                    status,
                    message: format!("{name}: {error}"),
                    kafka_error: Some(name),
                }
            }
            None => ApiError::new(status, format!("cluster error: {error}")),
        }
    }

    /// 504: the cluster did not answer within the dashboard's deadline.
    pub fn timeout(what: &str) -> Self {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{what} did not finish in time"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(name) = self.kafka_error {
            body["kafka_error"] = serde_json::Value::String(name);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

/// Kafka's name of an error code, as its documentation and tools print it
/// (`TopicAuthorizationFailed` -> `TOPIC_AUTHORIZATION_FAILED`).
pub fn kafka_error_name(error: millrace_client::ResponseError) -> String {
    if let millrace_client::ResponseError::Unknown(code) = error {
        return format!("UNKNOWN_SERVER_ERROR({code})");
    }
    let camel = format!("{error:?}");
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// The result of an API handler.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_client::ResponseError;

    #[test]
    fn kafka_error_names_are_kafkas() {
        assert_eq!(
            kafka_error_name(ResponseError::TopicAuthorizationFailed),
            "TOPIC_AUTHORIZATION_FAILED"
        );
        assert_eq!(
            kafka_error_name(ResponseError::ClusterAuthorizationFailed),
            "CLUSTER_AUTHORIZATION_FAILED"
        );
        assert_eq!(
            kafka_error_name(ResponseError::Unknown(-7)),
            "UNKNOWN_SERVER_ERROR(-7)"
        );
    }

    #[test]
    fn authorization_refusals_are_403_with_the_kafka_name() {
        let error = millrace_client::ClientError::Kafka {
            api: "DeleteTopics",
            resource: "t".to_string(),
            error: ResponseError::TopicAuthorizationFailed,
            message: None,
        };
        let answer = ApiError::cluster(error);
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(
            answer.kafka_error.as_deref(),
            Some("TOPIC_AUTHORIZATION_FAILED")
        );
        assert!(answer.message.starts_with("TOPIC_AUTHORIZATION_FAILED: "));
    }
}
