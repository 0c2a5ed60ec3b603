//! One client connection: secure it as its listener says (TLS, SASL), read size-prefixed
//! frames, hand them to the API handlers in order, and write the responses back in the same
//! order.
//!
//! Reading and writing are two tasks joined by a bounded queue of pending responses, so a
//! client may pipeline requests (librdkafka keeps up to five in flight) while a produce waits
//! for its fsync or a fetch for data. A frame that is too big, or anything the protocol cannot
//! answer, ends this connection only.
//!
//! On a SASL listener the connection's [`Authenticator`] answers SaslHandshake and
//! SaslAuthenticate itself and admits nothing else before authentication: such a request
//! closes the connection unanswered (as in Kafka) and never reaches a handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::api::{self, Parsed, PendingResponse, Reply};
use crate::broker::Broker;
use crate::metrics::RequestTimer;
use crate::security::store::BrokerCredentials;
use crate::security::{tls, Authenticator, SecuredListener, Session};

/// A response owed, with the clock of its request (`None` for frames not worth timing).
type Owed = (PendingResponse, Option<RequestTimer>);

/// How long a connection closed for a failed authentication stays open after its answer.
const FAILED_AUTHENTICATION_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Responses a connection may owe at once before it stops reading (back-pressure).
const MAX_IN_FLIGHT: usize = 64;

/// Why reading a frame ended the connection.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("frame size {size} exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i64, max: usize },
    #[error("negative frame size {0}")]
    Negative(i32),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves one connection until the client closes it, it misbehaves, or the broker shuts down.
pub async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<SecuredListener>,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let security = &listener.security;
    tracing::debug!(%peer, listener = %security.name, "connection opened");
    let _open = broker.metrics.sockets.opened();
    let mut session = Session {
        principal: crate::security::KafkaPrincipal::anonymous(),
        listener_name: security.name.clone(),
        security_protocol: security.protocol,
        client_address: peer,
        sasl_mechanism: None,
    };
    match &listener.acceptor {
        None => {
            let authenticator = Authenticator::new(security, session);
            let (read_half, write_half) = stream.into_split();
            serve_frames(
                broker,
                read_half,
                write_half,
                peer,
                &listener,
                authenticator,
                shutdown,
            )
            .await;
        }
        Some(acceptor) => {
            let tls = match tls::handshake(acceptor, stream).await {
                Ok(tls) => tls,
                Err(reason) => {
                    // A plaintext client on a TLS port lands here too: it gets a clean close.
                    tracing::warn!(%peer, listener = %security.name, %reason, "closing connection");
                    return;
                }
            };
            match tls::peer_principal(&tls) {
                Ok(Some(principal)) => session.principal = principal,
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(%peer, %reason, "unreadable client certificate; closing connection");
                    return;
                }
            }
            let authenticator = Authenticator::new(security, session);
            let (read_half, write_half) = tokio::io::split(tls);
            serve_frames(
                broker,
                read_half,
                write_half,
                peer,
                &listener,
                authenticator,
                shutdown,
            )
            .await;
        }
    }
    tracing::debug!(%peer, "connection closed");
}

