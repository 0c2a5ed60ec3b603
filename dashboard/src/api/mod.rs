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
//! | `POST /api/login`, `POST /api/logout`, `GET /api/session` | [`login`] |
//! | `/api/users`, `/api/acls`, `/api/quotas` | [`security`] |
//!
//! Handlers take [`Ctx`], not the router's state: for a logged-in session it is that
//! session's state, whose cluster view and clients are the session principal's.

pub mod admin;
pub mod aggregates;
pub mod cluster;
pub mod events;
pub mod login;
pub mod messages;
pub mod metrics;
pub mod security;
pub mod sql;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::{assets, auth, AppState};

/// A logged-in session's state, put in the request by the access check.
#[derive(Clone)]
pub(crate) struct SessionState(pub(crate) Arc<AppState>);

/// Marks a request admitted by the access token (in login mode: without a session).
#[derive(Clone, Copy)]
pub(crate) struct TokenAccess;

/// The state a handler works with: the session's, when the request belongs to one, else the
/// dashboard's shared state.
pub(crate) struct Ctx(pub(crate) Arc<AppState>);

impl FromRequestParts<Arc<AppState>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Ctx(parts
            .extensions
            .get::<SessionState>()
            .map(|s| s.0.clone())
            .unwrap_or_else(|| state.clone())))
    }
}

/// The whole application: API, metrics, UI, behind the access check.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::asset))
        .route("/favicon.ico", get(assets::favicon))
        .route("/api/cluster", get(cluster::cluster))
        .route("/api/brokers", get(cluster::brokers))
        .route("/api/brokers/metrics", get(cluster::broker_metrics))
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
        .route("/api/login", post(login::login))
        .route("/api/logout", post(login::logout))
        .route("/api/session", get(login::session))
        .route("/api/users", get(security::users).post(security::add_user))
        .route(
            "/api/users/{name}",
            axum::routing::delete(security::delete_user),
        )
        .route(
            "/api/acls",
            get(security::acls)
                .post(security::add_acl)
                .put(security::edit_acl)
                .delete(security::remove_acl),
        )
        .route(
            "/api/quotas",
            get(security::quotas)
                .post(security::alter_quota)
                .delete(security::remove_quota),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_access,
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
