//! A connection from this broker to another one, for inter-broker requests (the replica
//! fetcher's Fetch): Kafka framing, one request at a time, encoded with `kafka-protocol`.
//!
//! Answers from another broker are input like any other: a short, malformed or mismatched
//! frame is an error that drops the connection, never a panic.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
#[derive(Debug)]
pub struct BrokerConnection {
    address: String,
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
}

impl BrokerConnection {
    /// Connects to `address` (`host:port`) within `timeout`.
    pub async fn connect(
        address: &str,
        client_id: String,
        timeout: Duration,
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
        Ok(BrokerConnection {
            address: address.to_string(),
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id),
        })
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
