//! The metadata quorum: the [`MetadataRecord`] log replicated by Raft (openraft 0.9) among the
//! controller voters, applied into a [`MetadataImage`] on every member. The Raft leader is the
//! active controller.
//!
//! - `type_config.rs`: openraft's types: an entry carries a [`MetadataBatch`].
//! - `log_store.rs`: the durable Raft log and vote (redb, fsynced before openraft is told).
//! - `state_machine.rs`, `snapshot.rs`: the image, and its durable snapshots.
//! - `wire.rs`, `network.rs`, `server.rs`: the controller protocol over TCP, both sides;
//!   `validate.rs`: what the server refuses before openraft sees it.
//!
//! **On disk** (`QuorumConfig::dir`): `raft-log.redb` (entries, vote, committed and purged
//! log ids) and `snapshot.bin` (the image as of a log id). Starting again from the dir
//! rebuilds the image: the snapshot, then the committed entries after it.
//!
//! **Membership.** The voters are static configuration (`controller.quorum.voters`). Every
//! voter calls openraft's `initialize` with the same voter set on every start: on a fresh dir
//! that writes the same membership entry at log index 0 on each voter (identical entries, so
//! the logs agree), and on a dir that has any vote or log openraft answers `NotAllowed`, which
//! is the normal restart and counts as success. No membership change is ever proposed, which
//! keeps this quorum out of the membership-churn paths of openraft bugs #1808 and #1544
//! (0.9.25 carries the #1808 fix anyway). openraft #1246 (a restarted single node not
//! re-applying committed entries) is covered by persisting the committed log id
//! (`save_committed`), so a restart re-applies up to it before any election.
//!
//! **Observers.** A node with `process.roles=broker` is not a voter: it runs no Raft and keeps
//! no log, and follows the committed metadata by long-polling the voters (`observer.rs`, with
//! `RpcRequest::FetchMetadata`; each voter keeps its latest applied entries for this, and
//! sends the whole image to an observer further behind). Its `propose` is always `NotLeader`;
//! its controller requests go to the leader like any broker's. So a cluster grows past its
//! voters without membership changes.
//!
//! **Leadership.** `propose` works on the leader only and returns once the batch is committed
//! and applied here; elsewhere it is `NotLeader` with the leader as known. This layer never
//! forwards: the controller decides what to do with a proposal that must move.
//!
//! **Stepping down (KAFKA-15489).** A leader cut off from its majority keeps its Raft role
//! until it hears a higher term, and openraft would queue proposals on it forever. So the
//! *active* leader here is a Raft leader whose latest quorum acknowledgement is at most
//! `election_timeout_max` old (openraft's `millis_since_quorum_ack`; a single voter is its own
//! quorum): past that, a new leader may already exist, so this node reports no leader,
//! `is_leader()` turns false and `propose` answers `NotLeader` at once.
//!
//! [`MetadataRecord`]: crate::metadata::records::MetadataRecord

mod log_store;
mod network;
mod observer;
mod server;
mod snapshot;
mod state_machine;
mod type_config;
mod validate;
pub(crate) mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metadata::image::MetadataImage;
use crate::metadata::log::MetadataLog;
use crate::metadata::records::MetadataRecord;

pub use network::ControllerClient;
pub use server::{BoxFuture, ControllerRpcHandler, NoApplication};
pub use type_config::{LogIndex, MetadataBatch, NodeId, TypeConfig};
pub use wire::MAX_FRAME_BYTES;

use log_store::LogStore;
use snapshot::SnapshotFile;
use state_machine::StateMachineStore;
use type_config::Raft;

/// Largest snapshot chunk: a chunk travels as a JSON array of numbers (up to 4 bytes per
/// byte), so an eighth of the frame cap keeps every chunk frame well inside it.
pub const MAX_SNAPSHOT_CHUNK_BYTES: u64 = (wire::MAX_FRAME_BYTES / 8) as u64;

/// File name of the Raft log database in the quorum dir.
const LOG_FILE: &str = "raft-log.redb";

