//! A three-broker cluster whose inter-broker listener speaks SASL_SSL: the followers fetch from
//! their leaders over TLS (certificates and names checked) after a SASL login as the brokers'
//! own user, with the authorizer on, so replication works only because that user is allowed.
//! And the settings a broker needs for it are asked for by name when missing.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use millrace_broker::config::parse_overrides;
use millrace_broker::BrokerConfig;
use millrace_client::admin::NewTopic;
use millrace_client::{Acks, Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use millrace_testkit::wait::eventually;
use millrace_testkit::TestCluster;

mod common;
use common::pki::pki;

const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="broker-secret" user_broker="broker-secret" user_admin="admin-secret";"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_replicate_over_sasl_ssl_as_the_brokers_user() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let keystore = format!("ssl.keystore.location={}", pki.server.display());
    let truststore = format!("ssl.truststore.location={}", pki.ca.display());
    let jaas = format!("sasl.jaas.config={JAAS}");
    // The listener named PLAINTEXT (clients' and brokers') speaks SASL_SSL.
    let cluster = TestCluster::start(
        3,
        &[
            "listener.security.protocol.map=PLAINTEXT:SASL_SSL,CONTROLLER:PLAINTEXT",
            "ssl.keystore.type=PEM",
            &keystore,
            "ssl.truststore.type=PEM",
            &truststore,
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            &jaas,
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:broker;User:admin",
            "offsets.topic.replication.factor=3",
        ],
    )
    .await;
    let mut builder = ClientConfig::builder(cluster.bootstrap().split(','))
        .request_timeout(Duration::from_secs(10));
    for (name, value) in [
        ("security.protocol", "SASL_SSL".to_string()),
        ("ssl.ca.location", pki.ca.display().to_string()),
        ("sasl.mechanism", "PLAIN".to_string()),
        ("sasl.username", "admin".to_string()),
        ("sasl.password", "admin-secret".to_string()),
    ] {
        builder = builder.set(name, &value).unwrap();
    }
    let client = builder.build().unwrap();
    let admin = Admin::connect(client.clone()).await.unwrap();
    admin
        .create_topic(NewTopic::new("replicated", 1).replication_factor(3))
        .await
        .unwrap();

    let mut config = ProducerConfig::new(client);
    config.acks = Acks::All;
    let producer = Producer::connect(config).await.unwrap();
    for i in 0..50 {
        let record = ProducerRecord {
            partition: Some(0),
            ..ProducerRecord::new("replicated", format!("v{i}"))
        };
        producer.send(record).await.unwrap().await.unwrap();
    }
    producer.close().await;

    // Every replica holds the 50 records: the followers fetched them over SASL_SSL.
    for member in &cluster.members {
        let broker = member.broker.as_ref().unwrap().broker().clone();
        eventually(
            &format!("broker {} to hold 50 records", member.node_id),
            || {
                let broker = broker.clone();
                async move {
                    broker
                        .replicas
                        .replica("replicated", 0)
                        .is_some_and(|r| r.log().log_end_offset() == 50)
                }
            },
        )
        .await;
    }
    let described = admin.describe_topics(&["replicated"]).await.unwrap();
    assert_eq!(described[0].partitions[0].isr.len(), 3, "{described:?}");
}

#[test]
fn a_sasl_inter_broker_listener_needs_the_brokers_own_credentials() {
    let settings = |extra: &[&str]| {
        let mut all = vec![
            "node.id=1".to_string(),
            "controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19094,3@127.0.0.1:19095"
                .to_string(),
            "listeners=INTERNAL://127.0.0.1:9093,CONTROLLER://127.0.0.1:19093".to_string(),
            "listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
                .to_string(),
            "inter.broker.listener.name=INTERNAL".to_string(),
            "controller.listener.names=CONTROLLER".to_string(),
            "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN".to_string(),
        ];
        all.extend(extra.iter().map(|s| s.to_string()));
        parse_overrides(&all).unwrap()
    };
    let err = BrokerConfig::from_settings(&settings(&[]), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listener.name.internal.plain.sasl.jaas.config"),
        "{err}"
    );
    let no_password = settings(&[
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        r#"listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker";"#,
    ]);
    let err = BrokerConfig::from_settings(&no_password, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("username=") && err.contains("password="),
        "{err}"
    );
    assert!(
        !err.contains("broker\""),
        "the JAAS value is not echoed: {err}"
    );
    let gssapi = settings(&["sasl.mechanism.inter.broker.protocol=GSSAPI"]);
    let err = BrokerConfig::from_settings(&gssapi, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sasl.mechanism.inter.broker.protocol"),
        "{err}"
    );
    let ok = settings(&[
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        r#"listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="pw";"#,
    ]);
    let config = BrokerConfig::from_settings(&ok, None, None).unwrap();
    let login = config.inter_broker.login.as_ref().unwrap();
    assert_eq!(login.username, "broker");
    assert!(
        !format!("{login:?}").contains("pw"),
        "the password stays out of logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_quorum_speaks_mutual_tls_on_an_ssl_controller_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let keystore = format!("ssl.keystore.location={}", pki.server.display());
    let truststore = format!("ssl.truststore.location={}", pki.ca.display());
    let cluster = TestCluster::start(
        3,
        &[
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
            "ssl.keystore.type=PEM",
            &keystore,
            "ssl.truststore.type=PEM",
            &truststore,
            "listener.name.controller.ssl.client.auth=required",
        ],
    )
    .await;
    // The quorum formed over TLS: a replicated topic is created through the controller.
    let admin = Admin::connect(cluster.client_config("tls-quorum"))
        .await
        .unwrap();
    admin
        .create_topic(NewTopic::new("over-tls", 3).replication_factor(3))
        .await
        .unwrap();
    let described = admin.describe_cluster().await.unwrap();
    assert_eq!(described.brokers.len(), 3, "{described:?}");

    // A plaintext peer on the controller port gets no answer but a closed connection.
    let controller =
        std::net::SocketAddr::from(([127, 0, 0, 1], cluster.member(1).controller_port));
    let mut raw = tokio::net::TcpStream::connect(controller).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(&[0, 0, 0, 2, b'{', b'}']).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(15), raw.read(&mut buf))
        .await
        .expect("the controller closes a plaintext peer");
    // At most a TLS alert record (content type 21), never a frame of the protocol.
    if let Ok(n) = read {
        assert!(
            n == 0 || buf[0] == 21,
            "a plaintext peer got {:?}",
            &buf[..n]
        );
    }
    let rest = tokio::time::timeout(Duration::from_secs(15), raw.read(&mut buf))
        .await
        .expect("the controller closes a plaintext peer");
    assert!(
        matches!(rest, Ok(0) | Err(_)),
        "then the connection closes: {rest:?}"
    );
}

