//! The HTTP API: one module per concern. Every error answer is `{"error": "..."}` with a 4xx
//! or 5xx status.
//!
//! | route | module |
//! |---|---|
//! | `GET /api/cluster`, `/api/brokers`, `/api/topics`, `/api/topics/{name}`, `/api/groups`, `/api/groups/{id}` | [`cluster`] |
//! | `GET /api/topics/{name}/messages` | [`messages`] |
//! | `GET /api/aggregates` | [`aggregates`] |
//! | `POST /api/sql`, `GET /api/tables` | [`sql`] |
//! | `GET /api/events` (server-sent events) | [`events`] |
//! | `GET /metrics` (Prometheus) | [`metrics`] |
//! | `POST /api/topics`, `DELETE /api/topics/{name}`, `POST /api/groups/{id}/reset-offsets` | [`admin`] |

pub mod admin;
pub mod aggregates;
pub mod cluster;
pub mod events;
pub mod messages;
pub mod metrics;
pub mod sql;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::{assets, auth, AppState};

/// The whole application: API, metrics, UI, behind the token check.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::asset))
        .route("/favicon.ico", get(assets::favicon))
        .route("/api/cluster", get(cluster::cluster))
        .route("/api/brokers", get(cluster::brokers))
        .route(
            "/api/topics",
            get(cluster::topics).post(admin::create_topic),
        )
        .route(
            "/api/topics/{name}",
            get(cluster::topic).delete(admin::delete_topic),
        )
        .route("/api/topics/{name}/messages", get(messages::browse))
        .route("/api/groups", get(cluster::groups))
        .route("/api/groups/{id}", get(cluster::group))
        .route("/api/groups/{id}/reset-offsets", post(admin::reset_offsets))
        .route("/api/aggregates", get(aggregates::aggregates))
        .route("/api/tables", get(sql::tables))
        .route("/api/sql", post(sql::query))
        .route("/api/events", get(events::events))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::not_found(format!("no such page: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method) -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed here"),
    )
}
