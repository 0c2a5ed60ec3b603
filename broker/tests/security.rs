//! Security over real sockets: TLS listeners (with and without client certificates), SASL
//! PLAIN and SCRAM-SHA-256/512 over TLS and plaintext, re-authentication (KIP-368), and the
//! refusals: wrong password, unknown user, unsupported mechanism, a plaintext client on a TLS
//! port, a request before authentication. Each refusal also checks that nothing was written.
//!
//! Certificates are generated per test with rcgen. Each broker serves a PLAINTEXT listener
//! beside the secured ones; the tests use it only to create users and to look at what was
//! written.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use millrace_broker::config::parse_overrides;
use millrace_broker::security::principal::principal_from_certificate;
use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::network::SaslMechanism;
use millrace_client::{
    Admin, ClientConfig, ClientError, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use millrace_testkit::wire::TestClient;

mod common;
use common::pki::{pki, Pki};

const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" user_alice="alice-secret";"#;

/// A broker with PLAINTEXT, SSL (client certificates required), SASL_SSL and SASL_PLAINTEXT
/// listeners on free ports.
async fn secured_broker(dir: &Path, pki: &Pki, extra: &[&str]) -> RunningBroker {
    let mut overrides: Vec<String> = vec![
        "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into(),
        "ssl.keystore.type=PEM".into(),
        format!("ssl.keystore.location={}", pki.server.display()),
        "ssl.truststore.type=PEM".into(),
        format!("ssl.truststore.location={}", pki.ca.display()),
        "listener.name.ssl.ssl.client.auth=required".into(),
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
        format!("sasl.jaas.config={JAAS}"),
        "group.initial.rebalance.delay.ms=0".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let settings = parse_overrides(&overrides).unwrap();
    let config = BrokerConfig::from_settings(&settings, None, Some(dir.join("data"))).unwrap();
    millrace_broker::start(config).await.unwrap()
}

fn plaintext(broker: &RunningBroker) -> ClientConfig {
    ClientConfig::builder([broker.listener_addr("PLAINTEXT").unwrap().to_string()])
        .build()
        .unwrap()
}

fn secured(broker: &RunningBroker, listener: &str, settings: &[(&str, String)]) -> ClientConfig {
    let mut builder = ClientConfig::builder([broker.listener_addr(listener).unwrap().to_string()])
        .request_timeout(Duration::from_secs(10));
    for (name, value) in settings {
        builder = builder.set(name, value).unwrap();
    }
    builder.build().unwrap()
}

fn sasl_ssl(pki: &Pki, mechanism: &str, user: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SASL_SSL".into()),
        ("ssl.ca.location", pki.ca.display().to_string()),
        ("sasl.mechanism", mechanism.into()),
        ("sasl.username", user.into()),
        ("sasl.password", password.into()),
    ]
}

/// Produces `count` records to `topic` and reads them back, both with `client`.
async fn produce_and_consume(client: ClientConfig, topic: &str, count: usize) {
    let producer = Producer::connect(ProducerConfig::new(client.clone()))
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..count {
        let record = ProducerRecord {
            partition: Some(0),
            ..ProducerRecord::new(topic, format!("value-{i}"))
        };
        deliveries.push(producer.send(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;

    let mut config = ConsumerConfig::new(client);
    config.auto_offset_reset = AutoOffsetReset::Earliest;
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.assign(&[TopicPartition::new(topic, 0)]).unwrap();
    let mut values = Vec::new();
    while values.len() < count {
        let record = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("records within 20 s")
            .unwrap();
        values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
    }
    let expected: Vec<String> = (0..count).map(|i| format!("value-{i}")).collect();
    assert_eq!(values, expected);
}

/// The log end offset of partition 0 of `topic`, read over the PLAINTEXT listener.
async fn log_end(broker: &RunningBroker, topic: &str) -> i64 {
    let admin = Admin::connect(plaintext(broker)).await.unwrap();
    let tp = TopicPartition::new(topic, 0);
    admin
        .list_offsets(&[(tp.clone(), OffsetSpec::Latest)])
        .await
        .unwrap()[&tp]
        .offset
}

async fn create_topic(broker: &RunningBroker, topic: &str) {
    let admin = Admin::connect(plaintext(broker)).await.unwrap();
    admin
        .create_topic(millrace_client::admin::NewTopic::new(topic, 1))
        .await
        .unwrap();
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
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
                    &[millrace_testkit::records::record("k", "sneaky", 1)],
                    kafka_protocol::records::Compression::None,
                )))])])
}

