//! A tiny Kafka-protocol client for tests: one request at a time over a real TCP socket,
//! encoded and decoded with the `kafka-protocol` crate.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One connection to a broker.
pub struct TestClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl TestClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        TestClient {
            stream: TcpStream::connect(addr)
                .await
                .expect("a connection to the broker"),
            correlation_id: 0,
        }
    }

    /// Connects to `addr`, or the connection error (for tests where the broker may be down).
    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(TestClient {
            stream: TcpStream::connect(addr).await?,
            correlation_id: 0,
        })
    }

    /// Sends a request at `version` and reads its response.
    pub async fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let api = ApiKey::try_from(R::KEY).expect("a known API key");
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("millrace-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .expect("the request header encodes");
        request
            .encode(&mut body, version)
            .expect("the request encodes");
        self.send_raw(&body).await;
        let mut frame = self.read_frame().await.expect("connection closed");
        let response_header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version))
                .expect("a response header");
        assert_eq!(response_header.correlation_id, self.correlation_id);
        R::Response::decode(&mut frame, version).expect("a response")
    }

    /// Like [`TestClient::call`], but `None` if the connection fails (the broker died).
    pub async fn try_call<R: Request>(&mut self, version: i16, request: &R) -> Option<R::Response> {
        let api = ApiKey::try_from(R::KEY).ok()?;
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id);
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .ok()?;
        request.encode(&mut body, version).ok()?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.stream.write_all(&frame).await.ok()?;
        let mut frame = self.read_frame().await?;
        ResponseHeader::decode(&mut frame, api.response_header_version(version)).ok()?;
        R::Response::decode(&mut frame, version).ok()
    }

    /// Writes a size-prefixed frame.
    pub async fn send_raw(&mut self, body: &[u8]) {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(body);
        self.stream
            .write_all(&frame)
            .await
            .expect("the frame is written");
    }

    /// Writes bytes as they are.
    pub async fn write_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the bytes are written");
    }

    /// Reads one response frame (without its size); `None` once the broker closed the socket.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await.ok()?;
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).await.ok()?;
        Some(Bytes::from(frame))
    }

    /// True once the broker has closed the connection (reads EOF).
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte).await, Ok(0) | Err(_))
    }
}
