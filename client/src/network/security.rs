//! The client's security settings, with Kafka's client names (`security.protocol`,
//! `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`,
//! `ssl.endpoint.identification.algorithm`, `sasl.mechanism`, `sasl.username`,
//! `sasl.password`, as librdkafka spells them; for OAUTHBEARER KIP-768's
//! `sasl.oauthbearer.token.endpoint.url` with a `file:` URL, or librdkafka's development-only
//! `enable.sasl.oauthbearer.unsecure.jwt` with `sasl.oauthbearer.config`), and the TLS
//! connector built from them.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig as TlsConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::error::{ClientError, Result};

/// `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// Whether the connection is TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the connection authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `sasl.mechanism`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN (Kafka's default).
    #[default]
    Plain,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// The name sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
            _ => None,
        }
    }
}

/// `sasl.mechanism`: how this client authenticates. The password mechanisms are
/// [`SaslMechanism`]s (whose users `Admin` manages); OAUTHBEARER presents a token instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanismConfig {
    /// PLAIN or SCRAM with `sasl.username` and `sasl.password`.
    Password(SaslMechanism),
    /// OAUTHBEARER (RFC 7628): a bearer token, from a file or (development only) unsigned.
    OAuthBearer,
}

impl Default for SaslMechanismConfig {
    fn default() -> Self {
        SaslMechanismConfig::Password(SaslMechanism::Plain)
    }
}

impl SaslMechanismConfig {
    /// The name sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanismConfig::Password(mechanism) => mechanism.name(),
            SaslMechanismConfig::OAuthBearer => "OAUTHBEARER",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        if value.trim().eq_ignore_ascii_case("OAUTHBEARER") {
            return Some(SaslMechanismConfig::OAuthBearer);
        }
        SaslMechanism::parse(value).map(SaslMechanismConfig::Password)
    }
}

/// How the client secures its connections. Plaintext by default, with host-name
/// verification on for when TLS is turned on.
#[derive(Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// `security.protocol`.
    pub protocol: SecurityProtocol,
    /// `ssl.ca.location`: PEM CA certificates to trust; the system has none built in here,
    /// so TLS needs it.
    pub ca_location: Option<PathBuf>,
    /// `ssl.certificate.location`: the client certificate chain (PEM), for mTLS.
    pub certificate_location: Option<PathBuf>,
    /// `ssl.key.location`: its private key (PEM).
    pub key_location: Option<PathBuf>,
    /// `ssl.endpoint.identification.algorithm`: `https` (default) checks the broker's host
    /// name against its certificate; `none` or empty only checks the chain.
    pub verify_hostname: bool,
    /// `sasl.mechanism`.
    pub sasl_mechanism: SaslMechanismConfig,
    /// `sasl.username`.
    pub sasl_username: Option<String>,
    /// `sasl.password`.
    pub sasl_password: Option<String>,
    /// `sasl.oauthbearer.token.endpoint.url` (KIP-768): a `file:` URL of a file holding the
    /// token, read again for every authentication (so a token renewed on disk is picked up
    /// by the next re-authentication).
    pub oauthbearer_token_file: Option<PathBuf>,
    /// `enable.sasl.oauthbearer.unsecure.jwt` (librdkafka): make unsigned tokens from
    /// `sasl.oauthbearer.config`; development only.
    pub oauthbearer_unsecure_jwt: bool,
    /// `sasl.oauthbearer.config` (librdkafka): `principal=<name> [scope=<a,b>]
    /// [lifeSeconds=<n>] [principalClaimName=<claim>] [scopeClaimName=<claim>]
    /// [extension_<key>=<value>]`.
    pub oauthbearer_config: Option<String>,
}

impl std::fmt::Debug for SecurityConfig {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("protocol", &self.protocol)
            .field("ca_location", &self.ca_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field("verify_hostname", &self.verify_hostname)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("oauthbearer_token_file", &self.oauthbearer_token_file)
            .field("oauthbearer_unsecure_jwt", &self.oauthbearer_unsecure_jwt)
            .finish_non_exhaustive()
    }
}

/// The setting names [`SecurityConfig::set`] knows.
pub const SECURITY_SETTINGS: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.token.endpoint.url",
    "enable.sasl.oauthbearer.unsecure.jwt",
    "sasl.oauthbearer.config",
];

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig::new()
    }
}

impl SecurityConfig {
    /// Plaintext, with host-name verification on for when TLS is turned on.
    pub fn new() -> Self {
        SecurityConfig {
            protocol: SecurityProtocol::Plaintext,
            ca_location: None,
            certificate_location: None,
            key_location: None,
            verify_hostname: true,
            sasl_mechanism: SaslMechanismConfig::default(),
            sasl_username: None,
            sasl_password: None,
            oauthbearer_token_file: None,
            oauthbearer_unsecure_jwt: false,
            oauthbearer_config: None,
        }
    }