/// Why the quorum failed.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The configuration cannot work (the message names the setting).
    #[error("metadata quorum configuration: {0}")]
    Config(String),
    /// The durable log or snapshot could not be read or written.
    #[error("metadata quorum storage: {0}")]
    Storage(String),
    /// This node is not the leader; `leader` is the one it knows of, if any.
    #[error("not the metadata quorum leader (leader: {leader:?})")]
    NotLeader {
        /// The current leader as this node knows it.
        leader: Option<NodeId>,
    },
    /// A node id that is not a voter of this quorum.
    #[error("node {0} is not a voter of the metadata quorum")]
    UnknownNode(NodeId),
    /// An application call to another member failed.
    #[error("controller call to node {node} failed: {message}")]
    Rpc {
        /// The node called.
        node: NodeId,
        /// What went wrong.
        message: String,
    },
    /// An application call got no answer in time.
    #[error("controller call to node {node} timed out")]
    Timeout {
        /// The node called.
        node: NodeId,
    },
    /// Something waited for longer than allowed (leadership, application of an entry).
    #[error("metadata quorum: timed out waiting for {0}")]
    Wait(String),
    /// Raft stopped (shut down, or a fatal storage error).
    #[error("metadata quorum stopped: {0}")]
    Stopped(String),
    /// The legacy single-node metadata log could not be imported.
    #[error("importing the legacy metadata log: {0}")]
    LegacyImport(String),
}

/// How a node takes part in the quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumRole {
    /// Votes, stores the Raft log and may lead (`process.roles` includes `controller`).
    Voter,
    /// Follows the committed metadata from the voters without voting or storing the log
    /// (`process.roles=broker`); see `observer.rs`.
    Observer,
}

/// The configuration of one quorum member.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This node's id; one of `voters` for a voter, none of them for an observer.
    pub node_id: NodeId,
    /// Voter or observer.
    pub role: QuorumRole,
    /// Every voter's id and CONTROLLER listener address (`controller.quorum.voters`).
    pub voters: BTreeMap<NodeId, SocketAddr>,
    /// Where the Raft log and snapshots live.
    pub dir: PathBuf,
    /// Election timeout range: a follower that hears no leader for a random time in it
    /// stands for election.
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// How often the leader heartbeats; well under `election_timeout_min`.
    pub heartbeat_interval: Duration,
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot, so a briefly lagging follower catches
    /// up from the log rather than by a snapshot transfer.
    pub logs_kept_after_snapshot: u64,
    /// Largest snapshot chunk per InstallSnapshot RPC (at most an eighth of the frame cap,
    /// since a chunk's bytes travel as a JSON array).
    pub snapshot_chunk_bytes: u64,
    /// Deadline of one application call ([`MetadataQuorum::call`]).
    pub rpc_timeout: Duration,
    /// Deadline of one proposal; past it the outcome is unknown (it may still commit), as
    /// for any request that times out.
    pub propose_timeout: Duration,
    /// A single-node broker's metadata log (`<data_dir>/__cluster_metadata-0/metadata.log`)
    /// to import on first start; see [`MetadataQuorum::import_legacy`].
    pub legacy_log: Option<PathBuf>,
    /// TLS and SASL of the controller listener, when it speaks them.
    pub security: Option<Arc<crate::security::controller_security::ControllerSecurity>>,
}

impl QuorumConfig {
    /// A configuration with the default timings.
    pub fn new(node_id: NodeId, voters: BTreeMap<NodeId, SocketAddr>, dir: PathBuf) -> Self {
        QuorumConfig {
            node_id,
            role: QuorumRole::Voter,
            voters,
            dir,
            // Kafka's KRaft election timeout is 1 s; failover under 3 s is a stated target.
            // The heartbeat interval is also openraft's deadline for an AppendEntries round
            // trip, which includes the follower's fsync: 150 ms leaves room for a slow disk.
            election_timeout_min: Duration::from_millis(750),
            election_timeout_max: Duration::from_millis(1500),
            heartbeat_interval: Duration::from_millis(150),
            snapshot_every: 1000,
            logs_kept_after_snapshot: 1000,
            snapshot_chunk_bytes: MAX_SNAPSHOT_CHUNK_BYTES,
            rpc_timeout: Duration::from_secs(5),
            propose_timeout: Duration::from_secs(10),
            legacy_log: None,
            security: None,
        }
    }

    /// The default single-node broker: the only voter, no network.
    pub fn single(node_id: NodeId, dir: PathBuf) -> Self {
        // The address is never dialled (there is no one to dial); it only names the node in
        // the membership.
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        QuorumConfig::new(node_id, BTreeMap::from([(node_id, addr)]), dir)
    }

