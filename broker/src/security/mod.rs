//! Security: who a connection is, and how it proves it.
//!
//! Each listener speaks a security protocol (`listener.security.protocol.map`): PLAINTEXT,
//! SSL (TLS, optionally with client certificates), SASL_PLAINTEXT or SASL_SSL (SASL
//! authentication, KIP-152, before any other request). The outcome is a [`Session`] on the
//! connection, which every request handler sees in its `RequestContext`: the one place an
//! authorizer (ACLs) reads the principal from.
//!
//! What a principal may do is the authorizer's business (`authorizer/`: ACLs).
//!
//! Start with `config.rs` (the settings), then `tls.rs`, `authenticator.rs` (the per-connection
//! SASL state machine), `sasl/` (the mechanisms), and `oauthbearer/` (OAUTHBEARER's token
//! validation: signed JWTs against a JWKS, or Kafka's unsecured development tokens).

pub mod authenticator;
pub mod authorizer;
pub mod config;
pub mod controller_security;
pub mod inter_broker;
pub mod jaas;
pub mod oauthbearer;
pub mod principal;
pub mod sasl;
pub mod sasl_login;
pub mod store;
pub mod tls;

use std::net::SocketAddr;

pub use authenticator::Authenticator;
pub use config::{ClientAuth, ListenerSecurity, SaslSettings, SslSettings};
pub use principal::KafkaPrincipal;
pub use sasl::{SaslMechanism, ScramCredential, ScramMechanism};

use crate::config::SecurityProtocol;

/// Why a listener's security could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A PEM store could not be read or holds nothing usable.
    #[error("{setting} = {path}: {reason}")]
    Store {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The OAUTHBEARER validator could not be built (its JWKS is unreadable).
    #[error("OAUTHBEARER: {0}")]
    OAuthBearer(String),
}

/// Who is on the other end of a connection, as request handlers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// `User:ANONYMOUS`, a certificate's subject, or the SASL user.
    pub principal: KafkaPrincipal,
    /// The listener the connection came in on.
    pub listener_name: String,
    /// That listener's protocol.
    pub security_protocol: SecurityProtocol,
    /// The client's address.
    pub client_address: SocketAddr,
    /// The SASL mechanism it authenticated with, if any.
    pub sasl_mechanism: Option<SaslMechanism>,
}

impl Session {
    /// An unauthenticated session on a PLAINTEXT listener (tests, embedding).
    pub fn plaintext(listener_name: &str, client_address: SocketAddr) -> Self {
        Session {
            principal: KafkaPrincipal::anonymous(),
            listener_name: listener_name.to_string(),
            security_protocol: SecurityProtocol::Plaintext,
            client_address,
            sasl_mechanism: None,
        }
    }
}

/// A listener ready to serve: its settings and, for TLS, the acceptor built from them.
pub struct SecuredListener {
    /// The settings.
    pub security: ListenerSecurity,
    /// The TLS acceptor, for SSL and SASL_SSL.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The OAUTHBEARER token validator, when the listener enables OAUTHBEARER.
    pub token_validator: Option<oauthbearer::TokenValidator>,
}

impl SecuredListener {
    /// Reads the listener's PEM files and builds its TLS configuration.
    pub fn new(security: ListenerSecurity) -> Result<Self, SecurityError> {
        let acceptor = match &security.ssl {
            Some(ssl) => Some(tls::acceptor(ssl)?),
            None => None,
        };
        let settings = security.sasl.as_ref().and_then(|s| s.oauthbearer.as_ref());
        let token_validator = match settings {
            None => None,
            Some(settings) => {
                if let oauthbearer::OAuthBearerSettings::Unsecured(_) = settings {
                    tracing::warn!(listener = %security.name, "listener accepts unsecured OAUTHBEARER tokens (alg none, anyone can write one): for development only; set sasl.server.callback.handler.class={} and sasl.oauthbearer.jwks.endpoint.url to check signatures", oauthbearer::VALIDATOR_CALLBACK_HANDLER);
                }
                let validator = oauthbearer::TokenValidator::new(settings)
                    .map_err(|e| SecurityError::OAuthBearer(e.to_string()))?;
                Some(validator)
            }
        };
        Ok(SecuredListener {
            security,
            acceptor,
            token_validator,
        })
    }
}
