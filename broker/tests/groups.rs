//! The group coordinator over real TCP: the join/sync handshake, fencing, commits and their
//! durability across restarts, and the group moving to a new coordinator when the old one
//! dies.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use millrace_testkit::wire::TestClient;
use millrace_testkit::{create_topic, start_broker_in, TestCluster, FAST_GROUPS};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join_request(group: &str, member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"meta"))])
}

/// Joins through the KIP-394 handshake; returns the member id.
async fn new_member_id(client: &mut TestClient, group: &str) -> String {
    let first = client.call(7, &join_request(group, "")).await;
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    assert!(!first.member_id.is_empty());
    first.member_id.to_string()
}

async fn broker(dir: &std::path::Path) -> millrace_broker::RunningBroker {
    start_broker_in(dir, &[FAST_GROUPS, "offsets.topic.num.partitions=3"]).await
}

#[tokio::test]
async fn two_members_join_one_generation_and_get_the_leaders_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut a = TestClient::connect(broker.local_addr()).await;
    let mut b = TestClient::connect(broker.local_addr()).await;

    let a_id = new_member_id(&mut a, "g").await;
    let joined = a.call(7, &join_request("g", &a_id)).await;
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader.as_str(), a_id);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(1)
        .with_member_id(s(&a_id))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&a_id))
            .with_assignment(Bytes::from_static(b"all"))]);
    assert_eq!(
        a.call(5, &sync).await.assignment,
        Bytes::from_static(b"all")
    );

    // A second member triggers a rebalance: the first learns it from its heartbeat.
    let b_id = new_member_id(&mut b, "g").await;
    let b_join = tokio::spawn(async move {
        let response = b.call(7, &join_request("g", &b_id)).await;
        (b, b_id, response)
    });
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(1)
        .with_member_id(s(&a_id));
    let mut code = 0;
    for _ in 0..200 {
        code = a.call(4, &heartbeat).await.error_code;
        if code == 27 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(code, 27, "REBALANCE_IN_PROGRESS");
    let a_join = a.call(7, &join_request("g", &a_id)).await;
    let (mut b, b_id, b_response) = b_join.await.unwrap();
    assert_eq!(a_join.generation_id, 2);
    assert_eq!(b_response.generation_id, 2);
    assert_eq!(
        a_join.leader.as_str(),
        a_id,
        "the longest-standing member stays leader"
    );
    assert_eq!(a_join.members.len(), 2);
    assert!(
        b_response.members.is_empty(),
        "followers get no member list"
    );

    // The follower's sync waits for the leader's.
    let b_sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(2)
        .with_member_id(s(&b_id));
    let follower = tokio::spawn(async move { b.call(5, &b_sync).await });
    let leader_sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(2)
        .with_member_id(s(&a_id))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&a_id))
                .with_assignment(Bytes::from_static(b"first-half")),
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&b_id))
                .with_assignment(Bytes::from_static(b"second-half")),
        ]);
    assert_eq!(
        a.call(5, &leader_sync).await.assignment,
        Bytes::from_static(b"first-half")
    );
    assert_eq!(
        follower.await.unwrap().assignment,
        Bytes::from_static(b"second-half")
    );

    // A stale generation is refused.
    assert_eq!(
        a.call(4, &heartbeat).await.error_code,
        22,
        "ILLEGAL_GENERATION"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn unknown_members_and_bad_requests_get_the_right_codes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut c = TestClient::connect(broker.local_addr()).await;
    assert_eq!(
        c.call(7, &join_request("g", "made-up")).await.error_code,
        25,
        "UNKNOWN_MEMBER_ID"
    );
    assert_eq!(
        c.call(7, &join_request("", "")).await.error_code,
        24,
        "INVALID_GROUP_ID"
    );
    let short = join_request("g", "").with_session_timeout_ms(10);
    assert_eq!(
        c.call(7, &short).await.error_code,
        26,
        "INVALID_SESSION_TIMEOUT"
    );
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(s("nobody")))
        .with_generation_id(1)
        .with_member_id(s("x"));
    assert_eq!(c.call(4, &heartbeat).await.error_code, 25);
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_members(vec![MemberIdentity::default().with_member_id(s("ghost"))]);
    let response = c.call(5, &leave).await;
    assert_eq!(response.members[0].error_code, 25);
    broker.shutdown().await;
}

fn commit(group: &str, topic: &str, offsets: &[(i32, i64)]) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                            .with_committed_metadata(Some(s("m")))
                    })
                    .collect(),
            )])
}

async fn fetch_committed(
    c: &mut TestClient,
    group: &str,
    topic: &str,
    partitions: Vec<i32>,
) -> Vec<i64> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(partitions)]));
    let response = c.call(7, &request).await;
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

