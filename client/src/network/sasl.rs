//! SASL on the client side (KIP-152): SaslHandshake, then SaslAuthenticate with the
//! mechanism's tokens: PLAIN (RFC 4616), SCRAM-SHA-256/512 (RFC 5802/7677), whose last
//! step checks the broker's signature, so a broker that does not know the password cannot
//! pass for one that does, or OAUTHBEARER (RFC 7628) with a token from a file or an unsigned
//! development token.
//!
//! The same exchange serves the first authentication of a connection and each KIP-368
//! re-authentication on it; only the way requests travel differs ([`SaslTransport`]).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};

use super::security::{SaslMechanism, SaslMechanismConfig, SecurityConfig};
use crate::error::{ClientError, Result};

/// How the SASL requests of one exchange reach the broker: queued like any request for the
/// first authentication, written by the connection's writer itself for a re-authentication
/// (so that nothing else is sent in between, as Kafka's clients do).
pub(crate) trait SaslTransport: Send {
    /// Sends a SaslHandshake (v1) and waits for its answer.
    fn handshake(
        &mut self,
        request: SaslHandshakeRequest,
    ) -> BoxFuture<'_, Result<SaslHandshakeResponse>>;
    /// Sends a SaslAuthenticate (at the negotiated version) and waits for its answer.
    fn authenticate(
        &mut self,
        request: SaslAuthenticateRequest,
    ) -> BoxFuture<'_, Result<SaslAuthenticateResponse>>;
}

/// Authenticates over `transport` to broker `addr` as `security` says; returns the session
/// lifetime the broker granted in milliseconds (KIP-368; 0: no limit).
pub(crate) async fn authenticate(
    transport: &mut dyn SaslTransport,
    addr: &str,
    security: &SecurityConfig,
) -> Result<i64> {
    let fail = |reason: String| ClientError::Authentication {
        broker: addr.to_string(),
        reason,
    };
    let mechanism = security.sasl_mechanism;
    // Credentials first: a missing token file is reported as such, before any request.
    let first = match mechanism {
        SaslMechanismConfig::OAuthBearer => {
            Some(oauthbearer_client_first(security).await.map_err(&fail)?)
        }
        _ => None,
    };
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.name()));
    let response = transport.handshake(handshake).await?;
    if response.error_code != 0 {
        let enabled: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(fail(format!(
            "{} is not enabled (error {}); the broker offers {}",
            mechanism.name(),
            response.error_code,
            enabled.join(", ")
        )));
    }
    let mut step = async |bytes: Vec<u8>| -> Result<(Vec<u8>, i64)> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
        let response = transport.authenticate(request).await?;
        if response.error_code != 0 {
            return Err(ClientError::Authentication {
                broker: addr.to_string(),
                reason: response
                    .error_message
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| format!("error code {}", response.error_code)),
            });
        }
        Ok((response.auth_bytes.to_vec(), response.session_lifetime_ms))
    };
    let session_lifetime_ms = match mechanism {
        SaslMechanismConfig::Password(SaslMechanism::Plain) => {
            let (Some(user), Some(password)) = (&security.sasl_username, &security.sasl_password)
            else {
                return Err(fail("sasl.username and sasl.password are not set".into()));
            };
            let mut token = Vec::with_capacity(user.len() + password.len() + 2);
            token.push(0);
            token.extend_from_slice(user.as_bytes());
            token.push(0);
            token.extend_from_slice(password.as_bytes());
            step(token).await?.1
        }
        SaslMechanismConfig::Password(
            mechanism @ (SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512),
        ) => {
            let (Some(user), Some(password)) = (&security.sasl_username, &security.sasl_password)
            else {
                return Err(fail("sasl.username and sasl.password are not set".into()));
            };
            let hash = if mechanism == SaslMechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let client = ScramClient::new(hash, user);
            let (server_first, _) = step(client.first_message().into_bytes()).await?;
            let (final_message, expected) = client
                .final_message(&server_first, password)
                .map_err(&fail)?;
            let (server_final, lifetime) = step(final_message.into_bytes()).await?;
            if server_final != expected.into_bytes() {
                return Err(fail(
                    "the broker's SCRAM signature does not match: it does not know the password"
                        .into(),
                ));
            }
            lifetime
        }
        SaslMechanismConfig::OAuthBearer => {
            let first = first.unwrap_or_default();
            let (challenge, lifetime) = step(first).await?;
            if !challenge.is_empty() {
                // RFC 7628 §3.2.2: the broker refused the token with an error challenge; the
                // client answers with a lone %x01 and the broker then fails the exchange.
                let refusal = String::from_utf8_lossy(&challenge).into_owned();
                return Err(match step(vec![0x01]).await {
                    Err(error) => error,
                    Ok(_) => fail(format!("token refused: {refusal}")),
                });
            }
            lifetime
        }
    };
    Ok(session_lifetime_ms)
}

