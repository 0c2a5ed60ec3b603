//! SASL/OAUTHBEARER (RFC 7628) as Kafka speaks it (KIP-255).
//!
//! The client's one message is `gs2-header %x01 *(key=value %x01) %x01`, for example
//! `n,,\x01auth=Bearer eyJ...\x01\x01`: no channel binding (`n`), an optional authorization id
//! (`a=alice`), the token in the `auth` pair, and optional SASL extensions. A token the
//! validator accepts authenticates the subject; one it refuses is answered, as Kafka and the
//! RFC do, with the error challenge `{"status":"invalid_token"}`, to which the client replies
//! with a single `%x01` and gets SASL_AUTHENTICATION_FAILED with that JSON as the message.
//! A malformed message fails at once.

use std::collections::BTreeMap;

use super::{CredentialStore, SaslStep};
use crate::security::oauthbearer::{now_ms, TokenError};
use crate::security::principal::KafkaPrincipal;

/// Kafka's answer to a token its validator refused (RFC 7628 §3.2.2's error status).
pub const INVALID_TOKEN_CHALLENGE: &str = r#"{"status":"invalid_token"}"#;

/// The parts of a client-first message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The `a=` authorization id, if any; it must equal the token's principal.
    pub authorization_id: Option<String>,
    /// The bearer token (never logged).
    pub token: String,
    /// SASL extensions (`key=value` pairs other than `auth`); none are used by the broker.
    pub extensions: BTreeMap<String, String>,
}

/// Why a client-first message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Invalid OAUTHBEARER client first message: {0}")]
pub struct MalformedMessage(&'static str);

/// Parses a client-first message (RFC 7628 §3.1, with Kafka's token character set).
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, MalformedMessage> {
    let text = std::str::from_utf8(message).map_err(|_| MalformedMessage("not UTF-8"))?;
    // gs2-header: `n,` [ `a=` saslname ] `,`; channel binding (`y`, `p=`) is not supported.
    let rest = text.strip_prefix("n,").ok_or(MalformedMessage(
        "expected the gs2 header `n,` (no channel binding)",
    ))?;
    let (authzid, rest) = rest
        .split_once(',')
        .ok_or(MalformedMessage("unterminated gs2 header"))?;
    let authorization_id = match authzid {
        "" => None,
        a => Some(
            sasl_name(
                a.strip_prefix("a=")
                    .ok_or(MalformedMessage("bad authorization id"))?,
            )
            .ok_or(MalformedMessage("bad authorization id"))?,
        ),
    };
    // Then %x01, the pairs each ended by %x01, and a final %x01.
    let body = rest
        .strip_prefix('\u{1}')
        .and_then(|r| r.strip_suffix("\u{1}\u{1}"))
        .ok_or(MalformedMessage(
            "expected %x01 key=value pairs ending in %x01%x01",
        ))?;
    let mut token = None;
    let mut extensions = BTreeMap::new();
    for pair in body.split('\u{1}') {
        let (key, value) = pair
            .split_once('=')
            .ok_or(MalformedMessage("a pair without `=`"))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(MalformedMessage("a key that is not letters"));
        }
        // RFC 7628's value: VCHAR, space, tab, CR, LF.
        if !value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) || matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            return Err(MalformedMessage("a value with characters outside VCHAR"));
        }
        if key == "auth" {
            if token.is_some() {
                return Err(MalformedMessage("two `auth` pairs"));
            }
            token = Some(bearer_token(value)?);
        } else if extensions
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            return Err(MalformedMessage("a repeated extension"));
        }
    }
    Ok(ClientFirst {
        authorization_id,
        token: token.ok_or(MalformedMessage("no `auth` pair"))?,
        extensions,
    })
}

