//! Who may use the dashboard: the access token (when configured, every route needs it) and,
//! in login mode, the session cookie (see [`crate::session`]).
//!
//! Scripts send `Authorization: Bearer TOKEN`; a browser opens `/?token=TOKEN` once, and the
//! answer sets an HttpOnly, SameSite=Strict cookie so the page's own requests (assets, API
//! calls, the event stream) carry it without the token sitting in every URL.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// The cookie holding the token after a `?token=` visit.
const COOKIE_NAME: &str = "millrace_token";

/// Tokens must survive a cookie and a query string unescaped.
pub(crate) fn validate_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty".to_string());
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
    {
        return Err("the token may only contain letters, digits and - _ . ~ + / =".to_string());
    }
    Ok(())
}

/// What the request presented against the configured token.
#[derive(Clone, Copy)]
enum TokenCheck {
    /// No token is configured.
    NotConfigured,
    /// The right token; `from_query` when it came in `?token=` (then a cookie is set).
    Valid { from_query: bool },
    /// A token is configured but the request carries none.
    Missing,
    /// The request carries a wrong token.
    Wrong,
}

fn check_token(state: &AppState, request: &Request) -> TokenCheck {
    let Some(expected) = state.config.token.as_deref() else {
        return TokenCheck::NotConfigured;
    };
    let headers = request.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = crate::session::cookie(headers, COOKIE_NAME);
    let query = request.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "token")
            .map(|(_, value)| value.to_string())
    });
    let presented = [bearer.map(str::to_string), query.clone(), cookie];
    if presented
        .iter()
        .flatten()
        .any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()))
    {
        let from_query = query.is_some_and(|q| constant_time_eq(q.as_bytes(), expected.as_bytes()));
        TokenCheck::Valid { from_query }
    } else if presented.iter().all(Option::is_none) {
        TokenCheck::Missing
    } else {
        TokenCheck::Wrong
    }
}

/// What anyone may fetch in login mode: the page shell and its assets (the login form is
/// part of the page), and the login routes themselves.
fn open_in_login_mode(path: &str) -> bool {
    matches!(
        path,
        "/" | "/favicon.ico" | "/api/login" | "/api/logout" | "/api/session"
    ) || path.starts_with("/assets/")
}

/// Middleware: decides who the request is. A logged-in session's requests carry its state
/// (handlers see the cluster as its principal does); with a token configured, requests need
/// it (or, in login mode, a session); in login mode everything but the page and the login
/// routes needs a session or the token. Others get 401.
pub(crate) async fn require_access(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.config.login {
        if let Some(session) = state.sessions.find(request.headers()) {
            request
                .extensions_mut()
                .insert(crate::api::SessionState(session));
            return next.run(request).await;
        }
    }
    let token = check_token(&state, &request);
    let admitted = match token {
        TokenCheck::Valid { .. } => true,
        TokenCheck::NotConfigured => !state.config.login,
        TokenCheck::Missing | TokenCheck::Wrong => false,
    } || (state.config.login && open_in_login_mode(request.uri().path()));
    if !admitted {
        let message = match (state.config.login, token) {
            (true, _) => "log in first: POST /api/login {\"username\", \"password\"} with a SASL user of the cluster",
            (false, TokenCheck::Wrong) => "wrong token",
            _ => "this dashboard needs a token: send Authorization: Bearer TOKEN or open /?token=TOKEN",
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    }
    if matches!(token, TokenCheck::Valid { .. }) {
        request.extensions_mut().insert(crate::api::TokenAccess);
    }
    let mut response = next.run(request).await;
    if let (TokenCheck::Valid { from_query: true }, Some(expected)) =
        (token, state.config.token.as_deref())
    {
        let secure = if state.config.tls.is_some() {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!("{COOKIE_NAME}={expected}; Path=/; HttpOnly; SameSite=Strict{secure}");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

/// Compares without stopping at the first difference, so response times do not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn login_mode_opens_only_the_page_and_the_login_routes() {
        for open in [
            "/",
            "/assets/app.js",
            "/favicon.ico",
            "/api/login",
            "/api/session",
        ] {
            assert!(open_in_login_mode(open), "{open}");
        }
        for closed in [
            "/api/topics",
            "/metrics",
            "/api/events",
            "/api/acls",
            "/api/loginx",
        ] {
            assert!(!open_in_login_mode(closed), "{closed}");
        }
    }

    #[test]
    fn tokens_must_be_cookie_safe() {
        assert!(validate_token("abc-DEF_123").is_ok());
        assert!(validate_token("").is_err());
        assert!(validate_token("a;b").is_err());
        assert!(validate_token("a b").is_err());
    }
}
