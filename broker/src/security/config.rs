//! The security settings of each listener, with Kafka's names: `ssl.*` and `sasl.*`, each
//! overridable per listener as `listener.name.<lower-case name>.<setting>` (and the JAAS line
//! per mechanism as `listener.name.<name>.<mechanism>.sasl.jaas.config`), as in Kafka.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::jaas::{parse_jaas_config, PLAIN_LOGIN_MODULE};
use super::oauthbearer::{self, OAuthBearerSettings};
use super::sasl::SaslMechanism;
use crate::config::{invalid, ConfigError, Listener, SecurityProtocol};

/// The settings this module reads (globally, or after `listener.name.<name>.`).
const SETTINGS: &[&str] = &[
    SSL_KEYSTORE_TYPE,
    SSL_KEYSTORE_LOCATION,
    SSL_TRUSTSTORE_TYPE,
    SSL_TRUSTSTORE_LOCATION,
    SSL_CLIENT_AUTH,
    SASL_ENABLED_MECHANISMS,
    SASL_JAAS_CONFIG,
    CONNECTIONS_MAX_REAUTH_MS,
];
const SSL_KEYSTORE_TYPE: &str = "ssl.keystore.type";
const SSL_KEYSTORE_LOCATION: &str = "ssl.keystore.location";
const SSL_TRUSTSTORE_TYPE: &str = "ssl.truststore.type";
const SSL_TRUSTSTORE_LOCATION: &str = "ssl.truststore.location";
const SSL_CLIENT_AUTH: &str = "ssl.client.auth";
const SASL_ENABLED_MECHANISMS: &str = "sasl.enabled.mechanisms";
const SASL_JAAS_CONFIG: &str = "sasl.jaas.config";
/// `connections.max.reauth.ms` (KIP-368): how long a SASL session lasts; 0 means forever.
pub const CONNECTIONS_MAX_REAUTH_MS: &str = "connections.max.reauth.ms";

/// Whether `name` is a security setting (global or per listener) this module reads.
pub fn is_security_setting(name: &str) -> bool {
    if SETTINGS.contains(&name) || oauthbearer::is_oauthbearer_setting(name) {
        return true;
    }
    let Some(rest) = name.strip_prefix("listener.name.") else {
        return false;
    };
    let Some((_, setting)) = rest.split_once('.') else {
        return false;
    };
    if SETTINGS.contains(&setting) {
        return true;
    }
    // `<mechanism>.sasl.jaas.config`.
    setting.split_once('.').is_some_and(|(mechanism, rest)| {
        rest == SASL_JAAS_CONFIG && SaslMechanism::parse(mechanism).is_some()
    })
}

/// `ssl.client.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client must present a certificate the truststore vouches for.
    Required,
    /// A client may present one; if it does, it must be valid.
    Requested,
    /// Client certificates are not asked for.
    None,
}

/// A TLS listener's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslSettings {
    /// `ssl.keystore.location`: one PEM file with the private key and its certificate chain.
    pub keystore_location: PathBuf,
    /// `ssl.truststore.location`: PEM certificates of the CAs client certificates chain to.
    pub truststore_location: Option<PathBuf>,
    /// `ssl.client.auth`.
    pub client_auth: ClientAuth,
}

/// A SASL listener's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslSettings {
    /// `sasl.enabled.mechanisms`, in the order given.
    pub enabled_mechanisms: Vec<SaslMechanism>,
    /// PLAIN users and passwords from the PLAIN JAAS line.
    pub plain_users: BTreeMap<String, String>,
    /// How OAUTHBEARER tokens are validated, when OAUTHBEARER is enabled.
    pub oauthbearer: Option<OAuthBearerSettings>,
}

impl std::fmt::Debug for SaslSettings {
    // Never print the passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("enabled_mechanisms", &self.enabled_mechanisms)
            .field("plain_users", &self.plain_users.keys().collect::<Vec<_>>())
            .field("oauthbearer", &self.oauthbearer)
            .finish()
    }
}

/// What one listener asks of its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSecurity {
    /// The listener's name.
    pub name: String,
    /// Its protocol (`listener.security.protocol.map`).
    pub protocol: SecurityProtocol,
    /// TLS, for SSL and SASL_SSL.
    pub ssl: Option<SslSettings>,
    /// SASL, for SASL_PLAINTEXT and SASL_SSL.
    pub sasl: Option<SaslSettings>,
    /// `connections.max.reauth.ms`; 0: sessions never expire.
    pub connections_max_reauth_ms: u64,
}

