//! How this broker connects to the other brokers (replica fetchers, transaction markers,
//! KIP-890 verification): over the inter-broker listener's security protocol, as Kafka does.
//!
//! TLS verifies the other broker's certificate and name against the listener's
//! `ssl.truststore.location` (Kafka's default `ssl.endpoint.identification.algorithm=https`)
//! and presents this broker's own keystore certificate, for listeners that require client
//! certificates. SASL logs in with `sasl.mechanism.inter.broker.protocol` (see
//! [`super::sasl_login`]).
//! The principal the other brokers see then needs CLUSTER_ACTION on the cluster (or to be a
//! super user) once the authorizer is on.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::config::ListenerSecurity;
use super::sasl_login::{LoginSettingError, SaslLogin};
use crate::config::SecurityProtocol;

/// `sasl.mechanism.inter.broker.protocol`.
pub const SASL_MECHANISM_INTER_BROKER_PROTOCOL: &str = "sasl.mechanism.inter.broker.protocol";

/// What this broker's connections to other brokers speak.
#[derive(Clone, Debug)]
pub struct InterBrokerSecurity {
    /// The inter-broker listener's protocol.
    pub protocol: SecurityProtocol,
    /// TLS: the client configuration.
    tls: Option<Arc<ClientConfig>>,
    /// SASL: the login.
    pub login: Option<SaslLogin>,
}

impl Default for InterBrokerSecurity {
    fn default() -> Self {
        InterBrokerSecurity {
            protocol: SecurityProtocol::Plaintext,
            tls: None,
            login: None,
        }
    }
}

impl InterBrokerSecurity {
    /// The settings of connections to the inter-broker `listener`, from the broker settings.
    pub fn resolve(
        settings: &BTreeMap<String, String>,
        listener: &ListenerSecurity,
    ) -> Result<Self, LoginSettingError> {
        let tls = match &listener.ssl {
            None => None,
            Some(ssl) => {
                let why = format!(
                    "the inter-broker listener {} speaks TLS: brokers check each other's certificates against a truststore",
                    listener.name
                );
                Some(super::tls::client_config(ssl, &why).map_err(|e| match e {
                    super::SecurityError::Store {
                        setting, reason, ..
                    } => (setting.to_string(), reason),
                    other => ("ssl.keystore.location".to_string(), other.to_string()),
                })?)
            }
        };
        let login = match &listener.sasl {
            None => None,
            Some(_) => Some(SaslLogin::resolve(
                settings,
                &listener.name,
                SASL_MECHANISM_INTER_BROKER_PROTOCOL,
            )?),
        };
        Ok(InterBrokerSecurity {
            protocol: listener.protocol,
            tls,
            login,
        })
    }

    /// Whether connections speak TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS connector and the name to check for `host`, when the listener speaks TLS.
    pub fn tls_for(
        &self,
        host: &str,
    ) -> Option<Result<(tokio_rustls::TlsConnector, ServerName<'static>), String>> {
        let config = self.tls.clone()?;
        Some(
            ServerName::try_from(host.to_string())
                .map(|name| (tokio_rustls::TlsConnector::from(config), name))
                .map_err(|e| format!("`{host}` is not a TLS server name: {e}")),
        )
    }
}
