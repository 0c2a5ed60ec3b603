//! The server side of the controller protocol: accepts connections on the CONTROLLER
//! listener and answers Raft RPCs and application requests.
//!
//! Input from other members is untrusted bytes: an oversized, truncated or unparsable frame
//! closes that connection (and only it); Raft RPCs from a node that is not a voter are refused.
//! Application requests and metadata fetches are accepted from any node id, because brokers
//! that are not voters (observers) must reach the controller and follow its metadata too; the handler is given the claimed id and judges it. Raft RPCs
//! that no correct member sends are refused too (see [`super::validate`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::AppendEntriesResponse;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use tokio::sync::watch;

use super::state_machine::StateMachineStore;
use super::type_config::{LogIndex, NodeId, Raft};
use super::validate::check_request;
use super::wire::{
    read_frame, write_frame, ControllerStream, MetadataFetchResponse, MetadataUpdate, RequestFrame,
    RpcRequest, RpcResponse,
};
use super::{LeaderContact, LeaderState};
use crate::security::Authenticator;

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

/// Longest an observer's metadata fetch is held when there is nothing new, whatever it asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(5);

/// What a connection needs to answer.
pub struct Context {
    /// This voter's Raft.
    pub raft: Raft,
    /// Every voter and its controller address.
    pub voters: Arc<BTreeMap<NodeId, SocketAddr>>,
    /// The controller's application requests.
    pub app: Arc<dyn ControllerRpcHandler>,
    /// The applied metadata, served to observers.
    pub state: StateMachineStore,
    /// The active leader as this voter knows it, told to observers.
    pub leader: watch::Receiver<LeaderState>,
    /// TLS and SASL, when the controller listener speaks them.
    pub security: Option<Arc<crate::security::controller_security::ControllerSecurity>>,
    /// Where accepted AppendEntries are noted (see [`LeaderContact`]).
    pub leader_contact: Arc<std::sync::Mutex<Option<LeaderContact>>>,
}

