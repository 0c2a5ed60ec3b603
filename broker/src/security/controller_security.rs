//! Security on the controller listener: the metadata quorum's own protocol (Raft and the
//! brokers' calls to the controllers) over TLS when the controller listener is mapped to SSL or
//! SASL_SSL, and with a SASL login first when it is mapped to SASL_PLAINTEXT or SASL_SSL, as
//! Kafka's controller listener takes any of the four protocols.
//!
//! TLS: every member verifies the others against the listener's truststore (certificates
//! naming the voters' addresses) and presents its keystore certificate; with
//! `ssl.client.auth=required` the controllers accept only members holding a certificate from
//! that truststore.
//!
//! SASL: the protocol is not Kafka's, so it carries Kafka's SaslHandshake/SaslAuthenticate as
//! its own first frames ([`RpcRequest::SaslHandshake`]); the controller checks them with the
//! same [`Authenticator`] and mechanisms as a Kafka listener (PLAIN users from the listener's
//! JAAS line, SCRAM credentials from the metadata), and serves nothing else to a connection
//! until it has logged in. Members log in with `sasl.mechanism.controller.protocol` and the
//! credentials of the listener's JAAS line ([`SaslLogin`]). With the authorizer on, a logged-in
//! principal must also be allowed CLUSTER_ACTION on the cluster (or be a super user), as Kafka
//! asks of the requests controllers serve.
//!
//! [`RpcRequest::SaslHandshake`]: crate::metadata::quorum::wire::RpcRequest::SaslHandshake

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::authorizer::{AclOperation, Authorizer, AuthorizerConfig, Resource};
use super::config::ListenerSecurity;
use super::sasl_login::SaslLogin;
use super::store::BrokerCredentials;
use super::{Authenticator, KafkaPrincipal, SecurityError, Session};
use crate::metadata::quorum::wire::ControllerStream;
use crate::metadata::MetadataImage;

/// `sasl.mechanism.controller.protocol`: how members log in to the controllers.
pub const SASL_MECHANISM_CONTROLLER_PROTOCOL: &str = "sasl.mechanism.controller.protocol";

/// The TLS sides of the controller protocol.
#[derive(Clone)]
struct ControllerTls {
    /// Accepts members' connections (on a controller).
    acceptor: TlsAcceptor,
    /// Connects to controllers.
    connector: TlsConnector,
}

/// What the controller listener speaks, both ways: accepting members (on a controller) and
/// connecting to the controllers (every node).
#[derive(Clone)]
pub struct ControllerSecurity {
    listener: ListenerSecurity,
    tls: Option<ControllerTls>,
    login: Option<SaslLogin>,
    authorizer: Option<Arc<Authorizer>>,
}

impl std::fmt::Debug for ControllerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerSecurity")
            .field("protocol", &self.listener.protocol)
            .field("tls", &self.tls.is_some())
            .field("login", &self.login)
            .field("authorizer", &self.authorizer.is_some())
            .finish()
    }
}

impl ControllerSecurity {
    /// The controller listener's security: TLS from its SSL settings (a truststore is
    /// required: the members check each other), `login` for its SASL, and the `authorizer`
    /// logged-in members are checked by.
    pub fn new(
        listener: &ListenerSecurity,
        login: Option<SaslLogin>,
        authorizer: Option<AuthorizerConfig>,
    ) -> Result<Self, SecurityError> {
        let tls = match &listener.ssl {
            None => None,
            Some(ssl) => {
                let client = super::tls::client_config(
                    ssl,
                    "the controller listener speaks TLS: its members check each other's certificates against a truststore",
                )?;
                Some(ControllerTls {
                    acceptor: super::tls::acceptor(ssl)?,
                    connector: TlsConnector::from(client),
                })
            }
        };
        Ok(ControllerSecurity {
            listener: listener.clone(),
            tls,
            login,
            authorizer: authorizer.map(|config| Arc::new(Authorizer::new(config))),
        })
    }

    /// The server side of an accepted connection: TLS when the listener speaks it.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<ControllerStream> {
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some(tls) => Ok(Box::new(tls.acceptor.accept(stream).await?)),
        }
    }

    /// The client side of a connection to the controller at `addr`: TLS when the listener
    /// speaks it (the controller's certificate must name that IP address). The SASL login,
    /// when there is one, is the caller's first exchange ([`Self::login`]).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        stream: TcpStream,
    ) -> std::io::Result<ControllerStream> {
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some(tls) => {
                let name = ServerName::IpAddress(addr.ip().into());
                Ok(Box::new(tls.connector.connect(name, stream).await?))
            }
        }
    }

    /// How this node logs in to the controllers, when the listener speaks SASL.
    pub fn login(&self) -> Option<&SaslLogin> {
        self.login.as_ref()
    }

    /// A new connection's SASL state, when the listener speaks SASL.
    pub fn authenticator(&self, peer: SocketAddr) -> Option<Authenticator> {
        self.listener.sasl.as_ref()?;
        Some(Authenticator::new(
            &self.listener,
            Session {
                principal: KafkaPrincipal::anonymous(),
                listener_name: self.listener.name.clone(),
                security_protocol: self.listener.protocol,
                client_address: peer,
                sasl_mechanism: None,
            },
        ))
    }

    /// The users the listener knows: its PLAIN users, and SCRAM users from `image`.
    pub fn credentials<'a>(&'a self, image: &'a MetadataImage) -> BrokerCredentials<'a> {
        BrokerCredentials::of_listener(&self.listener, None, image)
    }

    /// Whether the member logged in as `session` may be served: CLUSTER_ACTION on the
    /// cluster, when the authorizer is on (a denial is logged by the authorizer).
    pub fn may_serve(&self, session: &Session, image: &MetadataImage) -> bool {
        self.authorizer.as_ref().is_none_or(|authorizer| {
            authorizer.authorize(
                image.acls(),
                session,
                AclOperation::ClusterAction,
                Resource::cluster(),
            )
        })
    }
}