/// SaslHandshake v1 then SaslAuthenticate v2 with one PLAIN token.
async fn plain_login(
    client: &mut TestClient,
    user: &str,
    password: &str,
) -> SaslAuthenticateResponse {
    let handshake = client
        .call(
            1,
            &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
        )
        .await;
    assert_eq!(handshake.error_code, 0);
    let token = format!("\0{user}\0{password}");
    client
        .call(
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
        )
        .await
}

#[tokio::test]
async fn ssl_listener_with_a_client_certificate_serves_produce_and_consume() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &[]).await;
    create_topic(&broker, "tls").await;
    let client = secured(
        &broker,
        "SSL",
        &[
            ("security.protocol", "SSL".into()),
            ("ssl.ca.location", pki.ca.display().to_string()),
            (
                "ssl.certificate.location",
                pki.client_cert.display().to_string(),
            ),
            ("ssl.key.location", pki.client_key.display().to_string()),
        ],
    );
    produce_and_consume(client, "tls", 5).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_principal_is_user_and_the_rfc2253_subject() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let principal = principal_from_certificate(&pki.client_der).unwrap();
    // RFC 2253 lists the most specific name first.
    assert_eq!(principal.to_string(), "User:CN=alice,OU=eng,O=Millrace");
}

#[tokio::test]
async fn ssl_client_auth_required_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &[]).await;
    let client = secured(
        &broker,
        "SSL",
        &[
            ("security.protocol", "SSL".into()),
            ("ssl.ca.location", pki.ca.display().to_string()),
        ],
    );
    let error = tokio::time::timeout(Duration::from_secs(20), Admin::connect(client))
        .await
        .expect("a prompt answer, not endless retries")
        .unwrap_err();
    assert!(
        matches!(error, ClientError::Authentication { .. }),
        "{error}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn sasl_ssl_plain_scram_sha_256_and_scram_sha_512_produce_and_consume() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &[]).await;
    let admin = Admin::connect(plaintext(&broker)).await.unwrap();
    admin
        .upsert_scram_credential("bob", SaslMechanism::ScramSha256, "bob-256", 4096)
        .await
        .unwrap();
    admin
        .upsert_scram_credential("bob", SaslMechanism::ScramSha512, "bob-512", 8192)
        .await
        .unwrap();
    let users = admin.describe_scram_users().await.unwrap();
    assert_eq!(
        users,
        [(
            "bob".to_string(),
            vec![
                ("SCRAM-SHA-256".to_string(), 4096),
                ("SCRAM-SHA-512".to_string(), 8192)
            ]
        )]
    );
    for (topic, mechanism, user, password) in [
        ("plain", "PLAIN", "alice", "alice-secret"),
        ("scram256", "SCRAM-SHA-256", "bob", "bob-256"),
        ("scram512", "SCRAM-SHA-512", "bob", "bob-512"),
    ] {
        create_topic(&broker, topic).await;
        let client = secured(
            &broker,
            "SASL_SSL",
            &sasl_ssl(&pki, mechanism, user, password),
        );
        produce_and_consume(client, topic, 3).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_with_sasl_authentication_failed_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &[]).await;
    create_topic(&broker, "guarded").await;
    let admin = Admin::connect(plaintext(&broker)).await.unwrap();
    admin
        .upsert_scram_credential("bob", SaslMechanism::ScramSha256, "bob-256", 4096)
        .await
        .unwrap();
    for (mechanism, user, password) in [
        ("PLAIN", "alice", "wrong"),
        ("PLAIN", "mallory", "alice-secret"),
        ("SCRAM-SHA-256", "bob", "wrong"),
        ("SCRAM-SHA-256", "mallory", "bob-256"),
        // bob has no SHA-512 credential.
        ("SCRAM-SHA-512", "bob", "bob-256"),
    ] {
        let client = secured(
            &broker,
            "SASL_SSL",
            &sasl_ssl(&pki, mechanism, user, password),
        );
        let producer = tokio::time::timeout(
            Duration::from_secs(20),
            Producer::connect(ProducerConfig::new(client)),
        )
        .await
        .expect("a prompt answer, not endless retries");
        match producer {
            Err(ClientError::Authentication { reason, .. }) => {
                assert!(
                    reason.contains("Authentication failed"),
                    "{mechanism} {user}: {reason}"
                );
            }
            Err(other) => panic!("{mechanism} {user}: {other}"),
            Ok(_) => panic!("{mechanism} {user}: authenticated with a wrong secret"),
        }
    }
    // The exact wire answer, and the close that follows it.
    let mut raw = TestClient::connect(broker.listener_addr("SASL_PLAINTEXT").unwrap()).await;
    let answer = plain_login(&mut raw, "alice", "wrong").await;
    assert_eq!(answer.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert_eq!(
        answer.error_message.as_deref(),
        Some("Authentication failed: Invalid username or password")
    );
    assert!(raw.is_closed().await);
    assert_eq!(log_end(&broker, "guarded").await, 0);
    // Counted as Kafka's socket-server-metrics failed-authentication-total: the five clients
    // and the raw login.
    let text = String::from_utf8(broker.broker().metrics.encode(None)).unwrap();
    let failed: f64 = text
        .lines()
        .find(|l| l.starts_with("kafka_server_socket_server_metrics_failed_authentication_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no failed-authentication count in {text}"));
    assert!(failed >= 6.0, "{failed} failed authentications counted");
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unsupported_mechanism_gets_the_enabled_list_and_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(
        dir.path(),
        &pki,
        &["listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512"],
    )
    .await;
    let mut raw = TestClient::connect(broker.listener_addr("SASL_PLAINTEXT").unwrap()).await;
    for mechanism in ["GSSAPI", "PLAIN"] {
        let answer = raw
            .call(
                1,
                &SaslHandshakeRequest::default().with_mechanism(s(mechanism)),
            )
            .await;
        assert_eq!(answer.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
        let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
        assert_eq!(offered, ["SCRAM-SHA-512"]);
        assert!(raw.is_closed().await);
        raw = TestClient::connect(broker.listener_addr("SASL_PLAINTEXT").unwrap()).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_request_before_authentication_closes_the_connection_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &[]).await;
    create_topic(&broker, "guarded").await;
    let mut raw = TestClient::connect(broker.listener_addr("SASL_PLAINTEXT").unwrap()).await;
    // ApiVersions is allowed before authentication: clients ask it first.
    let versions = raw.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(versions.error_code, 0);
    assert!(raw.try_call(9, &produce_request("guarded")).await.is_none());
    assert!(raw.is_closed().await);
    // The same after a handshake but before SaslAuthenticate.
    let mut raw = TestClient::connect(broker.listener_addr("SASL_PLAINTEXT").unwrap()).await;
    let handshake = raw
        .call(
            1,
            &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
        )
        .await;
    assert_eq!(handshake.error_code, 0);
    assert!(raw.try_call(9, &produce_request("guarded")).await.is_none());
    assert_eq!(log_end(&broker, "guarded").await, 0);
    // And after authenticating, the same produce is taken.
    let mut raw = TestClient::connect(broker.listener_addr("SASL_PLAINTEXT").unwrap()).await;
    assert_eq!(
        plain_login(&mut raw, "alice", "alice-secret")
            .await
            .error_code,
        0
    );
    let produced = raw.call(9, &produce_request("guarded")).await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(log_end(&broker, "guarded").await, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_is_closed_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &[]).await;
    for listener in ["SSL", "SASL_SSL"] {
        let mut raw = TestClient::connect(broker.listener_addr(listener).unwrap()).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(15),
            raw.try_call(3, &ApiVersionsRequest::default()),
        )
        .await
        .expect("closed, not hung");
        assert!(answer.is_none(), "{listener} answered a plaintext request");
    }
    // The broker is unharmed.
    create_topic(&broker, "after").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_session_expires_unless_re_authenticated_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &["connections.max.reauth.ms=400"]).await;
    let addr = broker.listener_addr("SASL_PLAINTEXT").unwrap();
    let metadata = MetadataRequest::default().with_topics(Some(vec![]));

    let mut raw = TestClient::connect(addr).await;
    let first = plain_login(&mut raw, "alice", "alice-secret").await;
    assert_eq!((first.error_code, first.session_lifetime_ms), (0, 400));
    // Re-authenticating mid-connection (KIP-368) starts a new session.
    let again = plain_login(&mut raw, "alice", "alice-secret").await;
    assert_eq!((again.error_code, again.session_lifetime_ms), (0, 400));
    assert!(raw.try_call(9, &metadata).await.is_some());
    // Re-authenticating as someone else is refused.
    let other = plain_login(&mut raw, "admin", "admin-secret").await;
    assert_eq!(other.error_code, 58);
    assert!(raw.is_closed().await);

    // A session left to expire: the next request closes the connection. The expiry is a
    // deadline on the broker's clock, so waiting past it is the event itself.
    let mut raw = TestClient::connect(addr).await;
    assert_eq!(
        plain_login(&mut raw, "alice", "alice-secret")
            .await
            .error_code,
        0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(raw.try_call(9, &metadata).await.is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn scram_users_are_managed_through_the_controller_with_kafkas_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &[]).await;
    let admin = Admin::connect(plaintext(&broker)).await.unwrap();
    let error = admin
        .upsert_scram_credential("carol", SaslMechanism::ScramSha256, "pw", 1000)
        .await
        .unwrap_err();
    assert_eq!(
        error.kafka_error().map(|e| e.code()),
        Some(93),
        "UNACCEPTABLE_CREDENTIAL: {error}"
    );
    let error = admin
        .delete_scram_credential("carol", SaslMechanism::ScramSha256)
        .await
        .unwrap_err();
    assert_eq!(
        error.kafka_error().map(|e| e.code()),
        Some(91),
        "RESOURCE_NOT_FOUND: {error}"
    );
    admin
        .upsert_scram_credential("carol", SaslMechanism::ScramSha256, "pw", 4096)
        .await
        .unwrap();
    admin
        .delete_scram_credential("carol", SaslMechanism::ScramSha256)
        .await
        .unwrap();
    assert!(admin.describe_scram_users().await.unwrap().is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn sasl_handshake_v0_takes_the_tokens_as_bare_frames() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = secured_broker(dir.path(), &pki, &[]).await;
    create_topic(&broker, "guarded").await;
    let addr = broker.listener_addr("SASL_PLAINTEXT").unwrap();

    let mut raw = TestClient::connect(addr).await;
    let handshake = raw
        .call(
            0,
            &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
        )
        .await;
    assert_eq!(handshake.error_code, 0);
    raw.send_raw(b"\0alice\0alice-secret").await;
    // PLAIN's answer is empty: a bare frame of size 0.
    assert_eq!(raw.read_frame().await.unwrap().len(), 0);
    let produced = raw.call(9, &produce_request("guarded")).await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);

    // v0 cannot carry an error: a wrong password is answered by closing.
    let mut raw = TestClient::connect(addr).await;
    raw.call(
        0,
        &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
    )
    .await;
    raw.send_raw(b"\0alice\0wrong").await;
    assert!(raw.read_frame().await.is_none());
    assert_eq!(log_end(&broker, "guarded").await, 1);
    broker.shutdown().await;
}
