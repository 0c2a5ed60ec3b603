//! One TCP connection to one broker, with pipelined requests.
//!
//! Callers encode their request, hand the frame to a writer task and wait on a oneshot for the
//! response frame. Kafka answers the requests of one connection in the order they were sent, so
//! the writer appends each request's reply slot to a FIFO queue just before writing it, and the
//! reader task hands each response frame to the slot at the head of the queue (checking that
//! the correlation ids agree). Many requests can be in flight at once; the caller decides how
//! many (the producer keeps at most five, like Kafka).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::versions::{api_name, ApiVersions};
use crate::error::{ClientError, Result};

/// A response frame larger than this is refused: no sane broker sends one, and a corrupt size
/// must not make the client allocate gigabytes.
const MAX_RESPONSE_SIZE: usize = 1 << 30;

/// Frames queued while the writer is busy are coalesced into one write of up to this size, so
/// a burst of small requests costs one system call.
const WRITE_COALESCE_BYTES: usize = 1 << 20;

type Reply = oneshot::Sender<Result<Bytes>>;

/// A request on its way to the writer task.
struct Outgoing {
    correlation_id: i32,
    frame: Bytes,
    /// `None` for requests without a response (Produce with acks=0).
    reply: Option<Reply>,
}

/// A request written and waiting for its response.
struct InFlight {
    correlation_id: i32,
    reply: Reply,
}

/// One connection to a broker. Cheap to share (`Arc`); every method takes `&self`.
pub(crate) struct BrokerConnection {
    /// `host:port`, for errors and logs.
    addr: String,
    client_id: StrBytes,
    versions: ApiVersions,
    next_correlation_id: AtomicI32,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    closed: Arc<AtomicBool>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl BrokerConnection {
    /// Opens a connection and negotiates API versions.
    pub(crate) async fn connect(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Connection {
                broker: addr.to_string(),
                reason: format!("connect timed out after {connect_timeout:?}"),
            })?
            .map_err(|error| ClientError::Connection {
                broker: addr.to_string(),
                reason: error.to_string(),
            })?;
        // Requests are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let in_flight = Arc::new(Mutex::new(VecDeque::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shutdown = Arc::new(shutdown);
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(
            addr.to_string(),
            write,
            outgoing_rx,
            in_flight.clone(),
            closed.clone(),
            shutdown.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(read_loop(
            addr.to_string(),
            read,
            in_flight,
            closed.clone(),
            shutdown.clone(),
            shutdown_rx,
        ));
        let mut connection = BrokerConnection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            // Until the broker has answered, only ApiVersions v0 is assumed: every broker reads it.
            versions: ApiVersions::negotiate(&[
                kafka_protocol::messages::api_versions_response::ApiVersion::default()
                    .with_api_key(ApiKey::ApiVersions as i16)
                    .with_min_version(0)
                    .with_max_version(3),
            ]),
            next_correlation_id: AtomicI32::new(1),
            outgoing,
            closed,
            shutdown,
        };
        connection.versions = connection.negotiate_versions(request_timeout).await?;
        Ok(connection)
    }

    /// Asks the broker for its API versions: v3 first (it names the client software); a broker
    /// that lacks v3 answers in the v0 format with UNSUPPORTED_VERSION and its list (KIP-511),
    /// and the client then asks again at the highest version the broker listed.
    async fn negotiate_versions(&self, timeout: Duration) -> Result<ApiVersions> {
        let mut version = 3;
        for _ in 0..2 {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("millrace-client"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let frame = self
                .send_raw::<ApiVersionsRequest>(&request, version, timeout, true)
                .await?;
            let response = match decode_response::<ApiVersionsResponse>(
                frame.clone(),
                ApiKey::ApiVersions,
                version,
            ) {
                Ok(response) if response.error_code == 0 => {
                    return Ok(ApiVersions::negotiate(&response.api_keys));
                }
                Ok(response) => response,
                // An unsupported-version answer is in the v0 format and may not decode at v3.
                Err(_) => decode_response::<ApiVersionsResponse>(frame, ApiKey::ApiVersions, 0)?,
            };
            if response.error_code != kafka_protocol::ResponseError::UnsupportedVersion.code() {
                return Err(ClientError::kafka(
                    "ApiVersions",
                    self.addr.clone(),
                    response.error_code,
                    None,
                ));
            }
            let offered = response
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                .map(|k| k.max_version.min(3))
                .unwrap_or(0);
            if offered >= version {
                break;
            }
            version = offered;
        }
        Err(ClientError::UnsupportedVersion {
            api: "ApiVersions",
            broker: self.addr.clone(),
            needed: "v0-v3".to_string(),
            offered: "none".to_string(),
        })
    }

    /// The broker's `host:port`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// False once the connection broke or was closed; a new one must be opened.
    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection; requests in flight fail with a connection error.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.shutdown.send(true);
    }