/// The OAUTHBEARER client-first message: `n,,\x01auth=Bearer <token>\x01[key=value\x01...]\x01`.
async fn oauthbearer_client_first(
    security: &SecurityConfig,
) -> std::result::Result<Vec<u8>, String> {
    let (token, extensions) = if let Some(path) = &security.oauthbearer_token_file {
        // KIP-768's file-based token: read on every authentication, so a token renewed on
        // disk (by a sidecar, say) is used by the next re-authentication.
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            format!(
                "sasl.oauthbearer.token.endpoint.url: {}: {e}",
                path.display()
            )
        })?;
        (text.trim().to_string(), Vec::new())
    } else if security.oauthbearer_unsecure_jwt {
        let config =
            UnsecuredJwtConfig::parse(security.oauthbearer_config.as_deref().unwrap_or(""))?;
        (config.token(SystemTime::now()), config.extensions)
    } else {
        return Err("OAUTHBEARER needs sasl.oauthbearer.token.endpoint.url or \
                    enable.sasl.oauthbearer.unsecure.jwt"
            .into());
    };
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(
            "the OAUTHBEARER token is empty or not a JWT (base64url parts and dots)".into(),
        );
    }
    let mut message = format!("n,,\u{1}auth=Bearer {token}\u{1}");
    for (key, value) in extensions {
        message.push_str(&format!("{key}={value}\u{1}"));
    }
    message.push('\u{1}');
    Ok(message.into_bytes())
}

/// librdkafka's `sasl.oauthbearer.config` for unsecured tokens:
/// `principal=<name> [principalClaimName=sub] [scope=a,b] [scopeClaimName=scope]
/// [lifeSeconds=3600] [extension_<key>=<value> ...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UnsecuredJwtConfig {
    principal: String,
    principal_claim_name: String,
    scope: Vec<String>,
    scope_claim_name: String,
    life_seconds: u64,
    extensions: Vec<(String, String)>,
}

impl UnsecuredJwtConfig {
    /// Parses the setting; the error says what is wrong.
    pub(crate) fn parse(config: &str) -> std::result::Result<Self, String> {
        let mut parsed = UnsecuredJwtConfig {
            principal: String::new(),
            principal_claim_name: "sub".into(),
            scope: Vec::new(),
            scope_claim_name: "scope".into(),
            life_seconds: 3600,
            extensions: Vec::new(),
        };
        for item in config.split_whitespace() {
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!("`{item}` is not key=value"));
            };
            match key {
                "principal" => parsed.principal = value.to_string(),
                "principalClaimName" => parsed.principal_claim_name = value.to_string(),
                "scope" => {
                    parsed.scope = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                }
                "scopeClaimName" => parsed.scope_claim_name = value.to_string(),
                "lifeSeconds" => {
                    parsed.life_seconds =
                        value.parse().ok().filter(|&s| s > 0).ok_or_else(|| {
                            format!("lifeSeconds `{value}` is not a positive number")
                        })?
                }
                _ => match key.strip_prefix("extension_") {
                    Some(name)
                        if !name.is_empty()
                            && name.bytes().all(|b| b.is_ascii_alphabetic())
                            && name != "auth"
                            && value.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
                    {
                        parsed
                            .extensions
                            .push((name.to_string(), value.to_string()))
                    }
                    _ => {
                        return Err(format!(
                            "unknown or malformed `{key}` (known: principal, principalClaimName, \
                             scope, scopeClaimName, lifeSeconds, extension_<letters>)"
                        ))
                    }
                },
            }
        }
        if parsed.principal.is_empty() {
            return Err("principal=<name> is required".into());
        }
        Ok(parsed)
    }

    /// An unsigned JWT (`{"alg":"none"}`, empty signature) valid from `now` for
    /// `lifeSeconds`, as librdkafka makes them.
    fn token(&self, now: SystemTime) -> String {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut claims = serde_json::Map::new();
        claims.insert(
            self.principal_claim_name.clone(),
            serde_json::Value::from(self.principal.clone()),
        );
        claims.insert("iat".into(), serde_json::Value::from(now.floor()));
        claims.insert(
            "exp".into(),
            serde_json::Value::from(now.floor() + self.life_seconds as f64),
        );
        if !self.scope.is_empty() {
            claims.insert(
                self.scope_claim_name.clone(),
                serde_json::Value::from(self.scope.clone()),
            );
        }
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::Value::Object(claims).to_string())
        )
    }
}