/// `Bearer <token>`: the scheme case-insensitively, then the token in base64url-and-dots,
/// which is what a JWT is made of.
fn bearer_token(value: &str) -> Result<String, MalformedMessage> {
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(MalformedMessage("expected `auth=Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(MalformedMessage("the auth scheme is not Bearer"));
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(MalformedMessage(
            "the token has characters outside base64url and `.`",
        ));
    }
    Ok(token.to_string())
}

/// A saslname (RFC 5801): `=2C` for `,` and `=3D` for `=`; any other `=` is an error.
fn sasl_name(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// Where an OAUTHBEARER exchange is.
#[derive(Debug, Default)]
pub struct OAuthBearerServer {
    /// Set once the error challenge was sent: why the token was refused (for the log).
    refused: Option<TokenError>,
    /// The `exp` of the accepted token, once authenticated.
    expires_at_ms: Option<i64>,
    done: bool,
}

impl OAuthBearerServer {
    /// A new exchange.
    pub fn new() -> Self {
        OAuthBearerServer::default()
    }

    /// Why the token was refused, once the error challenge has been sent.
    pub fn refusal(&self) -> Option<&TokenError> {
        self.refused.as_ref()
    }

    /// The accepted token's `exp` (milliseconds since the epoch): the session may not outlive
    /// it (KIP-368).
    pub fn expires_at_ms(&self) -> Option<i64> {
        self.expires_at_ms
    }

    /// Feeds the client's next message.
    pub fn step(&mut self, message: &[u8], store: &dyn CredentialStore) -> SaslStep {
        let failed = |reason: String| SaslStep::Failed { user: None, reason };
        if self.done {
            return failed("Authentication failed: the OAUTHBEARER exchange is complete".into());
        }
        if self.refused.is_some() {
            self.done = true;
            // RFC 7628 §3.2.3: after the error challenge the client answers with a lone
            // %x01, and the exchange fails. Kafka would also take a fresh client-first
            // message here; refusing it instead gives a client one token per connection.
            return failed(INVALID_TOKEN_CHALLENGE.into());
        }
        let first = match parse_client_first(message) {
            Ok(first) => first,
            Err(error) => {
                self.done = true;
                return failed(error.to_string());
            }
        };
        let Some(validator) = store.token_validator() else {
            self.done = true;
            return failed("Authentication failed: OAUTHBEARER is not configured".into());
        };
        let token = match validator.validate(&first.token, now_ms()) {
            Ok(token) => token,
            Err(error) => {
                self.refused = Some(error);
                return SaslStep::Continue(INVALID_TOKEN_CHALLENGE.as_bytes().to_vec());
            }
        };
        self.done = true;
        if let Some(authzid) = &first.authorization_id {
            if *authzid != token.principal {
                return SaslStep::Failed {
                    user: Some(token.principal.clone()),
                    reason: format!(
                        "Authentication failed: Client requested an authorization id ({authzid}) \
                         that is different from the token's principal name ({})",
                        token.principal
                    ),
                };
            }
        }
        self.expires_at_ms = Some(token.expires_at_ms);
        SaslStep::Done {
            principal: KafkaPrincipal::user(&token.principal),
            response: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kafkas_client_first_message_parses() {
        let first =
            parse_client_first(b"n,a=al=2Cice,\x01auth=Bearer a.b.c\x01traceId=x 1\x01\x01")
                .unwrap();
        assert_eq!(first.authorization_id.as_deref(), Some("al,ice"));
        assert_eq!(first.token, "a.b.c");
        assert_eq!(first.extensions["traceId"], "x 1");
        assert_eq!(
            parse_client_first(b"n,,\x01auth=Bearer eyJ.eyJ.\x01\x01")
                .unwrap()
                .token,
            "eyJ.eyJ."
        );
    }

    #[test]
    fn malformed_client_first_messages_are_refused() {
        for bad in [
            &b""[..],
            b"y,,\x01auth=Bearer t\x01\x01",
            b"n,,auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t\x01",
            b"n,,\x01auth=Basic t\x01\x01",
            b"n,,\x01auth=Bearer t t\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01x=1\x01\x01",
            b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",
            b"n,a=b=,\x01auth=Bearer t\x01\x01",
            b"n,,\x01\x01\x01",
            b"n,,\x01auth=Bearer t\x01k\xff=v\x01\x01",
        ] {
            assert!(parse_client_first(bad).is_err(), "{bad:?}");
        }
    }
}