/// Serves the controller protocol on `listener` until the returned task is aborted; aborting it
/// also closes every connection it accepted.
pub fn spawn(listener: TcpListener, context: Context) -> JoinHandle<()> {
    // (With TLS, each connection's handshake runs on its own task, bounded in time.)
    let context = Arc::new(context);
    tokio::spawn(async move {
        // Owned here so that aborting the accept loop drops (and so aborts) the connections.
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let context = context.clone();
                    connections.spawn(async move {
                        let _ = stream.set_nodelay(true);
                        let stream: ControllerStream = match &context.security {
                            None => Box::new(stream),
                            Some(security) => {
                                let handshake = tokio::time::timeout(
                                    crate::security::tls::HANDSHAKE_TIMEOUT,
                                    security.accept(stream),
                                )
                                .await;
                                match handshake {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => {
                                        tracing::warn!(%peer, error = %e, "controller connection refused: TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::warn!(%peer, "controller connection refused: no TLS handshake in time");
                                        return;
                                    }
                                }
                            }
                        };
                        serve(stream, peer, context).await;
                    });
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

async fn serve(mut stream: ControllerStream, peer: SocketAddr, context: Arc<Context>) {
    // On a SASL listener, nothing but the login is served until it completes.
    let mut login = context
        .security
        .as_ref()
        .and_then(|security| security.authenticator(peer));
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
        let (response, keep_open) = match authenticate(&context, login.as_mut(), &frame) {
            Some(answer) => answer,
            None => answer(&context, frame).await,
        };
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

/// The login's part in one request: the answer to a SASL frame, or a refusal for a request
/// before the login completed; `None` when the request is to be served. `login` is the
/// connection's SASL state (`None`: the listener does not speak SASL).
fn authenticate(
    context: &Context,
    login: Option<&mut Authenticator>,
    frame: &RequestFrame,
) -> Option<(RpcResponse, bool)> {
    let refuse = |why: String| Some((RpcResponse::Refused(why), false));
    let Some(login) = login else {
        return match frame.body {
            RpcRequest::SaslHandshake { .. } | RpcRequest::SaslAuthenticate(_) => {
                refuse("the controller listener does not speak SASL".into())
            }
            _ => None,
        };
    };
    let security = context.security.as_ref()?;
    match &frame.body {
        RpcRequest::SaslHandshake { mechanism } => {
            let outcome = login.handshake(mechanism, 1);
            if outcome.error_code != 0 {
                tracing::warn!(from = frame.from, %mechanism, "controller login refused: mechanism not enabled");
                return refuse(format!(
                    "SASL mechanism {mechanism} is not enabled on the controller listener (it offers {:?})",
                    outcome.mechanisms
                ));
            }
            Some((RpcResponse::SaslHandshake, true))
        }
        RpcRequest::SaslAuthenticate(token) => {
            let image = context.state.subscribe().borrow().image.clone();
            let outcome = login.authenticate(
                token,
                &security.credentials(&image),
                std::time::Instant::now(),
            );
            if outcome.error_code != 0 {
                // The authenticator logged who failed and why.
                return refuse(
                    outcome
                        .error_message
                        .unwrap_or_else(|| "SASL authentication failed".into()),
                );
            }
            if outcome.completed {
                let session = login.session();
                if !security.may_serve(session, &image) {
                    return refuse(format!(
                        "{} is not authorized for CLUSTER_ACTION on the cluster",
                        session.principal
                    ));
                }
                tracing::debug!(from = frame.from, principal = %session.principal, "controller connection logged in");
            }
            Some((RpcResponse::SaslAuthenticate(outcome.auth_bytes), true))
        }
        _ => match login.admit(false, std::time::Instant::now()) {
            Ok(()) => None,
            Err(why) => {
                tracing::warn!(from = frame.from, %why, "closing controller connection");
                refuse(why.to_string())
            }
        },
    }
}

/// The answer to one request, and whether the connection stays open after it.
async fn answer(context: &Context, frame: RequestFrame) -> (RpcResponse, bool) {
    let from = frame.from;
    let is_raft = !matches!(
        frame.body,
        RpcRequest::Application(_) | RpcRequest::FetchMetadata { .. }
    );
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
            let sender = (rpc.vote.committed, rpc.vote.leader_id().voted_for());
            let term = rpc.vote.leader_id().get_term();
            let result = context.raft.append_entries(rpc).await;
            if let (true, Some(leader)) = sender {
                if matches!(&result, Ok(answer) if !matches!(answer, AppendEntriesResponse::HigherVote(_)))
                {
                    note_leader_contact(context, leader, term);
                }
            }
            RpcResponse::AppendEntries(result)
        }
        RpcRequest::Vote(rpc) => RpcResponse::Vote(context.raft.vote(rpc).await),
        RpcRequest::InstallSnapshot(rpc) => {
            RpcResponse::InstallSnapshot(context.raft.install_snapshot(rpc).await)
        }
        RpcRequest::Application(request) => {
            RpcResponse::Application(context.app.handle(from, request).await)
        }
        RpcRequest::FetchMetadata { after, max_wait_ms } => {
            let wait = Duration::from_millis(max_wait_ms).min(MAX_FETCH_WAIT);
            RpcResponse::Metadata(fetch_metadata(context, after, wait).await)
        }
        // Answered by `authenticate` before a request gets here.
        RpcRequest::SaslHandshake { .. } | RpcRequest::SaslAuthenticate(_) => {
            return (
                RpcResponse::Refused("a SASL frame out of place".into()),
                false,
            )
        }
    };
    (response, true)
}

/// Notes that `leader` (of `term`) was heard from now.
fn note_leader_contact(context: &Context, leader: NodeId, term: u64) {
    let mut contact = context
        .leader_contact
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *contact = Some(LeaderContact {
        leader,
        term,
        at: std::time::Instant::now(),
    });
}

/// What an observer at `after` is missing, waiting up to `wait` for something to be applied
/// when it is missing nothing (a long poll: news reaches observers as soon as it is applied).
async fn fetch_metadata(
    context: &Context,
    after: Option<LogIndex>,
    wait: Duration,
) -> MetadataFetchResponse {
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = context.state.subscribe();
    let update = loop {
        // Marked seen before reading, so an apply after the read wakes the wait below.
        changes.borrow_and_update();
        let update = context.state.updates_after(after);
        if !matches!(update, MetadataUpdate::UpToDate { .. })
            || tokio::time::Instant::now() >= deadline
        {
            break update;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            // Timed out (answer what there is), or the state machine is gone (shutting down).
            Ok(Err(_)) | Err(_) => break context.state.updates_after(after),
        }
    };
    let leader = *context.leader.borrow();
    MetadataFetchResponse {
        leader: leader.leader,
        term: leader.term,
        update,
    }
}