/// The request loop over an established (and, for TLS, handshaken) stream.
async fn serve_frames<R, W>(
    broker: Arc<Broker>,
    read_half: R,
    write_half: W,
    peer: SocketAddr,
    listener: &SecuredListener,
    mut authenticator: Authenticator,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (queue, pending) = mpsc::channel::<Owed>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_responses(write_half, pending, peer));
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let max = broker.config.socket_request_max_bytes;

    // Set when a request quota (`request_percentage`) mutes this connection.
    let mut muted_until: Option<tokio::time::Instant> = None;
    loop {
        if let Some(until) = muted_until.take() {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                () = tokio::time::sleep_until(until) => {}
            }
        }
        let frame = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            frame = read_frame(&mut reader, max) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%peer, %error, "closing connection");
                break;
            }
        };
        // After a v0 SaslHandshake the next frame is a bare SASL token, not a request.
        if authenticator.expects_raw_token() {
            let image = broker.controller.image();
            let store = BrokerCredentials::of(listener, &image);
            let outcome = authenticator.authenticate(&frame, &store, Instant::now());
            broker.metrics.sockets.authentication_outcome(&outcome);
            if outcome.close {
                // v0 has no way to carry an error: the closed connection is the answer.
                break;
            }
            let mut out = BytesMut::with_capacity(4 + outcome.auth_bytes.len());
            out.put_u32(u32::try_from(outcome.auth_bytes.len()).unwrap_or(u32::MAX));
            out.put_slice(&outcome.auth_bytes);
            let out = out.freeze();
            if queue
                .send((Box::pin(async move { Some(out) }), None))
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        let timer = broker.metrics.requests.start(&frame);
        let parsed = match api::parse(frame, authenticator.session()) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(%peer, %error, "closing connection");
                break;
            }
        };
        let (reply, close_after) = match parsed {
            Parsed::Answered(bytes) => (Ok(Reply::Now(bytes)), false),
            Parsed::Request(ctx, body) => match ctx.api_key {
                ApiKey::SaslHandshake => {
                    match api::sasl_handshake::handle(&ctx, body, &mut authenticator) {
                        Ok((bytes, close)) => (Ok(Reply::Now(bytes)), close),
                        Err(error) => (Err(error), true),
                    }
                }
                ApiKey::SaslAuthenticate => match api::sasl_authenticate::handle(
                    &broker,
                    &ctx,
                    body,
                    &mut authenticator,
                    listener,
                ) {
                    Ok((bytes, close)) => (Ok(Reply::Now(bytes)), close),
                    Err(error) => (Err(error), true),
                },
                api_key => {
                    if let Err(reason) =
                        authenticator.admit(api_key == ApiKey::ApiVersions, Instant::now())
                    {
                        tracing::warn!(%peer, api = ?api_key, listener = %ctx.session.listener_name, %reason, "closing connection");
                        break;
                    }
                    // Only with a request quota in the metadata is the handling time charged
                    // (and a fetch decoded twice, to exempt followers).
                    let quota_subject = broker
                        .controller
                        .with_image(|i| {
                            i.client_quotas().iter().any(|(_, quotas)| {
                                quotas.contains_key(
                                    crate::metadata::client_quotas::REQUEST_PERCENTAGE,
                                )
                            })
                        })
                        .then(|| {
                            (!crate::quota::exempt_from_request_quota(&broker, &ctx, &body)).then(
                                || {
                                    (
                                        ctx.session.principal.name.clone(),
                                        ctx.client_id.clone().unwrap_or_default(),
                                    )
                                },
                            )
                        })
                        .flatten();
                    let started = Instant::now();
                    let reply = api::dispatch(&broker, ctx, body).await;
                    if let Some((user, client_id)) = quota_subject {
                        let delay = crate::quota::request_delay(
                            &broker,
                            &user,
                            &client_id,
                            started.elapsed(),
                        );
                        if !delay.is_zero() {
                            muted_until = Some(tokio::time::Instant::now() + delay);
                        }
                    }
                    (reply, false)
                }
            },
        };
        let timer = timer.map(RequestTimer::local_done);
        match reply {
            Ok(Reply::Now(bytes)) => {
                if queue
                    .send((Box::pin(async move { Some(bytes) }), timer))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(Reply::Later(future)) => {
                if queue.send((future, timer)).await.is_err() {
                    break;
                }
            }
            Ok(Reply::Nothing) => {
                if let Some(timer) = timer {
                    timer.unanswered();
                }
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "closing connection");
                break;
            }
        }
        if close_after {
            // The answer (an authentication failure, say) is still written before the close,
            // and the close waits a moment after it, as Kafka's
            // `connection.failed.authentication.delay.ms` (100 ms) does: it slows down
            // password guessing, and clients that see the close before reading the answer
            // (kafka-python over TLS) get to read it.
            let linger: PendingResponse = Box::pin(async {
                tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
                Some(Bytes::new())
            });
            let _ = queue.send((linger, None)).await;
            break;
        }
    }
    // Responses already owed are still written before the socket closes.
    drop(queue);
    if let Err(error) = writer.await {
        tracing::error!(%peer, %error, "response writer failed");
    }
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size);
    let Ok(len) = usize::try_from(size) else {
        return Err(FrameError::Negative(size));
    };
    if len > max {
        // Never read (or allocate for) a frame we will not accept.
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    let mut frame = BytesMut::zeroed(len);
    reader.read_exact(&mut frame).await?;
    Ok(Some(frame.freeze()))
}

async fn write_responses<W: AsyncWrite + Unpin>(
    write_half: W,
    mut pending: mpsc::Receiver<Owed>,
    peer: SocketAddr,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    while let Some((mut response, mut timer)) = pending.recv().await {
        if let Some(timer) = &mut timer {
            timer.dequeued();
        }
        // What is written so far goes out before waiting for a response still in the making
        // (an fsync, a long poll, the pause after a failed authentication), not after it.
        let response = match (&mut response).now_or_never() {
            Some(ready) => ready,
            None => {
                if let Err(error) = writer.flush().await {
                    tracing::debug!(%peer, %error, "flush failed");
                    return;
                }
                response.await
            }
        };
        if let Some(timer) = &mut timer {
            timer.completed();
        }
        let Some(bytes) = response else {
            tracing::warn!(%peer, "a response could not be produced; closing connection");
            break;
        };
        if let Err(error) = writer.write_all(&bytes).await {
            tracing::debug!(%peer, %error, "write failed");
            return;
        }
        // Coalesce writes while more responses are ready; flush when the queue runs dry.
        if pending.is_empty() {
            if let Err(error) = writer.flush().await {
                tracing::debug!(%peer, %error, "flush failed");
                return;
            }
        }
        if let Some(timer) = timer {
            timer.sent();
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}