#[tokio::test]
async fn simple_commits_survive_a_restart_and_unknown_topics_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker1 = broker(dir.path()).await;
    let mut c = TestClient::connect(broker1.local_addr()).await;
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(s("events")))),
        ]))
        .with_allow_auto_topic_creation(true);
    c.call(12, &metadata).await;

    let response = c.call(8, &commit("reader", "events", &[(0, 42)])).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    let response = c
        .call(8, &commit("reader", "no-such-topic", &[(0, 1)]))
        .await;
    assert_eq!(
        response.topics[0].partitions[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        fetch_committed(&mut c, "reader", "events", vec![0, 1]).await,
        vec![42, -1]
    );
    broker1.shutdown().await;

    let broker2 = broker(dir.path()).await;
    let mut c = TestClient::connect(broker2.local_addr()).await;
    assert_eq!(
        fetch_committed(&mut c, "reader", "events", vec![0]).await,
        vec![42]
    );

    let listed = c.call(4, &ListGroupsRequest::default()).await;
    assert!(listed
        .groups
        .iter()
        .any(|g| g.group_id.as_str() == "reader"));
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("reader"))]);
    assert_eq!(c.call(2, &delete).await.results[0].error_code, 0);
    assert_eq!(
        fetch_committed(&mut c, "reader", "events", vec![0]).await,
        vec![-1]
    );
    assert_eq!(
        c.call(2, &delete).await.results[0].error_code,
        69,
        "GROUP_ID_NOT_FOUND"
    );
    broker2.shutdown().await;
}

#[tokio::test]
async fn find_coordinator_answers_single_and_batched_keys() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut c = TestClient::connect(broker.local_addr()).await;
    let single = c
        .call(3, &FindCoordinatorRequest::default().with_key(s("g")))
        .await;
    assert_eq!(single.error_code, 0);
    assert_eq!(single.port, i32::from(broker.local_addr().port()));
    let batched = c
        .call(
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")]),
        )
        .await;
    assert_eq!(batched.coordinators.len(), 2);
    assert!(batched
        .coordinators
        .iter()
        .all(|k| k.error_code == 0 && k.node_id.0 == 1));
    broker.shutdown().await;
}

#[tokio::test]
async fn init_producer_id_hands_out_distinct_ids_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker1 = broker(dir.path()).await;
    let mut c = TestClient::connect(broker1.local_addr()).await;
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let first = c.call(4, &request).await;
    assert_eq!((first.error_code, first.producer_epoch), (0, 0));
    let second = c.call(4, &request).await;
    assert_ne!(first.producer_id, second.producer_id);
    let transactional = request
        .clone()
        .with_transactional_id(Some(TransactionalId(s("tx"))));
    // A transactional id gets a producer id of its own from the transaction coordinator.
    let txn = c.call(4, &transactional).await;
    assert_eq!((txn.error_code, txn.producer_epoch), (0, 0));
    assert!(txn.producer_id != first.producer_id && txn.producer_id != second.producer_id);
    broker1.shutdown().await;

    let broker2 = broker(dir.path()).await;
    let mut c = TestClient::connect(broker2.local_addr()).await;
    let third = c.call(4, &request).await;
    assert!(
        third.producer_id.0 > second.producer_id.0,
        "ids are never reused"
    );
    broker2.shutdown().await;
}

/// Joins `group` alone on `client` and syncs `assignment`; returns (member id, generation).
async fn form_group(
    client: &mut TestClient,
    group: &str,
    assignment: &'static [u8],
) -> (String, i32) {
    let id = new_member_id(client, group).await;
    let joined = client.call(7, &join_request(group, &id)).await;
    assert_eq!(joined.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(s(&id))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&id))
            .with_assignment(Bytes::from_static(assignment))]);
    let synced = client.call(5, &sync).await;
    assert_eq!(synced.error_code, 0);
    (id, joined.generation_id)
}

/// The log end offsets of `__consumer_offsets` (3 partitions here), summed.
async fn offsets_log_end_total(client: &mut TestClient) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s("__consumer_offsets")))
            .with_partitions(
                (0..3)
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )]);
    let response = client.call(2, &request).await;
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.offset.max(0))
        .sum()
}

fn heartbeat(group: &str, member_id: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
}

