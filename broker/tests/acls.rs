//! ACLs over real sockets: a broker with the authorizer on (`authorizer.class.name`),
//! `super.users=User:admin`, and SASL PLAIN users alice and bob on a SASL_PLAINTEXT listener.
//! Each refusal asserts Kafka's exact error code and that nothing was written or read:
//! produce without WRITE, fetch without READ, a Metadata request that must not reveal a topic,
//! a group join without READ on the group, DeleteTopics without DELETE, ACL changes by a
//! non-super user; and that granting the ACL then lets the same request through.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use millrace_broker::config::parse_overrides;
use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::admin::{
    AclBinding, AclBindingFilter, AclOperation, AclPatternType, AclPermissionType, AclResourceType,
    NewTopic,
};
use millrace_client::{Admin, ClientConfig, OffsetSpec, TopicPartition};
use millrace_testkit::wire::TestClient;

const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" user_alice="alice-secret" user_bob="bob-secret";"#;

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const SECURITY_DISABLED: i16 = 54;

async fn broker(dir: &Path, authorizer: bool) -> RunningBroker {
    let mut overrides: Vec<String> = vec![
        "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into(),
        "sasl.enabled.mechanisms=PLAIN".into(),
        format!("sasl.jaas.config={JAAS}"),
        "group.initial.rebalance.delay.ms=0".into(),
    ];
    if authorizer {
        overrides.extend([
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
            "super.users=User:admin".into(),
        ]);
    }
    let settings = parse_overrides(&overrides).unwrap();
    let config = BrokerConfig::from_settings(&settings, None, Some(dir.join("data"))).unwrap();
    millrace_broker::start(config).await.unwrap()
}

fn client_as(broker: &RunningBroker, user: &str) -> ClientConfig {
    let mut builder =
        ClientConfig::builder([broker.listener_addr("SASL_PLAINTEXT").unwrap().to_string()])
            .request_timeout(Duration::from_secs(10));
    for (name, value) in [
        ("security.protocol", "SASL_PLAINTEXT".to_string()),
        ("sasl.mechanism", "PLAIN".to_string()),
        ("sasl.username", user.to_string()),
        ("sasl.password", format!("{user}-secret")),
    ] {
        builder = builder.set(name, &value).unwrap();
    }
    builder.build().unwrap()
}

async fn admin(broker: &RunningBroker) -> Admin {
    Admin::connect(client_as(broker, "admin")).await.unwrap()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A raw connection logged in as `user` with SASL PLAIN.
async fn raw_as(broker: &RunningBroker, user: &str) -> TestClient {
    let mut client = TestClient::connect(broker.listener_addr("SASL_PLAINTEXT").unwrap()).await;
    let handshake = client
        .call(
            1,
            &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
        )
        .await;
    assert_eq!(handshake.error_code, 0);
    let token = format!("\0{user}\0{user}-secret");
    let auth = client
        .call(
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
        )
        .await;
    assert_eq!(auth.error_code, 0, "{user} logs in");
    client
}

fn allow(kind: AclResourceType, name: &str, principal: &str, op: AclOperation) -> AclBinding {
    AclBinding {
        resource_type: kind,
        resource_name: name.into(),
        pattern_type: AclPatternType::Literal,
        principal: principal.into(),
        host: "*".into(),
        operation: op,
        permission: AclPermissionType::Allow,
    }
}

fn produce_request(topic: &str) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(millrace_testkit::records::batch(
                    &[millrace_testkit::records::record("k", "v", 1)],
                    kafka_protocol::records::Compression::None,
                )))])])
}

fn produce_error(response: &ProduceResponse) -> i16 {
    response.responses[0].partition_responses[0].error_code
}

fn fetch_request(topic: &str) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])])
}

async fn log_end(admin: &Admin, topic: &str) -> i64 {
    let tp = TopicPartition::new(topic, 0);
    admin
        .list_offsets(&[(tp.clone(), OffsetSpec::Latest)])
        .await
        .unwrap()[&tp]
        .offset
}

