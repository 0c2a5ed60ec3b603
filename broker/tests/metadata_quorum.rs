//! The metadata quorum over real TCP on 127.0.0.1: elections, proposals, failover, durability,
//! snapshot catch-up, bad input and the application channel.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_broker::metadata::log::MetadataLog;
use millrace_broker::metadata::quorum::{
    BoxFuture, ControllerRpcHandler, MetadataQuorum, NoApplication, NodeId, QuorumConfig,
    QuorumError,
};
use millrace_broker::metadata::{MetadataImage, MetadataRecord, TopicImage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        partitions: 1,
        configs: BTreeMap::new(),
    }
}

fn topics(image: &MetadataImage) -> Vec<TopicImage> {
    image.topics().cloned().collect()
}

/// Echoes requests back prefixed with the caller's id.
struct Echo;

impl ControllerRpcHandler for Echo {
    fn handle(&self, from: NodeId, request: Vec<u8>) -> BoxFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let mut answer = format!("{from}:").into_bytes();
            answer.extend_from_slice(&request);
            answer
        })
    }
}

/// Test timings: fast enough for the tests, slow enough for a loaded two-core machine.
fn config(node_id: NodeId, voters: &BTreeMap<NodeId, SocketAddr>, dir: &Path) -> QuorumConfig {
    let mut config =
        QuorumConfig::new(node_id, voters.clone(), dir.join(format!("node-{node_id}")));
    config.election_timeout_min = Duration::from_millis(400);
    config.election_timeout_max = Duration::from_millis(800);
    config.heartbeat_interval = Duration::from_millis(100);
    config
}

/// Three (or `n`) voters in this process, each with its own dir and CONTROLLER listener.
struct Cluster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    voters: BTreeMap<NodeId, SocketAddr>,
    nodes: BTreeMap<NodeId, Arc<MetadataQuorum>>,
    tweak: fn(&mut QuorumConfig),
}

