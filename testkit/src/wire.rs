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

/// Produces `records` to partition 0 of `topic` on the broker at `addr` with ProduceRequest
/// v9 and `acks`, and returns the partition's (error code, base offset).
///
/// A broker named leader in the controller's metadata may not have applied its leadership
/// yet; the answers that mean "nothing appended, not leader (yet)" (NOT_LEADER_OR_FOLLOWER,
/// UNKNOWN_TOPIC_OR_PARTITION) are retried for up to ten seconds, as a client would, and
/// returned as they are after that.
pub async fn produce_to_leader(
    addr: SocketAddr,
    topic: &str,
    records: &[kafka_protocol::records::Record],
    acks: i16,
) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::ResponseError;
    use std::time::Duration;

    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(crate::records::batch(
                    records,
                    kafka_protocol::records::Compression::None,
                )))])]);
    let not_leader_yet = [
        ResponseError::NotLeaderOrFollower.code(),
        ResponseError::UnknownTopicOrPartition.code(),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut client = TestClient::connect(addr).await;
    loop {
        let response = client.call(9, &request).await;
        let partition = &response.responses[0].partition_responses[0];
        let answer = (partition.error_code, partition.base_offset);
        if !not_leader_yet.contains(&answer.0) || tokio::time::Instant::now() > deadline {
            return answer;
        }
        // Leadership arrives with the next metadata record; a short pause between attempts.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
