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
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
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
    /// invalid partitions or configs, a group still active) are 4xx; anything else means the
    /// cluster failed us (502).
    pub fn cluster(error: millrace_client::ClientError) -> Self {
        use millrace_client::ClientError;
        let status = match &error {
            ClientError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ClientError::Kafka { error: code, .. } => match code.code() {
                // UNKNOWN_TOPIC_OR_PARTITION, GROUP_ID_NOT_FOUND
                3 | 69 => StatusCode::NOT_FOUND,
                // TOPIC_ALREADY_EXISTS, NON_EMPTY_GROUP, REBALANCE_IN_PROGRESS
                36 | 68 | 27 => StatusCode::CONFLICT,
                // INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR,
                // INVALID_CONFIG, INVALID_REQUEST, POLICY_VIOLATION
                17 | 37 | 38 | 40 | 42 | 44 => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            },
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, format!("cluster error: {error}"))
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
        let body = serde_json::json!({ "error": self.message });
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

/// The result of an API handler.
pub type ApiResult<T> = std::result::Result<T, ApiError>;
