//! Unsecured OAUTHBEARER tokens, as Kafka's `OAuthBearerUnsecuredValidatorCallbackHandler`
//! accepts them: a JWT with header `{"alg":"none"}` and an empty signature
//! (`header.claims.`), a principal claim and an `exp` claim. Anyone can write such a token,
//! so a listener that accepts them authenticates nobody: development only (the broker warns
//! at startup).

use super::{
    b64url, numeric_date_ms, principal_of, scope_of, TokenError, UnsecuredSettings, ValidatedToken,
};

/// Checks unsigned tokens.
pub struct UnsecuredValidator {
    settings: UnsecuredSettings,
}

impl UnsecuredValidator {
    /// A validator with the listener's JAAS options.
    pub fn new(settings: UnsecuredSettings) -> Self {
        UnsecuredValidator { settings }
    }

    /// Validates `token` at `now_ms`.
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<ValidatedToken, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "an unsecured JWS has three dot-separated parts".into(),
            ));
        };
        if !signature.is_empty() {
            // A signed token on an unsecured listener: its signature could not be checked, so
            // it is refused rather than trusted.
            return Err(TokenError::Algorithm(
                "signed (this listener accepts only unsecured tokens)".into(),
            ));
        }
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&b64url(header)?)
                .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
        match header.get("alg").and_then(|a| a.as_str()) {
            Some("none") => {}
            other => return Err(TokenError::Algorithm(format!("{other:?}"))),
        }
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&b64url(claims)?)
                .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        let skew = i64::try_from(self.settings.clock_skew_ms).unwrap_or(i64::MAX);
        let expires_at_ms = numeric_date_ms(&claims, "exp")?
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        if expires_at_ms.saturating_add(skew) <= now_ms {
            return Err(TokenError::Expired);
        }
        if numeric_date_ms(&claims, "iat")?.is_some_and(|iat| iat.saturating_sub(skew) > now_ms) {
            return Err(TokenError::NotYetValid("iat"));
        }
        let principal = principal_of(&claims, &self.settings.principal_claim_name)?;
        let scope = scope_of(&claims, &self.settings.scope_claim_name);
        if let Some(missing) = self
            .settings
            .required_scope
            .iter()
            .find(|required| !scope.contains(required))
        {
            return Err(TokenError::Scope(missing.clone()));
        }
        Ok(ValidatedToken {
            principal,
            expires_at_ms,
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    fn token(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    fn validator(required_scope: &[&str]) -> UnsecuredValidator {
        UnsecuredValidator::new(UnsecuredSettings {
            principal_claim_name: "sub".into(),
            scope_claim_name: "scope".into(),
            required_scope: required_scope.iter().map(|s| s.to_string()).collect(),
            clock_skew_ms: 0,
        })
    }

    #[test]
    fn an_unsigned_token_with_sub_and_exp_names_its_principal() {
        let t = token(
            r#"{"alg":"none"}"#,
            r#"{"sub":"alice","exp":2000.5,"iat":1000,"scope":"read write"}"#,
        );
        let valid = validator(&["write"]).validate(&t, 1_500_000).unwrap();
        assert_eq!(valid.principal, "alice");
        assert_eq!(valid.expires_at_ms, 2_000_500);
        assert_eq!(valid.scope, ["read", "write"]);
    }

    #[test]
    fn expired_signed_scopeless_or_principal_less_tokens_are_refused() {
        let v = validator(&[]);
        let ok_claims = r#"{"sub":"alice","exp":2000}"#;
        assert_eq!(
            v.validate(&token(r#"{"alg":"none"}"#, ok_claims), 2_000_000),
            Err(TokenError::Expired)
        );
        let signed = format!("{}sig", token(r#"{"alg":"none"}"#, ok_claims));
        assert!(v.validate(&signed, 0).is_err());
        assert!(v
            .validate(&token(r#"{"alg":"RS256"}"#, ok_claims), 0)
            .is_err());
        assert!(v
            .validate(&token(r#"{"alg":"none"}"#, r#"{"exp":2000}"#), 0)
            .is_err());
        assert!(v
            .validate(&token(r#"{"alg":"none"}"#, r#"{"sub":"a"}"#), 0)
            .is_err());
        assert!(validator(&["admin"])
            .validate(&token(r#"{"alg":"none"}"#, ok_claims), 0)
            .is_err());
        assert!(v.validate("not a token", 0).is_err());
    }
}
