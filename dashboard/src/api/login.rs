//! Login mode's routes: log in with a SASL user of the cluster, log out, and what the page
//! needs to know to show the login form or the console (see [`crate::session`]).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::{Ctx, TokenAccess};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The body of `POST /api/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// A SASL user of the cluster.
    pub username: String,
    /// Its password; checked by the broker, never logged or kept beyond the session's client.
    pub password: String,
}

// No Debug for `Login`: a derived one would print the password.

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// `POST /api/login {"username", "password"}`: authenticates with the cluster as that user
/// and starts a session (an HttpOnly cookie). 401 when the cluster refuses the credentials,
/// 404 when the dashboard is not in login mode.
pub async fn login(
    State(state): State<Arc<AppState>>,
    body: Result<Json<Login>, JsonRejection>,
) -> ApiResult<Response> {
    if !state.config.login {
        return Err(ApiError::not_found(
            "this dashboard has no login: start it with --login",
        ));
    }
    let Json(request) = body?;
    let id = state
        .sessions
        .login(&state, request.username.trim(), &request.password)
        .await?;
    let response = Json(json!({
        "user": request.username.trim(),
        "allow_admin": state.config.allow_admin,
    }))
    .into_response();
    Ok(with_cookie(response, &state.sessions.cookie_for(&id)))
}

/// `POST /api/logout`: ends the request's session (if any) and clears its cookie.
pub async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(user) = state.sessions.logout(&headers).await {
        tracing::info!(%user, "dashboard logout");
    }
    with_cookie(
        (StatusCode::OK, Json(json!({ "logged_out": true }))).into_response(),
        &state.sessions.clearing_cookie(),
    )
}

/// `GET /api/session`: whether this dashboard wants a login, who is logged in, whether this
/// request may use the API (`authenticated`: a session, the token, or no login needed), and
/// whether admin actions are allowed. Open to anyone, so the page knows whether to show its
/// form.
pub async fn session(
    Ctx(state): Ctx,
    token: Option<Extension<TokenAccess>>,
) -> Json<serde_json::Value> {
    let authenticated = !state.config.login || state.user.is_some() || token.is_some();
    Json(json!({
        "login": state.config.login,
        "user": state.user,
        "authenticated": authenticated,
        "allow_admin": state.config.allow_admin,
        "https": state.config.tls.is_some(),
    }))
}