    /// The version negotiated for `api`.
    pub(crate) fn version(&self, api: ApiKey) -> Result<i16> {
        self.versions.version(api, &self.addr)
    }

    /// Sends `request` at the negotiated version and waits for the response. `extra_wait` is
    /// added to the request timeout for requests the broker may legitimately hold (a Fetch
    /// long poll, a JoinGroup waiting for the rebalance).
    pub(crate) async fn send<R: Request>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<(i16, R::Response)> {
        let api = api_key::<R>();
        let version = self.version(api)?;
        let response = self.send_at(request, version, timeout).await?;
        Ok((version, response))
    }

    /// Sends `request` at `version` and waits for the response.
    pub(crate) async fn send_at<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let api = api_key::<R>();
        let frame = self.send_raw(request, version, timeout, true).await?;
        decode_response::<R::Response>(frame, api, version)
    }

    /// Sends a request that gets no response (Produce with acks=0): done once queued.
    pub(crate) fn send_no_response<R: Request>(&self, request: &R, version: i16) -> Result<()> {
        let api = api_key::<R>();
        let (correlation_id, frame) = self.encode(request, version, api)?;
        self.queue(Outgoing {
            correlation_id,
            frame,
            reply: None,
        })
    }

    /// Queues `request` at `version` right away (so requests queued one after another go out
    /// in that order) and returns the slot its response will arrive in; see
    /// [`BrokerConnection::await_response`].
    pub(crate) fn queue_request<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<oneshot::Receiver<Result<Bytes>>> {
        let (correlation_id, frame) = self.encode(request, version, api_key::<R>())?;
        let (reply, response) = oneshot::channel();
        self.queue(Outgoing {
            correlation_id,
            frame,
            reply: Some(reply),
        })?;
        Ok(response)
    }

    /// Waits for the response of a request queued with [`BrokerConnection::queue_request`].
    pub(crate) async fn await_response<R: Request>(
        &self,
        response: oneshot::Receiver<Result<Bytes>>,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let api = api_key::<R>();
        let frame = self.wait(api, response, timeout).await?;
        decode_response::<R::Response>(frame, api, version)
    }

    async fn wait(
        &self,
        api: ApiKey,
        response: oneshot::Receiver<Result<Bytes>>,
        timeout: Duration,
    ) -> Result<Bytes> {
        match tokio::time::timeout(timeout, response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                // The answer may still come, but every later answer on this connection would
                // queue behind it; Kafka's clients close the connection here, and so do we.
                tracing::warn!(broker = %self.addr, api = api_name(api), ?timeout, "request timed out; closing connection");
                self.close();
                Err(ClientError::Timeout {
                    api: api_name(api),
                    broker: self.addr.clone(),
                    timeout,
                })
            }
        }
    }

    fn encode<R: Request>(&self, request: &R, version: i16, api: ApiKey) -> Result<(i32, Bytes)> {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let protocol_error = |error: String| ClientError::Protocol {
            api: api_name(api),
            reason: format!("cannot encode v{version} request: {error}"),
        };
        let size = header
            .compute_size(R::header_version(version))
            .and_then(|h| request.compute_size(version).map(|b| h + b))
            .map_err(|e| protocol_error(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(4 + size);
        buf.put_i32(size as i32);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| protocol_error(e.to_string()))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| protocol_error(e.to_string()))?;
        Ok((correlation_id, buf.freeze()))
    }

    fn queue(&self, outgoing: Outgoing) -> Result<()> {
        if !self.is_open() {
            return Err(self.closed_error());
        }
        self.outgoing
            .send(outgoing)
            .map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Connection {
            broker: self.addr.clone(),
            reason: "connection closed".to_string(),
        }
    }

    async fn send_raw<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
        _expect_response: bool,
    ) -> Result<Bytes> {
        let api = api_key::<R>();
        let (correlation_id, frame) = self.encode(request, version, api)?;
        let (reply, response) = oneshot::channel();
        self.queue(Outgoing {
            correlation_id,
            frame,
            reply: Some(reply),
        })?;
        self.wait(api, response, timeout).await
    }
}

impl Drop for BrokerConnection {
    fn drop(&mut self) {
        self.close();
    }
}

fn api_key<R: Request>() -> ApiKey {
    // Every `Request` type's KEY is a valid key by construction.
    ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions)
}

fn decode_response<T: Decodable + HeaderVersion>(
    mut frame: Bytes,
    api: ApiKey,
    version: i16,
) -> Result<T> {
    let protocol_error = |reason: String| ClientError::Protocol {
        api: api_name(api),
        reason,
    };
    ResponseHeader::decode(&mut frame, T::header_version(version))
        .map_err(|e| protocol_error(format!("bad v{version} response header: {e}")))?;
    T::decode(&mut frame, version)
        .map_err(|e| protocol_error(format!("bad v{version} response: {e}")))
}

