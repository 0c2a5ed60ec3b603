//! One client connection: read size-prefixed frames, hand them to the API handlers in order,
//! and write the responses back in the same order.
//!
//! Reading and writing are two tasks joined by a bounded queue of pending responses, so a
//! client may pipeline requests (librdkafka keeps up to five in flight) while a produce waits
//! for its fsync or a fetch for data. A frame that is too big, or anything the protocol cannot
//! answer, ends this connection only.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::api::{self, PendingResponse, Reply};
use crate::broker::Broker;
use crate::metrics::RequestTimer;

/// A response owed, with the clock of its request (`None` for frames not worth timing).
type Owed = (PendingResponse, Option<RequestTimer>);

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
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    tracing::debug!(%peer, "connection opened");
    let _open = broker.metrics.sockets.opened();
    let (read_half, write_half) = stream.into_split();
    let (queue, pending) = mpsc::channel::<Owed>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_responses(write_half, pending, peer));
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let max = broker.config.socket_request_max_bytes;
    let client_host = format!("/{}", peer.ip());

    loop {
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
        let timer = broker.metrics.requests.start(&frame);
        let reply = api::handle(&broker, frame, &client_host).await;
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
    }
    // Responses already owed are still written before the socket closes.
    drop(queue);
    if let Err(error) = writer.await {
        tracing::error!(%peer, %error, "response writer failed");
    }
    tracing::debug!(%peer, "connection closed");
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
async fn read_frame(
    reader: &mut BufReader<OwnedReadHalf>,
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

async fn write_responses(
    write_half: OwnedWriteHalf,
    mut pending: mpsc::Receiver<Owed>,
    peer: SocketAddr,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    while let Some((response, mut timer)) = pending.recv().await {
        if let Some(timer) = &mut timer {
            timer.dequeued();
        }
        let response = response.await;
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