#[tokio::test]
async fn produce_and_fetch_need_write_and_read_on_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), true).await;
    let admin = admin(&broker).await;
    admin
        .create_topic(NewTopic::new("orders", 1))
        .await
        .unwrap();
    let mut alice = raw_as(&broker, "alice").await;

    let refused = alice.call(7, &produce_request("orders")).await;
    assert_eq!(produce_error(&refused), TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(log_end(&admin, "orders").await, 0, "nothing was written");

    admin
        .create_acls(&[allow(
            AclResourceType::Topic,
            "orders",
            "User:alice",
            AclOperation::Write,
        )])
        .await
        .unwrap();
    let written = alice.call(7, &produce_request("orders")).await;
    assert_eq!(produce_error(&written), 0);
    assert_eq!(log_end(&admin, "orders").await, 1);

    // WRITE does not give READ: the fetch is refused and returns no records.
    let refused = alice.call(11, &fetch_request("orders")).await;
    let partition = &refused.responses[0].partitions[0];
    assert_eq!(partition.error_code, TOPIC_AUTHORIZATION_FAILED);
    assert!(partition.records.as_ref().is_none_or(|r| r.is_empty()));

    admin
        .create_acls(&[allow(
            AclResourceType::Topic,
            "orders",
            "User:alice",
            AclOperation::Read,
        )])
        .await
        .unwrap();
    let read = alice.call(11, &fetch_request("orders")).await;
    let partition = &read.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert!(partition.records.as_ref().is_some_and(|r| !r.is_empty()));

    // Bob has nothing: a deny for alice does not matter to him, and a deny for alice wins
    // over her allow.
    let mut bob = raw_as(&broker, "bob").await;
    assert_eq!(
        produce_error(&bob.call(7, &produce_request("orders")).await),
        TOPIC_AUTHORIZATION_FAILED
    );
    let deny = AclBinding {
        permission: AclPermissionType::Deny,
        ..allow(
            AclResourceType::Topic,
            "ord",
            "User:alice",
            AclOperation::All,
        )
    };
    admin
        .create_acls(&[AclBinding {
            pattern_type: AclPatternType::Prefixed,
            ..deny
        }])
        .await
        .unwrap();
    assert_eq!(
        produce_error(&alice.call(7, &produce_request("orders")).await),
        TOPIC_AUTHORIZATION_FAILED
    );
    assert_eq!(
        log_end(&admin, "orders").await,
        1,
        "nothing more was written"
    );
}

#[tokio::test]
async fn metadata_hides_topics_the_principal_may_not_describe() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), true).await;
    let admin = admin(&broker).await;
    admin
        .create_topic(NewTopic::new("public", 1))
        .await
        .unwrap();
    admin
        .create_topic(NewTopic::new("secret", 1))
        .await
        .unwrap();
    admin
        .create_acls(&[allow(
            AclResourceType::Topic,
            "public",
            "User:*",
            AclOperation::Read,
        )])
        .await
        .unwrap();
    let mut alice = raw_as(&broker, "alice").await;

    let all = alice
        .call(12, &MetadataRequest::default().with_topics(None))
        .await;
    let names: Vec<String> = all
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert_eq!(
        names,
        ["public"],
        "READ implies DESCRIBE; secret is left out"
    );

    // Named: refused the same way whether it exists or not, so its existence is not revealed.
    for name in ["secret", "no-such-topic"] {
        let named = alice
            .call(
                12,
                &MetadataRequest::default()
                    .with_allow_auto_topic_creation(true)
                    .with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(TopicName(s(name))))
                    ])),
            )
            .await;
        assert_eq!(
            named.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED,
            "{name}"
        );
        assert!(named.topics[0].partitions.is_empty());
    }
    // And the refused auto-creation created nothing.
    let listed = admin.list_topics(false).await.unwrap();
    assert!(listed.iter().all(|t| t.name != "no-such-topic"));

    // KIP-430: the operations alice may do on `public`.
    let with_ops = alice
        .call(
            12,
            &MetadataRequest::default()
                .with_include_topic_authorized_operations(true)
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(TopicName(s("public"))))
                ])),
        )
        .await;
    assert_eq!(
        with_ops.topics[0].topic_authorized_operations,
        (1 << 3) | (1 << 8)
    );
}

