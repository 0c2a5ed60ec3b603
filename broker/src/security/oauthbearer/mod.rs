//! SASL/OAUTHBEARER on the broker (KIP-255, KIP-768): the listener's settings and the token
//! validators the mechanism (`sasl/oauthbearer.rs`) asks.
//!
//! Two modes, chosen as Kafka chooses them:
//! - secured: `sasl.server.callback.handler.class` is Kafka's
//!   `OAuthBearerValidatorCallbackHandler`; tokens are signed JWTs checked against the keys of
//!   `sasl.oauthbearer.jwks.endpoint.url` (signature by `kid`, `exp`/`nbf`/`iat` with
//!   `sasl.oauthbearer.clock.skew.seconds`, `aud`, `iss`). See [`jwks`].
//! - unsecured (development only): no validator class and the listener's JAAS line is Kafka's
//!   `OAuthBearerLoginModule`; tokens are unsigned (`alg: none`) JWTs, as Kafka's default
//!   `OAuthBearerUnsecuredValidatorCallbackHandler` accepts. See [`unsecured`].

pub mod jwks;
pub mod settings;
pub mod unsecured;

pub use settings::{
    is_oauthbearer_setting, OAuthBearerSettings, SecuredSettings, UnsecuredSettings,
};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Kafka's validator for signed JWTs (KIP-768).
pub const VALIDATOR_CALLBACK_HANDLER: &str =
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler";
/// Kafka's login module for OAUTHBEARER; on a broker without a validator class it stands for
/// the unsecured validator.
pub const LOGIN_MODULE: &str =
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule";

/// A token that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedToken {
    /// The principal's name: the value of the subject claim.
    pub principal: String,
    /// `exp`, in milliseconds since the epoch: the session may not outlive it (KIP-368).
    pub expires_at_ms: i64,
    /// The scope claim's values (informational; Kafka does not check scopes on the broker).
    pub scope: Vec<String>,
}

/// Why a token was refused. The text is for the broker's log; it never includes the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or a JWT whose parts do not decode.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// A claim the validator needs is missing or of the wrong type.
    #[error("claim `{0}` is missing or not of the expected type")]
    MissingClaim(String),
    /// `exp` (plus the allowed skew) is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` (less the allowed skew) is in the future.
    #[error("token not valid yet ({0} in the future)")]
    NotYetValid(&'static str),
    /// The signature does not verify with the key the token names.
    #[error("invalid signature")]
    InvalidSignature,
    /// No key of the JWKS fits the token's `kid` and algorithm.
    #[error("no key in the JWKS for kid {0}")]
    UnknownKey(String),
    /// The algorithm is not one this listener accepts.
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    /// `aud` does not name an expected audience.
    #[error("audience is not one of sasl.oauthbearer.expected.audience")]
    Audience,
    /// `iss` is not the expected issuer.
    #[error("issuer is not sasl.oauthbearer.expected.issuer")]
    Issuer,
    /// The unsecured validator's required scope is not granted.
    #[error("scope lacks required `{0}`")]
    Scope(String),
    /// The JWKS could not be read.
    #[error("JWKS unavailable: {0}")]
    Jwks(String),
}

/// The validator of one listener, built once at startup from its [`OAuthBearerSettings`].
pub enum TokenValidator {
    /// Signed JWTs against a JWKS.
    Secured(jwks::JwksValidator),
    /// Unsigned development tokens.
    Unsecured(unsecured::UnsecuredValidator),
}

impl TokenValidator {
    /// Builds the validator; a secured one reads its JWKS now, so a bad file fails startup.
    pub fn new(settings: &OAuthBearerSettings) -> Result<Self, TokenError> {
        Ok(match settings {
            OAuthBearerSettings::Secured(secured) => {
                TokenValidator::Secured(jwks::JwksValidator::new(secured.clone())?)
            }
            OAuthBearerSettings::Unsecured(unsecured) => {
                TokenValidator::Unsecured(unsecured::UnsecuredValidator::new(unsecured.clone()))
            }
        })
    }

    /// Validates `token` at `now_ms` (milliseconds since the epoch).
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<ValidatedToken, TokenError> {
        match self {
            TokenValidator::Secured(v) => v.validate(token, now_ms),
            TokenValidator::Unsecured(v) => v.validate(token, now_ms),
        }
    }
}

/// Milliseconds since the epoch on the wall clock (token times are wall-clock times).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Decodes one base64url part of a JWT (unpadded, as RFC 7515 writes it; padding tolerated).
pub(crate) fn b64url(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("base64url: {e}")))
}

/// A NumericDate claim (seconds, possibly fractional) in milliseconds, if present.
pub(crate) fn numeric_date_ms(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|v| v.is_finite())
            // Saturating float-to-int: an absurd date is clamped, not wrapped.
            .map(|seconds| Some((seconds * 1000.0) as i64))
            .ok_or_else(|| TokenError::MissingClaim(name.to_string())),
    }
}

/// The scope claim: a space-separated string (RFC 8693) or an array of strings.
pub(crate) fn scope_of(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Vec<String> {
    match claims.get(name) {
        Some(serde_json::Value::String(s)) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// The principal claim: a non-empty string.
pub(crate) fn principal_of(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<String, TokenError> {
    claims
        .get(name)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from)
        .ok_or_else(|| TokenError::MissingClaim(name.to_string()))
}
