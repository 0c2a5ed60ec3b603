//! The client side of the controller protocol: openraft's network (one connection per
//! replication stream, reused across RPCs) and application calls to another member.
//!
//! Failures are reported the way openraft acts on them: a peer we cannot connect to is
//! `Unreachable` (openraft backs off before retrying), a connection that breaks mid-request is
//! a `Network` error (retried at the next heartbeat), and an RPC past its deadline is a
//! `Timeout`. A connection whose request failed or timed out is dropped, never reused: its
//! next bytes could be the late answer to the abandoned request.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};
use tokio::net::TcpStream;

use super::type_config::{LogIndex, NodeId, TypeConfig};
use super::wire::{
    read_frame, write_frame, ControllerStream, MetadataFetchResponse, RequestFrame, RpcRequest,
    RpcResponse,
};
use super::QuorumError;
use crate::security::controller_security::ControllerSecurity;
use crate::security::sasl_login::SaslLogin;

/// Why one exchange failed, before it is mapped to openraft's or our error type.
#[derive(Debug)]
enum SendError {
    /// No connection could be made (or the peer refused to serve us).
    Unreachable(io::Error),
    /// The connection broke or carried garbage.
    Network(io::Error),
    /// The deadline passed.
    Timeout,
}

/// One lazily made, reused connection to a peer.
struct Channel {
    from: NodeId,
    target: NodeId,
    addr: Option<SocketAddr>,
    conn: Option<ControllerStream>,
    security: Option<Arc<ControllerSecurity>>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("from", &self.from)
            .field("target", &self.target)
            .field("addr", &self.addr)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Channel {
    fn new(
        from: NodeId,
        target: NodeId,
        addr: Option<SocketAddr>,
        security: Option<Arc<ControllerSecurity>>,
    ) -> Self {
        Channel {
            from,
            target,
            addr,
            conn: None,
            security,
        }
    }

    /// Sends one request and waits for its answer within `ttl`.
    ///
    /// Cancellation-safe: the connection is taken out of the channel for the exchange and put
    /// back only after a complete answer. If this future is dropped half-way (openraft wraps
    /// its RPCs in timeouts of its own), the connection goes with it, so a late answer can
    /// never be read as the answer to the next request.
    async fn exchange(
        &mut self,
        body: RpcRequest,
        ttl: Duration,
    ) -> Result<RpcResponse, SendError> {
        let bytes = self.frame(body)?;
        let conn = self.conn.take();
        match tokio::time::timeout(ttl, self.exchange_on(conn, &bytes)).await {
            Ok(Ok((conn, response))) => {
                self.conn = Some(conn);
                Ok(response)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::Timeout),
        }
    }

    /// One exchange on `conn` (or a new connection); returns the connection for reuse.
    async fn exchange_on(
        &self,
        conn: Option<ControllerStream>,
        bytes: &[u8],
    ) -> Result<(ControllerStream, RpcResponse), SendError> {
        let mut conn = match conn {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let response = round_trip(&mut conn, bytes, self.target).await?;
        Ok((conn, response))
    }

    /// A new connection to the target, secured and logged in as the listener asks.
    async fn connect(&self) -> Result<ControllerStream, SendError> {
        let addr = self.addr.ok_or_else(|| {
            SendError::Unreachable(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no address for node {}", self.target),
            ))
        })?;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(SendError::Unreachable)?;
        // Raft RPCs are small and latency-bound.
        stream.set_nodelay(true).map_err(SendError::Unreachable)?;
        let Some(security) = &self.security else {
            return Ok(Box::new(stream));
        };
        let mut conn = security
            .connect(addr, stream)
            .await
            .map_err(SendError::Unreachable)?;
        if let Some(login) = security.login() {
            self.login(&mut conn, login).await?;
        }
        Ok(conn)
    }

    /// The SASL login on a new connection: the handshake naming the mechanism, then its tokens
    /// until the exchange completes. A refusal (wrong password, mechanism not enabled) is
    /// `Unreachable`: openraft backs off, and the controller has logged why.
    async fn login(&self, conn: &mut ControllerStream, login: &SaslLogin) -> Result<(), SendError> {
        let refused = |why: String| {
            SendError::Unreachable(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("login to node {} failed: {why}", self.target),
            ))
        };
        let handshake = self.frame(RpcRequest::SaslHandshake {
            mechanism: login.mechanism.name().to_string(),
        })?;
        match round_trip(conn, &handshake, self.target).await? {
            RpcResponse::SaslHandshake => {}
            _ => return Err(refused("answer of the wrong kind to the handshake".into())),
        }
        let (mut exchange, mut token) = login.begin();
        loop {
            let request = self.frame(RpcRequest::SaslAuthenticate(token))?;
            let RpcResponse::SaslAuthenticate(answer) =
                round_trip(conn, &request, self.target).await?
            else {
                return Err(refused("answer of the wrong kind to a login token".into()));
            };
            match exchange.next(&answer).map_err(refused)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    /// `body` as this member's request frame.
    fn frame(&self, body: RpcRequest) -> Result<Vec<u8>, SendError> {
        serde_json::to_vec(&RequestFrame {
            from: self.from,
            body,
        })
        .map_err(|e| SendError::Network(io::Error::other(e)))
    }
}

/// Writes one request and reads its answer; a refusal (the server then closes) is
/// `Unreachable`.
async fn round_trip(
    conn: &mut ControllerStream,
    bytes: &[u8],
    target: NodeId,
) -> Result<RpcResponse, SendError> {
    write_frame(conn, bytes).await.map_err(SendError::Network)?;
    let body = read_frame(conn)
        .await
        .map_err(SendError::Network)?
        .ok_or_else(|| {
            SendError::Network(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the answer",
            ))
        })?;
    let response: RpcResponse = serde_json::from_slice(&body)
        .map_err(|e| SendError::Network(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    if let RpcResponse::Refused(why) = response {
        // The server closes after refusing; back off as if it were unreachable.
        return Err(SendError::Unreachable(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("node {target} refused: {why}"),
        )));
    }
    Ok(response)
}

/// Makes openraft's per-peer clients; knows every voter's address.
#[derive(Clone, Debug)]
pub struct NetworkFactory {
    from: NodeId,
    voters: Arc<BTreeMap<NodeId, SocketAddr>>,
    security: Option<Arc<ControllerSecurity>>,
}

impl NetworkFactory {
    /// A factory for node `from` of the quorum `voters`, connecting with `security` when
    /// given.
    pub fn new(
        from: NodeId,
        voters: Arc<BTreeMap<NodeId, SocketAddr>>,
        security: Option<Arc<ControllerSecurity>>,
    ) -> Self {
        NetworkFactory {
            from,
            voters,
            security,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        // The configured voters are authoritative; the address recorded in the membership is
        // the fallback for a node the configuration does not name.
        let addr = self
            .voters
            .get(&target)
            .copied()
            .or_else(|| node.addr.parse().ok());
        PeerClient {
            channel: Channel::new(self.from, target, addr, self.security.clone()),
        }
    }
}

/// Openraft's client for one peer.
#[derive(Debug)]
pub struct PeerClient {
    channel: Channel,
}

impl PeerClient {
    fn rpc_error<E: std::error::Error>(
        &self,
        e: SendError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<NodeId, BasicNode, E> {
        match e {
            SendError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            SendError::Network(e) => RPCError::Network(NetworkError::new(&e)),
            SendError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.channel.from,
                target: self.channel.target,
                timeout: ttl,
            }),
        }
    }

    fn mismatch<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let e = io::Error::new(io::ErrorKind::InvalidData, "answer of the wrong kind");
        RPCError::Network(NetworkError::new(&e))
    }
}

type RaftResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RaftResult<AppendEntriesResponse<NodeId>> {
        let ttl = option.hard_ttl();
        match self
            .channel
            .exchange(RpcRequest::AppendEntries(rpc), ttl)
            .await
        {
            Ok(RpcResponse::AppendEntries(Ok(r))) => Ok(r),
            Ok(RpcResponse::AppendEntries(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(
                self.channel.target,
                e,
            ))),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RaftResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let ttl = option.hard_ttl();
        match self
            .channel
            .exchange(RpcRequest::InstallSnapshot(rpc), ttl)
            .await
        {
            Ok(RpcResponse::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(RpcResponse::InstallSnapshot(Err(e))) => Err(RPCError::RemoteError(
                RemoteError::new(self.channel.target, e),
            )),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RaftResult<VoteResponse<NodeId>> {
        let ttl = option.hard_ttl();
        match self.channel.exchange(RpcRequest::Vote(rpc), ttl).await {
            Ok(RpcResponse::Vote(Ok(r))) => Ok(r),
            Ok(RpcResponse::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(
                self.channel.target,
                e,
            ))),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, ttl)),
        }
    }
}

/// How long past its allowed wait a metadata fetch may take to be answered.
const FETCH_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Application calls to other members (the broker-to-controller conversation), one reused
/// connection per target. Usable without a quorum of one's own: a broker that is not a
/// voter talks to the controllers with this alone.
#[derive(Debug)]
pub struct ControllerClient {
    from: NodeId,
    voters: Arc<BTreeMap<NodeId, SocketAddr>>,
    timeout: Duration,
    channels: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Channel>>>>,
    /// Metadata fetches are long polls: on connections of their own, so that they never hold
    /// up an application call queued behind them.
    fetch_channels: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Channel>>>>,
    /// TLS and SASL toward the controllers, when their listener speaks them.
    security: Option<Arc<ControllerSecurity>>,
}

impl ControllerClient {
    /// A client that calls as node `from`, to the controllers at `voters`, each call bounded by
    /// `timeout`.
    pub fn new(
        from: NodeId,
        voters: BTreeMap<NodeId, SocketAddr>,
        timeout: Duration,
        security: Option<Arc<ControllerSecurity>>,
    ) -> Self {
        ControllerClient {
            from,
            voters: Arc::new(voters),
            timeout,
            security,
            channels: Mutex::new(HashMap::new()),
            fetch_channels: Mutex::new(HashMap::new()),
        }
    }

