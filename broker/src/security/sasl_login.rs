//! How this node logs in with SASL to another node: the replica fetchers and coordinators to
//! the other brokers (`sasl.mechanism.inter.broker.protocol`), and every member to the
//! controllers (`sasl.mechanism.controller.protocol`). PLAIN or SCRAM (Kafka's default GSSAPI is
//! not supported, so PLAIN is the default), with the `username`/`password` options of the
//! listener's JAAS line for that mechanism, e.g.
//! `listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="...";`.
//!
//! The exchange is sans-IO ([`LoginExchange`]): the Kafka-protocol connection and the
//! controller protocol carry its tokens each in their own frames.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::jaas::parse_jaas_config;
use super::sasl::scram::random_bytes;
use super::{SaslMechanism, ScramMechanism};

/// A login's credentials and mechanism.
#[derive(Clone)]
pub struct SaslLogin {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// This node's user name.
    pub username: String,
    password: String,
}

impl std::fmt::Debug for SaslLogin {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a login (or the connection settings around it) cannot be configured: (setting,
/// reason).
pub type LoginSettingError = (String, String);

impl SaslLogin {
    /// The login for connections to `listener`: the mechanism named by `mechanism_setting`
    /// (PLAIN when unset), and the credentials of the listener's JAAS line for it.
    pub fn resolve(
        settings: &BTreeMap<String, String>,
        listener: &str,
        mechanism_setting: &str,
    ) -> Result<Self, LoginSettingError> {
        let prefix = format!("listener.name.{}.", listener.to_lowercase());
        let lookup = super::config::Lookup::new(settings, listener);
        let get = |name: &str| lookup.get(name).map(|(_, value)| value);
        let mechanism_name = settings
            .get(mechanism_setting)
            .map_or("PLAIN", String::as_str);
        let mechanism = SaslMechanism::parse(mechanism_name)
            .filter(|m| {
                matches!(
                    m,
                    SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512
                )
            })
            .ok_or_else(|| {
                (
                    mechanism_setting.to_string(),
                    format!("`{mechanism_name}`: a node logs in to the others with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                )
            })?;
        let jaas_name = format!("{}.sasl.jaas.config", mechanism.name().to_lowercase());
        let jaas = get(&jaas_name).or_else(|| get("sasl.jaas.config")).ok_or_else(|| {
            (
                format!("{prefix}{jaas_name}"),
                format!("listener {listener} speaks SASL: give this node's username and password in its JAAS line"),
            )
        })?;
        let entry =
            parse_jaas_config(jaas).map_err(|e| (format!("{prefix}{jaas_name}"), e.to_string()))?;
        let (Some(username), Some(password)) =
            (entry.options.get("username"), entry.options.get("password"))
        else {
            return Err((
                format!("{prefix}{jaas_name}"),
                "needs username=\"...\" password=\"...\": the credentials this node logs in to the others with".to_string(),
            ));
        };
        Ok(SaslLogin {
            mechanism,
            username: username.clone(),
            password: password.clone(),
        })
    }

    /// Starts a login: the exchange, and the first token to send.
    pub fn begin(&self) -> (LoginExchange, Vec<u8>) {
        let scram = match self.mechanism {
            SaslMechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            SaslMechanism::ScramSha512 => Some(ScramMechanism::Sha512),
            _ => None,
        };
        match scram {
            None => (
                LoginExchange::Plain,
                format!("\0{}\0{}", self.username, self.password).into_bytes(),
            ),
            Some(scram) => {
                let (client, first) = ScramClient::start(scram, &self.username, &self.password);
                (
                    LoginExchange::Scram(Box::new(client), ScramStage::First),
                    first,
                )
            }
        }
    }
}

/// Where a SCRAM login is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramStage {
    /// The client-first message was sent.
    First,
    /// The proof was sent.
    Proof,
}

/// One login in progress, fed the server's answers.
pub enum LoginExchange {
    /// PLAIN: one token; the server's (empty) answer ends it.
    Plain,
    /// SCRAM: client-first, then the proof, then the server's signature is checked.
    Scram(Box<ScramClient>, ScramStage),
}

impl LoginExchange {
    /// Takes the server's answer to the last token: the next token to send, or `None` when the
    /// login is complete (and, for SCRAM, the server proved it knows the credential too).
    pub fn next(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            LoginExchange::Plain => Ok(None),
            LoginExchange::Scram(client, stage @ ScramStage::First) => {
                let proof = client.respond(server)?;
                *stage = ScramStage::Proof;
                Ok(Some(proof))
            }
            LoginExchange::Scram(client, ScramStage::Proof) => client.verify(server).map(|()| None),
        }
    }
}

/// The client side of a SCRAM exchange (RFC 5802), for this node's logins to the others.
pub struct ScramClient {
    mechanism: ScramMechanism,
    nonce: String,
    client_first_bare: String,
    password: String,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange; returns the client and its first message.
    pub fn start(mechanism: ScramMechanism, username: &str, password: &str) -> (Self, Vec<u8>) {
        let nonce = BASE64.encode(random_bytes(24));
        let user = username.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={nonce}");
        let first = format!("n,,{client_first_bare}").into_bytes();
        (
            ScramClient {
                mechanism,
                nonce,
                client_first_bare,
                password: password.to_string(),
                server_signature: None,
            },
            first,
        )
    }

    /// Answers the server's first message with the proof.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "the server's first SCRAM message is not UTF-8".to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = BASE64.decode(v).ok(),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("malformed SCRAM server message: {server_first}"));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's SCRAM nonce does not extend ours".to_string());
        }
        if iterations < super::sasl::scram::MIN_ITERATIONS as u32 {
            return Err(format!(
                "the server asks for only {iterations} SCRAM iterations"
            ));
        }
        let m = self.mechanism;
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac_sign(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = m.hmac_sign(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac_sign(&salted, b"Server Key");
        self.server_signature = Some(m.hmac_sign(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message: it must prove it knows the credential too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(server_final);
        if let Some(error) = text.strip_prefix("e=") {
            return Err(format!("the broker refused the login: {error}"));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.trim()).ok())
            .ok_or_else(|| "malformed SCRAM server-final message".to_string())?;
        if self.server_signature.as_deref() == Some(signature.as_slice()) {
            Ok(())
        } else {
            Err("the broker's SCRAM signature is wrong: it does not know this user".to_string())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::security::sasl::scram::{ScramCredential, ScramServer};
    use crate::security::sasl::{CredentialStore, SaslStep};

    struct One(ScramCredential);
    impl CredentialStore for One {
        fn plain_password(&self, _user: &str) -> Option<String> {
            None
        }
        fn scram_credential(&self, user: &str, _m: ScramMechanism) -> Option<ScramCredential> {
            (user == "broker").then(|| self.0.clone())
        }
    }

    #[test]
    fn the_client_logs_in_to_our_server_and_checks_its_signature() {
        for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let store = One(ScramCredential::from_password(m, "s3cret", 4096));
            let mut server = ScramServer::new(m);
            let (mut client, first) = ScramClient::start(m, "broker", "s3cret");
            let SaslStep::Continue(server_first) = server.step(&first, &store) else {
                panic!("server refused the first message")
            };
            let last = client.respond(&server_first).unwrap();
            let SaslStep::Done { response, .. } = server.step(&last, &store) else {
                panic!("server refused the proof")
            };
            client.verify(&response).unwrap();
            assert!(client.verify(b"v=AAAA").is_err());
        }
    }

    #[test]
    fn a_wrong_password_is_refused_by_the_server() {
        let m = ScramMechanism::Sha256;
        let store = One(ScramCredential::from_password(m, "right", 4096));
        let mut server = ScramServer::new(m);
        let (mut client, first) = ScramClient::start(m, "broker", "wrong");
        let SaslStep::Continue(server_first) = server.step(&first, &store) else {
            panic!("server refused the first message")
        };
        let last = client.respond(&server_first).unwrap();
        assert!(!matches!(server.step(&last, &store), SaslStep::Done { .. }));
    }

    #[test]
    fn a_server_nonce_not_extending_ours_is_refused() {
        let (mut client, _) = ScramClient::start(ScramMechanism::Sha256, "b", "p");
        let err = client.respond(b"r=other,s=c2FsdA==,i=4096").unwrap_err();
        assert!(err.contains("nonce"), "{err}");
    }
}