async fn write_loop(
    addr: String,
    mut write: OwnedWriteHalf,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    in_flight: Arc<Mutex<VecDeque<InFlight>>>,
    closed: Arc<AtomicBool>,
    stop: Arc<watch::Sender<bool>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buffer = BytesMut::new();
    loop {
        let first = tokio::select! {
            next = outgoing.recv() => match next {
                Some(next) => next,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        // Coalesce whatever else is queued into one write.
        let mut batch = vec![first];
        let mut size = batch[0].frame.len();
        while size < WRITE_COALESCE_BYTES {
            match outgoing.try_recv() {
                Ok(next) => {
                    size += next.frame.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        {
            let mut queue = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            // The read loop sets `closed` under this lock before failing what is queued, so
            // nothing pushed after that point could wait forever.
            if closed.load(Ordering::Acquire) {
                drop(queue);
                fail_all(
                    &addr,
                    batch.into_iter().filter_map(|r| r.reply),
                    "connection closed",
                );
                break;
            }
            for request in &mut batch {
                if let Some(reply) = request.reply.take() {
                    queue.push_back(InFlight {
                        correlation_id: request.correlation_id,
                        reply,
                    });
                }
            }
        }
        let result = if batch.len() == 1 {
            write.write_all(&batch[0].frame).await
        } else {
            buffer.clear();
            for request in &batch {
                buffer.put_slice(&request.frame);
            }
            write.write_all(&buffer).await
        };
        if let Err(error) = result {
            tracing::debug!(broker = %addr, %error, "write failed; closing connection");
            break;
        }
    }
    closed.store(true, Ordering::Release);
    let _ = stop.send(true);
    // Fail what is still queued; the read loop fails what is in flight.
    outgoing.close();
    while let Ok(request) = outgoing.try_recv() {
        if let Some(reply) = request.reply {
            let _ = reply.send(Err(ClientError::Connection {
                broker: addr.clone(),
                reason: "connection closed before the request was sent".to_string(),
            }));
        }
    }
    let _ = write.shutdown().await;
}

async fn read_loop(
    addr: String,
    mut read: OwnedReadHalf,
    in_flight: Arc<Mutex<VecDeque<InFlight>>>,
    closed: Arc<AtomicBool>,
    stop: Arc<watch::Sender<bool>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let reason = loop {
        // Hand out every complete frame already buffered.
        while buffer.len() >= 4 {
            let size = (&buffer[..4]).get_i32();
            if size < 4 || size as usize > MAX_RESPONSE_SIZE {
                break;
            }
            let size = size as usize;
            if buffer.len() < 4 + size {
                buffer.reserve(4 + size - buffer.len());
                break;
            }
            buffer.advance(4);
            let frame = buffer.split_to(size).freeze();
            let correlation_id = (&frame[..4]).get_i32();
            let next = in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            match next {
                Some(waiting) if waiting.correlation_id == correlation_id => {
                    let _ = waiting.reply.send(Ok(frame));
                }
                other => {
                    tracing::warn!(broker = %addr, correlation_id, expected = ?other.as_ref().map(|w| w.correlation_id), "response out of order; closing connection");
                    closed.store(true, Ordering::Release);
                    break;
                }
            }
        }
        if closed.load(Ordering::Acquire) {
            break "connection closed".to_string();
        }
        if buffer.len() >= 4 {
            let size = (&buffer[..4]).get_i32();
            if size < 4 || size as usize > MAX_RESPONSE_SIZE {
                break format!("invalid response size {size}");
            }
        }
        if buffer.capacity() - buffer.len() < 8 * 1024 {
            buffer.reserve(64 * 1024);
        }
        tokio::select! {
            read_result = read.read_buf(&mut buffer) => match read_result {
                Ok(0) => break "connection closed by broker".to_string(),
                Ok(_) => {}
                Err(error) => break error.to_string(),
            },
            _ = shutdown.changed() => break "connection closed".to_string(),
        }
    };
    tracing::debug!(broker = %addr, %reason, "connection ended");
    let waiting: Vec<InFlight> = {
        let mut queue = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        closed.store(true, Ordering::Release);
        queue.drain(..).collect()
    };
    let _ = stop.send(true);
    fail_all(&addr, waiting.into_iter().map(|w| w.reply), &reason);
}

fn fail_all(addr: &str, replies: impl Iterator<Item = Reply>, reason: &str) {
    for reply in replies {
        let _ = reply.send(Err(ClientError::Connection {
            broker: addr.to_string(),
            reason: reason.to_string(),
        }));
    }
}
