//! TLS for SSL and SASL_SSL listeners: a rustls server configuration from Kafka's PEM settings,
//! and the handshake with its timeout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::config::{ClientAuth, SslSettings};
use super::principal::{principal_from_certificate, KafkaPrincipal};
use super::SecurityError;

/// A client that has not finished its TLS handshake by then is disconnected, so a silent or
/// plaintext peer cannot hold a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring provider: the one crypto backend we build (no aws-lc-rs, no OpenSSL).
// rustls 0.23.48 deprecates it for lacking post-quantum key exchange (only aws-lc-rs has
// it); we keep ring for its small, C-compiler-only build. X25519 and P-256 remain.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the acceptor of a TLS listener from its settings (reads the PEM files).
pub fn acceptor(ssl: &SslSettings) -> Result<TlsAcceptor, SecurityError> {
    let (certificates, key) = read_keystore(ssl)?;
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(SecurityError::Tls)?;
    let builder = match (ssl.client_auth, &ssl.truststore_location) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(truststore)) => {
            let roots = read_truststore(truststore)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| SecurityError::Tls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certificates, key)
        .map_err(SecurityError::Tls)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client configuration from a listener's stores, for this broker's own connections to
/// other brokers and controllers: the truststore checks the other side's certificate and name,
/// the keystore is this side's certificate (for listeners that require one). `why_trust` says
/// why a truststore is needed when there is none.
pub fn client_config(
    ssl: &SslSettings,
    why_trust: &str,
) -> Result<Arc<rustls::ClientConfig>, SecurityError> {
    let truststore = ssl
        .truststore_location
        .as_ref()
        .ok_or_else(|| SecurityError::Store {
            setting: "ssl.truststore.location",
            path: String::new(),
            reason: why_trust.to_string(),
        })?;
    let roots = read_truststore(truststore)?;
    let (chain, key) = read_keystore(ssl)?;
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The certificates of `ssl.truststore.location`, as the roots a peer's certificate is checked
/// against.
fn read_truststore(truststore: &std::path::Path) -> Result<RootCertStore, SecurityError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(truststore, "ssl.truststore.location")? {
        roots.add(certificate).map_err(|e| SecurityError::Store {
            setting: "ssl.truststore.location",
            path: truststore.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The keystore's certificate chain and private key.
fn read_keystore(
    ssl: &SslSettings,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), SecurityError> {
    let certificates = read_certificates(&ssl.keystore_location, "ssl.keystore.location")?;
    let key =
        PrivateKeyDer::from_pem_file(&ssl.keystore_location).map_err(|e| SecurityError::Store {
            setting: "ssl.keystore.location",
            path: ssl.keystore_location.display().to_string(),
            reason: format!("no private key: {e}"),
        })?;
    Ok((certificates, key))
}

fn read_certificates(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let store_error = |reason: String| SecurityError::Store {
        setting,
        path: path.display().to_string(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| store_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| store_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(store_error("no certificate in the file".into()));
    }
    Ok(certificates)
}

/// Runs the server side of the handshake; `Err` says why the peer was dropped (a plaintext
/// client on a TLS port, a bad certificate, a timeout).
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(error)) => Err(format!("TLS handshake failed: {error}")),
        Err(_) => Err(format!(
            "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}"
        )),
    }
}

/// The principal of the client certificate of a finished handshake, if one was presented.
pub fn peer_principal(tls: &TlsStream<TcpStream>) -> Result<Option<KafkaPrincipal>, String> {
    let (_, connection) = tls.get_ref();
    match connection
        .peer_certificates()
        .and_then(|chain| chain.first())
    {
        Some(leaf) => principal_from_certificate(leaf)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}