    /// Applies one Kafka-style setting; unknown names and bad values are errors.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let bad = |reason: &str| {
            ClientError::InvalidArgument(format!("`{name}`: {reason} (got `{value}`)"))
        };
        match name {
            "security.protocol" => {
                self.protocol = SecurityProtocol::parse(value)
                    .ok_or_else(|| bad("expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"))?
            }
            "ssl.ca.location" => self.ca_location = Some(PathBuf::from(value)),
            "ssl.certificate.location" => self.certificate_location = Some(PathBuf::from(value)),
            "ssl.key.location" => self.key_location = Some(PathBuf::from(value)),
            "ssl.endpoint.identification.algorithm" => {
                self.verify_hostname = match value.trim().to_ascii_lowercase().as_str() {
                    "https" => true,
                    "" | "none" => false,
                    _ => return Err(bad("expected https or none")),
                }
            }
            // librdkafka's spelling is `sasl.mechanisms`; Java's `sasl.mechanism`.
            "sasl.mechanism" | "sasl.mechanisms" => {
                self.sasl_mechanism = SaslMechanismConfig::parse(value)
                    .ok_or_else(|| {
                        bad("expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
                    })?
            }
            "sasl.username" => self.sasl_username = Some(value.to_string()),
            "sasl.password" => self.sasl_password = Some(value.to_string()),
            "sasl.oauthbearer.token.endpoint.url" => {
                self.oauthbearer_token_file = Some(file_url_path(value).ok_or_else(|| {
                    bad("only file: URLs of a token file are supported (file:///path/to/token); fetching tokens from an HTTP(S) endpoint is not")
                })?)
            }
            "enable.sasl.oauthbearer.unsecure.jwt" => {
                self.oauthbearer_unsecure_jwt = match value.trim().to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("expected true or false")),
                }
            }
            "sasl.oauthbearer.config" => {
                super::sasl::UnsecuredJwtConfig::parse(value).map_err(|e| bad(&e))?;
                self.oauthbearer_config = Some(value.to_string());
            }
            _ => {
                return Err(ClientError::InvalidArgument(format!(
                    "unknown client setting `{name}` (known: {})",
                    SECURITY_SETTINGS.join(", ")
                )))
            }
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let oauthbearer = self.sasl_mechanism == SaslMechanismConfig::OAuthBearer;
        if self.oauthbearer_token_file.is_some() && self.oauthbearer_unsecure_jwt {
            return Err(ClientError::InvalidArgument(
                "sasl.oauthbearer.token.endpoint.url and enable.sasl.oauthbearer.unsecure.jwt are two ways to get a token: set one"
                    .into(),
            ));
        }
        if (self.oauthbearer_token_file.is_some() || self.oauthbearer_unsecure_jwt) && !oauthbearer
        {
            return Err(ClientError::InvalidArgument(
                "sasl.oauthbearer.* settings need sasl.mechanism=OAUTHBEARER".into(),
            ));
        }
        if self.oauthbearer_config.is_some() && !self.oauthbearer_unsecure_jwt {
            return Err(ClientError::InvalidArgument(
                "sasl.oauthbearer.config describes unsecured development tokens: it needs enable.sasl.oauthbearer.unsecure.jwt=true"
                    .into(),
            ));
        }
        if self.protocol.uses_sasl() && oauthbearer {
            if self.oauthbearer_token_file.is_none() && !self.oauthbearer_unsecure_jwt {
                return Err(ClientError::InvalidArgument(
                    "sasl.mechanism=OAUTHBEARER needs sasl.oauthbearer.token.endpoint.url=file:///path/to/token (or, for development only, enable.sasl.oauthbearer.unsecure.jwt=true with sasl.oauthbearer.config=principal=<name>)"
                        .into(),
                ));
            }
            if self.oauthbearer_unsecure_jwt && self.oauthbearer_config.is_none() {
                return Err(ClientError::InvalidArgument(
                    "enable.sasl.oauthbearer.unsecure.jwt=true needs sasl.oauthbearer.config=principal=<name>"
                        .into(),
                ));
            }
        } else if self.protocol.uses_sasl()
            && (self.sasl_username.is_none() || self.sasl_password.is_none())
        {
            return Err(ClientError::InvalidArgument(format!(
                "security.protocol={:?} needs sasl.username and sasl.password",
                self.protocol
            )));
        }
        if self.certificate_location.is_some() != self.key_location.is_some() {
            return Err(ClientError::InvalidArgument(
                "ssl.certificate.location and ssl.key.location go together".into(),
            ));
        }
        Ok(())
    }

    /// The TLS configuration, for SSL and SASL_SSL.
    pub(crate) fn tls_config(&self) -> Result<Arc<TlsConfig>> {
        let provider = crypto_provider();
        let invalid =
            |what: &str, reason: String| ClientError::InvalidArgument(format!("{what}: {reason}"));
        let mut roots = RootCertStore::empty();
        let Some(ca) = &self.ca_location else {
            return Err(ClientError::InvalidArgument(
                "TLS needs ssl.ca.location (the PEM certificates of the brokers' CA)".into(),
            ));
        };
        let certificates = read_certificates(ca).map_err(|e| invalid("ssl.ca.location", e))?;
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| invalid("ssl.ca.location", e.to_string()))?;
        }
        let builder = TlsConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e.to_string()))?;
        let roots = Arc::new(roots);
        let builder = if self.verify_hostname {
            builder.with_root_certificates(roots)
        } else {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| invalid("ssl.ca.location", e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        };
        let config = match (&self.certificate_location, &self.key_location) {
            (Some(certificate), Some(key)) => {
                let chain = read_certificates(certificate)
                    .map_err(|e| invalid("ssl.certificate.location", e))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| invalid("ssl.key.location", e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid("ssl.key.location", e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The local path of a `file:` URL (`file:///path`, `file://localhost/path`, `file:/path`).
fn file_url_path(url: &str) -> Option<PathBuf> {
    let rest = url.trim().strip_prefix("file:")?;
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => {
            let (authority, path) = authority_and_path.split_at(authority_and_path.find('/')?);
            if !(authority.is_empty() || authority == "localhost") {
                return None;
            }
            path
        }
        None => rest,
    };
    path.starts_with('/')
        .then(|| PathBuf::from(path.replace("%20", " ")))
}

/// The ring provider, as the broker uses (no aws-lc-rs, no OpenSSL).
// Deprecated in rustls 0.23.48 only for lacking post-quantum key exchange.
#[allow(deprecated)]
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certificates(
    path: &std::path::Path,
) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certificates)
}

/// `ssl.endpoint.identification.algorithm=none`: the chain must lead to a trusted CA, but the
/// certificate need not name the host dialled (brokers behind addresses their certificates do
/// not list, as in tests).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kafka_client_settings_apply_and_typos_are_refused() {
        let mut config = SecurityConfig::new();
        for (name, value) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "s3cret"),
            ("ssl.endpoint.identification.algorithm", ""),
        ] {
            config.set(name, value).unwrap();
        }
        assert_eq!(config.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            config.sasl_mechanism,
            SaslMechanismConfig::Password(SaslMechanism::ScramSha512)
        );
        assert!(!config.verify_hostname);
        assert!(config.validate().is_ok());
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(config.set("sasl.pasword", "x").is_err());
        assert!(config.set("security.protocol", "TLS").is_err());
        assert!(SecurityConfig::default().verify_hostname);
    }

    #[test]
    fn oauthbearer_needs_exactly_one_token_source() {
        let with = |settings: &[(&str, &str)]| {
            let mut config = SecurityConfig::new();
            config.set("security.protocol", "SASL_SSL")?;
            config.set("sasl.mechanism", "OAUTHBEARER")?;
            for (name, value) in settings {
                config.set(name, value)?;
            }
            config.validate().map(|()| config)
        };
        let file = with(&[("sasl.oauthbearer.token.endpoint.url", "file:///run/token")]).unwrap();
        assert_eq!(
            file.oauthbearer_token_file.as_deref(),
            Some(std::path::Path::new("/run/token"))
        );
        assert!(with(&[
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
            (
                "sasl.oauthbearer.config",
                "principal=alice scope=a,b lifeSeconds=60"
            ),
        ])
        .is_ok());
        for bad in [
            &[][..],
            &[("sasl.oauthbearer.token.endpoint.url", "https://idp/token")][..],
            &[("enable.sasl.oauthbearer.unsecure.jwt", "true")][..],
            &[("sasl.oauthbearer.config", "principal=alice")][..],
            &[
                ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
                ("sasl.oauthbearer.config", "scope=a"),
            ][..],
            &[
                ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
                ("sasl.oauthbearer.config", "principal=alice"),
                ("sasl.oauthbearer.token.endpoint.url", "file:///run/token"),
            ][..],
        ] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sasl_without_credentials_and_a_certificate_without_a_key_are_refused() {
        let mut config = SecurityConfig::new();
        config.set("security.protocol", "SASL_PLAINTEXT").unwrap();
        assert!(config.validate().is_err());
        let mut config = SecurityConfig::new();
        config.set("ssl.certificate.location", "/c.pem").unwrap();
        assert!(config.validate().is_err());
    }
}
