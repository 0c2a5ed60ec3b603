//! A tiny Kafka-protocol client for tests: one request at a time over a real TCP socket,
//! encoded and decoded with the `kafka-protocol` crate.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cli;

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use millrace_broker::{BrokerConfig, RunningBroker};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts an in-process broker on a free port in a fresh temp dir.
pub async fn start_broker() -> (RunningBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[]).await;
    (broker, dir)
}

/// Starts an in-process broker on a free port over `dir`, with `KEY=VALUE` overrides.
pub async fn start_broker_in(dir: &std::path::Path, overrides: &[&str]) -> RunningBroker {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let settings = millrace_broker::config::parse_overrides(&overrides).unwrap();
    let config = BrokerConfig::from_settings(
        &settings,
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.to_path_buf()),
    )
    .unwrap();
    millrace_broker::start(config).await.unwrap()
}

/// One connection to a broker.
pub struct TestClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl TestClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        TestClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            correlation_id: 0,
        }
    }

    /// Sends a request at `version` and reads its response.
    pub async fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let api = ApiKey::try_from(R::KEY).unwrap();
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("millrace-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        self.send_raw(&body).await;
        let mut frame = self.read_frame().await.expect("connection closed");
        let response_header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(response_header.correlation_id, self.correlation_id);
        R::Response::decode(&mut frame, version).unwrap()
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
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Writes bytes as they are.
    pub async fn write_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
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

/// A record with a key, a value, a header and a timestamp.
pub fn record(key: &str, value: &str, timestamp: i64) -> Record {
    let mut headers = kafka_protocol::indexmap::IndexMap::new();
    headers.insert(
        StrBytes::from_static_str("h"),
        Some(Bytes::from(format!("h-{key}"))),
    );
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        headers,
    }
}

/// Encodes records as one batch, offsets relative from 0, as a producer would.
pub fn batch(records: &[Record], compression: Compression) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            offset: i as i64,
            sequence: i as i32,
            ..r.clone()
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    // A non-idempotent producer sends base sequence -1: patch it and fix the CRC.
    buf[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

/// Decodes every record of a fetched record set.
pub fn decode_records(mut bytes: Bytes) -> Vec<Record> {
    let mut out = Vec::new();
    while bytes.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        out.extend(set.records);
    }
    out
}

/// A `millrace broker` process (the real binary); killed with SIGKILL when dropped.
pub struct BrokerProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its remaining stderr lines, collected until it exits.
    pub stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl BrokerProcess {
    /// Starts the binary on `port` (0 picks one) with extra arguments and waits for its
    /// "broker listening" log line.
    pub fn start(dir: &std::path::Path, port: u16, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
            .args([
                "broker",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines
            .find(|l| l.as_ref().is_ok_and(|l| l.contains("broker listening")))
            .expect("broker exited before listening")
            .unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("local_addr="))
            .unwrap()
            .parse()
            .unwrap();
        let stderr = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        BrokerProcess {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// SIGKILL: a crash, with no chance to flush.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and the log lines written until exit.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        let lines = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        (status, lines)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
