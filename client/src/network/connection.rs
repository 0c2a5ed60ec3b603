//! One TCP connection to one broker, with pipelined requests.
//!
//! Callers encode their request, hand the frame to a writer task and wait on a oneshot for the
//! response frame. Kafka answers the requests of one connection in the order they were sent, so
//! the writer appends each request's reply slot to a FIFO queue just before writing it, and the
//! reader task hands each response frame to the slot at the head of the queue (checking that
//! the correlation ids agree). Many requests can be in flight at once; the caller decides how
//! many (the producer keeps at most five, like Kafka).
//!
//! KIP-368: when the broker's SaslAuthenticate gives the session a lifetime, the writer task
//! re-authenticates on the same connection at 85-95% of it (as Kafka's clients do): it writes
//! the SASL requests itself and holds back new requests until the exchange is done, while the
//! responses to requests already in flight keep arriving in order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::sasl::SaslTransport;
use super::security::SecurityConfig;
use super::versions::{api_name, ApiVersions};
use crate::error::{ClientError, Result};
use rustls::pki_types::ServerName;

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

/// Frames requests: the header with the client id and the next correlation id. Shared by
/// callers and, for re-authentication, the writer task.
struct RequestEncoder {
    client_id: StrBytes,
    next_correlation_id: AtomicI32,
}

impl RequestEncoder {
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
}

/// What the writer needs to re-authenticate (KIP-368), handed over once the first
/// authentication granted a session lifetime.
struct Reauthentication {
    security: SecurityConfig,
    authenticate_version: i16,
    timeout: Duration,
    session_lifetime_ms: i64,
}

/// One connection to a broker. Cheap to share (`Arc`); every method takes `&self`.
pub(crate) struct BrokerConnection {
    /// `host:port`, for errors and logs.
    addr: String,
    encoder: Arc<RequestEncoder>,
    versions: ApiVersions,
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
    /// Opens a connection, secures it as `security` says (TLS, then SASL after the version
    /// negotiation, as Kafka's clients do) and negotiates API versions.
    pub(crate) async fn connect(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
        security: &SecurityConfig,
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
        let (read, write): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
        ) = if security.protocol.uses_tls() {
            let tls = security.tls_config()?;
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| ClientError::InvalidArgument(format!("broker address {addr}: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(tls);
            let stream = tokio::time::timeout(connect_timeout, connector.connect(name, stream))
                .await
                .map_err(|_| ClientError::Connection {
                    broker: addr.to_string(),
                    reason: format!("TLS handshake timed out after {connect_timeout:?}"),
                })?
                .map_err(|error| tls_error(addr, error))?;
            let (read, write) = tokio::io::split(stream);
            (Box::new(read), Box::new(write))
        } else {
            let (read, write) = stream.into_split();
            (Box::new(read), Box::new(write))
        };
        let in_flight = Arc::new(Mutex::new(VecDeque::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shutdown = Arc::new(shutdown);
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let encoder = Arc::new(RequestEncoder {
            client_id: StrBytes::from_string(client_id.to_string()),
            next_correlation_id: AtomicI32::new(1),
        });
        let (reauthentication, reauthentication_rx) = oneshot::channel();
        tokio::spawn(write_loop(
            Writer {
                addr: addr.to_string(),
                write,
                in_flight: in_flight.clone(),
                closed: closed.clone(),
                stop: shutdown.clone(),
                shutdown: shutdown_rx.clone(),
                encoder: encoder.clone(),
            },
            outgoing_rx,
            reauthentication_rx,
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
            encoder,
            // Until the broker has answered, only ApiVersions v0 is assumed: every broker reads it.
            versions: ApiVersions::negotiate(&[
                kafka_protocol::messages::api_versions_response::ApiVersion::default()
                    .with_api_key(ApiKey::ApiVersions as i16)
                    .with_min_version(0)
                    .with_max_version(3),
            ]),
            outgoing,
            closed,
            shutdown,
        };
        connection.versions = match connection.negotiate_versions(request_timeout).await {
            Ok(versions) => versions,
            // TLS 1.3 ends the client's handshake before the broker has checked the client's
            // certificate; a refusal arrives as an alert on the first read.
            Err(ClientError::Connection { reason, .. })
                if security.protocol.uses_tls() && reason.contains("alert") =>
            {
                return Err(ClientError::Authentication {
                    broker: addr.to_string(),
                    reason: format!("TLS: {reason}"),
                });
            }
            Err(error) => return Err(error),
        };
        if security.protocol.uses_sasl() {
            let version = connection.version(ApiKey::SaslAuthenticate).unwrap_or(0);
            let mut transport = QueuedTransport {
                connection: &connection,
                version,
                timeout: request_timeout,
            };
            let session_lifetime_ms =
                super::sasl::authenticate(&mut transport, addr, security).await?;
            // KIP-368: a lifetime comes only with SaslAuthenticate v1+, and re-authenticating
            // needs it (the broker's answer to a v0 handshake mid-connection is a close).
            if session_lifetime_ms > 0 && version >= 1 {
                let _ = reauthentication.send(Reauthentication {
                    security: security.clone(),
                    authenticate_version: version,
                    timeout: request_timeout,
                    session_lifetime_ms,
                });
            }
        }
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
                    return Ok(ApiVersions::from_response(&response));
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

    /// Whether a transactional producer may use transaction version 2 with this broker.
    pub(crate) fn transaction_version_2(&self) -> bool {
        self.versions.transaction_version_2()
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
        self.encoder.encode(request, version, api)
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

/// A TLS handshake that failed on a certificate is an authentication failure (retrying cannot
/// help); anything else (a reset, a timeout) is a connection error.
fn tls_error(addr: &str, error: std::io::Error) -> ClientError {
    let certificate = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_)
            )
        });
    if certificate {
        ClientError::Authentication {
            broker: addr.to_string(),
            reason: format!("TLS handshake failed: {error}"),
        }
    } else {
        ClientError::Connection {
            broker: addr.to_string(),
            reason: format!("TLS handshake failed: {error}"),
        }
    }
}

pub(crate) fn api_key<R: Request>() -> ApiKey {
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

/// The first authentication's requests travel like any other.
struct QueuedTransport<'a> {
    connection: &'a BrokerConnection,
    version: i16,
    timeout: Duration,
}

impl SaslTransport for QueuedTransport<'_> {
    fn handshake(
        &mut self,
        request: SaslHandshakeRequest,
    ) -> BoxFuture<'_, Result<SaslHandshakeResponse>> {
        // v1: the tokens then travel in SaslAuthenticate requests (v0 sends them bare).
        Box::pin(async move { self.connection.send_at(&request, 1, self.timeout).await })
    }

    fn authenticate(
        &mut self,
        request: SaslAuthenticateRequest,
    ) -> BoxFuture<'_, Result<SaslAuthenticateResponse>> {
        Box::pin(async move {
            self.connection
                .send_at(&request, self.version, self.timeout)
                .await
        })
    }
}

