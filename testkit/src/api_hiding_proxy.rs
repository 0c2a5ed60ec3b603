//! A broker that does not advertise some APIs: a real in-process millrace broker behind a TCP
//! proxy that removes those APIs from every ApiVersions response, the way another
//! Kafka-protocol broker without them would answer. Everything else passes through unchanged.
//!
//! The broker advertises the proxy's address (`advertised.listeners`), so Metadata,
//! FindCoordinator and DescribeCluster send clients back through the proxy, and every
//! connection negotiates its versions with the filtered list.
//!
//! The same proxy can also stand for a broker that rejects every write
//! ([`start_broker_rejecting_produce`]): each partition of each Produce response gets the given
//! error, as a broker with a full disk answers `KAFKA_STORAGE_ERROR`.
//!
//! Used by `tests/cli_optional_apis.rs`, `tests/cli_tools.rs` and
//! `dashboard/tests/sampler_optional_apis.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ProduceResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use millrace_broker::RunningBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A running broker and the proxy in front of it.
pub struct BrokerWithoutApis {
    /// Where clients connect: the proxy.
    pub bootstrap: SocketAddr,
    /// The broker itself (shut it down at the end of the test).
    pub broker: RunningBroker,
    /// Its data directory, removed on drop.
    pub dir: tempfile::TempDir,
}

/// What the proxy changes in the broker's answers.
#[derive(Debug, Default)]
struct Rules {
    /// API keys removed from ApiVersions responses.
    hidden: Vec<i16>,
    /// The error code and message every partition of every Produce response gets.
    reject_produce: Option<(i16, String)>,
}

/// Starts a broker whose ApiVersions answers leave out `hidden`.
pub async fn start_broker_without(hidden: &[ApiKey]) -> BrokerWithoutApis {
    start_proxied(Rules {
        hidden: hidden.iter().map(|k| *k as i16).collect(),
        reject_produce: None,
    })
    .await
}

/// Starts a broker whose every Produce answer fails each partition with `error` and
/// `message` (the records may still be written: only the answer changes). Everything else
/// works, so topics can be created and described.
pub async fn start_broker_rejecting_produce(
    error: ResponseError,
    message: &str,
) -> BrokerWithoutApis {
    start_proxied(Rules {
        hidden: Vec::new(),
        reject_produce: Some((error.code(), message.to_string())),
    })
    .await
}

async fn start_proxied(rules: Rules) -> BrokerWithoutApis {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port for the proxy");
    let bootstrap = listener.local_addr().expect("the proxy's address");
    let dir = crate::temp_dir();
    let advertised = format!("advertised.listeners=PLAINTEXT://{bootstrap}");
    let broker = crate::start_broker_in(dir.path(), &[&advertised]).await;
    let upstream = broker.local_addr();
    let rules = Arc::new(rules);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let rules = rules.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(upstream).await {
                    proxy_connection(client, server, rules).await;
                }
            });
        }
    });
    BrokerWithoutApis {
        bootstrap,
        broker,
        dir,
    }
}

/// ApiVersions and Produce requests in flight on one connection: correlation id -> (API key,
/// request version).
type Pending = Arc<Mutex<HashMap<i32, (i16, i16)>>>;

async fn proxy_connection(client: TcpStream, server: TcpStream, rules: Arc<Rules>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let pending: Pending = Arc::default();
    let requests = tokio::spawn(forward_requests(client_read, server_write, pending.clone()));
    forward_responses(server_read, client_write, pending, &rules).await;
    requests.abort();
}

/// Client to broker: frames pass unchanged; the versions of ApiVersions and Produce requests
/// are noted, since a response does not say which API or version it answers.
async fn forward_requests(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, pending: Pending) {
    while let Some(frame) = read_frame(&mut from).await {
        // Header v1 holds the API key, version and correlation id that every later header
        // version starts with too.
        if let Ok(header) = RequestHeader::decode(&mut frame.clone(), 1) {
            let key = header.request_api_key;
            if key == ApiKey::ApiVersions as i16 || key == ApiKey::Produce as i16 {
                pending
                    .lock()
                    .expect("the pending map is never poisoned")
                    .insert(header.correlation_id, (key, header.request_api_version));
            }
        }
        if write_frame(&mut to, &frame).await.is_err() {
            return;
        }
    }
}

