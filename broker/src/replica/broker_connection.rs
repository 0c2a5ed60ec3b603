//! A connection from this broker to another one, for inter-broker requests (the replica
//! fetcher's Fetch): Kafka framing, one request at a time, encoded with `kafka-protocol`, over
//! the inter-broker listener's TLS and SASL when it has them
//! ([`crate::security::inter_broker`]).
//!
//! Answers from another broker are input like any other: a short, malformed or mismatched
//! frame is an error that drops the connection, never a panic.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::security::inter_broker::InterBrokerSecurity;
use crate::security::sasl_login::SaslLogin;

/// A byte stream to another broker: TCP, or TLS over TCP.
trait BrokerIo: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> BrokerIo for T {}

/// The largest answer accepted from another broker (a fetch answer is bounded by
/// `replica.fetch.response.max.bytes`, 10 MiB by default; this leaves room).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Why an inter-broker request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed or closed.
    #[error("broker {broker}: {source}")]
    Io {
        /// The other broker's address.
        broker: String,
        /// The error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("broker {0}: no answer in time")]
    Timeout(String),
    /// The TLS handshake or the SASL login failed.
    #[error("broker {broker}: {reason}")]
    Authentication {
        /// The other broker's address.
        broker: String,
        /// Why.
        reason: String,
    },
    /// The answer could not be read.
    #[error("broker {broker}: malformed answer: {reason}")]
    Malformed {
        /// The other broker's address.
        broker: String,
        /// What was wrong.
        reason: String,
    },
}

/// One connection to another broker.
pub struct BrokerConnection {
    address: String,
    stream: Box<dyn BrokerIo>,
    correlation_id: i32,
    client_id: StrBytes,
}

impl std::fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl BrokerConnection {
    /// Connects to `address` (`host:port`) within `timeout`, with the TLS and SASL login of
    /// `security`.
    pub async fn connect(
        address: &str,
        client_id: String,
        timeout: Duration,
        security: &InterBrokerSecurity,
    ) -> Result<Self, ConnectionError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| ConnectionError::Timeout(address.to_string()))?
            .map_err(|source| ConnectionError::Io {
                broker: address.to_string(),
                source,
            })?;
        // Fetch answers are latency-sensitive (acks=all waits on them).
        let _ = stream.set_nodelay(true);
        let refused = |reason: String| ConnectionError::Authentication {
            broker: address.to_string(),
            reason,
        };
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        let stream: Box<dyn BrokerIo> = match security.tls_for(host) {
            None => Box::new(stream),
            Some(tls) => {
                let (connector, name) = tls.map_err(refused)?;
                let tls = tokio::time::timeout(timeout, connector.connect(name, stream))
                    .await
                    .map_err(|_| ConnectionError::Timeout(address.to_string()))?
                    .map_err(|e| refused(format!("TLS handshake: {e}")))?;
                Box::new(tls)
            }
        };
        let mut connection = BrokerConnection {
            address: address.to_string(),
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id),
        };
        if let Some(login) = &security.login {
            connection.login(login, timeout).await?;
        }
        Ok(connection)
    }

    /// SaslHandshake v1 then SaslAuthenticate v2 (KIP-152) as this broker's own user.
    async fn login(&mut self, login: &SaslLogin, timeout: Duration) -> Result<(), ConnectionError> {
        let address = self.address.clone();
        let refused = move |reason: String| ConnectionError::Authentication {
            broker: address.clone(),
            reason,
        };
        let mechanism = StrBytes::from_static_str(login.mechanism.name());
        let handshake = self
            .call(
                1,
                &SaslHandshakeRequest::default().with_mechanism(mechanism),
                timeout,
            )
            .await?;
        if handshake.error_code != 0 {
            return Err(refused(format!(
                "the broker does not take {} (error {}; it offers {:?})",
                login.mechanism.name(),
                handshake.error_code,
                handshake.mechanisms
            )));
        }
        let (mut exchange, mut token) = login.begin();
        loop {
            let answer = self.authenticate(token, timeout).await?;
            match exchange.next(&answer).map_err(&refused)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    /// One SaslAuthenticate round; the server's bytes, or the refusal.
    async fn authenticate(
        &mut self,
        token: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, ConnectionError> {
        let answer = self
            .call(
                2,
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
                timeout,
            )
            .await?;
        if answer.error_code != 0 {
            return Err(ConnectionError::Authentication {
                broker: self.address.clone(),
                reason: format!(
                    "SASL login refused (error {}): {}",
                    answer.error_code,
                    answer.error_message.as_deref().unwrap_or("no reason given")
                ),
            });
        }
        Ok(answer.auth_bytes)
    }

    /// Sends `request` at `version` and reads its answer within `timeout`.
    pub async fn call<R: Request>(
        &mut self,
        version: i16,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, ConnectionError> {
        match tokio::time::timeout(timeout, self.call_inner(version, request)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectionError::Timeout(self.address.clone())),
        }
    }

    async fn call_inner<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, ConnectionError> {
        let malformed = |reason: String| ConnectionError::Malformed {
            broker: self.address.clone(),
            reason,
        };
        let api = ApiKey::try_from(R::KEY).map_err(|_| malformed("unknown API key".into()))?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::with_capacity(256);
        body.put_i32(0);
        header
            .encode(&mut body, api.request_header_version(version))
            .map_err(|e| malformed(format!("encoding the request header: {e}")))?;
        request
            .encode(&mut body, version)
            .map_err(|e| malformed(format!("encoding the request: {e}")))?;
        let len = i32::try_from(body.len() - 4).map_err(|_| malformed("request too big".into()))?;
        body[..4].copy_from_slice(&len.to_be_bytes());
        let io = |source| ConnectionError::Io {
            broker: self.address.clone(),
            source,
        };
        self.stream.write_all(&body).await.map_err(io)?;

        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.map_err(io)?;
        let len = usize::try_from(i32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > MAX_RESPONSE_BYTES {
            return Err(malformed(format!("answer of {len} bytes")));
        }
        let mut frame = vec![0u8; len];
        self.stream.read_exact(&mut frame).await.map_err(io)?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .map_err(|e| malformed(format!("response header: {e}")))?;
        if header.correlation_id != self.correlation_id {
            return Err(malformed(format!(
                "correlation id {} for request {}",
                header.correlation_id, self.correlation_id
            )));
        }
        R::Response::decode(&mut frame, version).map_err(|e| malformed(format!("answer: {e}")))
    }
}
