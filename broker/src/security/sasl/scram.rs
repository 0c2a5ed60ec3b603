//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) on the server side, and the salted
//! credentials the metadata log stores (Kafka's UserScramCredentialRecord: salt, stored key,
//! server key, iterations; never the password).
//!
//! The exchange: client-first (`n,,n=user,r=cnonce`), server-first (`r=cnonce+snonce,s=salt,
//! i=iterations`), client-final (`c=biws,r=nonce,p=proof`), server-final (`v=signature`). No
//! channel binding: the GS2 flag must be `n`, as in Kafka. The proof is checked in constant
//! time; the nonce must be the one this exchange issued, so a client-final message replayed
//! from another exchange is refused.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};

use super::{constant_time_eq, CredentialStore, SaslStep};
use crate::security::principal::KafkaPrincipal;

/// Fewest iterations Kafka accepts for a credential.
pub const MIN_ITERATIONS: i32 = 4096;
/// Most iterations Kafka accepts (a bound on the work one login costs the broker).
pub const MAX_ITERATIONS: i32 = 16384;

/// The hash of a SCRAM mechanism, with Kafka's wire numbers (AlterUserScramCredentials).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (wire number 1).
    Sha256,
    /// SCRAM-SHA-512 (wire number 2).
    Sha512,
}

impl ScramMechanism {
    /// Kafka's number for the mechanism.
    pub fn wire(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// From Kafka's number (0 is UNKNOWN).
    pub fn from_wire(value: i8) -> Option<Self> {
        match value {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    /// Output length of the hash, in bytes.
    pub fn hash_len(self) -> usize {
        self.digest().output_len()
    }

    /// `Hi(password, salt, iterations)` of RFC 5802: PBKDF2 with this HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.hash_len()];
        let iterations = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2(), iterations, salt, password, &mut out);
        out
    }

    pub(crate) fn hmac_sign(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }
}

/// What the broker stores per user and mechanism.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The salt.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    // The keys are password equivalents for this broker: keep them out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential for a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: i32,
    ) -> Self {
        let client_key = mechanism.hmac_sign(salted_password, b"Client Key");
        ScramCredential {
            salt,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac_sign(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// The credential for a password, with a fresh random salt.
    pub fn from_password(mechanism: ScramMechanism, password: &str, iterations: i32) -> Self {
        let salt = random_bytes(32);
        let salted = mechanism.salted_password(
            password.as_bytes(),
            &salt,
            u32::try_from(iterations).unwrap_or(MIN_ITERATIONS as u32),
        );
        Self::from_salted_password(mechanism, &salted, salt, iterations)
    }
}

/// Random bytes from the system generator.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // The system RNG failing leaves zeroes; ring documents it does not fail on Linux once
    // getrandom is available, and a zero nonce part still differs per client nonce.
    let _ = ring::rand::SystemRandom::new().fill(&mut out);
    out
}

/// What Kafka answers when the user or the proof is wrong.
pub const INVALID_CREDENTIALS: &str =
    "Authentication failed during authentication due to invalid credentials with SASL mechanism";

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
}

enum State {
    ClientFirst,
    ClientFinal {
        user: String,
        credential: ScramCredential,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Finished,
}

impl ScramServer {
    /// A new exchange for `mechanism`.
    pub fn new(mechanism: ScramMechanism) -> Self {
        ScramServer {
            mechanism,
            state: State::ClientFirst,
        }
    }

    /// Feeds the next client message.
    pub fn step(&mut self, token: &[u8], store: &dyn CredentialStore) -> SaslStep {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::ClientFirst => self.client_first(token, store),
            State::ClientFinal {
                user,
                credential,
                nonce,
                client_first_bare,
                server_first,
            } => self.client_final(
                token,
                &user,
                &credential,
                &nonce,
                &client_first_bare,
                &server_first,
            ),
            State::Finished => failed(None, "SCRAM exchange already finished"),
        }
    }

    fn client_first(&mut self, token: &[u8], store: &dyn CredentialStore) -> SaslStep {
        let Ok(message) = std::str::from_utf8(token) else {
            return failed(None, "Invalid SCRAM client first message: not UTF-8");
        };
        let first = match parse_client_first(message) {
            Ok(first) => first,
            Err(reason) => {
                return failed(
                    None,
                    &format!("Invalid SCRAM client first message: {reason}"),
                )
            }
        };
        let Some(credential) = store.scram_credential(&first.user, self.mechanism) else {
            return failed(
                Some(&first.user),
                &format!("{INVALID_CREDENTIALS} {}", self.mechanism.name()),
            );
        };
        let nonce = format!("{}{}", first.nonce, BASE64.encode(random_bytes(24)));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let response = server_first.clone().into_bytes();
        self.state = State::ClientFinal {
            user: first.user,
            credential,
            nonce,
            client_first_bare: first.bare.to_string(),
            server_first,
        };
        SaslStep::Continue(response)
    }

