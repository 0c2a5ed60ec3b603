//! SASL on the broker (KIP-152): the mechanisms, and one exchange per authentication.
//!
//! A connection on a SASL listener first names a mechanism (SaslHandshake), then sends its
//! tokens (SaslAuthenticate) to a [`SaslExchange`] until it is done or fails. The exchange
//! knows nothing about connections; `server/connection.rs` applies its outcome (a principal,
//! or an error and a closed connection).

pub mod oauthbearer;
pub mod plain;
pub mod scram;

use std::fmt;

use super::oauthbearer::TokenValidator;
use super::principal::KafkaPrincipal;
pub use scram::{ScramCredential, ScramMechanism};

/// The mechanisms Millrace implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SaslMechanism {
    /// RFC 4616: user and password in the clear (use it over TLS).
    Plain,
    /// RFC 7677.
    ScramSha256,
    /// SCRAM with SHA-512, as Kafka names it.
    ScramSha512,
    /// RFC 7628: a bearer token (a JWT) from an identity provider (KIP-255, KIP-768).
    OAuthBearer,
}

impl SaslMechanism {
    /// The IANA name clients send.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Parses a mechanism name (case-insensitively, as settings are written both ways).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
            "OAUTHBEARER" => Some(SaslMechanism::OAuthBearer),
            _ => None,
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an exchange looks users up.
pub trait CredentialStore {
    /// The password of a PLAIN user, if there is one.
    fn plain_password(&self, user: &str) -> Option<String>;
    /// The SCRAM credential of a user for a mechanism, if there is one.
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
    /// The listener's OAUTHBEARER token validator, if it has one.
    fn token_validator(&self) -> Option<&TokenValidator> {
        None
    }
}

/// What one token did to an exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslStep {
    /// Send these bytes back; the client has more to say.
    Continue(Vec<u8>),
    /// Authenticated as `principal`; send `response` (SCRAM's server-final message).
    Done {
        /// Who the client is.
        principal: KafkaPrincipal,
        /// The last bytes for the client.
        response: Vec<u8>,
    },
    /// Refused. `user` names the claimed user for the log (never the secret); `reason` is
    /// what the client is told.
    Failed {
        /// The user the client claimed, if it got that far.
        user: Option<String>,
        /// Why, in words safe to show the client.
        reason: String,
    },
}

/// One authentication in progress.
pub enum SaslExchange {
    /// PLAIN: a single token.
    Plain,
    /// SCRAM: client-first, then client-final.
    Scram(scram::ScramServer),
    /// OAUTHBEARER: the client-first message (and `%x01` after an error challenge).
    OAuthBearer(oauthbearer::OAuthBearerServer),
}

impl SaslExchange {
    /// Starts an exchange for `mechanism`.
    pub fn start(mechanism: SaslMechanism) -> Self {
        match mechanism {
            SaslMechanism::Plain => SaslExchange::Plain,
            SaslMechanism::ScramSha256 => {
                SaslExchange::Scram(scram::ScramServer::new(ScramMechanism::Sha256))
            }
            SaslMechanism::ScramSha512 => {
                SaslExchange::Scram(scram::ScramServer::new(ScramMechanism::Sha512))
            }
            SaslMechanism::OAuthBearer => {
                SaslExchange::OAuthBearer(oauthbearer::OAuthBearerServer::new())
            }
        }
    }

    /// Feeds the client's next token.
    pub fn step(&mut self, token: &[u8], store: &dyn CredentialStore) -> SaslStep {
        match self {
            SaslExchange::Plain => plain::authenticate(token, store),
            SaslExchange::Scram(server) => server.step(token, store),
            SaslExchange::OAuthBearer(server) => server.step(token, store),
        }
    }

    /// When the credential just accepted stops being valid (milliseconds since the epoch):
    /// an OAUTHBEARER token's `exp`. Passwords do not expire.
    pub fn credential_expires_at_ms(&self) -> Option<i64> {
        match self {
            SaslExchange::OAuthBearer(server) => server.expires_at_ms(),
            _ => None,
        }
    }

    /// Why the credential was refused, when the mechanism answered a refusal with a
    /// challenge rather than a failure (OAUTHBEARER's error challenge); for the log.
    pub fn refusal(&self) -> Option<String> {
        match self {
            SaslExchange::OAuthBearer(server) => server.refusal().map(|e| e.to_string()),
            _ => None,
        }
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