/// The controller listener's JAAS line: a member's own login (`username`/`password`) and the
/// users the controllers accept (`user_<name>`): the members' `controller`, and `guest`, who
/// may log in but is not allowed CLUSTER_ACTION.
fn controller_jaas(username: &str, password: &str) -> String {
    format!(
        r#"listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="{username}" password="{password}" user_controller="controller-secret" user_guest="guest-secret";"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_log_in_to_a_sasl_ssl_controller_listener_and_others_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let keystore = format!("ssl.keystore.location={}", pki.server.display());
    let truststore = format!("ssl.truststore.location={}", pki.ca.display());
    let secured = [
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_SSL",
        "ssl.keystore.type=PEM",
        keystore.as_str(),
        "ssl.truststore.type=PEM",
        truststore.as_str(),
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        // The members, and this test's clients on the PLAINTEXT listener.
        "super.users=User:controller;User:ANONYMOUS",
    ];
    let mut members: Vec<String> = secured.iter().map(|s| s.to_string()).collect();
    members.push(controller_jaas("controller", "controller-secret"));
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    // Three voters log in to each other, and a broker-only node (4) to them.
    let cluster = TestCluster::start_with_brokers(3, 1, &members).await;
    let admin = Admin::connect(cluster.client_config("sasl-quorum"))
        .await
        .unwrap();
    admin
        .create_topic(NewTopic::new("over-sasl", 2).replication_factor(3))
        .await
        .unwrap();
    let registered = |node: i32| {
        cluster
            .broker(1)
            .broker()
            .controller
            .with_image(|i| i.broker(node).is_some())
    };
    assert!((1..=4).all(registered));

    // Node 5 has the wrong password (its login is refused); node 6 logs in as `guest`, who is
    // not allowed CLUSTER_ACTION (it is refused once logged in). Neither ever registers.
    let voters = cluster
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| format!("{}@127.0.0.1:{}", m.node_id, m.controller_port))
        .collect::<Vec<_>>()
        .join(",");
    let outsider = |node_id: i32, jaas: String| {
        let mut settings: Vec<String> = vec![
            format!("node.id={node_id}"),
            "process.roles=broker".into(),
            format!("controller.quorum.voters={voters}"),
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{}",
                millrace_testkit::free_port()
            ),
            "controller.listener.names=CONTROLLER".into(),
            "inter.broker.listener.name=PLAINTEXT".into(),
            jaas,
        ];
        settings.extend(secured.iter().map(|s| s.to_string()));
        let config = BrokerConfig::from_settings(
            &parse_overrides(&settings).unwrap(),
            None,
            Some(dir.path().join(format!("outsider-{node_id}"))),
        )
        .unwrap();
        tokio::spawn(millrace_broker::start(config))
    };
    let outsiders = [
        outsider(5, controller_jaas("controller", "not-the-secret")),
        outsider(6, controller_jaas("guest", "guest-secret")),
    ];
    // Eight seconds to get in (a member with the right login registers in well under one); a
    // registration, fenced or not, would be in the controllers' image.
    let outcome = tokio::time::timeout(Duration::from_secs(8), async {
        while !registered(5) && !registered(6) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        outcome.is_err(),
        "an outsider registered: 5 {}, 6 {}",
        registered(5),
        registered(6)
    );
    for outsider in outsiders {
        assert!(!outsider.is_finished(), "the outsider is still refused");
        outsider.abort();
    }
    cluster.shutdown().await;
}