impl ListenerSecurity {
    /// A PLAINTEXT listener.
    pub fn plaintext(name: &str) -> Self {
        ListenerSecurity {
            name: name.to_string(),
            protocol: SecurityProtocol::Plaintext,
            ssl: None,
            sasl: None,
            connections_max_reauth_ms: 0,
        }
    }
}

/// Resolves the security settings of each listener in `listeners`.
pub fn resolve(
    settings: &BTreeMap<String, String>,
    listeners: &[&Listener],
    protocols: &BTreeMap<String, SecurityProtocol>,
) -> Result<BTreeMap<String, ListenerSecurity>, ConfigError> {
    let mut out = BTreeMap::new();
    for listener in listeners {
        let protocol = protocols
            .get(&listener.name)
            .copied()
            .unwrap_or(SecurityProtocol::Plaintext);
        let lookup = Lookup::new(settings, &listener.name);
        let ssl = match protocol {
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl => Some(ssl_settings(&lookup)?),
            _ => None,
        };
        let sasl = match protocol {
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => {
                Some(sasl_settings(&lookup)?)
            }
            _ => None,
        };
        let connections_max_reauth_ms = match lookup.get(CONNECTIONS_MAX_REAUTH_MS) {
            Some((name, value)) => value
                .trim()
                .parse::<u64>()
                .map_err(|e| invalid(&name, value, e.to_string()))?,
            None => 0,
        };
        out.insert(
            listener.name.clone(),
            ListenerSecurity {
                name: listener.name.clone(),
                protocol,
                ssl,
                sasl,
                connections_max_reauth_ms,
            },
        );
    }
    Ok(out)
}

/// Finds a setting per listener first, then globally; returns the name it was found under.
pub(crate) struct Lookup<'a> {
    settings: &'a BTreeMap<String, String>,
    prefix: String,
}

impl<'a> Lookup<'a> {
    /// The settings of listener `name` (`listener.name.<lower-case name>.<setting>`, else
    /// `<setting>`).
    pub(crate) fn new(settings: &'a BTreeMap<String, String>, name: &str) -> Self {
        Lookup {
            settings,
            prefix: format!("listener.name.{}.", name.to_ascii_lowercase()),
        }
    }

    /// The value of `setting` for the listener and the name it was found under.
    pub(crate) fn get(&self, setting: &str) -> Option<(String, &'a str)> {
        let prefixed = format!("{}{setting}", self.prefix);
        if let Some(value) = self.settings.get(&prefixed) {
            return Some((prefixed, value.as_str()));
        }
        self.settings
            .get(setting)
            .map(|value| (setting.to_string(), value.as_str()))
    }
}

fn ssl_settings(lookup: &Lookup<'_>) -> Result<SslSettings, ConfigError> {
    for setting in [SSL_KEYSTORE_TYPE, SSL_TRUSTSTORE_TYPE] {
        if let Some((name, value)) = lookup.get(setting) {
            if !value.trim().eq_ignore_ascii_case("PEM") {
                return Err(ConfigError::Unsupported {
                    name,
                    value: value.to_string(),
                    what: "only PEM stores".into(),
                });
            }
        }
    }
    let keystore_location = match lookup.get(SSL_KEYSTORE_LOCATION) {
        Some((_, value)) => PathBuf::from(value.trim()),
        None => {
            return Err(ConfigError::Missing {
                name: format!("{}{SSL_KEYSTORE_LOCATION}", lookup.prefix),
                reason: "a TLS listener needs its key and certificate chain (one PEM file, \
                         ssl.keystore.type=PEM)"
                    .into(),
            })
        }
    };
    let truststore_location = lookup
        .get(SSL_TRUSTSTORE_LOCATION)
        .map(|(_, value)| PathBuf::from(value.trim()));
    let client_auth = match lookup.get(SSL_CLIENT_AUTH) {
        None => ClientAuth::None,
        Some((name, value)) => match value.trim().to_ascii_lowercase().as_str() {
            "required" => ClientAuth::Required,
            "requested" => ClientAuth::Requested,
            "none" => ClientAuth::None,
            _ => {
                return Err(invalid(
                    &name,
                    value,
                    "expected required, requested or none",
                ))
            }
        },
    };
    if client_auth != ClientAuth::None && truststore_location.is_none() {
        return Err(ConfigError::Missing {
            name: format!("{}{SSL_TRUSTSTORE_LOCATION}", lookup.prefix),
            reason: "ssl.client.auth asks for client certificates, which are checked against \
                     the truststore"
                .into(),
        });
    }
    Ok(SslSettings {
        keystore_location,
        truststore_location,
        client_auth,
    })
}

