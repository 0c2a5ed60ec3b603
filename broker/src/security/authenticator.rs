//! The SASL state of one connection (KIP-152, KIP-368).
//!
//! On a SASL listener a connection may send only ApiVersions and SaslHandshake until it has
//! authenticated; anything else closes it unanswered, as Kafka does, so no handler ever sees an
//! unauthenticated request. A session lasts `connections.max.reauth.ms`: the client
//! re-authenticates (SaslHandshake and SaslAuthenticate again) on the same connection before
//! then, or its next request after expiry closes the connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::ListenerSecurity;
use super::oauthbearer;
use super::sasl::{CredentialStore, SaslExchange, SaslMechanism, SaslStep};
use super::Session;

/// Kafka's error codes for SASL.
pub mod codes {
    /// UNSUPPORTED_SASL_MECHANISM.
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    /// ILLEGAL_SASL_STATE.
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    /// SASL_AUTHENTICATION_FAILED.
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
}

/// The answer to a SaslHandshake.
#[derive(Debug, PartialEq, Eq)]
pub struct HandshakeOutcome {
    /// NONE, UNSUPPORTED_SASL_MECHANISM or ILLEGAL_SASL_STATE.
    pub error_code: i16,
    /// The listener's enabled mechanisms.
    pub mechanisms: Vec<&'static str>,
    /// Close the connection once the answer is sent.
    pub close: bool,
}

/// The answer to a SaslAuthenticate (or a raw v0 token).
#[derive(Debug, PartialEq, Eq)]
pub struct AuthenticateOutcome {
    /// NONE, SASL_AUTHENTICATION_FAILED or ILLEGAL_SASL_STATE.
    pub error_code: i16,
    /// Why it failed.
    pub error_message: Option<String>,
    /// The mechanism's bytes for the client.
    pub auth_bytes: Vec<u8>,
    /// KIP-368: how long the new session lasts (0: no limit).
    pub session_lifetime_ms: i64,
    /// Close the connection once the answer is sent.
    pub close: bool,
    /// The authentication succeeded and replaced an earlier session on this connection
    /// (KIP-368 re-authentication).
    pub reauthenticated: bool,
    /// The exchange finished with an authenticated session.
    pub completed: bool,
}

/// Where a connection is in its authentication.
enum Phase {
    /// Waiting for SaslHandshake.
    Handshake,
    /// A mechanism was chosen; tokens go to the exchange. `raw`: SaslHandshake v0, so tokens
    /// come as bare frames instead of SaslAuthenticate requests.
    Exchange {
        mechanism: SaslMechanism,
        // Boxed: SCRAM's state is large, and most connections spend their life Idle.
        exchange: Box<SaslExchange>,
        raw: bool,
        /// A re-authentication that asked for another mechanism than the session's: as in
        /// Kafka, the handshake is answered and the first token fails with this reason.
        refused: Option<String>,
    },
    /// Nothing in progress.
    Idle,
}

/// One connection's authentication state and its current [`Session`].
pub struct Authenticator {
    sasl: Option<super::config::SaslSettings>,
    reauth: Option<Duration>,
    session: Arc<Session>,
    authenticated: bool,
    expires_at: Option<Instant>,
    phase: Phase,
}

impl Authenticator {
    /// The state of a new connection on `listener`, whose TLS (if any) gave `session`.
    pub fn new(listener: &ListenerSecurity, session: Session) -> Self {
        let sasl = listener.sasl.clone();
        let reauth = (listener.connections_max_reauth_ms > 0)
            .then(|| Duration::from_millis(listener.connections_max_reauth_ms));
        Authenticator {
            authenticated: sasl.is_none(),
            phase: if sasl.is_some() {
                Phase::Handshake
            } else {
                Phase::Idle
            },
            sasl,
            reauth,
            session: Arc::new(session),
            expires_at: None,
        }
    }