    /// The voters this client can call.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.voters.keys().copied().collect()
    }

    /// Sends `request` to the application handler of `node` and returns its answer.
    pub async fn call(&self, node: NodeId, request: Vec<u8>) -> Result<Vec<u8>, QuorumError> {
        let channel = self.channel(&self.channels, node)?;
        match Self::exchange(
            &channel,
            node,
            RpcRequest::Application(request),
            self.timeout,
        )
        .await?
        {
            RpcResponse::Application(answer) => Ok(answer),
            _ => Err(QuorumError::Rpc {
                node,
                message: "answer of the wrong kind".into(),
            }),
        }
    }

    /// Asks voter `node` for the metadata applied after `after`, letting it wait up to
    /// `max_wait` for news (see [`RpcRequest::FetchMetadata`]).
    pub async fn fetch_metadata(
        &self,
        node: NodeId,
        after: Option<LogIndex>,
        max_wait: Duration,
    ) -> Result<MetadataFetchResponse, QuorumError> {
        let channel = self.channel(&self.fetch_channels, node)?;
        let request = RpcRequest::FetchMetadata {
            after,
            max_wait_ms: u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
        };
        // The server may hold the request for `max_wait` before it answers; past a short grace
        // the voter is taken for gone (stopped or cut off) and the observer asks another, so
        // that it learns of a new controller within about a second of the old one going quiet.
        let grace = self.timeout.min(FETCH_ANSWER_GRACE);
        match Self::exchange(&channel, node, request, max_wait + grace).await? {
            RpcResponse::Metadata(answer) => Ok(answer),
            _ => Err(QuorumError::Rpc {
                node,
                message: "answer of the wrong kind".into(),
            }),
        }
    }

