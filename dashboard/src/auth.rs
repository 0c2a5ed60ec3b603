//! The access token: when configured, every route needs it.
//!
//! Scripts send `Authorization: Bearer TOKEN`; a browser opens `/?token=TOKEN` once, and the
//! answer sets an HttpOnly, SameSite=Strict cookie so the page's own requests (assets, API
//! calls, the event stream) carry it without the token sitting in every URL.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
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

/// Middleware: passes requests that carry the token, answers 401 to the rest.
pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.config.token.as_deref() else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string());
    let query = request.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "token")
            .map(|(_, value)| value.to_string())
    });
    let presented = [bearer.map(str::to_string), query.clone(), cookie];
    if !presented
        .iter()
        .flatten()
        .any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()))
    {
        let message = if presented.iter().all(Option::is_none) {
            "this dashboard needs a token: send Authorization: Bearer TOKEN or open /?token=TOKEN"
        } else {
            "wrong token"
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    }
    let from_query = query.is_some_and(|q| constant_time_eq(q.as_bytes(), expected.as_bytes()));
    let mut response = next.run(request).await;
    if from_query {
        let cookie = format!("{COOKIE_NAME}={expected}; Path=/; HttpOnly; SameSite=Strict");
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
    fn tokens_must_be_cookie_safe() {
        assert!(validate_token("abc-DEF_123").is_ok());
        assert!(validate_token("").is_err());
        assert!(validate_token("a;b").is_err());
        assert!(validate_token("a b").is_err());
    }
}