    /// The session requests run as.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Whether the next frame is a raw SASL token (after a v0 SaslHandshake).
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.phase, Phase::Exchange { raw: true, .. })
    }

    /// Whether a request other than the SASL ones may be served now; `Err` says why the
    /// connection must close instead. `ApiVersions` is always allowed (clients ask it first).
    pub fn admit(&self, api_versions: bool, now: Instant) -> Result<(), &'static str> {
        if api_versions && !self.expects_raw_token() {
            return Ok(());
        }
        if !self.authenticated {
            return Err("request before SASL authentication");
        }
        if self.expires_at.is_some_and(|at| now >= at) {
            return Err(
                "SASL session expired (connections.max.reauth.ms) without re-authentication",
            );
        }
        Ok(())
    }

    /// Answers a SaslHandshake asking for `mechanism`.
    pub fn handshake(&mut self, mechanism: &str, version: i16) -> HandshakeOutcome {
        let Some(sasl) = &self.sasl else {
            // As Kafka answers on a listener without SASL; the connection stays usable.
            return HandshakeOutcome {
                error_code: codes::ILLEGAL_SASL_STATE,
                mechanisms: Vec::new(),
                close: false,
            };
        };
        let mechanisms: Vec<&'static str> =
            sasl.enabled_mechanisms.iter().map(|m| m.name()).collect();
        // A first handshake, or a re-authentication (KIP-368 needs v1: tokens in requests).
        let allowed = match self.phase {
            Phase::Handshake => true,
            Phase::Idle => self.authenticated && version >= 1,
            Phase::Exchange { .. } => false,
        };
        if !allowed {
            return HandshakeOutcome {
                error_code: codes::ILLEGAL_SASL_STATE,
                mechanisms,
                close: true,
            };
        }
        let chosen = SaslMechanism::parse(mechanism)
            .filter(|m| sasl.enabled_mechanisms.contains(m) && m.name() == mechanism);
        let Some(chosen) = chosen else {
            tracing::info!(client = %self.session.client_address, %mechanism, "unsupported SASL mechanism requested");
            return HandshakeOutcome {
                error_code: codes::UNSUPPORTED_SASL_MECHANISM,
                mechanisms,
                close: true,
            };
        };
        // KIP-368: a session re-authenticates with the mechanism it started with (no
        // downgrade from SCRAM or OAUTHBEARER to PLAIN mid-connection).
        let refused = self
            .session
            .sasl_mechanism
            .filter(|previous| self.authenticated && *previous != chosen)
            .map(|previous| {
                format!(
                    "SASL mechanism '{chosen}' requested by client is not supported for \
                     re-authentication of mechanism '{previous}'"
                )
            });
        self.phase = Phase::Exchange {
            mechanism: chosen,
            exchange: Box::new(SaslExchange::start(chosen)),
            raw: version == 0,
            refused,
        };
        HandshakeOutcome {
            error_code: 0,
            mechanisms,
            close: false,
        }
    }

    /// Feeds one token (from SaslAuthenticate, or a raw frame after a v0 handshake).
    pub fn authenticate(
        &mut self,
        token: &[u8],
        store: &dyn CredentialStore,
        now: Instant,
    ) -> AuthenticateOutcome {
        let Phase::Exchange {
            mechanism,
            exchange,
            refused,
            ..
        } = &mut self.phase
        else {
            return AuthenticateOutcome {
                error_code: codes::ILLEGAL_SASL_STATE,
                error_message: Some("SaslAuthenticate before SaslHandshake".into()),
                auth_bytes: Vec::new(),
                session_lifetime_ms: 0,
                close: true,
                reauthenticated: false,
                completed: false,
            };
        };
        let mechanism = *mechanism;
        if let Some(reason) = refused.take() {
            return self.fail(None, reason);
        }
        let step = exchange.step(token, store);
        let credential_expires_at_ms = exchange.credential_expires_at_ms();
        let refusal = exchange.refusal();
        match step {
            SaslStep::Continue(bytes) => {
                if let Some(reason) = refusal {
                    // OAUTHBEARER answers a bad token with a challenge first; say why now, as
                    // the client may hang up instead of finishing the exchange.
                    tracing::warn!(client = %self.session.client_address, listener = %self.session.listener_name, %mechanism, %reason, "SASL authentication failed: token refused");
                }
                AuthenticateOutcome {
                    error_code: 0,
                    error_message: None,
                    auth_bytes: bytes,
                    session_lifetime_ms: 0,
                    close: false,
                    reauthenticated: false,
                    completed: false,
                }
            }
            SaslStep::Done {
                principal,
                response,
            } => {
                // KIP-368: re-authentication may not change who the connection is.
                if self.authenticated
                    && self.session.sasl_mechanism.is_some()
                    && self.session.principal != principal
                {
                    tracing::warn!(client = %self.session.client_address, from = %self.session.principal, to = %principal, "re-authentication as a different principal refused");
                    return self.fail(
                        Some(principal.name),
                        "Cannot change principals during re-authentication".into(),
                    );
                }
                let reauthenticated = self.authenticated && self.session.sasl_mechanism.is_some();
                let mut session = (*self.session).clone();
                session.principal = principal;
                session.sasl_mechanism = Some(mechanism);
                tracing::debug!(client = %session.client_address, principal = %session.principal, %mechanism, reauthenticated, "authenticated");
                self.session = Arc::new(session);
                self.authenticated = true;
                let lifetime_ms = session_lifetime_ms(
                    self.reauth,
                    credential_expires_at_ms.map(|exp| exp.saturating_sub(oauthbearer::now_ms())),
                );
                self.expires_at = lifetime_ms
                    .map(|ms| now + Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
                self.phase = Phase::Idle;
                AuthenticateOutcome {
                    error_code: 0,
                    error_message: None,
                    auth_bytes: response,
                    session_lifetime_ms: lifetime_ms.unwrap_or(0),
                    close: false,
                    reauthenticated,
                    completed: true,
                }
            }
            SaslStep::Failed { user, reason } => self.fail(user, reason),
        }
    }

    fn fail(&mut self, user: Option<String>, reason: String) -> AuthenticateOutcome {
        // Logged with who tried from where; the token (which holds the secret) never is.
        tracing::warn!(client = %self.session.client_address, user = user.as_deref().unwrap_or("-"), listener = %self.session.listener_name, %reason, "SASL authentication failed");
        self.phase = Phase::Idle;
        self.authenticated = false;
        AuthenticateOutcome {
            error_code: codes::SASL_AUTHENTICATION_FAILED,
            error_message: Some(reason),
            auth_bytes: Vec::new(),
            session_lifetime_ms: 0,
            close: true,
            reauthenticated: false,
            completed: false,
        }
    }
}