    fn channel(
        &self,
        channels: &Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Channel>>>>,
        node: NodeId,
    ) -> Result<Arc<tokio::sync::Mutex<Channel>>, QuorumError> {
        let addr = *self
            .voters
            .get(&node)
            .ok_or(QuorumError::UnknownNode(node))?;
        let mut channels = channels.lock().unwrap_or_else(|e| e.into_inner());
        Ok(channels
            .entry(node)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Channel::new(
                    self.from,
                    node,
                    Some(addr),
                    self.security.clone(),
                )))
            })
            .clone())
    }

    async fn exchange(
        channel: &tokio::sync::Mutex<Channel>,
        node: NodeId,
        request: RpcRequest,
        ttl: Duration,
    ) -> Result<RpcResponse, QuorumError> {
        // One request at a time per connection: answers come back in order.
        let mut channel = channel.lock().await;
        match channel.exchange(request, ttl).await {
            Ok(response) => Ok(response),
            Err(SendError::Timeout) => Err(QuorumError::Timeout { node }),
            Err(SendError::Unreachable(e) | SendError::Network(e)) => Err(QuorumError::Rpc {
                node,
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openraft::Vote;
    use tokio::net::TcpListener;

    fn vote_request() -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(1, 1), None)
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_silent_peer_times_out() {
        // A port nobody listens on: bind one, note it, close it.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let mut client = PeerClient {
            channel: Channel::new(1, 2, Some(closed), None),
        };
        let option = RPCOption::new(Duration::from_secs(2));
        match client.vote(vote_request(), option).await {
            Err(RPCError::Unreachable(_)) => {}
            other => panic!("expected Unreachable, got {other:?}"),
        }

        // A peer that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let (conn, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(conn);
        });
        let mut client = PeerClient {
            channel: Channel::new(1, 2, Some(addr), None),
        };
        let option = RPCOption::new(Duration::from_millis(200));
        match client.vote(vote_request(), option).await {
            Err(RPCError::Timeout(t)) => assert_eq!((t.id, t.target), (1, 2)),
            other => panic!("expected Timeout, got {other:?}"),
        }
        // The abandoned connection is not reused.
        assert!(client.channel.conn.is_none());

        // Cancelled from outside (as openraft's own timeouts do): the connection is gone too.
        let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = slow.local_addr().unwrap();
        let _slow = tokio::spawn(async move {
            let (conn, _) = slow.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(conn);
        });
        let mut client = PeerClient {
            channel: Channel::new(1, 2, Some(addr), None),
        };
        let call = client.vote(vote_request(), RPCOption::new(Duration::from_secs(10)));
        assert!(tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err());
        assert!(client.channel.conn.is_none());

        // A peer that answers garbage: a network error, and the connection is dropped.
        let liar = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = liar.local_addr().unwrap();
        let _liar = tokio::spawn(async move {
            let (mut conn, _) = liar.accept().await.unwrap();
            let _ = read_frame(&mut conn).await;
            let _ = write_frame(&mut conn, b"{\"nonsense\":true}").await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let mut client = PeerClient {
            channel: Channel::new(1, 2, Some(addr), None),
        };
        match client
            .vote(vote_request(), RPCOption::new(Duration::from_secs(2)))
            .await
        {
            Err(RPCError::Network(_)) => {}
            other => panic!("expected a network error, got {other:?}"),
        }
        assert!(client.channel.conn.is_none());
    }
}