/// The writer task's side of a connection.
struct Writer {
    addr: String,
    write: Box<dyn AsyncWrite + Send + Unpin>,
    in_flight: Arc<Mutex<VecDeque<InFlight>>>,
    closed: Arc<AtomicBool>,
    stop: Arc<watch::Sender<bool>>,
    shutdown: watch::Receiver<bool>,
    encoder: Arc<RequestEncoder>,
}

impl Writer {
    /// Writes one request of the writer's own (a re-authentication's) and waits for its
    /// response, which the read loop hands over in order like any other.
    async fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let api = api_key::<R>();
        let closed_error = || ClientError::Connection {
            broker: self.addr.clone(),
            reason: "connection closed during re-authentication".to_string(),
        };
        let (correlation_id, frame) = self.encoder.encode(request, version, api)?;
        let (reply, response) = oneshot::channel();
        {
            let mut queue = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if self.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            queue.push_back(InFlight {
                correlation_id,
                reply,
            });
        }
        let written = match self.write.write_all(&frame).await {
            Ok(()) => self.write.flush().await,
            Err(error) => Err(error),
        };
        written.map_err(|error| ClientError::Connection {
            broker: self.addr.clone(),
            reason: error.to_string(),
        })?;
        // The answer queues behind those of requests already in flight (a long-polling Fetch,
        // say); a connection that dies or is closed meanwhile fails it at once.
        let frame = tokio::select! {
            answer = tokio::time::timeout(timeout, response) => match answer {
                Ok(Ok(frame)) => frame?,
                Ok(Err(_)) => return Err(closed_error()),
                Err(_) => {
                    return Err(ClientError::Timeout {
                        api: api_name(api),
                        broker: self.addr.clone(),
                        timeout,
                    })
                }
            },
            _ = self.shutdown.changed() => return Err(closed_error()),
        };
        decode_response::<R::Response>(frame, api, version)
    }
}

/// A re-authentication's requests, written by the writer itself.
struct WriterTransport<'a> {
    writer: &'a mut Writer,
    version: i16,
    timeout: Duration,
}