impl Cluster {
    async fn start(n: u64, tweak: fn(&mut QuorumConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, listener);
        }
        let voters: BTreeMap<NodeId, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap()))
            .collect();
        let mut cluster = Cluster {
            root: dir.path().to_path_buf(),
            _dir: dir,
            voters,
            nodes: BTreeMap::new(),
            tweak,
        };
        let mut starts = Vec::new();
        for (id, listener) in listeners {
            let mut config = config(id, &cluster.voters, &cluster.root);
            (cluster.tweak)(&mut config);
            starts.push(tokio::spawn(async move {
                MetadataQuorum::start(config, Some(listener), Arc::new(Echo)).await
            }));
        }
        for (start, id) in starts.into_iter().zip(1..=n) {
            let quorum = start.await.unwrap().unwrap();
            cluster.nodes.insert(id, Arc::new(quorum));
        }
        cluster
    }

    /// Restarts a stopped node from its dir, on its old address.
    async fn restart(&mut self, id: NodeId) {
        let listener = TcpListener::bind(self.voters[&id]).await.unwrap();
        let mut config = config(id, &self.voters, &self.root);
        (self.tweak)(&mut config);
        let quorum = MetadataQuorum::start(config, Some(listener), Arc::new(Echo))
            .await
            .unwrap();
        self.nodes.insert(id, Arc::new(quorum));
    }

    /// Stops a node and forgets it (so its storage is closed and can be reopened).
    async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await;
        drop(node);
    }

    /// Waits until every running node names the same leader, and returns it.
    async fn stable_leader(&self) -> NodeId {
        let deadline = Instant::now() + WAIT;
        loop {
            let leaders: Vec<Option<NodeId>> = self.nodes.values().map(|n| n.leader()).collect();
            if let Some(Some(first)) = leaders.first() {
                let agreed = leaders.iter().all(|l| *l == Some(*first));
                if agreed && self.nodes.get(first).is_some_and(|n| n.is_leader()) {
                    return *first;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            // Wake on any leader change of any node rather than polling blindly.
            let mut watches: Vec<_> = self.nodes.values().map(|n| n.leader_changes()).collect();
            let changed =
                futures_util::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
        }
    }

    async fn shutdown(self) {
        for node in self.nodes.values() {
            node.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_elects_itself_and_applies_proposals() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let quorum = MetadataQuorum::start(
        QuorumConfig::single(1, dir.path().join("quorum")),
        None,
        Arc::new(NoApplication),
    )
    .await
    .unwrap();
    let leader = quorum
        .wait_for_leader(Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(leader, 1);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a single voter took {:?} to lead",
        started.elapsed()
    );
    assert!(quorum.is_leader());

    let mut updates = quorum.subscribe();
    let index = quorum
        .propose(vec![topic("orders"), topic("clicks")])
        .await
        .unwrap();
    // Applied before propose returned.
    assert!(quorum.image().topic("orders").is_some());
    assert!(quorum.image().topic("clicks").is_some());
    let applied = updates
        .wait_for(|a| a.index >= Some(index))
        .await
        .unwrap()
        .clone();
    assert_eq!(topics(&applied.image).len(), 2);
    let next = quorum.propose(vec![topic("views")]).await.unwrap();
    assert!(next > index);
    quorum.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_calls_its_own_controller_without_a_network() {
    let dir = tempfile::tempdir().unwrap();
    let quorum = MetadataQuorum::start(
        QuorumConfig::single(7, dir.path().join("quorum")),
        None,
        Arc::new(Echo),
    )
    .await
    .unwrap();
    let answer = quorum.call(7, b"register".to_vec()).await.unwrap();
    assert_eq!(answer, b"7:register".to_vec());
    quorum.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_single_voter_rebuilds_its_image_before_any_proposal() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("quorum");
    let index = {
        let quorum = MetadataQuorum::start(
            QuorumConfig::single(1, qdir.clone()),
            None,
            Arc::new(NoApplication),
        )
        .await
        .unwrap();
        quorum.wait_for_leader(WAIT).await.unwrap();
        let index = quorum.propose(vec![topic("orders")]).await.unwrap();
        quorum.shutdown().await;
        index
    };
    let quorum =
        MetadataQuorum::start(QuorumConfig::single(1, qdir), None, Arc::new(NoApplication))
            .await
            .unwrap();
    let applied = quorum.wait_applied(index, WAIT).await.unwrap();
    assert!(applied.image.topic("orders").is_some());
    quorum
        .wait_for_leader(Duration::from_secs(2))
        .await
        .unwrap();
    quorum.propose(vec![topic("after-restart")]).await.unwrap();
    assert_eq!(topics(&quorum.image()).len(), 2);
    quorum.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_one_leader_and_their_images_converge() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.stable_leader().await;
    let index = cluster.nodes[&leader]
        .propose(vec![topic("a"), topic("b")])
        .await
        .unwrap();
    // openraft publishes its metrics after the write returns: wait for them to catch up.
    let mut metrics = cluster.nodes[&leader].raft_metrics().expect("a voter");
    tokio::time::timeout(
        WAIT,
        metrics.wait_for(|m| m.last_applied.map(|l| l.index) >= Some(index)),
    )
    .await
    .unwrap()
    .unwrap();
    // Openraft publishes its metrics a moment after the apply that `propose` waited for.
    let mut metrics = cluster.nodes[&leader].raft_metrics().expect("a voter");
    tokio::time::timeout(
        WAIT,
        metrics.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index)),
    )
    .await
    .expect("the applied index shows in the metrics")
    .unwrap();
    let status = cluster.nodes[&leader].status();
    assert_eq!(status.leader, Some(leader));
    assert!(status.last_applied >= Some(index));
    let expected = topics(&cluster.nodes[&leader].image());
    assert_eq!(expected.len(), 2);
    for node in cluster.nodes.values() {
        let applied = node.wait_applied(index, WAIT).await.unwrap();
        assert_eq!(topics(&applied.image), expected, "node {}", node.node_id());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_get_distinct_indexes_and_every_image_has_all_of_them() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.nodes[&cluster.stable_leader().await].clone();
    let mut proposals = Vec::new();
    for i in 0..40 {
        let leader = leader.clone();
        proposals.push(tokio::spawn(async move {
            leader.propose(vec![topic(&format!("c{i}"))]).await
        }));
    }
    let mut indexes = Vec::new();
    for proposal in proposals {
        indexes.push(proposal.await.unwrap().unwrap());
    }
    let last = *indexes.iter().max().unwrap();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 40, "two proposals shared a log index");
    let expected = topics(&leader.image());
    assert_eq!(expected.len(), 40);
    for node in cluster.nodes.values() {
        let applied = node.wait_applied(last, WAIT).await.unwrap();
        assert_eq!(topics(&applied.image), expected, "node {}", node.node_id());
    }
    drop(leader);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_on_a_follower_is_not_leader_naming_the_leader() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.stable_leader().await;
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .unwrap();
    assert!(!cluster.nodes[&follower].is_leader());
    match cluster.nodes[&follower].propose(vec![topic("nope")]).await {
        Err(QuorumError::NotLeader { leader: named }) => assert_eq!(named, Some(leader)),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(cluster.nodes[&leader].image().topic("nope").is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_leader_elects_another_and_proposals_continue() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let old = cluster.stable_leader().await;
    let first = cluster.nodes[&old]
        .propose(vec![topic("before")])
        .await
        .unwrap();
    cluster.stop(old).await;

    let stopped = Instant::now();
    let new = cluster.stable_leader().await;
    assert_ne!(new, old);
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "failover took {:?}",
        stopped.elapsed()
    );
    let second = cluster.nodes[&new]
        .propose(vec![topic("after")])
        .await
        .unwrap();
    assert!(second > first);
    for node in cluster.nodes.values() {
        let applied = node.wait_applied(second, WAIT).await.unwrap();
        assert!(applied.image.topic("before").is_some());
        assert!(applied.image.topic("after").is_some());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rebuilds_its_image_from_its_dir() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.stable_leader().await;
    let index = cluster.nodes[&leader]
        .propose(vec![topic("durable")])
        .await
        .unwrap();
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .unwrap();
    cluster.nodes[&follower]
        .wait_applied(index, WAIT)
        .await
        .unwrap();
    cluster.stop(follower).await;
    cluster.restart(follower).await;
    let applied = cluster.nodes[&follower]
        .wait_applied(index, WAIT)
        .await
        .unwrap();
    assert!(applied.image.topic("durable").is_some());

    // And the whole cluster, stopped and started again, keeps everything.
    for id in [1, 2, 3] {
        cluster.stop(id).await;
    }
    for id in [1, 2, 3] {
        cluster.restart(id).await;
    }
    let leader = cluster.stable_leader().await;
    let next = cluster.nodes[&leader]
        .propose(vec![topic("later")])
        .await
        .unwrap();
    for node in cluster.nodes.values() {
        let applied = node.wait_applied(next, WAIT).await.unwrap();
        assert!(applied.image.topic("durable").is_some());
        assert!(applied.image.topic("later").is_some());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_past_the_snapshot_threshold_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, |c| {
        c.snapshot_every = 20;
        c.logs_kept_after_snapshot = 0;
        // Small chunks, so the transfer takes many InstallSnapshot RPCs.
        c.snapshot_chunk_bytes = 512;
    })
    .await;
    let leader = cluster.stable_leader().await;
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .unwrap();
    cluster.stop(follower).await;

    let mut last = 0;
    for i in 0..60 {
        last = cluster.nodes[&leader]
            .propose(vec![topic(&format!("t{i}"))])
            .await
            .unwrap();
    }
    // The leader has snapshotted and purged past where the follower stopped.
    let mut metrics = cluster.nodes[&leader].raft_metrics().expect("a voter");
    tokio::time::timeout(
        WAIT,
        metrics.wait_for(|m| m.purged.is_some_and(|p| p.index >= 20)),
    )
    .await
    .expect("the leader never purged its log")
    .unwrap();

    cluster.restart(follower).await;
    let applied = cluster.nodes[&follower]
        .wait_applied(last, WAIT)
        .await
        .unwrap();
    assert_eq!(
        topics(&applied.image),
        topics(&cluster.nodes[&leader].image())
    );
    assert_eq!(topics(&applied.image).len(), 60);
    let leader_status = cluster.nodes[&leader].status();
    assert_eq!(leader_status.leader, Some(leader));
    assert_eq!(leader_status.replication.len(), 3);
    // Its log restarts after the leader's purge point, which only a snapshot can bridge.
    let mut metrics = cluster.nodes[&follower].raft_metrics().expect("a voter");
    tokio::time::timeout(WAIT, metrics.wait_for(|m| m.snapshot.is_some()))
        .await
        .expect("the follower did not install a snapshot")
        .unwrap();
    assert!(cluster.nodes[&follower].status().snapshot.is_some());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_close_the_connection_and_the_node_keeps_working() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.stable_leader().await;
    let target = cluster.voters[&leader];

    // A length far over the cap: closed without being read.
    let mut conn = TcpStream::connect(target).await.unwrap();
    conn.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_closed(&mut conn).await;

    // A frame of the right shape whose body is not a request.
    let mut conn = TcpStream::connect(target).await.unwrap();
    conn.write_all(&[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'])
        .await
        .unwrap();
    assert_closed(&mut conn).await;

    // JSON, but a Raft RPC from a node that is not a voter: refused, then closed.
    let mut conn = TcpStream::connect(target).await.unwrap();
    let body = br#"{"from":99,"body":{"Vote":{"vote":{"leader_id":{"term":99,"node_id":99},"committed":false},"last_log_id":null}}}"#;
    conn.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    conn.write_all(body).await.unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await.unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    conn.read_exact(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("Refused"));
    assert_closed(&mut conn).await;

    // From a voter's id, entries no correct leader sends (a gap in the indexes), at a term
    // high enough to depose the leader if openraft ever saw it: refused, then closed.
    let other = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .unwrap();
    let body = format!(
        r#"{{"from":{other},"body":{{"AppendEntries":{{"vote":{{"leader_id":{{"term":99,"node_id":{other}}},"committed":true}},"prev_log_id":null,"leader_commit":null,"entries":[{{"log_id":{{"leader_id":{{"term":99,"node_id":{other}}},"index":5}},"payload":"Blank"}}]}}}}}}"#
    );
    let answer = exchange_raw(target, body.as_bytes()).await;
    assert!(
        answer.contains("Refused") && answer.contains("index"),
        "{answer}"
    );
    // A vote asked by one voter on behalf of another.
    let body = format!(
        r#"{{"from":{other},"body":{{"Vote":{{"vote":{{"leader_id":{{"term":99,"node_id":{leader}}},"committed":false}},"last_log_id":null}}}}}}"#
    );
    let answer = exchange_raw(target, body.as_bytes()).await;
    assert!(answer.contains("Refused"), "{answer}");

    // A torn frame, then the peer goes away.
    let mut conn = TcpStream::connect(target).await.unwrap();
    conn.write_all(&[0, 0, 1, 0, b'{']).await.unwrap();
    drop(conn);

    // The leader still leads (the refused vote at term 99 changed nothing) and replicates.
    assert!(cluster.nodes[&leader].is_leader());
    let index = cluster.nodes[&leader]
        .propose(vec![topic("still-fine")])
        .await
        .unwrap();
    for node in cluster.nodes.values() {
        node.wait_applied(index, WAIT).await.unwrap();
    }
    cluster.shutdown().await;
}

/// Sends one frame on a new connection; returns the answer and checks the server then closes.
async fn exchange_raw(target: SocketAddr, body: &[u8]) -> String {
    let mut conn = TcpStream::connect(target).await.unwrap();
    conn.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    conn.write_all(body).await.unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await.unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    conn.read_exact(&mut answer).await.unwrap();
    assert_closed(&mut conn).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn assert_closed(conn: &mut TcpStream) {
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, conn.read(&mut buf))
        .await
        .unwrap();
    // A clean close reads 0; a reset (we sent bytes it never read) is an error; both close.
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "connection still open: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_rpcs_round_trip_between_members() {
    let cluster = Cluster::start(3, |_| {}).await;
    let answer = cluster.nodes[&1]
        .call(2, b"register".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"1:register".to_vec());
    // The connection is reused for the next call.
    let answer = cluster.nodes[&1]
        .call(2, b"heartbeat".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"1:heartbeat".to_vec());
    let answer = cluster.nodes[&3].call(1, Vec::new()).await.unwrap();
    assert_eq!(answer, b"3:".to_vec());
    assert!(matches!(
        cluster.nodes[&1].call(42, Vec::new()).await,
        Err(QuorumError::UnknownNode(42))
    ));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_metadata_log_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("__cluster_metadata-0/metadata.log");
    let id = Uuid::new_v4();
    {
        let (mut log, _) = MetadataLog::open(&legacy).unwrap();
        log.append(&[
            MetadataRecord::Cluster {
                cluster_id: "legacy-cluster".into(),
            },
            MetadataRecord::Topic {
                name: "old".into(),
                topic_id: id,
                partitions: 3,
                configs: BTreeMap::new(),
            },
            MetadataRecord::ProducerIds {
                next_block_start: 2000,
            },
        ])
        .unwrap();
    }
    let mut config = QuorumConfig::single(1, dir.path().join("quorum"));
    config.legacy_log = Some(legacy.clone());
    let quorum = MetadataQuorum::start(config.clone(), None, Arc::new(NoApplication))
        .await
        .unwrap();
    let image = quorum.image();
    assert_eq!(image.cluster_id(), Some("legacy-cluster"));
    assert_eq!(image.topic("old").map(|t| t.partitions), Some(3));
    assert_eq!(image.next_producer_id_block(), 2000);
    assert!(!legacy.exists());
    assert!(legacy.with_file_name("metadata.log.imported").exists());
    quorum.propose(vec![topic("new")]).await.unwrap();
    quorum.shutdown().await;
    drop(quorum);

    // A legacy file that reappears (or was left by a crash before the rename) is not
    // imported over existing metadata.
    std::fs::copy(legacy.with_file_name("metadata.log.imported"), &legacy).unwrap();
    let quorum = MetadataQuorum::start(config, None, Arc::new(NoApplication))
        .await
        .unwrap();
    assert_eq!(quorum.image().topics().count(), 2);
    assert!(!legacy.exists());
    quorum.shutdown().await;

    // Several voters cannot import: the start is refused before anything runs.
    std::fs::copy(legacy.with_file_name("metadata.log.imported"), &legacy).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut voters = BTreeMap::new();
    voters.insert(1, listener.local_addr().unwrap());
    voters.insert(2, "127.0.0.1:1".parse().unwrap());
    let mut config = QuorumConfig::new(1, voters, dir.path().join("other"));
    config.legacy_log = Some(legacy.clone());
    match MetadataQuorum::start(config, Some(listener), Arc::new(NoApplication)).await {
        Err(QuorumError::Config(message)) => assert!(message.contains("single-voter"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert!(legacy.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_majority_steps_down() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.stable_leader().await;
    let index = cluster.nodes[&leader]
        .propose(vec![topic("before")])
        .await
        .unwrap();
    let followers: Vec<NodeId> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    for id in &followers {
        cluster.stop(*id).await;
    }
    // Within the lease (election timeout max) plus a few heartbeats it stops claiming to lead.
    let mut changes = cluster.nodes[&leader].leader_changes();
    tokio::time::timeout(WAIT, changes.wait_for(|s| s.leader.is_none()))
        .await
        .expect("the cut-off leader kept leading")
        .unwrap();
    assert!(!cluster.nodes[&leader].is_leader());
    let started = Instant::now();
    match cluster.nodes[&leader].propose(vec![topic("lost")]).await {
        Err(QuorumError::NotLeader { leader: None }) => {}
        other => panic!("expected NotLeader without a leader, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "propose hung");

    // The majority returns: a leader again, and nothing was lost.
    for id in followers {
        cluster.restart(id).await;
    }
    let leader = cluster.stable_leader().await;
    let next = cluster.nodes[&leader]
        .propose(vec![topic("after")])
        .await
        .unwrap();
    assert!(next > index);
    for node in cluster.nodes.values() {
        let applied = node.wait_applied(next, WAIT).await.unwrap();
        assert!(applied.image.topic("before").is_some());
        assert!(applied.image.topic("lost").is_none());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_voter_set_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("quorum");
    let quorum = MetadataQuorum::start(
        QuorumConfig::single(1, qdir.clone()),
        None,
        Arc::new(NoApplication),
    )
    .await
    .unwrap();
    quorum.wait_for_leader(WAIT).await.unwrap();
    quorum.shutdown().await;
    drop(quorum);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut voters = BTreeMap::new();
    voters.insert(1, listener.local_addr().unwrap());
    voters.insert(2, "127.0.0.1:1".parse().unwrap());
    voters.insert(3, "127.0.0.1:2".parse().unwrap());
    let config = QuorumConfig::new(1, voters, qdir);
    match MetadataQuorum::start(config, Some(listener), Arc::new(NoApplication)).await {
        Err(QuorumError::Config(message)) => {
            assert!(message.contains("controller.quorum.voters"), "{message}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_configuration_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut voters = BTreeMap::new();
    voters.insert(2, "127.0.0.1:1".parse().unwrap());
    let config = QuorumConfig::new(1, voters, dir.path().join("q"));
    match MetadataQuorum::start(config, None, Arc::new(NoApplication)).await {
        Err(QuorumError::Config(message)) => {
            assert!(message.contains("controller.quorum.voters"), "{message}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// Env var that turns [`quorum_child_process`] into a proposer over the given dir.
const CHILD_DIR_ENV: &str = "MILLRACE_QUORUM_CHILD_DIR";

/// Not a test on its own: run by [`acknowledged_proposals_survive_kill_9`] as a separate
/// process (this test binary, filtered to this function), it proposes topics `k0`, `k1`, ...
/// on a single voter and prints `ack N` once proposal N returned. Without the env var it
/// returns at once.
#[test]
fn quorum_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let quorum = MetadataQuorum::start(
            QuorumConfig::single(1, PathBuf::from(dir)),
            None,
            Arc::new(NoApplication),
        )
        .await
        .unwrap();
        quorum.wait_for_leader(WAIT).await.unwrap();
        // Bounded, in case the parent dies without killing us.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0u64;
        while Instant::now() < deadline {
            quorum.propose(vec![topic(&format!("k{i}"))]).await.unwrap();
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "ack {i}").unwrap();
            out.flush().unwrap();
            i += 1;
        }
    });
}

#[test]
fn acknowledged_proposals_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("quorum");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "quorum_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, &qdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<u64>().unwrap());
            if acked.len() >= 30 {
                break;
            }
        }
    }
    // SIGKILL: no shutdown, no flush, in the middle of the next proposal.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 30, "the child stopped early");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let quorum =
            MetadataQuorum::start(QuorumConfig::single(1, qdir), None, Arc::new(NoApplication))
                .await
                .unwrap();
        quorum.wait_for_leader(WAIT).await.unwrap();
        // A proposal in this term commits everything before it, so the image is complete.
        quorum.propose(vec![topic("after-crash")]).await.unwrap();
        let image = quorum.image();
        for n in &acked {
            assert!(
                image.topic(&format!("k{n}")).is_some(),
                "acknowledged proposal k{n} was lost"
            );
        }
        quorum.shutdown().await;
    });
}