    /// An observer of `voters` (see [`QuorumRole::Observer`]).
    pub fn observer(node_id: NodeId, voters: BTreeMap<NodeId, SocketAddr>, dir: PathBuf) -> Self {
        QuorumConfig {
            role: QuorumRole::Observer,
            ..QuorumConfig::new(node_id, voters, dir)
        }
    }

    fn validate(&self) -> Result<(), QuorumError> {
        if self.role == QuorumRole::Observer {
            if self.voters.is_empty() {
                return Err(QuorumError::Config(
                    "a node that is not a controller needs controller.quorum.voters to follow"
                        .into(),
                ));
            }
            if self.voters.contains_key(&self.node_id) {
                return Err(QuorumError::Config(format!(
                    "node.id {} is in controller.quorum.voters, so it must be a controller \
                     (process.roles)",
                    self.node_id
                )));
            }
            if let Some(path) = self.legacy_log.as_ref().filter(|path| path.exists()) {
                return Err(QuorumError::Config(format!(
                    "the single-node metadata log {} can only be imported by a controller; \
                     start this node alone first",
                    path.display()
                )));
            }
            return Ok(());
        }
        if !self.voters.contains_key(&self.node_id) {
            return Err(QuorumError::Config(format!(
                "node.id {} is not in controller.quorum.voters ({:?})",
                self.node_id,
                self.voters.keys().collect::<Vec<_>>()
            )));
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(QuorumError::Config(
                "election timeout minimum must be below its maximum".into(),
            ));
        }
        if self.heartbeat_interval >= self.election_timeout_min {
            return Err(QuorumError::Config(
                "heartbeat interval must be below the election timeout".into(),
            ));
        }
        if let Some(path) = &self.legacy_log {
            if self.voters.len() > 1 && path.exists() {
                return Err(QuorumError::Config(format!(
                    "the single-node metadata log {} can only be imported into a single-voter \
                     quorum (controller.quorum.voters names {}); start this node alone first",
                    path.display(),
                    self.voters.len()
                )));
            }
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK_BYTES {
            return Err(QuorumError::Config(format!(
                "snapshot_chunk_bytes must be between 1 and {MAX_SNAPSHOT_CHUNK_BYTES}"
            )));
        }
        if self.snapshot_every == 0 {
            return Err(QuorumError::Config(
                "snapshot_every must be positive".into(),
            ));
        }
        Ok(())
    }

    fn raft_config(&self) -> Result<openraft::Config, QuorumError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "millrace-metadata".into(),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            heartbeat_interval: millis(self.heartbeat_interval),
            // Openraft's 200 ms default is too short to ship a multi-megabyte snapshot chunk on
            // a busy two-core machine; a timed-out chunk only restarts the transfer.
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| QuorumError::Config(e.to_string()))
    }
}

/// The image as of an applied log index: what brokers watch.
#[derive(Clone, Debug)]
pub struct AppliedImage {
    /// The metadata image.
    pub image: Arc<MetadataImage>,
    /// The last log index applied into it (`None` before anything was applied).
    pub index: Option<LogIndex>,
}

/// Who leads, as this node knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderState {
    /// The leader (the active controller), if known.
    pub leader: Option<NodeId>,
    /// The Raft term.
    pub term: u64,
}

/// When this voter last accepted entries (or a heartbeat) from another node as leader: a new
/// active controller counts the previous leader's broker session from then rather than from
/// its own election (see `Controller::run_liveness`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderContact {
    /// The leader that sent them.
    pub leader: NodeId,
    /// Its term.
    pub term: u64,
    /// When they arrived.
    pub at: std::time::Instant,
}

/// One member's view of the quorum, for status pages and DescribeQuorum-like answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumStatus {
    /// This node.
    pub node_id: NodeId,
    /// The active leader as this node sees it.
    pub leader: Option<NodeId>,
    /// The Raft term.
    pub term: u64,
    /// Last index in this node's log.
    pub last_log_index: Option<LogIndex>,
    /// Last index applied to this node's image.
    pub last_applied: Option<LogIndex>,
    /// Last index covered by this node's snapshot.
    pub snapshot: Option<LogIndex>,
    /// On the leader: each voter's last replicated index (`None`: nothing confirmed yet).
    /// Empty elsewhere.
    pub replication: BTreeMap<NodeId, Option<LogIndex>>,
}

