//! The console's security against a real broker with ACLs on (`authorizer.class.name`,
//! `super.users=User:admin`, SASL PLAIN users admin, alice and bob): logging in with a SASL
//! user, a user seeing only the topics it may DESCRIBE and refused (403 with Kafka's error
//! name) what its ACLs forbid, the admin managing users, ACLs and quotas through the API,
//! and HTTPS with a generated certificate fetched by a rustls client.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::Running;
use millrace_broker::config::parse_overrides;
use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::admin::{
    AclBinding, AclOperation, AclPatternType, AclPermissionType, AclResourceType, NewTopic,
};
use millrace_client::{Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use millrace_dashboard::{Dashboard, DashboardConfig, TlsFiles};
use millrace_testkit::free_port;
use millrace_testkit::http::{get, post_json, request, Response};
use serde_json::{json, Value};

const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" user_alice="alice-secret" user_bob="bob-secret";"#;
const WAIT: Duration = Duration::from_secs(30);

/// A broker with the authorizer on and a SASL_PLAINTEXT listener; topics `visible` (one
/// record) and `hidden`, and alice may DESCRIBE (only) `visible`.
async fn secured_broker(dir: &Path) -> RunningBroker {
    let overrides: Vec<String> = vec![
        "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into(),
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
        format!("sasl.jaas.config={JAAS}"),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
        "super.users=User:admin".into(),
        "group.initial.rebalance.delay.ms=0".into(),
    ];
    let settings = parse_overrides(&overrides).unwrap();
    let config = BrokerConfig::from_settings(&settings, None, Some(dir.join("data"))).unwrap();
    let broker = millrace_broker::start(config).await.unwrap();
    let admin = Admin::connect(client_as(&broker, "admin")).await.unwrap();
    for topic in ["visible", "hidden"] {
        admin
            .create_topic(NewTopic::new(topic, 1).replication_factor(1))
            .await
            .unwrap();
    }
    // One record in `visible`, so browsing it has something to fetch.
    let producer = Producer::connect(ProducerConfig::new(client_as(&broker, "admin")))
        .await
        .unwrap();
    producer
        .send(ProducerRecord::new("visible", "hello"))
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await;
    admin
        .create_acls(&[AclBinding {
            resource_type: AclResourceType::Topic,
            resource_name: "visible".into(),
            pattern_type: AclPatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Describe,
            permission: AclPermissionType::Allow,
        }])
        .await
        .unwrap();
    broker
}

fn sasl_addr(broker: &RunningBroker) -> String {
    broker.listener_addr("SASL_PLAINTEXT").unwrap().to_string()
}

fn client_as(broker: &RunningBroker, user: &str) -> ClientConfig {
    let mut builder = ClientConfig::builder([sasl_addr(broker)]);
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

/// A dashboard in login mode over the broker's SASL listener (no user of its own).
async fn login_dashboard(broker: &RunningBroker, allow_admin: bool) -> Running {
    Running::start(Dashboard::new(DashboardConfig {
        bootstrap: sasl_addr(broker),
        http: "127.0.0.1:0".parse().unwrap(),
        allow_admin,
        login: true,
        client_settings: vec![
            ("security.protocol".into(), "SASL_PLAINTEXT".into()),
            ("sasl.mechanism".into(), "PLAIN".into()),
        ],
        ..DashboardConfig::default()
    }))
    .await
}

/// Logs in and returns the `Cookie` header value of the session.
async fn login(running: &Running, user: &str, password: &str) -> String {
    let response = post_json(
        &running.addr,
        "/api/login",
        &[],
        &json!({"username": user, "password": password}),
    )
    .await;
    assert_eq!(response.status, 200, "login: {}", response.text());
    let set_cookie = response.header("set-cookie").unwrap().to_string();
    set_cookie.split(';').next().unwrap().to_string()
}

async fn send(running: &Running, method: &str, path: &str, cookie: &str, body: Value) -> Response {
    let body = body.to_string();
    request(
        &running.addr,
        method,
        path,
        &[("Cookie", cookie), ("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .await
}

async fn get_as(running: &Running, path: &str, cookie: &str) -> Response {
    get(&running.addr, path, &[("Cookie", cookie)]).await
}

/// Polls `path` as the session until `check` holds.
async fn eventually(running: &Running, path: &str, cookie: &str, check: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = get_as(running, path, cookie).await;
        if response.status == 200 && check(&response.json()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out on {path}: {} {}",
            response.status,
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn topic_names(body: &Value) -> Vec<String> {
    body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn login_checks_the_password_with_the_cluster_and_sessions_end_at_logout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = secured_broker(dir.path()).await;
    let running = login_dashboard(&broker, false).await;

    // Before logging in: the page and the session probe answer, the API does not.
    assert_eq!(get(&running.addr, "/", &[]).await.status, 200);
    let probe = get(&running.addr, "/api/session", &[]).await.json();
    assert_eq!(probe["login"], true);
    assert_eq!(probe["user"], Value::Null);
    assert_eq!(get(&running.addr, "/api/topics", &[]).await.status, 401);

    let wrong = post_json(
        &running.addr,
        "/api/login",
        &[],
        &json!({"username": "alice", "password": "not-her-password"}),
    )
    .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(
        wrong.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("login failed"),
        "{}",
        wrong.text()
    );
    assert!(wrong.header("set-cookie").is_none());
    let empty = post_json(
        &running.addr,
        "/api/login",
        &[],
        &json!({"username": "", "password": ""}),
    )
    .await;
    assert_eq!(empty.status, 400);

    let response = post_json(
        &running.addr,
        "/api/login",
        &[],
        &json!({"username": "alice", "password": "alice-secret"}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let set_cookie = response.header("set-cookie").unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let me = get_as(&running, "/api/session", &cookie).await.json();
    assert_eq!(me["user"], "alice");
    assert_eq!(get_as(&running, "/api/cluster", &cookie).await.status, 200);

    let out = send(&running, "POST", "/api/logout", &cookie, json!({})).await;
    assert_eq!(out.status, 200);
    assert_eq!(get_as(&running, "/api/topics", &cookie).await.status, 401);

    running.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_user_sees_only_the_topics_it_may_describe_and_is_refused_what_its_acls_forbid() {
    let dir = tempfile::tempdir().unwrap();
    let broker = secured_broker(dir.path()).await;
    let running = login_dashboard(&broker, true).await;
    let alice = login(&running, "alice", "alice-secret").await;
    let admin = login(&running, "admin", "admin-secret").await;

    // The admin (a super user) sees both topics; once it does, alice's sample of the same
    // moment must lack `hidden`.
    eventually(&running, "/api/topics", &admin, |body| {
        let names = topic_names(body);
        names.contains(&"visible".to_string()) && names.contains(&"hidden".to_string())
    })
    .await;
    eventually(&running, "/api/topics", &alice, |body| {
        topic_names(body).contains(&"visible".to_string())
    })
    .await;
    let seen = topic_names(&get_as(&running, "/api/topics", &alice).await.json());
    assert!(!seen.contains(&"hidden".to_string()), "alice sees {seen:?}");
    assert_eq!(
        get_as(&running, "/api/topics/hidden", &alice).await.status,
        404
    );

    // --allow-admin lets the request through; the broker's ACLs refuse it.
    let delete = send(&running, "DELETE", "/api/topics/visible", &alice, json!({})).await;
    assert_eq!(delete.status, 403, "{}", delete.text());
    assert_eq!(delete.json()["kafka_error"], "TOPIC_AUTHORIZATION_FAILED");
    // Browsing runs with alice's own consumer: DESCRIBE without READ cannot fetch.
    let browse = get_as(
        &running,
        "/api/topics/visible/messages?partition=0&offset=0",
        &alice,
    )
    .await;
    assert_eq!(browse.status, 403, "{}", browse.text());
    assert_eq!(browse.json()["kafka_error"], "TOPIC_AUTHORIZATION_FAILED");
    let acls = get_as(&running, "/api/acls", &alice).await;
    assert_eq!(acls.status, 403, "{}", acls.text());
    assert_eq!(acls.json()["kafka_error"], "CLUSTER_AUTHORIZATION_FAILED");
    // Nothing was deleted.
    let topics = Admin::connect(client_as(&broker, "admin"))
        .await
        .unwrap()
        .list_topics(false)
        .await
        .unwrap();
    assert!(topics.iter().any(|t| t.name == "visible"));

    running.shutdown().await;
    broker.shutdown().await;
}

fn acl(operation: &str) -> Value {
    json!({
        "resource_type": "TOPIC", "resource_name": "visible", "pattern_type": "LITERAL",
        "principal": "User:bob", "host": "*", "operation": operation, "permission": "ALLOW",
    })
}

async fn bobs_acls(running: &Running, cookie: &str) -> Vec<Value> {
    let response = get_as(running, "/api/acls?principal=User:bob", cookie).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["acls"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_admin_adds_edits_and_removes_acls_quotas_and_users() {
    let dir = tempfile::tempdir().unwrap();
    let broker = secured_broker(dir.path()).await;
    let running = login_dashboard(&broker, true).await;
    let admin = login(&running, "admin", "admin-secret").await;

    // ACLs: add, edit (the new one added, the old one gone), remove.
    let added = send(&running, "POST", "/api/acls", &admin, acl("READ")).await;
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(bobs_acls(&running, &admin).await, vec![acl("READ")]);
    let edited = send(
        &running,
        "PUT",
        "/api/acls",
        &admin,
        json!({"old": acl("READ"), "new": acl("WRITE")}),
    )
    .await;
    assert_eq!(edited.status, 200, "{}", edited.text());
    assert_eq!(bobs_acls(&running, &admin).await, vec![acl("WRITE")]);
    let missing = send(
        &running,
        "PUT",
        "/api/acls",
        &admin,
        json!({"old": acl("READ"), "new": acl("DESCRIBE")}),
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    let removed = send(&running, "DELETE", "/api/acls", &admin, acl("WRITE")).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert!(bobs_acls(&running, &admin).await.is_empty());
    let again = send(&running, "DELETE", "/api/acls", &admin, acl("WRITE")).await;
    assert_eq!(again.status, 404);
    // Bad input is a 400 with a message, never a crash.
    for bad in [
        acl("reed"),
        json!({"resource_type": "TOPIC", "resource_name": "t", "principal": "bob", "operation": "READ"}),
        json!({"resource_type": "ANY", "resource_name": "t", "principal": "User:bob", "operation": "READ"}),
    ] {
        let response = send(&running, "POST", "/api/acls", &admin, bad.clone()).await;
        assert_eq!(response.status, 400, "{bad}: {}", response.text());
    }
    let bad_filter = get_as(&running, "/api/acls?operation=fly", &admin).await;
    assert_eq!(bad_filter.status, 400);

    // Quotas: set, read back, remove.
    let bob = json!([{"type": "user", "name": "bob"}]);
    let set = send(
        &running,
        "POST",
        "/api/quotas",
        &admin,
        json!({"entity": bob, "set": {"producer_byte_rate": 1048576.0}}),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text());
    let quotas = get_as(&running, "/api/quotas", &admin).await.json();
    assert!(
        quotas["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["entity"] == bob && q["values"]["producer_byte_rate"] == json!(1048576.0)),
        "{quotas}"
    );
    let negative = send(
        &running,
        "POST",
        "/api/quotas",
        &admin,
        json!({"entity": bob, "set": {"producer_byte_rate": -1}}),
    )
    .await;
    assert_eq!(negative.status, 400);
    let gone = send(
        &running,
        "DELETE",
        "/api/quotas",
        &admin,
        json!({"entity": bob}),
    )
    .await;
    assert_eq!(gone.status, 200, "{}", gone.text());
    let quotas = get_as(&running, "/api/quotas", &admin).await.json();
    assert!(
        !quotas["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["entity"] == bob),
        "{quotas}"
    );

    // SCRAM users: add, list, delete.
    let carol = send(
        &running,
        "POST",
        "/api/users",
        &admin,
        json!({"name": "carol", "password": "carol-secret"}),
    )
    .await;
    assert_eq!(carol.status, 201, "{}", carol.text());
    let users = get_as(&running, "/api/users", &admin).await.json();
    let listed = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "carol")
        .cloned()
        .unwrap_or_else(|| panic!("carol missing: {users}"));
    assert_eq!(listed["mechanisms"].as_array().unwrap().len(), 2);
    let deleted = send(&running, "DELETE", "/api/users/carol", &admin, json!({})).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let users = get_as(&running, "/api/users", &admin).await.json();
    assert!(!users["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["name"] == "carol"));

    running.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn changes_need_allow_admin_even_for_a_super_user() {
    let dir = tempfile::tempdir().unwrap();
    let broker = secured_broker(dir.path()).await;
    let running = login_dashboard(&broker, false).await;
    let admin = login(&running, "admin", "admin-secret").await;
    let read = get_as(&running, "/api/acls", &admin).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let add = send(&running, "POST", "/api/acls", &admin, acl("READ")).await;
    assert_eq!(add.status, 403, "{}", add.text());
    assert!(add.json()["error"]
        .as_str()
        .unwrap()
        .contains("--allow-admin"));
    running.shutdown().await;
    broker.shutdown().await;
}

/// A CA and a server certificate for 127.0.0.1, the server's key and chain in one PEM file
/// (as the broker's `ssl.keystore.location`); returns (that file, the CA certificate DER).
fn certificate(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "console test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let path = dir.join("console.pem");
    std::fs::write(&path, format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
    (path, ca_cert.der().to_vec())
}

#[tokio::test]
async fn https_is_served_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, ca) = certificate(dir.path());
    // The page needs no cluster: a port nobody listens on will do.
    let bound = Dashboard::new(DashboardConfig {
        bootstrap: format!("127.0.0.1:{}", free_port()),
        http: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            certificate: pem,
            key: None,
        }),
        ..DashboardConfig::default()
    })
    .bind()
    .await
    .unwrap();
    assert!(bound.url().starts_with("https://"), "{}", bound.url());
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.into()).unwrap();
    // ring, as the dashboard; deprecated in rustls 0.23.48 only for lacking post-quantum
    // key exchange.
    #[allow(deprecated)]
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let fetch = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        // A peer that closes without close_notify is fine once the answer is in.
        let _ = tls.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = tokio::time::timeout(WAIT, fetch).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("<title>Millrace</title>"), "{answer}");

    // Plain HTTP to the HTTPS port gets no page.
    let plain = tokio::time::timeout(WAIT, async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        answer
    })
    .await
    .unwrap();
    assert!(!String::from_utf8_lossy(&plain).contains("Millrace"));

    let _ = stop.send(());
    tokio::time::timeout(WAIT, served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_bad_certificate_or_login_without_sasl_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let bad_cert = Dashboard::new(DashboardConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            certificate: garbage,
            key: None,
        }),
        ..DashboardConfig::default()
    })
    .bind()
    .await;
    assert!(matches!(
        bad_cert,
        Err(millrace_dashboard::DashboardError::Config(_))
    ));
    let plaintext_login = Dashboard::new(DashboardConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        login: true,
        ..DashboardConfig::default()
    })
    .bind()
    .await;
    assert!(matches!(
        plaintext_login,
        Err(millrace_dashboard::DashboardError::Config(_))
    ));
}