/// How long a new session lasts, as Kafka computes it: `connections.max.reauth.ms`, cut short
/// by the credential's own remaining lifetime (an OAUTHBEARER token's `exp`); `None` when
/// neither limits it. A credential already past its end gives 0: the session is over at once.
fn session_lifetime_ms(
    reauth: Option<Duration>,
    credential_remaining_ms: Option<i64>,
) -> Option<i64> {
    let reauth = reauth.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match (reauth, credential_remaining_ms) {
        (None, None) => None,
        (Some(reauth), None) => Some(reauth),
        (None, Some(remaining)) => Some(remaining.max(0)),
        (Some(reauth), Some(remaining)) => Some(reauth.min(remaining).max(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_shortens_the_session_to_its_expiry_as_in_kafka() {
        let reauth = Some(Duration::from_millis(2_000));
        assert_eq!(session_lifetime_ms(reauth, None), Some(2_000));
        assert_eq!(session_lifetime_ms(reauth, Some(500)), Some(500));
        assert_eq!(session_lifetime_ms(reauth, Some(60_000)), Some(2_000));
        assert_eq!(session_lifetime_ms(None, Some(60_000)), Some(60_000));
        assert_eq!(session_lifetime_ms(None, Some(-5)), Some(0));
        assert_eq!(session_lifetime_ms(None, None), None);
    }
}
