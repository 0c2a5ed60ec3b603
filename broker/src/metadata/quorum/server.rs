//! The server side of the controller protocol: accepts connections on the CONTROLLER
//! listener and answers Raft RPCs and application requests.
//!
//! Input from other members is untrusted bytes: an oversized, truncated or unparsable frame
//! closes that connection (and only it); Raft RPCs from a node that is not a voter are refused.
//! Application requests are accepted from any node id, because brokers that are not voters
//! must reach the controller too; the handler is given the claimed id and judges it. Raft RPCs
//! that no correct member sends are refused too (see [`super::validate`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::type_config::{NodeId, Raft};
use super::validate::check_request;
use super::wire::{read_frame, write_frame, RequestFrame, RpcRequest, RpcResponse};

/// A boxed, sendable future: lets [`ControllerRpcHandler`] be a trait object without
/// `async-trait`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The controller's application requests (broker registration, heartbeats, forwarded admin
/// requests): the quorum only carries the bytes.
pub trait ControllerRpcHandler: Send + Sync {
    /// Answers `request` from node `from` (the id the sender claims; not authenticated).
    fn handle(&self, from: NodeId, request: Vec<u8>) -> BoxFuture<'_, Vec<u8>>;
}

/// A handler for quorums that take no application requests: answers every request empty.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoApplication;

impl ControllerRpcHandler for NoApplication {
    fn handle(&self, _from: NodeId, _request: Vec<u8>) -> BoxFuture<'_, Vec<u8>> {
        Box::pin(async { Vec::new() })
    }
}

/// What a connection needs to answer.
struct Context {
    raft: Raft,
    voters: Arc<BTreeMap<NodeId, SocketAddr>>,
    app: Arc<dyn ControllerRpcHandler>,
}

/// Serves the controller protocol on `listener` until the returned task is aborted; aborting it
/// also closes every connection it accepted.
pub fn spawn(
    listener: TcpListener,
    raft: Raft,
    voters: Arc<BTreeMap<NodeId, SocketAddr>>,
    app: Arc<dyn ControllerRpcHandler>,
) -> JoinHandle<()> {
    let context = Arc::new(Context { raft, voters, app });
    tokio::spawn(async move {
        // Owned here so that aborting the accept loop drops (and so aborts) the connections.
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let context = context.clone();
                    connections.spawn(serve(stream, peer, context));
                }
                Err(e) => {
                    // Out of descriptors and the like: transient; don't spin.
                    tracing::warn!(error = %e, "controller listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    let _ = stream.set_nodelay(true);
    loop {
        let body = match read_frame(&mut stream).await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing controller connection: bad frame");
                return;
            }
        };
        let frame: RequestFrame = match serde_json::from_slice(&body) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing controller connection: malformed request");
                return;
            }
        };
        let (response, keep_open) = answer(&context, frame).await;
        let bytes = match serde_json::to_vec(&response) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot encode a controller response");
                return;
            }
        };
        if let Err(e) = write_frame(&mut stream, &bytes).await {
            tracing::debug!(%peer, error = %e, "controller connection closed while answering");
            return;
        }
        if !keep_open {
            return;
        }
    }
}

/// The answer to one request, and whether the connection stays open after it.
async fn answer(context: &Context, frame: RequestFrame) -> (RpcResponse, bool) {
    let from = frame.from;
    let is_raft = !matches!(frame.body, RpcRequest::Application(_));
    if is_raft && !context.voters.contains_key(&from) {
        tracing::warn!(from, "refusing a Raft RPC from a node that is not a voter");
        return (
            RpcResponse::Refused(format!("node {from} is not a voter of this quorum")),
            false,
        );
    }
    if let Err(why) = check_request(from, &frame.body) {
        tracing::warn!(from, %why, "refusing a malformed Raft RPC");
        return (RpcResponse::Refused(why), false);
    }
    let response = match frame.body {
        RpcRequest::AppendEntries(rpc) => {
            RpcResponse::AppendEntries(context.raft.append_entries(rpc).await)
        }
        RpcRequest::Vote(rpc) => RpcResponse::Vote(context.raft.vote(rpc).await),
        RpcRequest::InstallSnapshot(rpc) => {
            RpcResponse::InstallSnapshot(context.raft.install_snapshot(rpc).await)
        }
        RpcRequest::Application(request) => {
            RpcResponse::Application(context.app.handle(from, request).await)
        }
    };
    (response, true)
}
