//! A broker that does not advertise some APIs: a real in-process millrace broker behind a TCP
//! proxy that removes those APIs from every ApiVersions response, the way another
//! Kafka-protocol broker without them would answer. Everything else passes through unchanged.
//!
//! The broker advertises the proxy's address (`advertised.listeners`), so Metadata,
//! FindCoordinator and DescribeCluster send clients back through the proxy, and every
//! connection negotiates its versions with the filtered list.
//!
//! Used by `tests/cli_optional_apis.rs` and `dashboard/tests/sampler_optional_apis.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
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

/// Starts a broker whose ApiVersions answers leave out `hidden`.
pub async fn start_broker_without(hidden: &[ApiKey]) -> BrokerWithoutApis {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port for the proxy");
    let bootstrap = listener.local_addr().expect("the proxy's address");
    let dir = crate::temp_dir();
    let advertised = format!("advertised.listeners=PLAINTEXT://{bootstrap}");
    let broker = crate::start_broker_in(dir.path(), &[&advertised]).await;
    let upstream = broker.local_addr();
    let hidden: Arc<Vec<i16>> = Arc::new(hidden.iter().map(|k| *k as i16).collect());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let hidden = hidden.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(upstream).await {
                    proxy_connection(client, server, hidden).await;
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

/// ApiVersions requests in flight on one connection: correlation id -> request version.
type Pending = Arc<Mutex<HashMap<i32, i16>>>;

async fn proxy_connection(client: TcpStream, server: TcpStream, hidden: Arc<Vec<i16>>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let pending: Pending = Arc::default();
    let requests = tokio::spawn(forward_requests(client_read, server_write, pending.clone()));
    forward_responses(server_read, client_write, pending, &hidden).await;
    requests.abort();
}

/// Client to broker: frames pass unchanged; the versions of ApiVersions requests are noted,
/// since a response does not say which API or version it answers.
async fn forward_requests(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, pending: Pending) {
    while let Some(frame) = read_frame(&mut from).await {
        // Header v1 holds the API key, version and correlation id that every later header
        // version starts with too.
        if let Ok(header) = RequestHeader::decode(&mut frame.clone(), 1) {
            if header.request_api_key == ApiKey::ApiVersions as i16 {
                pending
                    .lock()
                    .expect("the pending map is never poisoned")
                    .insert(header.correlation_id, header.request_api_version);
            }
        }
        if write_frame(&mut to, &frame).await.is_err() {
            return;
        }
    }
}

/// Broker to client: ApiVersions responses lose the hidden APIs; the rest pass unchanged.
async fn forward_responses(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    pending: Pending,
    hidden: &[i16],
) {
    while let Some(frame) = read_frame(&mut from).await {
        let frame = filter_api_versions(frame, &pending, hidden);
        if write_frame(&mut to, &frame).await.is_err() {
            return;
        }
    }
}

/// Re-encodes an ApiVersions response without the hidden APIs (any other frame, or one that
/// does not decode, is returned as it came).
fn filter_api_versions(frame: Bytes, pending: &Pending, hidden: &[i16]) -> Bytes {
    let header_version = ApiKey::ApiVersions.response_header_version(0);
    let Ok(header) = ResponseHeader::decode(&mut frame.clone(), header_version) else {
        return frame;
    };
    let Some(version) = pending
        .lock()
        .expect("the pending map is never poisoned")
        .remove(&header.correlation_id)
    else {
        return frame;
    };
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