    fn client_final(
        &mut self,
        token: &[u8],
        user: &str,
        credential: &ScramCredential,
        nonce: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> SaslStep {
        let invalid = |reason: &str| {
            failed(
                Some(user),
                &format!("Invalid SCRAM client final message: {reason}"),
            )
        };
        let Ok(message) = std::str::from_utf8(token) else {
            return invalid("not UTF-8");
        };
        let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
            return invalid("no proof");
        };
        let mut attributes = without_proof.split(',');
        // `c=` is the base64 of the GS2 header, `n,,` without authzid ("biws").
        let (Some(channel), Some(client_nonce)) = (attributes.next(), attributes.next()) else {
            return invalid("expected c=...,r=...");
        };
        let Some(channel) = channel.strip_prefix("c=") else {
            return invalid("expected c= first");
        };
        match BASE64.decode(channel) {
            Ok(header) if header.starts_with(b"n,") && header.ends_with(b",") => {}
            _ => return invalid("channel binding must be `n` (not supported)"),
        }
        // Kafka accepts a nonce that ends with the one it issued (librdkafka 2.0 sends its own
        // nonce before it); either way it holds this exchange's fresh server part, so a
        // client-final message from another exchange cannot match.
        if !client_nonce
            .strip_prefix("r=")
            .is_some_and(|sent| sent.ends_with(nonce))
        {
            return invalid("nonce does not match the exchange's");
        }
        let Ok(proof) = BASE64.decode(proof) else {
            return invalid("proof is not base64");
        };
        let mechanism = self.mechanism;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = mechanism.hmac_sign(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return failed(
                Some(user),
                &format!("{INVALID_CREDENTIALS} {}", mechanism.name()),
            );
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&mechanism.hash(&client_key), &credential.stored_key) {
            return failed(
                Some(user),
                &format!("{INVALID_CREDENTIALS} {}", mechanism.name()),
            );
        }
        let server_signature = mechanism.hmac_sign(&credential.server_key, auth_message.as_bytes());
        SaslStep::Done {
            principal: KafkaPrincipal::user(user),
            response: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        }
    }
}

fn failed(user: Option<&str>, reason: &str) -> SaslStep {
    SaslStep::Failed {
        user: user.map(str::to_string),
        reason: reason.to_string(),
    }
}

/// A parsed client-first message.
struct ClientFirst<'a> {
    user: String,
    nonce: &'a str,
    /// The message without its GS2 header (part of the AuthMessage).
    bare: &'a str,
}

fn parse_client_first(message: &str) -> Result<ClientFirst<'_>, String> {
    // GS2 header: `n,` then an optional `a=authzid`, then `,`.
    let Some(rest) = message.strip_prefix("n,") else {
        return Err("the GS2 flag must be `n` (channel binding is not supported)".into());
    };
    let Some((authzid, bare)) = rest.split_once(',') else {
        return Err("truncated GS2 header".into());
    };
    let authzid = match authzid {
        "" => None,
        other => match other.strip_prefix("a=") {
            Some(authzid) => Some(decode_saslname(authzid)?),
            None => return Err("bad authzid".into()),
        },
    };
    let mut attributes = bare.split(',');
    let user = match attributes.next().and_then(|a| a.strip_prefix("n=")) {
        Some(user) => decode_saslname(user)?,
        None => return Err("expected n=user first (m= extensions are not supported)".into()),
    };
    if user.is_empty() {
        return Err("empty user name".into());
    }
    let nonce = match attributes.next().and_then(|a| a.strip_prefix("r=")) {
        Some(nonce) if !nonce.is_empty() => nonce,
        _ => return Err("expected r=nonce".into()),
    };
    if !nonce.chars().all(|c| c.is_ascii_graphic() && c != ',') {
        return Err("nonce has characters outside printable ASCII".into());
    }
    if authzid.as_ref().is_some_and(|a| a != &user) {
        return Err("authorization id differs from the user name".into());
    }
    Ok(ClientFirst { user, nonce, bare })
}

/// RFC 5802 saslname: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("bad `=` escape in a name".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct One(ScramCredential);

    impl CredentialStore for One {
        fn plain_password(&self, _: &str) -> Option<String> {
            None
        }
        fn scram_credential(&self, user: &str, _: ScramMechanism) -> Option<ScramCredential> {
            (user == "user").then(|| self.0.clone())
        }
    }

    /// RFC 7677's SCRAM-SHA-256 example, with the server nonce replaced by ours.
    #[test]
    fn rfc_7677_credentials_verify_a_proof_computed_the_rfc_way() {
        let mechanism = ScramMechanism::Sha256;
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = mechanism.salted_password(b"pencil", &salt, 4096);
        let store = One(ScramCredential::from_salted_password(
            mechanism, &salted, salt, 4096,
        ));
        let mut server = ScramServer::new(mechanism);
        let SaslStep::Continue(server_first) =
            server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &store)
        else {
            panic!("expected server-first")
        };
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
        assert!(server_first.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
        let nonce = &server_first[2..server_first.find(",s=").unwrap()];
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},{without_proof}");
        let client_key = mechanism.hmac_sign(&salted, b"Client Key");
        let signature = mechanism.hmac_sign(&mechanism.hash(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let last = format!("{without_proof},p={}", BASE64.encode(proof));
        match server.step(last.as_bytes(), &store) {
            SaslStep::Done {
                principal,
                response,
            } => {
                assert_eq!(principal.to_string(), "User:user");
                let server_key = mechanism.hmac_sign(&salted, b"Server Key");
                let expected = mechanism.hmac_sign(&server_key, auth.as_bytes());
                assert_eq!(
                    response,
                    format!("v={}", BASE64.encode(expected)).into_bytes()
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn saslnames_unescape_and_bad_escapes_fail() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(decode_saslname("a=x").is_err());
        assert!(decode_saslname("a=").is_err());
    }

    #[test]
    fn channel_binding_and_malformed_first_messages_are_refused() {
        for bad in [
            "p=tls-unique,,n=user,r=x",
            "y,,n=user,r=x",
            "n,,r=x",
            "n,,n=user",
            "n,,n=,r=x",
            "n,a=other,n=user,r=x",
        ] {
            assert!(parse_client_first(bad).is_err(), "{bad}");
        }
    }
}