fn sasl_settings(lookup: &Lookup<'_>) -> Result<SaslSettings, ConfigError> {
    let enabled_mechanisms = match lookup.get(SASL_ENABLED_MECHANISMS) {
        Some((name, value)) => {
            let mut mechanisms = Vec::new();
            for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                match SaslMechanism::parse(item) {
                    Some(mechanism) if !mechanisms.contains(&mechanism) => {
                        mechanisms.push(mechanism)
                    }
                    Some(_) => {}
                    None => {
                        return Err(ConfigError::Unsupported {
                            name,
                            value: value.to_string(),
                            what: format!(
                                "SASL mechanism {item} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER are)"
                            ),
                        })
                    }
                }
            }
            if mechanisms.is_empty() {
                return Err(invalid(&name, value, "expected at least one mechanism"));
            }
            mechanisms
        }
        None => vec![
            SaslMechanism::ScramSha512,
            SaslMechanism::ScramSha256,
            SaslMechanism::Plain,
        ],
    };
    // Kafka reads the PLAIN users from the listener's `plain.sasl.jaas.config`, then from the
    // listener's or the broker's `sasl.jaas.config`.
    let jaas = lookup
        .settings
        .get_key_value(&format!("{}plain.{SASL_JAAS_CONFIG}", lookup.prefix))
        .map(|(k, v)| (k.clone(), v.as_str()))
        .or_else(|| lookup.get(SASL_JAAS_CONFIG));
    let mut plain_users = BTreeMap::new();
    if let Some((name, value)) = jaas {
        let entry = parse_jaas_config(value).map_err(|e| ConfigError::InvalidValue {
            name: name.clone(),
            // The line holds passwords: never echo it.
            value: "<hidden>".into(),
            reason: e.to_string(),
        })?;
        if entry.module == PLAIN_LOGIN_MODULE {
            plain_users = entry.plain_users();
        }
    }
    let oauthbearer = if enabled_mechanisms.contains(&SaslMechanism::OAuthBearer) {
        Some(oauthbearer::settings::resolve(
            lookup.settings,
            &lookup.prefix,
        )?)
    } else {
        None
    };
    Ok(SaslSettings {
        enabled_mechanisms,
        plain_users,
        oauthbearer,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn listener(name: &str) -> Listener {
        Listener {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 0,
        }
    }

    fn settings(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn per_listener_settings_win_over_global_ones() {
        let settings = settings(&[
            ("ssl.keystore.location", "/global.pem"),
            ("ssl.truststore.location", "/ca.pem"),
            ("ssl.client.auth", "required"),
            ("listener.name.external.ssl.client.auth", "none"),
            (
                "listener.name.external.plain.sasl.jaas.config",
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="pw";"#,
            ),
            ("listener.name.external.sasl.enabled.mechanisms", "PLAIN"),
        ]);
        let protocols = BTreeMap::from([
            ("EXTERNAL".to_string(), SecurityProtocol::SaslSsl),
            ("MTLS".to_string(), SecurityProtocol::Ssl),
        ]);
        let (external, mtls) = (listener("EXTERNAL"), listener("MTLS"));
        let resolved = resolve(&settings, &[&external, &mtls], &protocols).unwrap();
        let external = &resolved["EXTERNAL"];
        assert_eq!(external.ssl.as_ref().unwrap().client_auth, ClientAuth::None);
        let sasl = external.sasl.as_ref().unwrap();
        assert_eq!(sasl.enabled_mechanisms, [SaslMechanism::Plain]);
        assert_eq!(sasl.plain_users["alice"], "pw");
        assert!(!format!("{sasl:?}").contains("pw\""));
        assert_eq!(
            resolved["MTLS"].ssl.as_ref().unwrap().client_auth,
            ClientAuth::Required
        );
    }

    #[test]
    fn unsupported_stores_and_mechanisms_are_refused() {
        let protocols = BTreeMap::from([("SASL_SSL".to_string(), SecurityProtocol::SaslSsl)]);
        let l = listener("SASL_SSL");
        for bad in [
            &[
                ("ssl.keystore.type", "JKS"),
                ("ssl.keystore.location", "/k"),
            ][..],
            &[
                ("ssl.keystore.location", "/k"),
                ("sasl.enabled.mechanisms", "GSSAPI"),
            ][..],
            &[
                ("ssl.keystore.location", "/k"),
                ("ssl.client.auth", "required"),
            ][..],
            &[][..],
        ] {
            assert!(
                resolve(&settings(bad), &[&l], &protocols).is_err(),
                "{bad:?}"
            );
        }
        assert!(is_security_setting(
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config"
        ));
        assert!(is_security_setting(
            "listener.name.sasl_ssl.ssl.client.auth"
        ));
        assert!(!is_security_setting("listener.name.sasl_ssl.ssl.bogus"));
    }
}