/// The hash of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        };
        hmac::sign(&hmac::Key::new(algorithm, key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        };
        digest::digest(algorithm, data).as_ref().to_vec()
    }

    /// `Hi(password, salt, iterations)`: what AlterUserScramCredentials sends as the salted
    /// password.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let (algorithm, len) = match self {
            ScramHash::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, 32),
            ScramHash::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, 64),
        };
        let mut out = vec![0u8; len];
        let iterations = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(algorithm, iterations, salt, password, &mut out);
        out
    }
}

/// Random bytes (nonces, salts).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let _ = ring::rand::SystemRandom::new().fill(&mut out);
    out
}

/// The client side of one SCRAM exchange.
struct ScramClient {
    hash: ScramHash,
    first_bare: String,
    nonce: String,
}

/// Server-first messages may ask for at most this many iterations: a hostile broker could
/// otherwise make the client spin.
const MAX_ITERATIONS: u32 = 1 << 20;

impl ScramClient {
    fn new(hash: ScramHash, user: &str) -> Self {
        let nonce = BASE64.encode(random_bytes(24));
        let user = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            hash,
            first_bare: format!("n={user},r={nonce}"),
            nonce,
        }
    }

    fn first_message(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// The client-final message and the server-final message to expect.
    fn final_message(
        &self,
        server_first: &[u8],
        password: &str,
    ) -> std::result::Result<(String, String), String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "server-first message is not UTF-8".to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            match attribute.split_at_checked(2) {
                Some(("r=", value)) => nonce = Some(value),
                Some(("s=", value)) => salt = BASE64.decode(value).ok(),
                Some(("i=", value)) => iterations = value.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("malformed server-first message `{server_first}`"));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the broker's nonce does not extend ours".into());
        }
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(format!("the broker asks for {iterations} iterations"));
        }
        let salted = self
            .hash
            .salted_password(password.as_bytes(), &salt, iterations);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        let stored_key = self.hash.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = self.hash.hmac(&salted, b"Server Key");
        let server_signature = self.hash.hmac(&server_key, auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", BASE64.encode(proof)),
            format!("v={}", BASE64.encode(server_signature)),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 7677's example exchange, with its client nonce.
    #[test]
    fn rfc_7677_example_proof_and_signature() {
        let client = ScramClient {
            hash: ScramHash::Sha256,
            first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
        };
        let (last, expected) = client
            .final_message(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "pencil",
            )
            .unwrap();
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(expected, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn an_unsecured_token_carries_librdkafkas_claims() {
        let config =
            UnsecuredJwtConfig::parse("principal=alice scope=read,write lifeSeconds=60").unwrap();
        let token = config.token(UNIX_EPOCH + std::time::Duration::from_secs(1000));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[0]).unwrap(),
            br#"{"alg":"none"}"#
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["exp"].as_f64(), Some(1060.0));
        assert_eq!(claims["scope"], serde_json::json!(["read", "write"]));
        assert!(UnsecuredJwtConfig::parse("scope=a").is_err());
        assert!(UnsecuredJwtConfig::parse("principal=a lifeSeconds=x").is_err());
        assert!(UnsecuredJwtConfig::parse("principal=a bogus=1").is_err());
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let client = ScramClient::new(ScramHash::Sha256, "u");
        assert!(client.final_message(b"r=other,s=AAAA,i=4096", "p").is_err());
        let own = format!("r={},s=AAAA,i=4096", client.nonce);
        assert!(client.final_message(own.as_bytes(), "p").is_err());
    }
}