#[tokio::test]
async fn joining_a_group_needs_read_on_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), true).await;
    let admin = admin(&broker).await;
    let mut alice = raw_as(&broker, "alice").await;
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("billing")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(""))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]))]);
    let refused = alice.call(5, &join).await;
    assert_eq!(refused.error_code, GROUP_AUTHORIZATION_FAILED);
    assert!(
        admin.list_groups().await.unwrap().is_empty(),
        "no group was made"
    );

    admin
        .create_acls(&[allow(
            AclResourceType::Group,
            "billing",
            "User:alice",
            AclOperation::Read,
        )])
        .await
        .unwrap();
    // With READ, the join goes through (v5 asks for a member id first: KIP-394).
    let joined = alice.call(5, &join).await;
    assert_eq!(
        joined.error_code, 79,
        "MEMBER_ID_REQUIRED: admitted to the join protocol"
    );
}

/// DeleteTopics of `keep` (v6); its error code.
async fn delete_keep(client: &mut TestClient) -> i16 {
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(TopicName(s("keep"))))
        ]);
    client.call(6, &request).await.responses[0].error_code
}

#[tokio::test]
async fn delete_topics_needs_delete_and_acl_changes_need_a_super_user() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), true).await;
    let admin = admin(&broker).await;
    admin.create_topic(NewTopic::new("keep", 1)).await.unwrap();
    let mut alice = raw_as(&broker, "alice").await;

    assert_eq!(delete_keep(&mut alice).await, TOPIC_AUTHORIZATION_FAILED);
    assert!(admin
        .list_topics(false)
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "keep"));

    // Alice may not grant herself anything, list ACLs or remove them.
    let created = alice
        .call(
            3,
            &CreateAclsRequest::default().with_creations(vec![AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(s("keep"))
                .with_resource_pattern_type(3)
                .with_principal(s("User:alice"))
                .with_host(s("*"))
                .with_operation(2)
                .with_permission_type(3)]),
        )
        .await;
    assert_eq!(created.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED);
    let described = alice
        .call(
            3,
            &DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        )
        .await;
    assert_eq!(described.error_code, CLUSTER_AUTHORIZATION_FAILED);
    admin
        .create_acls(&[allow(
            AclResourceType::Topic,
            "keep",
            "User:bob",
            AclOperation::Read,
        )])
        .await
        .unwrap();
    let removed = alice
        .call(
            3,
            &DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1)]),
        )
        .await;
    assert_eq!(
        removed.filter_results[0].error_code,
        CLUSTER_AUTHORIZATION_FAILED
    );
    assert_eq!(
        admin
            .describe_acls(&AclBindingFilter::any())
            .await
            .unwrap()
            .len(),
        1
    );

    // With DELETE on the topic, alice deletes it.
    admin
        .create_acls(&[allow(
            AclResourceType::Topic,
            "keep",
            "User:alice",
            AclOperation::Delete,
        )])
        .await
        .unwrap();
    assert_eq!(delete_keep(&mut alice).await, 0);
}

#[tokio::test]
async fn acls_are_described_and_deleted_by_filter_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker1 = broker(dir.path(), true).await;
    let admin1 = admin(&broker1).await;
    let acls = vec![
        allow(
            AclResourceType::Topic,
            "orders",
            "User:alice",
            AclOperation::Read,
        ),
        allow(
            AclResourceType::Topic,
            "orders",
            "User:alice",
            AclOperation::Read,
        ), // duplicate
        allow(
            AclResourceType::Group,
            "billing",
            "User:alice",
            AclOperation::Read,
        ),
        AclBinding {
            pattern_type: AclPatternType::Prefixed,
            ..allow(
                AclResourceType::Topic,
                "ord",
                "User:bob",
                AclOperation::Write,
            )
        },
    ];
    admin1.create_acls(&acls).await.unwrap();
    let all = admin1
        .describe_acls(&AclBindingFilter::any())
        .await
        .unwrap();
    assert_eq!(all.len(), 3, "the duplicate is stored once: {all:?}");

    // MATCH: every ACL that applies to topic `orders` (literal and the `ord` prefix).
    let matching = admin1
        .describe_acls(&AclBindingFilter {
            resource_type: AclResourceType::Topic,
            resource_name: Some("orders".into()),
            pattern_type: AclPatternType::Match,
            ..AclBindingFilter::any()
        })
        .await
        .unwrap();
    assert_eq!(matching.len(), 2, "{matching:?}");

    // Invalid ACLs are refused with INVALID_REQUEST and a reason.
    let bad = admin1
        .create_acls(&[AclBinding {
            resource_name: "not-the-cluster".into(),
            ..allow(
                AclResourceType::Cluster,
                "",
                "User:alice",
                AclOperation::Alter,
            )
        }])
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("kafka-cluster"), "{bad}");

    let deleted = admin1
        .delete_acls(&[AclBindingFilter {
            principal: Some("User:bob".into()),
            ..AclBindingFilter::any()
        }])
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].principal, "User:bob");
    drop(admin1);
    broker1.shutdown().await;

    let broker2 = broker(dir.path(), true).await;
    let left = admin(&broker2)
        .await
        .describe_acls(&AclBindingFilter::any())
        .await
        .unwrap();
    assert_eq!(left.len(), 2, "ACLs live in the metadata log: {left:?}");
}