/// A running quorum member.
pub struct MetadataQuorum {
    node_id: NodeId,
    voters: Arc<BTreeMap<NodeId, SocketAddr>>,
    /// `None` on an observer, which runs no Raft of its own.
    raft: Option<Raft>,
    applied: watch::Receiver<AppliedImage>,
    leader: watch::Receiver<LeaderState>,
    /// Written by the controller listener on every accepted AppendEntries.
    leader_contact: Arc<Mutex<Option<LeaderContact>>>,
    client: Arc<ControllerClient>,
    app: Arc<dyn ControllerRpcHandler>,
    lease: Lease,
    propose_timeout: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    storage_closed: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for MetadataQuorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataQuorum")
            .field("node_id", &self.node_id)
            .field("leader", &*self.leader.borrow())
            .finish_non_exhaustive()
    }
}

impl MetadataQuorum {
    /// Opens the durable state in `config.dir`, starts Raft, serves the controller protocol on
    /// `listener` (the CONTROLLER listener; `None` for a single voter, which needs no network)
    /// and initializes the membership on first start (see the module docs). A single voter
    /// becomes leader by itself right away. If `config.legacy_log` names an existing file,
    /// it is imported before this returns ([`MetadataQuorum::import_legacy`]).
    pub async fn start(
        config: QuorumConfig,
        listener: Option<TcpListener>,
        app: Arc<dyn ControllerRpcHandler>,
    ) -> Result<MetadataQuorum, QuorumError> {
        config.validate()?;
        if config.role == QuorumRole::Observer {
            return Ok(MetadataQuorum::observe(config, app));
        }
        let raft_config = Arc::new(config.raft_config()?);
        if listener.is_none() && config.voters.len() > 1 {
            return Err(QuorumError::Config(
                "a quorum of several voters needs a CONTROLLER listener".into(),
            ));
        }
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| QuorumError::Storage(format!("creating {}: {e}", config.dir.display())))?;
        let (log_store, storage_closed) = LogStore::open(&config.dir.join(LOG_FILE))?;
        let (state_machine, applied) = StateMachineStore::open(SnapshotFile::new(&config.dir))?;
        let voters = Arc::new(config.voters.clone());
        let network =
            network::NetworkFactory::new(config.node_id, voters.clone(), config.security.clone());
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| QuorumError::Stopped(e.to_string()))?;

        let mut tasks = Vec::new();
        let lease = Lease {
            node_id: config.node_id,
            single: config.voters.len() == 1,
            max_ack_age_ms: u64::try_from(config.election_timeout_max.as_millis())
                .unwrap_or(u64::MAX),
        };
        let (leader_tx, leader) = watch::channel(LeaderState::default());
        tasks.push(tokio::spawn(watch_leader(
            raft.clone(),
            lease,
            config.heartbeat_interval,
            leader_tx,
        )));
        let leader_contact = Arc::new(Mutex::new(None));
        if let Some(listener) = listener {
            tasks.push(server::spawn(
                listener,
                server::Context {
                    security: config.security.clone(),
                    raft: raft.clone(),
                    voters: voters.clone(),
                    app: app.clone(),
                    state: state_machine,
                    leader: leader.clone(),
                    leader_contact: leader_contact.clone(),
                },
            ));
        }

        let quorum = MetadataQuorum {
            node_id: config.node_id,
            voters: voters.clone(),
            client: Arc::new(ControllerClient::new(
                config.node_id,
                config.voters.clone(),
                config.rpc_timeout,
                config.security.clone(),
            )),
            raft: Some(raft),
            applied,
            leader,
            leader_contact,
            app,
            lease,
            propose_timeout: config.propose_timeout,
            tasks: Mutex::new(tasks),
            storage_closed: tokio::sync::Mutex::new(Some(storage_closed)),
        };
        let ready = async {
            quorum.initialize().await?;
            quorum.check_membership().await?;
            if let Some(path) = &config.legacy_log {
                quorum.import_legacy(path).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = ready {
            // Don't leave Raft and the listener running behind a failed start.
            quorum.shutdown().await;
            return Err(e);
        }
        Ok(quorum)
    }

    /// An observer: follows the voters' metadata (see `observer.rs`); no storage, no Raft.
    fn observe(config: QuorumConfig, app: Arc<dyn ControllerRpcHandler>) -> MetadataQuorum {
        let client = Arc::new(ControllerClient::new(
            config.node_id,
            config.voters.clone(),
            config.rpc_timeout,
            config.security.clone(),
        ));
        let (applied_tx, applied) = watch::channel(AppliedImage {
            image: Arc::new(MetadataImage::default()),
            index: None,
        });
        let (leader_tx, leader) = watch::channel(LeaderState::default());
        // One client for both: its metadata fetches run on connections of their own.
        let follower = observer::spawn(
            client.clone(),
            applied_tx,
            leader_tx,
            observer::ObserverTimings {
                // Long enough to keep idle traffic low, short enough that a voter that lost
                // its leadership without news is asked again soon.
                max_wait: config.election_timeout_max,
                backoff: config.heartbeat_interval,
            },
        );
        MetadataQuorum {
            node_id: config.node_id,
            voters: Arc::new(config.voters.clone()),
            raft: None,
            applied,
            leader,
            leader_contact: Arc::new(Mutex::new(None)),
            client,
            app,
            lease: Lease {
                node_id: config.node_id,
                single: false,
                max_ack_age_ms: 0,
            },
            propose_timeout: config.propose_timeout,
            tasks: Mutex::new(vec![follower]),
            storage_closed: tokio::sync::Mutex::new(None),
        }
    }

    /// Raft, on a voter; `Stopped` on an observer (callers check the role first).
    fn raft(&self) -> Result<&Raft, QuorumError> {
        self.raft
            .as_ref()
            .ok_or_else(|| QuorumError::Stopped("an observer runs no Raft".into()))
    }

    /// Whether this node votes (else it observes).
    pub fn is_voter(&self) -> bool {
        self.raft.is_some()
    }

    async fn initialize(&self) -> Result<(), QuorumError> {
        let raft = self.raft()?;
        let members: BTreeMap<NodeId, BasicNode> = self
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.to_string())))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(node = self.node_id, voters = ?self.voters.keys().collect::<Vec<_>>(),
                    "initialized a new metadata quorum");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::info!(
                    node = self.node_id,
                    "metadata quorum restarted from its log"
                );
                if self.voters.len() == 1 {
                    // Alone there is no one to wait for: stand now instead of after an
                    // election timeout.
                    raft.trigger()
                        .elect()
                        .await
                        .map_err(|e| QuorumError::Stopped(e.to_string()))?;
                }
                Ok(())
            }
            Err(e) => Err(QuorumError::Stopped(format!("initialize: {e}"))),
        }
    }

    /// Refuses to run with a voter set other than the one in the log: membership changes are
    /// not supported, and a silently ignored `controller.quorum.voters` (say, a single-node
    /// dir started as one of three voters) would leave the operator with a cluster that is
    /// not the one configured.
    async fn check_membership(&self) -> Result<(), QuorumError> {
        let in_log: Vec<NodeId> = self
            .raft()?
            .with_raft_state(|state| state.membership_state.effective().voter_ids().collect())
            .await
            .map_err(|e| QuorumError::Stopped(e.to_string()))?;
        let configured: Vec<NodeId> = self.voters.keys().copied().collect();
        // No membership yet: a fresh voter whose `initialize` lost the race against another
        // voter's vote request (which made its vote non-default first). The leader's log,
        // initialized from the same configuration, brings the membership.
        if !in_log.is_empty() && in_log != configured {
            return Err(QuorumError::Config(format!(
                "controller.quorum.voters names {configured:?} but the metadata log in this \
                 data dir was written by voters {in_log:?}; changing the voter set is not \
                 supported"
            )));
        }
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The voters and their controller addresses.
    pub fn voters(&self) -> &BTreeMap<NodeId, SocketAddr> {
        &self.voters
    }

    /// Appends `records` as one log entry. On the leader, returns the entry's index once it is
    /// committed and applied here; elsewhere [`QuorumError::NotLeader`].
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<LogIndex, QuorumError> {
        let Some(raft) = &self.raft else {
            return Err(QuorumError::NotLeader {
                leader: self.leader(),
            });
        };
        let stale_leader = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            m.state == ServerState::Leader && self.lease.active_leader(&m).is_none()
        };
        if stale_leader {
            // A Raft leader without a recent majority: it would queue the entry, maybe forever.
            return Err(QuorumError::NotLeader { leader: None });
        }
        let write = raft.client_write(MetadataBatch(records));
        let result = tokio::time::timeout(self.propose_timeout, write)
            .await
            .map_err(|_| {
                QuorumError::Wait("a proposal to commit (its outcome is unknown)".into())
            })?;
        match result {
            Ok(response) => Ok(response.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(QuorumError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(RaftError::APIError(e)) => Err(QuorumError::Stopped(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(QuorumError::Stopped(e.to_string())),
        }
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.applied.borrow().image.clone()
    }

    /// The applied image as it changes (each apply publishes a new one).
    pub fn subscribe(&self) -> watch::Receiver<AppliedImage> {
        self.applied.clone()
    }

    /// The leader (the active controller), if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader.borrow().leader
    }

    /// The last time this voter accepted entries from another node as leader (`None` on an
    /// observer, or before any).
    pub fn last_leader_contact(&self) -> Option<LeaderContact> {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this node is the active leader (the active controller): the Raft leader, with
    /// a majority heard from recently (see the module docs).
    pub fn is_leader(&self) -> bool {
        let Some(raft) = &self.raft else {
            return false;
        };
        let metrics = raft.metrics();
        let m = metrics.borrow();
        self.lease.active_leader(&m) == Some(self.node_id)
    }

    /// The leader and term as they change.
    pub fn leader_changes(&self) -> watch::Receiver<LeaderState> {
        self.leader.clone()
    }

    /// Waits until some node is known as leader, for at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, QuorumError> {
        let mut changes = self.leader.clone();
        let wait = changes.wait_for(|state| state.leader.is_some());
        let result = tokio::time::timeout(timeout, wait)
            .await
            .map(|r| r.map(|state| state.leader));
        match result {
            Ok(Ok(Some(leader))) => Ok(leader),
            Ok(Ok(None)) | Err(_) => Err(QuorumError::Wait("a leader".into())),
            Ok(Err(_)) => Err(QuorumError::Stopped("leader watch closed".into())),
        }
    }

    /// Waits until the image has applied `index`, for at most `timeout`.
    pub async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<AppliedImage, QuorumError> {
        let mut changes = self.applied.clone();
        let wait = changes.wait_for(|applied| applied.index.is_some_and(|i| i >= index));
        let result = tokio::time::timeout(timeout, wait)
            .await
            .map(|r| r.map(|applied| applied.clone()));
        match result {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(_)) => Err(QuorumError::Stopped("image watch closed".into())),
            Err(_) => Err(QuorumError::Wait(format!("log index {index} to apply"))),
        }
    }

    /// Sends an application request to `node`'s [`ControllerRpcHandler`] and returns its
    /// answer (see [`ControllerClient::call`]). A call to this node itself goes straight to
    /// the local handler: a single-node broker is its own controller and has no network.
    pub async fn call(&self, node: NodeId, request: Vec<u8>) -> Result<Vec<u8>, QuorumError> {
        if node == self.node_id {
            return Ok(self.app.handle(self.node_id, request).await);
        }
        self.client.call(node, request).await
    }

    /// This node's view of the quorum now.
    pub fn status(&self) -> QuorumStatus {
        let Some(raft) = &self.raft else {
            let applied = self.applied.borrow().index;
            let leader = *self.leader.borrow();
            return QuorumStatus {
                node_id: self.node_id,
                leader: leader.leader,
                term: leader.term,
                last_log_index: applied,
                last_applied: applied,
                snapshot: None,
                replication: BTreeMap::new(),
            };
        };
        let metrics = raft.metrics();
        let m = metrics.borrow();
        QuorumStatus {
            node_id: self.node_id,
            leader: self.lease.active_leader(&m),
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            replication: m
                .replication
                .iter()
                .flatten()
                .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                .collect(),
        }
    }

    /// Openraft's metrics, for status pages and tests (`None` on an observer).
    pub fn raft_metrics(
        &self,
    ) -> Option<watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>> {
        self.raft.as_ref().map(|raft| raft.metrics())
    }

    /// Imports a single-node broker's metadata log (see [`MetadataLog`]) into a fresh
    /// single-voter quorum: once this node leads, the legacy records are proposed as one entry
    /// and the file is renamed to `metadata.log.imported`. Returns the entry's index, or `None`
    /// when there was nothing to import (no file). A file that is still there although the
    /// image already holds metadata was imported before a crash stopped the rename; it is
    /// renamed now and not imported twice.
    pub async fn import_legacy(&self, path: &Path) -> Result<Option<LogIndex>, QuorumError> {
        if !path.exists() {
            return Ok(None);
        }
        if self.voters.len() != 1 {
            return Err(QuorumError::LegacyImport(format!(
                "{} can only be imported into a single-voter quorum; start this node alone \
                 first, then add voters",
                path.display()
            )));
        }
        self.wait_for_leader(Duration::from_secs(10)).await?;
        // The leader has committed its first entry once the leadership is stable; wait for the
        // image to catch up with the log so the emptiness check below sees everything.
        let last_log = self.raft()?.metrics().borrow().last_log_index.unwrap_or(0);
        self.wait_applied(last_log, Duration::from_secs(10)).await?;
        let imported = if image_is_empty(&self.image()) {
            let (_, records) =
                MetadataLog::open(path).map_err(|e| QuorumError::LegacyImport(e.to_string()))?;
            let count = records.len();
            let index = self.propose(records).await?;
            tracing::info!(path = %path.display(), records = count, index,
                "imported the single-node metadata log into the quorum");
            Some(index)
        } else {
            tracing::warn!(path = %path.display(),
                "the quorum already holds metadata; retiring the legacy log without importing it");
            None
        };
        let mut retired = path.as_os_str().to_owned();
        retired.push(".imported");
        std::fs::rename(path, PathBuf::from(retired))
            .map_err(|e| QuorumError::LegacyImport(format!("renaming {}: {e}", path.display())))?;
        Ok(imported)
    }

    /// Stops Raft, the server and its connections. Idempotent.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        if let Some(raft) = &self.raft {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "metadata quorum did not shut down cleanly");
            }
        }
        // Return only once the log database is closed, so the same dir can be opened again
        // right away (openraft's replication tasks drop their log readers asynchronously).
        if let Some(closed) = self.storage_closed.lock().await.take() {
            if tokio::time::timeout(Duration::from_secs(10), closed)
                .await
                .is_err()
            {
                tracing::warn!("metadata log still open 10 s after shutdown");
            }
        }
    }
}

