//! Properties of the broker's SASL: whatever bytes a client sends in SaslHandshake and
//! SaslAuthenticate, nothing panics and nothing authenticates without the password; in SCRAM,
//! a truncated, tampered or replayed client-final message and a wrong nonce are refused.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use millrace_broker::config::SecurityProtocol;
use millrace_broker::security::authenticator::codes;
use millrace_broker::security::config::{ListenerSecurity, SaslSettings};
use millrace_broker::security::sasl::{CredentialStore, SaslExchange, SaslStep};
use millrace_broker::security::{
    Authenticator, SaslMechanism, ScramCredential, ScramMechanism, Session,
};
use proptest::prelude::*;
use ring::{digest, hmac};

const PASSWORD: &str = "pencil";

/// One PLAIN user and one SCRAM user (both mechanisms), `user`/`pencil`.
struct Users {
    sha256: ScramCredential,
    sha512: ScramCredential,
}

impl Users {
    fn new() -> Self {
        Users {
            sha256: ScramCredential::from_password(ScramMechanism::Sha256, PASSWORD, 4096),
            sha512: ScramCredential::from_password(ScramMechanism::Sha512, PASSWORD, 4096),
        }
    }
}

impl CredentialStore for Users {
    fn plain_password(&self, user: &str) -> Option<String> {
        (user == "user").then(|| PASSWORD.to_string())
    }
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        (user == "user").then(|| match mechanism {
            ScramMechanism::Sha256 => self.sha256.clone(),
            ScramMechanism::Sha512 => self.sha512.clone(),
        })
    }
}

fn users() -> &'static Users {
    static USERS: std::sync::OnceLock<Users> = std::sync::OnceLock::new();
    USERS.get_or_init(Users::new)
}

fn authenticator() -> Authenticator {
    let listener = ListenerSecurity {
        name: "SASL_PLAINTEXT".into(),
        protocol: SecurityProtocol::SaslPlaintext,
        ssl: None,
        sasl: Some(SaslSettings {
            enabled_mechanisms: vec![
                SaslMechanism::Plain,
                SaslMechanism::ScramSha256,
                SaslMechanism::ScramSha512,
            ],
            plain_users: BTreeMap::new(),
            oauthbearer: None,
        }),
        connections_max_reauth_ms: 0,
    };
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    Authenticator::new(
        &listener,
        Session {
            principal: millrace_broker::security::KafkaPrincipal::anonymous(),
            listener_name: "SASL_PLAINTEXT".into(),
            security_protocol: SecurityProtocol::SaslPlaintext,
            client_address: peer,
            sasl_mechanism: None,
        },
    )
}