#[tokio::test]
async fn group_membership_survives_a_restart_and_an_emptied_group_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let first = broker(dir.path()).await;
    let mut c = TestClient::connect(first.local_addr()).await;
    let (member, generation) = form_group(&mut c, "kept", b"kept-assignment").await;
    let (gone, gone_generation) = form_group(&mut c, "emptied", b"x").await;
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("emptied")))
        .with_members(vec![MemberIdentity::default().with_member_id(s(&gone))]);
    assert_eq!(c.call(3, &leave).await.error_code, 0);
    let describe = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("emptied"))]);
    assert_eq!(
        c.call(5, &describe).await.groups[0].group_state.as_str(),
        "Empty"
    );
    // The group timer writes the empty group's record soon after: one more record in
    // __consumer_offsets than the two syncs and nothing else wrote.
    let addr = first.local_addr();
    millrace_testkit::eventually("the empty group's record", || async move {
        let mut c = TestClient::connect(addr).await;
        offsets_log_end_total(&mut c).await == 3
    })
    .await;
    first.shutdown().await;

    let second = broker(dir.path()).await;
    let mut c = TestClient::connect(second.local_addr()).await;
    assert_eq!(
        c.call(4, &heartbeat("kept", &member, generation))
            .await
            .error_code,
        0,
        "the member carries on in its generation after the restart"
    );
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("kept")))
        .with_generation_id(generation)
        .with_member_id(s(&member));
    assert_eq!(
        c.call(5, &sync).await.assignment,
        Bytes::from_static(b"kept-assignment"),
        "and keeps its assignment"
    );
    assert_eq!(
        c.call(4, &heartbeat("emptied", &gone, gone_generation))
            .await
            .error_code,
        25,
        "UNKNOWN_MEMBER_ID: the member that left stays gone"
    );
    second.shutdown().await;
}

/// FindCoordinator for `group` asked of `client`: the coordinator's node id, once there is one.
async fn coordinator_of(client: &mut TestClient, group: &str) -> Option<i32> {
    let response = client
        .call(3, &FindCoordinatorRequest::default().with_key(s(group)))
        .await;
    (response.error_code == 0).then_some(response.node_id.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_coordinator_restores_the_group_and_its_members_carry_on() {
    let mut cluster = TestCluster::start(
        3,
        &[
            FAST_GROUPS,
            "offsets.topic.num.partitions=3",
            "offsets.topic.replication.factor=3",
        ],
    )
    .await;
    create_topic(&cluster.client_config("setup"), "events", 1).await;
    let mut any = TestClient::connect(cluster.member(1).addr).await;
    let old = coordinator_of(&mut any, "moving")
        .await
        .expect("a coordinator");
    let old_addr = cluster.member(old).addr;
    // It answers COORDINATOR_LOAD_IN_PROGRESS until it has read the group's partition (and
    // COORDINATOR_NOT_AVAILABLE or NOT_COORDINATOR while the partition's leadership settles).
    millrace_testkit::eventually(
        "the coordinator to load the group's partition",
        || async move {
            let mut client = TestClient::connect(old_addr).await;
            let code = client
                .call(4, &heartbeat("moving", "nobody", 1))
                .await
                .error_code;
            ![14, 15, 16].contains(&code)
        },
    )
    .await;
    let mut c = TestClient::connect(old_addr).await;
    let (member, generation) = form_group(&mut c, "moving", b"all-of-events").await;
    let commit = commit("moving", "events", &[(0, 42)])
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(&member));
    assert_eq!(
        c.call(8, &commit).await.topics[0].partitions[0].error_code,
        0
    );

    cluster.halt(old).await;
    let survivor = cluster
        .members
        .iter()
        .find(|m| m.node_id != old)
        .map(|m| m.addr)
        .unwrap();
    let found = std::sync::Arc::new(std::sync::Mutex::new(None));
    millrace_testkit::eventually("a new coordinator", || {
        let found = found.clone();
        async move {
            let mut client = TestClient::connect(survivor).await;
            let new = coordinator_of(&mut client, "moving")
                .await
                .filter(|id| *id != old);
            *found.lock().unwrap() = new;
            new.is_some()
        }
    })
    .await;
    let new = found.lock().unwrap().unwrap();
    let addr = cluster.member(new).addr;
    // The new coordinator may take a moment to load the partition (NOT_COORDINATOR meanwhile):
    // then the member's heartbeat in its old generation is simply accepted.
    millrace_testkit::eventually("the member's heartbeat at the new coordinator", || {
        let member = member.clone();
        async move {
            let mut client = TestClient::connect(addr).await;
            let code = client
                .call(4, &heartbeat("moving", &member, generation))
                .await
                .error_code;
            assert!(
                [0, 14, 15, 16].contains(&code),
                "error {code}: the member should carry on, not rejoin"
            );
            code == 0
        }
    })
    .await;
    let mut c = TestClient::connect(addr).await;
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("moving")))
        .with_generation_id(generation)
        .with_member_id(s(&member));
    assert_eq!(
        c.call(5, &sync).await.assignment,
        Bytes::from_static(b"all-of-events")
    );
    assert_eq!(
        fetch_committed(&mut c, "moving", "events", vec![0]).await,
        vec![42]
    );
    cluster.shutdown().await;
}