#[tokio::test]
async fn without_an_authorizer_everything_is_allowed_and_acl_apis_say_security_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), false).await;
    let admin = admin(&broker).await;
    admin.create_topic(NewTopic::new("open", 1)).await.unwrap();
    let mut alice = raw_as(&broker, "alice").await;
    assert_eq!(
        produce_error(&alice.call(7, &produce_request("open")).await),
        0
    );
    let err = admin
        .create_acls(&[allow(
            AclResourceType::Topic,
            "open",
            "User:alice",
            AclOperation::Read,
        )])
        .await
        .unwrap_err();
    assert_eq!(
        err.kafka_error().map(|e| e.code()),
        Some(SECURITY_DISABLED),
        "{err}"
    );
}

/// A broker with the authorizer on, topics `allowed` and `denied`, and a transactional
/// producer (id `tx`) of alice, who may write to `allowed` and only describe `denied`.
async fn transactional_alice(dir: &Path) -> (RunningBroker, Admin, millrace_client::Producer) {
    use millrace_client::{Producer, ProducerConfig};
    let broker = broker(dir, true).await;
    let admin = admin(&broker).await;
    for topic in ["allowed", "denied"] {
        admin.create_topic(NewTopic::new(topic, 1)).await.unwrap();
    }
    // Alice may write transactionally to `allowed`, and only see `denied`.
    admin
        .create_acls(&[
            allow(
                AclResourceType::TransactionalId,
                "tx",
                "User:alice",
                AclOperation::Write,
            ),
            allow(
                AclResourceType::Topic,
                "allowed",
                "User:alice",
                AclOperation::Write,
            ),
            allow(
                AclResourceType::Topic,
                "denied",
                "User:alice",
                AclOperation::Describe,
            ),
        ])
        .await
        .unwrap();
    let config = ProducerConfig::builder(client_as(&broker, "alice"))
        .transactional_id("tx")
        .build()
        .unwrap();
    let producer = Producer::connect(config).await.unwrap();
    (broker, admin, producer)
}

/// Begins a transaction and sends "a" to `allowed` and "d" to `denied`.
async fn send_to_allowed_and_denied(
    producer: &millrace_client::Producer,
) -> (
    millrace_client::DeliveryFuture,
    millrace_client::DeliveryFuture,
) {
    use millrace_client::ProducerRecord;
    producer.begin_transaction().unwrap();
    let send = |topic, value| producer.send(ProducerRecord::new(topic, value));
    let to_allowed = send("allowed", "a").await.unwrap();
    (to_allowed, send("denied", "d").await.unwrap())
}

/// Hands the open transaction over to commit in the background; the commit's outcome, or
/// the refusal to hand it over.
async fn commit_in_background(
    producer: &millrace_client::Producer,
) -> Result<(), millrace_client::ClientError> {
    producer.commit_and_begin_transaction().await?.await
}

/// The producer goes on: a transaction writing "b" to `allowed` commits.
async fn commit_b(producer: &millrace_client::Producer) {
    producer.begin_transaction().unwrap();
    let delivered = producer
        .send(millrace_client::ProducerRecord::new("allowed", "b"))
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    delivered.await.unwrap();
}

