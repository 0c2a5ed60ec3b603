//! SASL/PLAIN (RFC 4616): `[authzid] NUL authcid NUL password`, checked against the users of
//! the listener's PLAIN JAAS line.

use super::{constant_time_eq, CredentialStore, SaslStep};
use crate::security::principal::KafkaPrincipal;

/// What Kafka answers for an unknown user or a wrong password (the same, so that a client
/// cannot tell which).
pub const INVALID_CREDENTIALS: &str = "Authentication failed: Invalid username or password";

/// Checks one PLAIN token.
pub fn authenticate(token: &[u8], store: &dyn CredentialStore) -> SaslStep {
    let fail = |user: Option<&str>, reason: &str| SaslStep::Failed {
        user: user.map(str::to_string),
        reason: reason.to_string(),
    };
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return fail(None, "Invalid SASL/PLAIN message: expected 3 tokens");
    };
    let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user)) else {
        return fail(None, "Invalid SASL/PLAIN message: not UTF-8");
    };
    if user.is_empty() {
        return fail(None, "Authentication failed: username not specified");
    }
    if !authzid.is_empty() && authzid != user {
        return fail(
            Some(user),
            "Authentication failed: Client requested an authorization id that is different from username",
        );
    }
    let Some(expected) = store.plain_password(user) else {
        return fail(Some(user), INVALID_CREDENTIALS);
    };
    if !constant_time_eq(expected.as_bytes(), password) {
        return fail(Some(user), INVALID_CREDENTIALS);
    }
    SaslStep::Done {
        principal: KafkaPrincipal::user(user),
        response: Vec::new(),
    }
}
