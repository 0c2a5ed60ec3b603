//! SASL/OAUTHBEARER: KIP-768's signed-token validation (JWKS by `kid`, `exp`/`nbf`/`iat`
//! with skew, `aud`, `iss`), Kafka's unsecured development mode, RFC 7628's error challenge,
//! and KIP-368 with tokens: the session ends with the token, and the Rust client
//! re-authenticates on the same connection.
//!
//! Keys: an RSA key from `fixtures/oauthbearer-test-rsa.pem` (ring cannot generate RSA keys;
//! the file is a throw-away test key) and P-256 keys generated per run with ring.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kafka_protocol::messages::{
    MetadataRequest, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use millrace_broker::config::{parse_overrides, SecurityProtocol};
use millrace_broker::security::authenticator::codes;
use millrace_broker::security::config::{ListenerSecurity, SaslSettings};
use millrace_broker::security::oauthbearer::{
    OAuthBearerSettings, SecuredSettings, TokenValidator, UnsecuredSettings,
};
use millrace_broker::security::sasl::CredentialStore;
use millrace_broker::security::{
    Authenticator, KafkaPrincipal, SaslMechanism, ScramCredential, ScramMechanism, Session,
};
use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::{
    Admin, ClientConfig, ClientError, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use millrace_testkit::wire::TestClient;
use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs1KeyDer;
use serde_json::json;

const AUDIENCE: &str = "kafka";
const ISSUER: &str = "https://idp.example";
const INVALID_TOKEN: &[u8] = br#"{"status":"invalid_token"}"#;

/// The identity provider of the tests: its signing keys and the JWKS it publishes.
struct Idp {
    rsa: EncodingKey,
    rsa_jwk: serde_json::Value,
    ec: EncodingKey,
    ec_jwk: serde_json::Value,
    /// Not in the JWKS, but claims the EC key's `kid`.
    impostor: EncodingKey,
}

impl Idp {
    fn new() -> Self {
        let pem = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oauthbearer-test-rsa.pem"),
        )
        .unwrap();
        let der = PrivatePkcs1KeyDer::from_pem_slice(&pem).unwrap();
        let pair = RsaKeyPair::from_der(der.secret_pkcs1_der()).unwrap();
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let rsa_jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "rsa-1",
            "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e),
        });
        let (ec, ec_public) = ec_key();
        let ec_jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "kid": "ec-1",
            "x": URL_SAFE_NO_PAD.encode(&ec_public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&ec_public[33..65]),
        });
        Idp {
            rsa: EncodingKey::from_rsa_der(der.secret_pkcs1_der()),
            rsa_jwk,
            ec,
            ec_jwk,
            impostor: ec_key().0,
        }
    }

    /// Writes the JWKS to `dir/jwks.json` and returns its path.
    fn publish(&self, dir: &Path) -> PathBuf {
        let path = dir.join("jwks.json");
        let jwks = json!({ "keys": [self.rsa_jwk, self.ec_jwk] });
        std::fs::write(&path, jwks.to_string()).unwrap();
        path
    }

    /// A token for `sub` signed with RS256, with the given claim changes.
    fn rs256(&self, sub: &str, changes: serde_json::Value) -> String {
        sign(Algorithm::RS256, "rsa-1", &self.rsa, claims(sub, changes))
    }
}

