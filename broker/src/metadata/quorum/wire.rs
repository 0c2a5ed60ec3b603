//! The controller protocol between quorum members: Raft RPCs and application requests on one
//! TCP connection.
//!
//! A frame is a 4-byte big-endian body length, then the body; the body is the JSON of a
//! [`RequestFrame`] (client to server) or an [`RpcResponse`] (server to client), one response
//! per request, in order. JSON because the payload embeds [`MetadataRecord`]s, an internally
//! tagged enum that needs a self-describing format (postcard, already in the workspace, is
//! not), and because metadata traffic is small: a readable wire is worth more than its bytes.
//! Snapshots travel in chunks of `snapshot_max_chunk_size`, well inside [`MAX_FRAME_BYTES`].
//!
//! [`MetadataRecord`]: crate::metadata::records::MetadataRecord

use std::io;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::type_config::{LogIndex, MetadataBatch, NodeId, TypeConfig};
use crate::metadata::image::MetadataImage;

/// Largest frame accepted either way. A longer length prefix closes the connection unread:
/// it is a bug or an attack, and reading it would let a peer make us allocate without bound.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// A request and who sends it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    /// The sender's node id; Raft RPCs are refused unless it is a voter.
    pub from: NodeId,
    /// The request.
    pub body: RpcRequest,
}

/// What one member asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    /// Raft log replication and heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft election.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot for a lagging follower.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// An application request for the controller (broker registration, heartbeats, forwarded
    /// admin requests); its bytes are the application's business.
    Application(Vec<u8>),
    /// An observer (a `process.roles=broker` node) asks for the metadata committed after
    /// `after` (`None`: it has nothing yet). The answer waits up to `max_wait_ms` for news.
    FetchMetadata {
        /// The last log index the observer has applied.
        after: Option<LogIndex>,
        /// How long the server may hold the request when there is nothing new.
        max_wait_ms: u64,
    },
    /// On a SASL controller listener, the first request of a connection: the mechanism the
    /// member logs in with (Kafka's SaslHandshake).
    SaslHandshake {
        /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
        mechanism: String,
    },
    /// One token of the login (Kafka's SaslAuthenticate); nothing else is served on the
    /// connection until the login completes.
    SaslAuthenticate(Vec<u8>),
}

/// The answer to an [`RpcRequest`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    /// Answer to [`RpcRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to [`RpcRequest::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to [`RpcRequest::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// Answer to [`RpcRequest::Application`].
    Application(Vec<u8>),
    /// Answer to [`RpcRequest::FetchMetadata`].
    Metadata(MetadataFetchResponse),
    /// Answer to [`RpcRequest::SaslHandshake`]: the mechanism is taken (a refusal is
    /// [`RpcResponse::Refused`]).
    SaslHandshake,
    /// Answer to [`RpcRequest::SaslAuthenticate`]: the server's bytes for the client (a
    /// failed login is [`RpcResponse::Refused`]).
    SaslAuthenticate(Vec<u8>),
    /// The server will not serve this sender (not a voter, not logged in, a failed login);
    /// it closes the connection after this answer.
    Refused(String),
}

/// What a voter tells an observer: who leads, and what the observer is missing.
#[derive(Debug, Serialize, Deserialize)]
pub struct MetadataFetchResponse {
    /// The active controller as the answering voter knows it.
    pub leader: Option<NodeId>,
    /// The Raft term the answering voter is in.
    pub term: u64,
    /// The metadata after the observer's index.
    pub update: MetadataUpdate,
}

/// The metadata an observer is missing.
#[derive(Debug, Serialize, Deserialize)]
pub enum MetadataUpdate {
    /// Nothing after the observer's index was applied here (yet); `index` is what is applied.
    UpToDate {
        /// The last index applied on the answering voter.
        index: Option<LogIndex>,
    },
    /// The committed entries right after the observer's index, in order: (index, records).
    Entries(Vec<(LogIndex, MetadataBatch)>),
    /// The whole image as of `index`: the observer had nothing, or is further behind than the
    /// entries the voter keeps.
    Image {
        /// The last index applied into `image`.
        index: LogIndex,
        /// The image (boxed: it dwarfs the other variants).
        image: Box<MetadataImage>,
    },
}

/// A connection of the controller protocol: TCP, or TLS over TCP (SSL controller listener).
pub trait ControllerIo: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> ControllerIo for T {}

/// A boxed [`ControllerIo`].
pub type ControllerStream = Box<dyn ControllerIo>;

/// Writes one frame: length and body in a single write, so a frame is never interleaved.
pub async fn write_frame<W: AsyncWrite + Unpin>(out: &mut W, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {MAX_FRAME_BYTES}", body.len()),
        ));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    // Cannot truncate: checked against MAX_FRAME_BYTES above.
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    out.write_all(&buf).await?;
    out.flush().await
}

/// Reads one frame's body. `Ok(None)` is a clean end of stream between frames; a frame over
/// [`MAX_FRAME_BYTES`] or an end of stream inside one is an error.
pub async fn read_frame<R: AsyncRead + Unpin>(input: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    // Grow with the bytes that actually arrive rather than trusting the prefix: a peer that
    // announces 64 MiB and sends nothing costs nothing.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    (&mut *input)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a frame",
        ));
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_or_torn_frames_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        write_frame(&mut buf, b"").await.unwrap();
        let mut input = buf.as_slice();
        assert_eq!(
            read_frame(&mut input).await.unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(read_frame(&mut input).await.unwrap(), Some(Vec::new()));
        assert_eq!(read_frame(&mut input).await.unwrap(), None);

        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        assert!(read_frame(&mut huge.as_slice()).await.is_err());
        let torn = [0u8, 0, 0, 9, b'x'];
        assert!(read_frame(&mut torn.as_slice()).await.is_err());
    }

    #[test]
    fn requests_encode_as_json() {
        let frame = RequestFrame {
            from: 2,
            body: RpcRequest::Application(vec![1, 2]),
        };
        let json = serde_json::to_string(&frame).unwrap();
        let back: RequestFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(back.from, 2);
        assert!(matches!(back.body, RpcRequest::Application(b) if b == vec![1, 2]));
    }
}