/// Broker to client: ApiVersions responses lose the hidden APIs, Produce responses get the
/// rejection if there is one; the rest pass unchanged.
async fn forward_responses(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    pending: Pending,
    rules: &Rules,
) {
    while let Some(frame) = read_frame(&mut from).await {
        let frame = rewrite(frame, &pending, rules);
        if write_frame(&mut to, &frame).await.is_err() {
            return;
        }
    }
}

/// The frame as the client gets it.
fn rewrite(frame: Bytes, pending: &Pending, rules: &Rules) -> Bytes {
    // Every response header starts with the correlation id (header v0 is just that).
    let Ok(header) = ResponseHeader::decode(&mut frame.clone(), 0) else {
        return frame;
    };
    let Some((key, version)) = pending
        .lock()
        .expect("the pending map is never poisoned")
        .remove(&header.correlation_id)
    else {
        return frame;
    };
    if key == ApiKey::ApiVersions as i16 {
        filter_api_versions(frame, version, &rules.hidden)
    } else {
        match &rules.reject_produce {
            Some((code, message)) => reject_produce(frame, version, *code, message),
            None => frame,
        }
    }
}

/// Re-encodes a Produce response with every partition failed with `code` and `message`
/// (a frame that does not decode is returned as it came).
fn reject_produce(frame: Bytes, version: i16, code: i16, message: &str) -> Bytes {
    let header_version = ApiKey::Produce.response_header_version(version);
    let mut body = frame.clone();
    let Ok(header) = ResponseHeader::decode(&mut body, header_version) else {
        return frame;
    };
    let Ok(mut response) = ProduceResponse::decode(&mut body, version) else {
        return frame;
    };
    for topic in &mut response.responses {
        for partition in &mut topic.partition_responses {
            partition.error_code = code;
            partition.base_offset = -1;
            partition.error_message = Some(StrBytes::from_string(message.to_string()));
        }
    }
    let mut out = BytesMut::new();
    if header.encode(&mut out, header_version).is_err()
        || response.encode(&mut out, version).is_err()
    {
        return frame;
    }
    out.freeze()
}

/// Re-encodes an ApiVersions response without the hidden APIs (a frame that does not decode
/// is returned as it came).
fn filter_api_versions(frame: Bytes, version: i16, hidden: &[i16]) -> Bytes {
    let header_version = ApiKey::ApiVersions.response_header_version(version);
    let mut body = frame.clone();
    let Ok(header) = ResponseHeader::decode(&mut body, header_version) else {
        return frame;
    };
    let Ok(mut response) = ApiVersionsResponse::decode(&mut body, version) else {
        return frame;
    };
    response
        .api_keys
        .retain(|api| !hidden.contains(&api.api_key));
    let mut out = BytesMut::new();
    if header.encode(&mut out, header_version).is_err()
        || response.encode(&mut out, version).is_err()
    {
        return frame;
    }
    out.freeze()
}

/// One size-prefixed frame, without its size; `None` at the end of the stream.
async fn read_frame(from: &mut OwnedReadHalf) -> Option<Bytes> {
    let size = from.read_i32().await.ok()?;
    let mut frame = vec![0u8; usize::try_from(size).ok()?];
    from.read_exact(&mut frame).await.ok()?;
    Some(Bytes::from(frame))
}

async fn write_frame(to: &mut OwnedWriteHalf, frame: &[u8]) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(4 + frame.len());
    let size = i32::try_from(frame.len()).map_err(std::io::Error::other)?;
    out.put_i32(size);
    out.put_slice(frame);
    to.write_all(&out).await
}