/// A fresh P-256 key: the signing key and the uncompressed public point (04 || x || y).
fn ec_key() -> (EncodingKey, Vec<u8>) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &SystemRandom::new(),
    )
    .unwrap();
    (
        EncodingKey::from_ec_der(pkcs8.as_ref()),
        pair.public_key().as_ref().to_vec(),
    )
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims for `sub` (an hour to live, the expected audience and issuer), then `changes`
/// (a `null` removes a claim).
fn claims(sub: &str, changes: serde_json::Value) -> serde_json::Value {
    let mut claims = json!({
        "sub": sub, "aud": AUDIENCE, "iss": ISSUER,
        "iat": now_s(), "exp": now_s() + 3600, "scope": "produce consume",
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn unsecured_token(claims: serde_json::Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Kafka's client-first message.
fn client_first(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

fn secured_settings(jwks: &Path) -> SecuredSettings {
    SecuredSettings {
        jwks_url: format!("file://{}", jwks.display()),
        jwks_path: jwks.to_path_buf(),
        jwks_refresh_ms: 3_600_000,
        jwks_retry_backoff_ms: 100,
        expected_audience: vec![AUDIENCE.into()],
        expected_issuer: Some(ISSUER.into()),
        clock_skew_seconds: 30,
        scope_claim_name: "scope".into(),
        sub_claim_name: "sub".into(),
    }
}

/// A listener's validator as the broker's credential store hands it to the mechanism.
struct Tokens(TokenValidator);

impl CredentialStore for Tokens {
    fn plain_password(&self, user: &str) -> Option<String> {
        (user == "alice").then(|| "alice-secret".to_string())
    }
    fn scram_credential(&self, _: &str, _: ScramMechanism) -> Option<ScramCredential> {
        None
    }
    fn token_validator(&self) -> Option<&TokenValidator> {
        Some(&self.0)
    }
}

fn authenticator(reauth_ms: u64) -> Authenticator {
    let listener = ListenerSecurity {
        name: "SASL_SSL".into(),
        protocol: SecurityProtocol::SaslSsl,
        ssl: None,
        sasl: Some(SaslSettings {
            enabled_mechanisms: vec![SaslMechanism::OAuthBearer, SaslMechanism::Plain],
            plain_users: BTreeMap::new(),
            oauthbearer: None,
        }),
        connections_max_reauth_ms: reauth_ms,
    };
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut authenticator = Authenticator::new(
        &listener,
        Session {
            principal: KafkaPrincipal::anonymous(),
            listener_name: "SASL_SSL".into(),
            security_protocol: SecurityProtocol::SaslSsl,
            client_address: peer,
            sasl_mechanism: None,
        },
    );
    assert_eq!(authenticator.handshake("OAUTHBEARER", 1).error_code, 0);
    authenticator
}

/// One test's identity provider, its JWKS on disk, and the secured validator.
struct Secured {
    idp: Idp,
    _dir: tempfile::TempDir,
    store: Tokens,
}

fn secured() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new();
    let jwks = idp.publish(dir.path());
    let validator =
        TokenValidator::new(&OAuthBearerSettings::Secured(secured_settings(&jwks))).unwrap();
    Secured {
        idp,
        _dir: dir,
        store: Tokens(validator),
    }
}

/// Runs a refused token through Kafka's exchange: the challenge, the client's %x01, the failure.
fn assert_refused(store: &Tokens, token: &str) {
    let mut auth = authenticator(0);
    let now = Instant::now();
    let challenge = auth.authenticate(&client_first(token), store, now);
    assert_eq!(
        (
            challenge.error_code,
            challenge.auth_bytes.as_slice(),
            challenge.close
        ),
        (0, INVALID_TOKEN, false),
        "the error challenge"
    );
    let failed = auth.authenticate(b"\x01", store, now);
    assert_eq!(failed.error_code, codes::SASL_AUTHENTICATION_FAILED);
    assert_eq!(
        failed.error_message.as_deref(),
        Some(r#"{"status":"invalid_token"}"#)
    );
    assert!(failed.close);
    assert!(auth.admit(false, now).is_err());
}

#[test]
fn rs256_and_es256_tokens_authenticate_as_their_subject() {
    let s = secured();
    let es256 = sign(
        Algorithm::ES256,
        "ec-1",
        &s.idp.ec,
        claims("bob", json!({})),
    );
    for (token, user) in [(s.idp.rs256("alice", json!({})), "alice"), (es256, "bob")] {
        let mut auth = authenticator(0);
        let outcome = auth.authenticate(&client_first(&token), &s.store, Instant::now());
        assert_eq!(
            (outcome.error_code, outcome.close, outcome.auth_bytes.len()),
            (0, false, 0),
            "{outcome:?}"
        );
        assert_eq!(auth.session().principal, KafkaPrincipal::user(user));
        assert!(auth.admit(false, Instant::now()).is_ok());
    }
}

#[test]
fn the_session_ends_with_the_token_or_connections_max_reauth_ms_whichever_is_first() {
    let s = secured();
    let soon = s.idp.rs256("alice", json!({"exp": now_s() + 20}));
    let mut auth = authenticator(60_000);
    let outcome = auth.authenticate(&client_first(&soon), &s.store, Instant::now());
    assert!(
        (15_000..=20_000).contains(&outcome.session_lifetime_ms),
        "{}",
        outcome.session_lifetime_ms
    );
    let later = s.idp.rs256("alice", json!({}));
    let mut auth = authenticator(60_000);
    let outcome = auth.authenticate(&client_first(&later), &s.store, Instant::now());
    assert_eq!(outcome.session_lifetime_ms, 60_000);
}

#[test]
fn re_authentication_keeps_the_mechanism_it_started_with() {
    let s = secured();
    let mut auth = authenticator(60_000);
    let token = s.idp.rs256("alice", json!({}));
    let first = auth.authenticate(&client_first(&token), &s.store, Instant::now());
    assert_eq!(first.error_code, 0);
    // The same principal's password over PLAIN may not replace the token session (Kafka).
    assert_eq!(auth.handshake("PLAIN", 1).error_code, 0);
    let downgrade = auth.authenticate(b"\0alice\0alice-secret", &s.store, Instant::now());
    assert_eq!(downgrade.error_code, codes::SASL_AUTHENTICATION_FAILED);
    assert!(downgrade.close);
    assert!(downgrade
        .error_message
        .unwrap()
        .contains("not supported for re-authentication of mechanism 'OAUTHBEARER'"));
    // A fresh token over OAUTHBEARER does.
    let mut auth = authenticator(60_000);
    auth.authenticate(&client_first(&token), &s.store, Instant::now());
    assert_eq!(auth.handshake("OAUTHBEARER", 1).error_code, 0);
    let again = auth.authenticate(&client_first(&token), &s.store, Instant::now());
    assert_eq!((again.error_code, again.reauthenticated), (0, true));
}

#[test]
fn an_expired_token_gets_the_invalid_token_challenge_then_sasl_authentication_failed() {
    let s = secured();
    // Past exp by more than the 30 s skew.
    assert_refused(
        &s.store,
        &s.idp
            .rs256("alice", json!({"exp": now_s() - 60, "iat": now_s() - 3600})),
    );
    // Within the skew it is still accepted, as in Kafka.
    let mut auth = authenticator(0);
    let token = s.idp.rs256("alice", json!({"exp": now_s() - 5}));
    let outcome = auth.authenticate(&client_first(&token), &s.store, Instant::now());
    assert_eq!(outcome.error_code, 0);
    assert_eq!(outcome.auth_bytes.len(), 0);
}

#[test]
fn a_token_not_valid_yet_is_refused() {
    let s = secured();
    assert_refused(
        &s.store,
        &s.idp.rs256("alice", json!({"nbf": now_s() + 600})),
    );
    assert_refused(
        &s.store,
        &s.idp.rs256("alice", json!({"iat": now_s() + 600})),
    );
}

#[test]
fn a_wrong_signature_is_refused() {
    let s = secured();
    // Signed by a key the JWKS does not hold, under the kid of one it does.
    let forged = sign(
        Algorithm::ES256,
        "ec-1",
        &s.idp.impostor,
        claims("alice", json!({})),
    );
    assert_refused(&s.store, &forged);
    // A valid token with its claims swapped for another user's keeps the old signature.
    let valid = s.idp.rs256("alice", json!({}));
    let admin = s.idp.rs256("admin", json!({}));
    let mut parts: Vec<&str> = valid.split('.').collect();
    parts[1] = admin.split('.').nth(1).unwrap();
    assert_refused(&s.store, &parts.join("."));
    // An unknown kid.
    let unknown = sign(
        Algorithm::RS256,
        "rsa-2",
        &s.idp.rsa,
        claims("alice", json!({})),
    );
    assert_refused(&s.store, &unknown);
}

#[test]
fn a_wrong_or_missing_audience_or_issuer_is_refused() {
    let s = secured();
    for changes in [
        json!({"aud": "not-kafka"}),
        json!({"aud": null}),
        json!({"iss": "https://evil.example"}),
        json!({"iss": null}),
        json!({"sub": null}),
        json!({"exp": null}),
    ] {
        assert_refused(&s.store, &s.idp.rs256("alice", changes));
    }
}

#[test]
fn an_unsecured_token_is_refused_on_a_secured_listener() {
    let s = secured();
    assert_refused(&s.store, &unsecured_token(claims("alice", json!({}))));
    // Nor can a token pick HMAC with the RSA key's public parts as the secret.
    let hs256 = sign(
        Algorithm::HS256,
        "rsa-1",
        &EncodingKey::from_secret(s.idp.rsa_jwk["n"].as_str().unwrap().as_bytes()),
        claims("alice", json!({})),
    );
    assert_refused(&s.store, &hs256);
}

#[test]
fn a_rotated_key_is_found_by_reading_the_jwks_again() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [idp.rsa_jwk]}).to_string()).unwrap();
    // Without a backoff between re-reads, so that the test need not wait one out.
    let settings = SecuredSettings {
        jwks_retry_backoff_ms: 0,
        ..secured_settings(&jwks)
    };
    let store = Tokens(TokenValidator::new(&OAuthBearerSettings::Secured(settings)).unwrap());
    // The identity provider publishes the EC key, then signs with it.
    idp.publish(dir.path());
    let token = sign(
        Algorithm::ES256,
        "ec-1",
        &idp.ec,
        claims("carol", json!({})),
    );
    let mut auth = authenticator(0);
    let outcome = auth.authenticate(&client_first(&token), &store, Instant::now());
    assert_eq!((outcome.error_code, outcome.auth_bytes.len()), (0, 0));
}

#[test]
fn an_unsecured_listener_takes_unsigned_tokens_and_refuses_signed_ones() {
    let store = Tokens(
        TokenValidator::new(&OAuthBearerSettings::Unsecured(UnsecuredSettings {
            principal_claim_name: "sub".into(),
            scope_claim_name: "scope".into(),
            required_scope: Vec::new(),
            clock_skew_ms: 0,
        }))
        .unwrap(),
    );
    let mut auth = authenticator(0);
    let outcome = auth.authenticate(
        &client_first(&unsecured_token(claims("dev", json!({})))),
        &store,
        Instant::now(),
    );
    assert_eq!((outcome.error_code, outcome.auth_bytes.len()), (0, 0));
    assert_eq!(auth.session().principal, KafkaPrincipal::user("dev"));
    assert_refused(&store, &Idp::new().rs256("dev", json!({})));
}

#[test]
fn garbage_and_malformed_messages_fail_at_once_without_panicking() {
    let s = secured();
    let token = s.idp.rs256("alice", json!({}));
    for garbage in [
        Vec::new(),
        vec![0xff; 64],
        b"\x01".to_vec(),
        b"n,,\x01\x01".to_vec(),
        format!("y,,\x01auth=Bearer {token}\x01\x01").into_bytes(),
        format!("n,,\x01auth=Bearer {token}\x01").into_bytes(),
        format!("n,,\x01auth=Bearer {token}!\x01\x01").into_bytes(),
        format!("n,a=mallory,\x01auth=Bearer {token}\x01\x01").into_bytes(),
        b"n,,\x01auth=Bearer ...\x01\x01".to_vec(),
        b"n,,\x01auth=Bearer a.b.c.d.e\x01\x01".to_vec(),
    ] {
        let mut auth = authenticator(0);
        let now = Instant::now();
        let mut outcome = auth.authenticate(&garbage, &s.store, now);
        if !outcome.close {
            // A well-formed message with a bad token: the challenge, then the failure.
            assert_eq!(outcome.auth_bytes, INVALID_TOKEN, "{garbage:?}");
            outcome = auth.authenticate(b"\x01", &s.store, now);
        }
        assert_eq!(
            outcome.error_code,
            codes::SASL_AUTHENTICATION_FAILED,
            "{garbage:?}"
        );
        assert!(outcome.close);
        assert!(auth.admit(false, now).is_err(), "{garbage:?}");
    }
}

fn shared() -> &'static Secured {
    static SHARED: std::sync::OnceLock<Secured> = std::sync::OnceLock::new();
    SHARED.get_or_init(secured)
}