impl SaslTransport for WriterTransport<'_> {
    fn handshake(
        &mut self,
        request: SaslHandshakeRequest,
    ) -> BoxFuture<'_, Result<SaslHandshakeResponse>> {
        Box::pin(async move { self.writer.round_trip(&request, 1, self.timeout).await })
    }

    fn authenticate(
        &mut self,
        request: SaslAuthenticateRequest,
    ) -> BoxFuture<'_, Result<SaslAuthenticateResponse>> {
        Box::pin(async move {
            self.writer
                .round_trip(&request, self.version, self.timeout)
                .await
        })
    }
}

/// When to re-authenticate a session of `lifetime_ms`: at a random point between 85% and 95%
/// of it, as Kafka's clients do, so that many connections opened together do not all
/// re-authenticate at once.
fn reauthentication_delay(lifetime_ms: i64) -> Duration {
    let jitter = f64::from(super::sasl::random_bytes(1)[0]) / 255.0;
    let lifetime = Duration::from_millis(u64::try_from(lifetime_ms).unwrap_or(0));
    lifetime.mul_f64(0.85 + 0.10 * jitter)
}

/// How long a re-authentication's answers may take: they queue behind requests in flight,
/// which may be held for long (a JoinGroup waits for the rebalance), and a broker that dies
/// fails them at once anyway.
const REAUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(300);

async fn write_loop(
    mut writer: Writer,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    reauthentication: oneshot::Receiver<Reauthentication>,
) {
    let mut buffer = BytesMut::new();
    let mut reauthentication = Some(reauthentication);
    let mut plan: Option<(Reauthentication, tokio::time::Instant)> = None;
    loop {
        let deadline = plan.as_ref().map(|(_, at)| *at);
        let first = tokio::select! {
            biased;
            _ = writer.shutdown.changed() => break,
            handed = async {
                match reauthentication.as_mut() {
                    Some(handed) => handed.await,
                    None => std::future::pending().await,
                }
            }, if reauthentication.is_some() => {
                reauthentication = None;
                if let Ok(handed) = handed {
                    let at = tokio::time::Instant::now() + reauthentication_delay(handed.session_lifetime_ms);
                    plan = Some((handed, at));
                }
                continue;
            }
            _ = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            }, if deadline.is_some() => {
                let Some((handed, _)) = plan.take() else { continue };
                let timeout = handed.timeout.max(REAUTHENTICATION_TIMEOUT);
                let mut transport = WriterTransport {
                    writer: &mut writer,
                    version: handed.authenticate_version,
                    timeout,
                };
                let addr = transport.writer.addr.clone();
                match super::sasl::authenticate(&mut transport, &addr, &handed.security).await {
                    Ok(lifetime_ms) => {
                        tracing::debug!(broker = %addr, lifetime_ms, "re-authenticated (KIP-368)");
                        if lifetime_ms > 0 {
                            let at = tokio::time::Instant::now() + reauthentication_delay(lifetime_ms);
                            plan = Some((Reauthentication { session_lifetime_ms: lifetime_ms, ..handed }, at));
                        }
                        continue;
                    }
                    Err(error) => {
                        // As in Kafka: a failed re-authentication closes the connection, and
                        // whatever was waiting fails over to a new one.
                        tracing::warn!(broker = %addr, %error, "re-authentication failed; closing connection");
                        break;
                    }
                }
            }
            next = outgoing.recv() => match next {
                Some(next) => next,
                None => break,
            },
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
            let mut queue = writer.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            // The read loop sets `closed` under this lock before failing what is queued, so
            // nothing pushed after that point could wait forever.
            if writer.closed.load(Ordering::Acquire) {
                drop(queue);
                fail_all(
                    &writer.addr,
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
            writer.write.write_all(&batch[0].frame).await
        } else {
            buffer.clear();
            for request in &batch {
                buffer.put_slice(&request.frame);
            }
            writer.write.write_all(&buffer).await
        };
        // TLS buffers inside the stream: flush so the request leaves now.
        let result = match result {
            Ok(()) => writer.write.flush().await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::debug!(broker = %writer.addr, %error, "write failed; closing connection");
            break;
        }
    }
    writer.closed.store(true, Ordering::Release);
    let _ = writer.stop.send(true);
    // Fail what is still queued; the read loop fails what is in flight.
    outgoing.close();
    while let Ok(request) = outgoing.try_recv() {
        if let Some(reply) = request.reply {
            let _ = reply.send(Err(ClientError::Connection {
                broker: writer.addr.clone(),
                reason: "connection closed before the request was sent".to_string(),
            }));
        }
    }
    let _ = writer.write.shutdown().await;
}

async fn read_loop(
    addr: String,
    mut read: Box<dyn AsyncRead + Send + Unpin>,
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