/// Whether an image holds nothing at all (a quorum nothing was proposed to).
fn image_is_empty(image: &MetadataImage) -> bool {
    image.cluster_id().is_none()
        && image.topics().next().is_none()
        && image.next_producer_id_block() == 0
}

impl Drop for MetadataQuorum {
    /// Stops the listener and the leader watch if `shutdown` was not called; Raft itself stops
    /// once its last handle is gone.
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// When this node counts as the active leader.
#[derive(Clone, Copy, Debug)]
struct Lease {
    node_id: NodeId,
    /// A single voter is its own majority: always fresh.
    single: bool,
    /// Oldest quorum acknowledgement a leader may act on.
    max_ack_age_ms: u64,
}

impl Lease {
    /// The leader as this node should report it: others' leadership as openraft knows it, our
    /// own only while a majority acknowledged us recently.
    fn active_leader(&self, m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Option<NodeId> {
        if m.current_leader != Some(self.node_id) {
            return m.current_leader;
        }
        let fresh = self.single
            || m.millis_since_quorum_ack
                .is_some_and(|age| age <= self.max_ack_age_ms);
        (m.state == ServerState::Leader && fresh).then_some(self.node_id)
    }
}

/// Mirrors openraft's metrics into the leader watch, changing it only when the active leader
/// or the term does. Also re-evaluated every heartbeat interval, so that a lease running out
/// is noticed even when nothing else changes.
async fn watch_leader(raft: Raft, lease: Lease, every: Duration, tx: watch::Sender<LeaderState>) {
    let mut metrics = raft.metrics();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let state = {
            let m = metrics.borrow_and_update();
            LeaderState {
                leader: lease.active_leader(&m),
                term: m.current_term,
            }
        };
        tx.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                tracing::info!(leader = ?state.leader, term = state.term, "metadata quorum leader changed");
            }
            *current = state;
            changed
        });
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
    }
}