fn shared_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| shared().idp.rs256("alice", json!({})))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any bytes as the client's messages: no panic, and never authenticated.
    #[test]
    fn arbitrary_messages_never_authenticate(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
    ) {
        let mut auth = authenticator(0);
        let now = Instant::now();
        for message in &messages {
            if auth.authenticate(message, &shared().store, now).close {
                break;
            }
        }
        prop_assert!(auth.admit(false, now).is_err());
    }

    /// Messages shaped like a client-first message, with arbitrary authorization ids, tokens
    /// and extensions: no panic, and never authenticated.
    #[test]
    fn arbitrary_client_first_messages_never_authenticate(
        authzid in "(a=[a-z=,]{0,8})?",
        scheme in "(Bearer|bearer|Basic| )",
        token in "[A-Za-z0-9._\\- ]{0,200}",
        extensions in proptest::collection::vec(("[a-zA-Z]{0,6}", "[ -~]{0,12}"), 0..3),
    ) {
        let mut message = format!("n,{authzid},\x01auth={scheme} {token}\x01");
        for (key, value) in &extensions {
            message.push_str(&format!("{key}={value}\x01"));
        }
        message.push('\x01');
        let mut auth = authenticator(0);
        let now = Instant::now();
        let outcome = auth.authenticate(message.as_bytes(), &shared().store, now);
        if !outcome.close {
            auth.authenticate(b"\x01", &shared().store, now);
        }
        prop_assert!(auth.admit(false, now).is_err());
    }

    /// A valid token with any one byte changed is refused.
    #[test]
    fn a_token_with_one_byte_changed_is_refused(at in any::<prop::sample::Index>(), bit in 0u8..7) {
        let mut token = shared_token().as_bytes().to_vec();
        let at = at.index(token.len());
        token[at] ^= 1 << bit;
        let mut message = b"n,,\x01auth=Bearer ".to_vec();
        message.extend_from_slice(&token);
        message.extend_from_slice(b"\x01\x01");
        let mut auth = authenticator(0);
        let now = Instant::now();
        let outcome = auth.authenticate(&message, &shared().store, now);
        prop_assert!(outcome.close || outcome.auth_bytes == INVALID_TOKEN, "byte {} accepted", at);
        prop_assert!(auth.admit(false, now).is_err());
    }
}

