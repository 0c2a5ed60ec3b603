//! Signed OAUTHBEARER tokens (KIP-768): a JWT whose signature verifies with a key of the
//! identity provider's JWKS, chosen by the token's `kid`, and whose claims pass Kafka's
//! checks: `exp` required and in the future, `nbf` and `iat` not in the future (each with
//! `sasl.oauthbearer.clock.skew.seconds`), `aud` naming an expected audience and `iss` the
//! expected issuer when those are configured, and the subject claim present.
//!
//! Signatures are checked by `jsonwebtoken` (on ring); only asymmetric algorithms are
//! accepted, so a token cannot pick HMAC and use a public key as its secret.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{numeric_date_ms, principal_of, scope_of, SecuredSettings, TokenError, ValidatedToken};

/// The algorithms a token may be signed with: RSA (PKCS#1 v1.5 and PSS), ECDSA and EdDSA.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The keys as last read.
struct Keys {
    set: JwkSet,
    read_at: Instant,
}

/// Checks signed tokens against a JWKS file.
pub struct JwksValidator {
    settings: SecuredSettings,
    keys: Mutex<Keys>,
}

impl JwksValidator {
    /// Reads the JWKS; an unreadable or empty one is an error (at startup, where it is seen).
    pub fn new(settings: SecuredSettings) -> Result<Self, TokenError> {
        let set = read_jwks(&settings)?;
        Ok(JwksValidator {
            settings,
            keys: Mutex::new(Keys {
                set,
                read_at: Instant::now(),
            }),
        })
    }

    /// Validates `token` at `now_ms`.
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<ValidatedToken, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An algorithm jsonwebtoken does not know, `none` included.
            ErrorKind::Json(_) => TokenError::Malformed(format!("header: {e}")),
            _ => TokenError::Malformed(e.to_string()),
        })?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let jwk = self.key_for(header.kid.as_deref(), header.alg)?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| TokenError::Jwks(format!("key {:?}: {e}", jwk.common.key_id)))?;

        let skew = self.settings.clock_skew_seconds;
        let mut validation = Validation::new(header.alg);
        validation.leeway = skew;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required: HashSet<String> = HashSet::from(["exp".to_string()]);
        if self.settings.expected_audience.is_empty() {
            // Kafka skips the audience check when none is configured.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.settings.expected_audience);
            required.insert("aud".into());
        }
        if let Some(issuer) = &self.settings.expected_issuer {
            validation.set_issuer(&[issuer]);
            required.insert("iss".into());
        }
        validation.required_spec_claims = required;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| match e.into_kind() {
            ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => TokenError::InvalidSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid("nbf"),
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim),
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{:?}", header.alg)),
            other => TokenError::Malformed(format!("{other:?}")),
        })?;
        let claims = data.claims;
        // jsonwebtoken checks exp's value only when it parses as a number; be sure it does.
        let expires_at_ms = numeric_date_ms(&claims, "exp")?
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        let skew_ms = i64::try_from(skew.saturating_mul(1000)).unwrap_or(i64::MAX);
        if numeric_date_ms(&claims, "iat")?.is_some_and(|iat| iat.saturating_sub(skew_ms) > now_ms)
        {
            return Err(TokenError::NotYetValid("iat"));
        }
        if expires_at_ms.saturating_add(skew_ms) <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(ValidatedToken {
            principal: principal_of(&claims, &self.settings.sub_claim_name)?,
            expires_at_ms,
            scope: scope_of(&claims, &self.settings.scope_claim_name),
        })
    }

    /// The key for `kid` and `alg`, re-reading the JWKS when it is stale or lacks the key (an
    /// identity provider rotating its keys publishes the new one before signing with it).
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, TokenError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let stale = keys.read_at.elapsed() >= Duration::from_millis(self.settings.jwks_refresh_ms);
        let found = select(&keys.set, kid, alg);
        if found.is_none() || stale {
            // Re-reading is quick (a local file) and rare (bounded by the retry backoff); a
            // failed read keeps the keys we have.
            let backoff = Duration::from_millis(self.settings.jwks_retry_backoff_ms);
            if keys.read_at.elapsed() >= backoff || stale {
                match read_jwks(&self.settings) {
                    Ok(set) => keys.set = set,
                    Err(error) => {
                        tracing::warn!(url = %self.settings.jwks_url, %error, "cannot re-read the JWKS; keeping the keys read before")
                    }
                }
                keys.read_at = Instant::now();
            }
        }
        select(&keys.set, kid, alg).ok_or_else(|| TokenError::UnknownKey(format!("{kid:?}")))
    }
}

/// The signing key for `kid` (any key fitting `alg` when the token names none and the set has
/// exactly one such key).
fn select(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
    let fits = |jwk: &&Jwk| {
        !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            && jwk
                .common
                .key_algorithm
                .is_none_or(|key_alg| key_algorithm(alg) == Some(key_alg))
    };
    match kid {
        Some(kid) => set
            .keys
            .iter()
            .filter(fits)
            .find(|jwk| jwk.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None => {
            let mut candidates = set.keys.iter().filter(fits);
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            }
        }
    }
}

/// The JWK `alg` value of a signing algorithm.
fn key_algorithm(alg: Algorithm) -> Option<KeyAlgorithm> {
    Some(match alg {
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::RS384 => KeyAlgorithm::RS384,
        Algorithm::RS512 => KeyAlgorithm::RS512,
        Algorithm::PS256 => KeyAlgorithm::PS256,
        Algorithm::PS384 => KeyAlgorithm::PS384,
        Algorithm::PS512 => KeyAlgorithm::PS512,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::ES384 => KeyAlgorithm::ES384,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
    })
}

fn read_jwks(settings: &SecuredSettings) -> Result<JwkSet, TokenError> {
    let text = std::fs::read_to_string(&settings.jwks_path)
        .map_err(|e| TokenError::Jwks(format!("{}: {e}", settings.jwks_path.display())))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| TokenError::Jwks(format!("{}: {e}", settings.jwks_path.display())))?;
    if set.keys.is_empty() {
        return Err(TokenError::Jwks(format!(
            "{}: no keys",
            settings.jwks_path.display()
        )));
    }
    Ok(set)
}