#[tokio::test]
async fn a_transactions_partition_without_write_fails_its_records_and_the_transaction_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, admin, producer) = transactional_alice(dir.path()).await;

    // The sends return at once: their partitions join the transaction in the background.
    let (to_allowed, to_denied) = send_to_allowed_and_denied(&producer).await;
    let refused = to_denied.await.unwrap_err();
    assert_eq!(
        refused.kafka_error(),
        Some(kafka_protocol::ResponseError::TopicAuthorizationFailed),
        "{refused}"
    );
    let commit = producer.commit_transaction().await;
    assert!(commit.is_err(), "a transaction with a failed send commits");
    producer.abort_transaction().await.unwrap();
    let _ = to_allowed.await;
    assert_eq!(log_end(&admin, "denied").await, 0, "nothing was written");

    commit_b(&producer).await;
    producer.close().await;
}

#[tokio::test]
async fn a_failed_send_of_a_transaction_committing_in_the_background_aborts_it_and_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, admin, producer) = transactional_alice(dir.path()).await;

    let (_to_allowed, to_denied) = send_to_allowed_and_denied(&producer).await;
    // Handed over before the refusal comes back (the batch is still lingering), so the
    // background commit meets it; if it came first, nothing is handed over.
    let outcome = commit_in_background(&producer).await;
    assert!(
        outcome.is_err(),
        "a transaction with a failed send committed"
    );
    assert!(to_denied.await.is_err());
    // Whichever transaction is open now can only abort.
    assert!(producer.commit_transaction().await.is_err());
    producer.abort_transaction().await.unwrap();

    commit_b(&producer).await;
    assert_eq!(log_end(&admin, "denied").await, 0, "nothing was written");
    assert_eq!(
        committed_values_of_allowed(&broker).await,
        [Bytes::from_static(b"b")],
        "the aborted \"a\" was read"
    );
    producer.close().await;
}

/// What a read_committed consumer reads from `allowed`: the first records it gets.
async fn committed_values_of_allowed(broker: &RunningBroker) -> Vec<Bytes> {
    use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
    use millrace_client::IsolationLevel;
    let config = ConsumerConfig::builder(client_as(broker, "admin"))
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(config).await.unwrap();
    let allowed = [TopicPartition::new("allowed", 0)];
    consumer.assign(&allowed).unwrap();
    consumer.seek_to_beginning(&allowed).unwrap();
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while values.is_empty() && std::time::Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            values.push(record.value.unwrap_or_default());
        }
    }
    values
}

#[tokio::test]
async fn a_failed_background_commit_aborts_the_transactions_handed_over_after_it() {
    use millrace_client::ProducerRecord;
    let dir = tempfile::tempdir().unwrap();
    let (broker, admin, producer) = transactional_alice(dir.path()).await;

    // Handed over while the refused batch still lingers (see the test above); should the
    // refusal come back first on a slow machine, nothing is handed over: start again.
    let mut attempts = 0;
    let (first, to_denied) = loop {
        let (_to_allowed, to_denied) = send_to_allowed_and_denied(&producer).await;
        match producer.commit_and_begin_transaction().await {
            Ok(first) => break (first, to_denied),
            Err(_) => {
                producer.abort_transaction().await.unwrap();
                attempts += 1;
                assert!(
                    attempts < 5,
                    "the refusal always came back before the hand-over"
                );
            }
        }
    };
    // The next transaction writes "x" and is handed over too, before or after the first
    // fails: either way it must not commit.
    let to_x = producer
        .send(ProducerRecord::new("allowed", "x"))
        .await
        .unwrap();
    let second = commit_in_background(&producer).await;
    assert!(
        first.await.is_err(),
        "a transaction with a failed send committed"
    );
    assert!(
        second.is_err(),
        "the transaction after a failed one committed"
    );
    assert!(to_denied.await.is_err());
    let _ = to_x.await;
    // The transaction open now can only abort; then the producer goes on.
    assert!(producer.commit_transaction().await.is_err());
    producer.abort_transaction().await.unwrap();
    commit_b(&producer).await;

    assert_eq!(log_end(&admin, "denied").await, 0, "nothing was written");
    assert_eq!(
        committed_values_of_allowed(&broker).await,
        [Bytes::from_static(b"b")],
        "a record of an aborted transaction was read"
    );
    producer.close().await;
}