// Over sockets: a broker with a secured OAUTHBEARER listener and the Rust client.

/// A broker with PLAINTEXT and a SASL_PLAINTEXT listener taking signed tokens.
async fn oauth_broker(dir: &Path, jwks: &Path, extra: &[&str]) -> RunningBroker {
    let mut overrides: Vec<String> = vec![
        "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into(),
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms=OAUTHBEARER".into(),
        "listener.name.sasl_plaintext.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler".into(),
        format!("sasl.oauthbearer.jwks.endpoint.url=file://{}", jwks.display()),
        format!("sasl.oauthbearer.expected.audience={AUDIENCE}"),
        format!("sasl.oauthbearer.expected.issuer={ISSUER}"),
        "group.initial.rebalance.delay.ms=0".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let settings = parse_overrides(&overrides).unwrap();
    let config = BrokerConfig::from_settings(&settings, None, Some(dir.join("data"))).unwrap();
    millrace_broker::start(config).await.unwrap()
}

fn token_client(broker: &RunningBroker, token_file: &Path) -> ClientConfig {
    ClientConfig::builder([broker.listener_addr("SASL_PLAINTEXT").unwrap().to_string()])
        .request_timeout(Duration::from_secs(10))
        .set("security.protocol", "SASL_PLAINTEXT")
        .unwrap()
        .set("sasl.mechanism", "OAUTHBEARER")
        .unwrap()
        .set(
            "sasl.oauthbearer.token.endpoint.url",
            &format!("file://{}", token_file.display()),
        )
        .unwrap()
        .build()
        .unwrap()
}

async fn create_topic(broker: &RunningBroker, topic: &str) {
    let admin = Admin::connect(
        ClientConfig::builder([broker.listener_addr("PLAINTEXT").unwrap().to_string()])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    admin
        .create_topic(millrace_client::admin::NewTopic::new(topic, 1))
        .await
        .unwrap();
}

async fn log_end(broker: &RunningBroker, topic: &str) -> i64 {
    let admin = Admin::connect(
        ClientConfig::builder([broker.listener_addr("PLAINTEXT").unwrap().to_string()])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let tp = TopicPartition::new(topic, 0);
    admin
        .list_offsets(&[(tp.clone(), OffsetSpec::Latest)])
        .await
        .unwrap()[&tp]
        .offset
}

fn metric(broker: &RunningBroker, name: &str) -> f64 {
    let text = String::from_utf8(broker.broker().metrics.encode(None)).unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn oauth_login(client: &mut TestClient, token: &str) -> SaslAuthenticateResponse {
    let handshake = client
        .call(
            1,
            &SaslHandshakeRequest::default().with_mechanism(s("OAUTHBEARER")),
        )
        .await;
    assert_eq!(handshake.error_code, 0);
    client
        .call(
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(client_first(token))),
        )
        .await
}

#[tokio::test]
async fn the_rust_client_with_a_file_token_produces_and_consumes_and_a_bad_token_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new();
    let jwks = idp.publish(dir.path());
    let broker = oauth_broker(dir.path(), &jwks, &[]).await;
    create_topic(&broker, "tokens").await;
    let token_file = dir.path().join("token");

    // Expired: the client reports an authentication failure and nothing is written.
    std::fs::write(
        &token_file,
        idp.rs256(
            "alice",
            json!({"exp": now_s() - 120, "iat": now_s() - 3600}),
        ),
    )
    .unwrap();
    let refused = Producer::connect(ProducerConfig::new(token_client(&broker, &token_file))).await;
    let error = match refused {
        Err(error) => error,
        Ok(producer) => producer
            .send(ProducerRecord::new("tokens", "sneaky"))
            .await
            .unwrap()
            .await
            .unwrap_err(),
    };
    assert!(
        matches!(error, ClientError::Authentication { ref reason, .. } if reason.contains("invalid_token")),
        "{error:?}"
    );
    assert_eq!(log_end(&broker, "tokens").await, 0);

    // Valid: produce and read back over the OAUTHBEARER listener.
    std::fs::write(&token_file, idp.rs256("alice", json!({}))).unwrap();
    let client = token_client(&broker, &token_file);
    let producer = Producer::connect(ProducerConfig::new(client.clone()))
        .await
        .unwrap();
    producer
        .send(ProducerRecord {
            partition: Some(0),
            ..ProducerRecord::new("tokens", "hello")
        })
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await;
    let mut config = ConsumerConfig::new(client);
    config.auto_offset_reset = AutoOffsetReset::Earliest;
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer
        .assign(&[TopicPartition::new("tokens", 0)])
        .unwrap();
    let record = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.value.as_deref(), Some(&b"hello"[..]));
    assert!(
        metric(
            &broker,
            "kafka_server_socket_server_metrics_failed_authentication_total"
        ) >= 1.0
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_with_its_token_unless_re_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new();
    let jwks = idp.publish(dir.path());
    // Kafka's default: connections.max.reauth.ms=0, so only the token limits the session.
    let broker = oauth_broker(
        dir.path(),
        &jwks,
        &["sasl.oauthbearer.clock.skew.seconds=0"],
    )
    .await;
    let addr = broker.listener_addr("SASL_PLAINTEXT").unwrap();
    let metadata = MetadataRequest::default().with_topics(Some(vec![]));

    let mut raw = TestClient::connect(addr).await;
    let short = idp.rs256("alice", json!({"exp": now_s() + 2}));
    let answer = oauth_login(&mut raw, &short).await;
    assert_eq!(answer.error_code, 0);
    assert!(
        (0..=2_000).contains(&answer.session_lifetime_ms) && answer.session_lifetime_ms > 0,
        "{}",
        answer.session_lifetime_ms
    );
    // Re-authenticating with a fresh token for the same subject extends the session...
    let again = oauth_login(&mut raw, &idp.rs256("alice", json!({}))).await;
    assert_eq!(again.error_code, 0);
    assert!(again.session_lifetime_ms > 3_000_000);
    tokio::time::sleep(Duration::from_millis(2_500)).await; // past the first token's exp
    assert!(raw.try_call(9, &metadata).await.is_some());
    // ...but a token for someone else cannot take the connection over.
    let other = oauth_login(&mut raw, &idp.rs256("mallory", json!({}))).await;
    assert_eq!(other.error_code, codes::SASL_AUTHENTICATION_FAILED);
    assert!(raw.is_closed().await);

    // Left to expire: the next request closes the connection.
    let mut raw = TestClient::connect(addr).await;
    let answer = oauth_login(&mut raw, &idp.rs256("alice", json!({"exp": now_s() + 1}))).await;
    assert_eq!(answer.error_code, 0);
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(answer.session_lifetime_ms).unwrap() + 300,
    ))
    .await;
    assert!(raw.try_call(9, &metadata).await.is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn the_rust_client_re_authenticates_on_the_same_connections_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new();
    let jwks = idp.publish(dir.path());
    let broker = oauth_broker(dir.path(), &jwks, &["connections.max.reauth.ms=2000"]).await;
    create_topic(&broker, "steady").await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, idp.rs256("alice", json!({}))).unwrap();
    let client = token_client(&broker, &token_file);

    let producer = Producer::connect(ProducerConfig::new(client.clone()))
        .await
        .unwrap();
    let mut config = ConsumerConfig::new(client);
    config.auto_offset_reset = AutoOffsetReset::Earliest;
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer
        .assign(&[TopicPartition::new("steady", 0)])
        .unwrap();
    let mut opened = None;

    // Six seconds of traffic: three sessions' worth for each connection.
    let start = Instant::now();
    let mut sent = 0usize;
    let mut received = Vec::new();
    while start.elapsed() < Duration::from_secs(6) {
        // The token file is renewed meanwhile; the next re-authentication reads it.
        if sent == 20 {
            std::fs::write(&token_file, idp.rs256("alice", json!({}))).unwrap();
        }
        producer
            .send(ProducerRecord {
                partition: Some(0),
                ..ProducerRecord::new("steady", format!("v{sent}"))
            })
            .await
            .unwrap()
            .await
            .unwrap();
        sent += 1;
        let record = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("the consumer keeps receiving")
            .unwrap();
        received.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        // The clients open their connections as they first need them: count from here on.
        opened.get_or_insert_with(|| {
            metric(
                &broker,
                "kafka_server_socket_server_metrics_connection_creation_total",
            )
        });
        tokio::time::sleep(Duration::from_millis(100)).await; // a steady trickle of traffic
    }
    let expected: Vec<String> = (0..sent).map(|i| format!("v{i}")).collect();
    assert_eq!(received, expected);
    let reauthentications = metric(
        &broker,
        "kafka_server_socket_server_metrics_successful_reauthentication_total",
    );
    assert!(
        reauthentications >= 2.0,
        "{reauthentications} re-authentications"
    );
    assert_eq!(
        metric(
            &broker,
            "kafka_server_socket_server_metrics_connection_creation_total"
        ),
        opened.unwrap(),
        "no connection was replaced"
    );
    assert_eq!(
        metric(
            &broker,
            "kafka_server_socket_server_metrics_failed_authentication_total"
        ),
        0.0
    );
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn the_authorizer_sees_the_tokens_subject_as_the_principal() {
    use millrace_client::admin::{
        AclBinding, AclOperation, AclPatternType, AclPermissionType, AclResourceType,
    };

    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new();
    let jwks = idp.publish(dir.path());
    let broker = oauth_broker(
        dir.path(),
        &jwks,
        &[
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            // The PLAINTEXT listener is the operators' here.
            "super.users=User:ANONYMOUS",
        ],
    )
    .await;
    create_topic(&broker, "granted").await;
    let admin = Admin::connect(
        ClientConfig::builder([broker.listener_addr("PLAINTEXT").unwrap().to_string()])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    admin
        .create_acls(&[AclBinding {
            resource_type: AclResourceType::Topic,
            resource_name: "granted".into(),
            pattern_type: AclPatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Write,
            permission: AclPermissionType::Allow,
        }])
        .await
        .unwrap();

    let send = |sub: &'static str| {
        let token_file = dir.path().join(format!("{sub}.token"));
        std::fs::write(&token_file, idp.rs256(sub, json!({}))).unwrap();
        let client = token_client(&broker, &token_file);
        async move {
            let producer = Producer::connect(ProducerConfig::new(client)).await?;
            let record = ProducerRecord {
                partition: Some(0),
                ..ProducerRecord::new("granted", sub)
            };
            let delivered = producer.send(record).await?.await;
            producer.close().await;
            delivered
        }
    };
    send("alice").await.unwrap();
    // mallory's token is valid, but User:mallory may write nothing: the idempotent producer's
    // InitProducerId (WRITE on some topic or IDEMPOTENT_WRITE, KIP-679) is refused.
    let refused = send("mallory").await.unwrap_err();
    assert_eq!(
        refused.kafka_error().map(|e| e.code()),
        Some(31),
        "CLUSTER_AUTHORIZATION_FAILED: {refused}"
    );
    assert_eq!(log_end(&broker, "granted").await, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn the_rust_clients_unsecured_tokens_pass_a_development_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new();
    let jwks = idp.publish(dir.path());
    let broker = oauth_broker(
        dir.path(),
        &jwks,
        &[
            "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,DEV://127.0.0.1:0",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,DEV:SASL_PLAINTEXT",
            "listener.name.dev.sasl.enabled.mechanisms=OAUTHBEARER",
            "listener.name.dev.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required ;",
        ],
    )
    .await;
    create_topic(&broker, "dev").await;
    let unsecured = |listener: &str| {
        ClientConfig::builder([broker.listener_addr(listener).unwrap().to_string()])
            .request_timeout(Duration::from_secs(10))
            .set("security.protocol", "SASL_PLAINTEXT")
            .unwrap()
            .set("sasl.mechanism", "OAUTHBEARER")
            .unwrap()
            .set("enable.sasl.oauthbearer.unsecure.jwt", "true")
            .unwrap()
            .set(
                "sasl.oauthbearer.config",
                "principal=dev scope=produce lifeSeconds=600",
            )
            .unwrap()
            .build()
            .unwrap()
    };
    let producer = Producer::connect(ProducerConfig::new(unsecured("DEV")))
        .await
        .unwrap();
    producer
        .send(ProducerRecord {
            partition: Some(0),
            ..ProducerRecord::new("dev", "unsigned")
        })
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await;
    // The secured listener refuses the same unsigned token.
    let refused = Producer::connect(ProducerConfig::new(unsecured("SASL_PLAINTEXT"))).await;
    assert!(
        matches!(refused, Err(ClientError::Authentication { .. })),
        "{:?}",
        refused.err()
    );
    assert_eq!(log_end(&broker, "dev").await, 1);
    broker.shutdown().await;
}