/// A correct SCRAM client for the tests (RFC 5802), SHA-256.
fn client_final(server_first: &str, client_first_bare: &str, password: &str) -> String {
    let mut nonce = "";
    let mut salt = Vec::new();
    let mut iterations = 0u32;
    for attribute in server_first.split(',') {
        if let Some(v) = attribute.strip_prefix("r=") {
            nonce = v;
        } else if let Some(v) = attribute.strip_prefix("s=") {
            salt = BASE64.decode(v).unwrap();
        } else if let Some(v) = attribute.strip_prefix("i=") {
            iterations = v.parse().unwrap();
        }
    }
    let salted = ScramMechanism::Sha256.salted_password(password.as_bytes(), &salt, iterations);
    let sign = |key: &[u8], data: &[u8]| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
            .as_ref()
            .to_vec()
    };
    let client_key = sign(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = sign(stored_key.as_ref(), auth.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    format!("{without_proof},p={}", BASE64.encode(proof))
}

/// Runs SCRAM-SHA-256 up to the server-first message.
fn scram_first(exchange: &mut SaslExchange, client_nonce: &str) -> (String, String) {
    let bare = format!("n=user,r={client_nonce}");
    match exchange.step(format!("n,,{bare}").as_bytes(), users()) {
        SaslStep::Continue(first) => (String::from_utf8(first).unwrap(), bare),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_correct_scram_exchange_authenticates() {
    let mut exchange = SaslExchange::start(SaslMechanism::ScramSha256);
    let (server_first, bare) = scram_first(&mut exchange, "abcdef");
    let last = client_final(&server_first, &bare, PASSWORD);
    assert!(matches!(
        exchange.step(last.as_bytes(), users()),
        SaslStep::Done { .. }
    ));
}

#[test]
fn a_client_final_replayed_into_another_exchange_is_refused() {
    let mut first = SaslExchange::start(SaslMechanism::ScramSha256);
    let (server_first, bare) = scram_first(&mut first, "abcdef");
    let recorded = client_final(&server_first, &bare, PASSWORD);
    assert!(matches!(
        first.step(recorded.as_bytes(), users()),
        SaslStep::Done { .. }
    ));
    // The same client-first, then the recorded client-final: the server nonce differs.
    let mut second = SaslExchange::start(SaslMechanism::ScramSha256);
    let (other_first, _) = scram_first(&mut second, "abcdef");
    assert_ne!(server_first, other_first);
    assert!(matches!(
        second.step(recorded.as_bytes(), users()),
        SaslStep::Failed { .. }
    ));
    // And a finished exchange takes nothing more.
    assert!(matches!(
        first.step(recorded.as_bytes(), users()),
        SaslStep::Failed { .. }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any SaslHandshake mechanism string and any SaslAuthenticate bytes: no panic, and
    /// never authenticated.
    #[test]
    fn arbitrary_handshake_and_tokens_never_authenticate(
        mechanism in prop_oneof![
            Just("PLAIN".to_string()),
            Just("SCRAM-SHA-256".to_string()),
            Just("SCRAM-SHA-512".to_string()),
            ".{0,24}",
        ],
        version in 0i16..2,
        tokens in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
    ) {
        let mut auth = authenticator();
        let handshake = auth.handshake(&mechanism, version);
        let now = Instant::now();
        for token in &tokens {
            let outcome = auth.authenticate(token, users(), now);
            if outcome.close {
                break;
            }
        }
        if handshake.error_code != 0 {
            prop_assert!(handshake.close);
        }
        prop_assert!(auth.admit(false, now).is_err(), "authenticated by arbitrary bytes");
    }

    /// Every strict prefix of a valid client-final message is refused, and so is the message
    /// with any one byte changed.
    #[test]
    fn truncated_or_tampered_client_final_is_refused(cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut exchange = SaslExchange::start(SaslMechanism::ScramSha256);
        let (server_first, bare) = scram_first(&mut exchange, "nonce123");
        let last = client_final(&server_first, &bare, PASSWORD).into_bytes();
        let truncated = &last[..cut.index(last.len())];
        let refused = matches!(exchange.step(truncated, users()), SaslStep::Failed { .. });
        prop_assert!(refused, "a truncated client-final message was accepted");

        let mut exchange = SaslExchange::start(SaslMechanism::ScramSha256);
        let (server_first, bare) = scram_first(&mut exchange, "nonce123");
        let mut tampered = client_final(&server_first, &bare, PASSWORD).into_bytes();
        let at = flip.index(tampered.len());
        tampered[at] ^= 1 << bit;
        // Any change to c=, r= or p= (or the separators) must fail.
        let refused = matches!(exchange.step(&tampered, users()), SaslStep::Failed { .. });
        prop_assert!(refused, "tampered message accepted at byte {}", at);
    }

    /// A client-final message with a nonce other than the one the server issued is refused,
    /// even with a proof computed correctly for that nonce.
    #[test]
    fn a_wrong_nonce_is_refused(suffix in "[A-Za-z0-9+/]{1,16}") {
        let mut exchange = SaslExchange::start(SaslMechanism::ScramSha256);
        let (server_first, bare) = scram_first(&mut exchange, "nonce123");
        let forged_first = server_first.replacen(",s=", &format!("{suffix},s="), 1);
        let last = client_final(&forged_first, &bare, PASSWORD);
        let refused = matches!(exchange.step(last.as_bytes(), users()), SaslStep::Failed { .. });
        prop_assert!(refused, "a client-final message with a wrong nonce was accepted");
    }

    /// PLAIN with any password but the right one fails with SASL_AUTHENTICATION_FAILED.
    #[test]
    fn plain_refuses_every_wrong_password(password in ".{0,40}") {
        prop_assume!(password != PASSWORD);
        let mut auth = authenticator();
        prop_assert_eq!(auth.handshake("PLAIN", 1).error_code, 0);
        let outcome = auth.authenticate(format!("\0user\0{password}").as_bytes(), users(), Instant::now());
        prop_assert_eq!(outcome.error_code, codes::SASL_AUTHENTICATION_FAILED);
        prop_assert!(outcome.close);
    }
}
