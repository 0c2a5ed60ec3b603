//! OAUTHBEARER settings of a listener, with Kafka's names. Each is read from
//! `listener.name.<listener>.oauthbearer.<setting>`, then `listener.name.<listener>.<setting>`,
//! then `<setting>`, the first found winning (Kafka's listener and mechanism prefixes).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{LOGIN_MODULE, VALIDATOR_CALLBACK_HANDLER};
use crate::config::{invalid, ConfigError};
use crate::security::jaas::parse_jaas_config;

const CALLBACK_HANDLER_CLASS: &str = "sasl.server.callback.handler.class";
const JAAS_CONFIG: &str = "sasl.jaas.config";
const JWKS_ENDPOINT_URL: &str = "sasl.oauthbearer.jwks.endpoint.url";
const JWKS_ENDPOINT_REFRESH_MS: &str = "sasl.oauthbearer.jwks.endpoint.refresh.ms";
const JWKS_ENDPOINT_RETRY_BACKOFF_MS: &str = "sasl.oauthbearer.jwks.endpoint.retry.backoff.ms";
const EXPECTED_AUDIENCE: &str = "sasl.oauthbearer.expected.audience";
const EXPECTED_ISSUER: &str = "sasl.oauthbearer.expected.issuer";
const CLOCK_SKEW_SECONDS: &str = "sasl.oauthbearer.clock.skew.seconds";
const SCOPE_CLAIM_NAME: &str = "sasl.oauthbearer.scope.claim.name";
const SUB_CLAIM_NAME: &str = "sasl.oauthbearer.sub.claim.name";

/// The settings this module reads (besides the JAAS line, which `config.rs` already knows).
const SETTINGS: &[&str] = &[
    CALLBACK_HANDLER_CLASS,
    JWKS_ENDPOINT_URL,
    JWKS_ENDPOINT_REFRESH_MS,
    JWKS_ENDPOINT_RETRY_BACKOFF_MS,
    EXPECTED_AUDIENCE,
    EXPECTED_ISSUER,
    CLOCK_SKEW_SECONDS,
    SCOPE_CLAIM_NAME,
    SUB_CLAIM_NAME,
];

/// Whether `name` is an OAUTHBEARER setting, globally or with a listener (and mechanism)
/// prefix.
pub fn is_oauthbearer_setting(name: &str) -> bool {
    let rest = match name.strip_prefix("listener.name.") {
        Some(rest) => match rest.split_once('.') {
            Some((_, setting)) => setting,
            None => return false,
        },
        None => name,
    };
    let setting = rest.strip_prefix("oauthbearer.").unwrap_or(rest);
    SETTINGS.contains(&setting)
}

/// How a listener validates OAUTHBEARER tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OAuthBearerSettings {
    /// Signed JWTs checked against a JWKS (Kafka's `OAuthBearerValidatorCallbackHandler`).
    Secured(SecuredSettings),
    /// Unsigned JWTs (Kafka's default `OAuthBearerUnsecuredValidatorCallbackHandler`):
    /// development only.
    Unsecured(UnsecuredSettings),
}

/// KIP-768's broker settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecuredSettings {
    /// `sasl.oauthbearer.jwks.endpoint.url`, as given (for logs).
    pub jwks_url: String,
    /// The JWKS file it names (`file:` URLs only for now).
    pub jwks_path: PathBuf,
    /// `sasl.oauthbearer.jwks.endpoint.refresh.ms`: keys older than this are re-read before
    /// use (a key id not in the set is looked up again at once).
    pub jwks_refresh_ms: u64,
    /// `sasl.oauthbearer.jwks.endpoint.retry.backoff.ms` (default 100): a token naming a key
    /// id not in the set makes the JWKS be read again, but not more often than this, so a
    /// flood of bogus key ids cannot become a flood of reads.
    pub jwks_retry_backoff_ms: u64,
    /// `sasl.oauthbearer.expected.audience`: `aud` must name one of these (if any are set).
    pub expected_audience: Vec<String>,
    /// `sasl.oauthbearer.expected.issuer`: `iss` must be this (if set).
    pub expected_issuer: Option<String>,
    /// `sasl.oauthbearer.clock.skew.seconds` (default 30).
    pub clock_skew_seconds: u64,
    /// `sasl.oauthbearer.scope.claim.name` (default `scope`).
    pub scope_claim_name: String,
    /// `sasl.oauthbearer.sub.claim.name` (default `sub`): the principal's name.
    pub sub_claim_name: String,
}

/// The unsecured validator's JAAS options, with Kafka's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsecuredSettings {
    /// `unsecuredValidatorPrincipalClaimName` (default `sub`).
    pub principal_claim_name: String,
    /// `unsecuredValidatorScopeClaimName` (default `scope`).
    pub scope_claim_name: String,
    /// `unsecuredValidatorRequiredScope`: scopes every token must have (default none).
    pub required_scope: Vec<String>,
    /// `unsecuredValidatorAllowableClockSkewMs` (default 0).
    pub clock_skew_ms: u64,
}

/// Finds a setting under the listener-and-mechanism prefix, the listener prefix, then bare.
struct Lookup<'a> {
    settings: &'a BTreeMap<String, String>,
    listener_prefix: &'a str,
}

impl<'a> Lookup<'a> {
    fn get(&self, setting: &str) -> Option<(String, &'a str)> {
        [
            format!("{}oauthbearer.{setting}", self.listener_prefix),
            format!("{}{setting}", self.listener_prefix),
            setting.to_string(),
        ]
        .into_iter()
        .find_map(|name| self.settings.get(&name).map(|value| (name, value.trim())))
    }

    fn number(&self, setting: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(setting) {
            None => Ok(default),
            Some((name, value)) => value
                .parse()
                .map_err(|e: std::num::ParseIntError| invalid(&name, value, e.to_string())),
        }
    }
}

/// Resolves the OAUTHBEARER settings of the listener whose settings start with
/// `listener_prefix` (`listener.name.<lower-case name>.`).
pub fn resolve(
    settings: &BTreeMap<String, String>,
    listener_prefix: &str,
) -> Result<OAuthBearerSettings, ConfigError> {
    let lookup = Lookup {
        settings,
        listener_prefix,
    };
    match lookup.get(CALLBACK_HANDLER_CLASS) {
        Some((_, VALIDATOR_CALLBACK_HANDLER)) => secured(&lookup),
        Some((name, value)) => Err(ConfigError::Unsupported {
            name,
            value: value.to_string(),
            what: format!("an OAUTHBEARER validator other than {VALIDATOR_CALLBACK_HANDLER}"),
        }),
        None => unsecured(&lookup),
    }
}

fn secured(lookup: &Lookup<'_>) -> Result<OAuthBearerSettings, ConfigError> {
    let Some((name, url)) = lookup.get(JWKS_ENDPOINT_URL) else {
        return Err(ConfigError::Missing {
            name: JWKS_ENDPOINT_URL.into(),
            reason: format!("{VALIDATOR_CALLBACK_HANDLER} checks token signatures against it"),
        });
    };
    let jwks_path = file_url_path(url).ok_or_else(|| {
        if url.starts_with("https:") || url.starts_with("http:") {
            ConfigError::Unsupported {
                name: name.clone(),
                value: url.to_string(),
                what: "fetching the JWKS over HTTP(S) (use a file: URL and refresh the file)"
                    .into(),
            }
        } else {
            invalid(
                &name,
                url,
                "expected a file: URL to a JWKS (file:///path/jwks.json)",
            )
        }
    })?;
    let expected_audience = lookup
        .get(EXPECTED_AUDIENCE)
        .map(|(_, value)| {
            value
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let expected_issuer = lookup
        .get(EXPECTED_ISSUER)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty());
    let claim = |setting: &str, default: &str| -> Result<String, ConfigError> {
        match lookup.get(setting) {
            None => Ok(default.to_string()),
            Some((name, "")) => Err(invalid(&name, "", "a claim name must not be empty")),
            Some((_, value)) => Ok(value.to_string()),
        }
    };
    Ok(OAuthBearerSettings::Secured(SecuredSettings {
        jwks_url: url.to_string(),
        jwks_path,
        jwks_refresh_ms: lookup.number(JWKS_ENDPOINT_REFRESH_MS, 3_600_000)?,
        jwks_retry_backoff_ms: lookup.number(JWKS_ENDPOINT_RETRY_BACKOFF_MS, 100)?,
        expected_audience,
        expected_issuer,
        clock_skew_seconds: lookup.number(CLOCK_SKEW_SECONDS, 30)?,
        scope_claim_name: claim(SCOPE_CLAIM_NAME, "scope")?,
        sub_claim_name: claim(SUB_CLAIM_NAME, "sub")?,
    }))
}

fn unsecured(lookup: &Lookup<'_>) -> Result<OAuthBearerSettings, ConfigError> {
    let missing = || ConfigError::Missing {
        name: format!(
            "{}oauthbearer.{CALLBACK_HANDLER_CLASS}",
            lookup.listener_prefix
        ),
        reason: format!(
            "OAUTHBEARER validates signed tokens with {VALIDATOR_CALLBACK_HANDLER} and \
             sasl.oauthbearer.jwks.endpoint.url; unsigned development tokens need the \
             listener's oauthbearer.sasl.jaas.config to be {LOGIN_MODULE} required ;"
        ),
    };
    let Some((name, line)) = lookup.get(JAAS_CONFIG) else {
        return Err(missing());
    };
    let entry = parse_jaas_config(line).map_err(|e| ConfigError::InvalidValue {
        name: name.clone(),
        value: "<hidden>".into(),
        reason: e.to_string(),
    })?;
    if entry.module != LOGIN_MODULE {
        return Err(missing());
    }
    let option = |key: &str| entry.options.get(key).map(|v| v.trim().to_string());
    let clock_skew_ms = match option("unsecuredValidatorAllowableClockSkewMs") {
        None => 0,
        Some(value) => value.parse().map_err(|e: std::num::ParseIntError| {
            invalid(
                &name,
                "<hidden>",
                format!("unsecuredValidatorAllowableClockSkewMs: {e}"),
            )
        })?,
    };
    Ok(OAuthBearerSettings::Unsecured(UnsecuredSettings {
        principal_claim_name: option("unsecuredValidatorPrincipalClaimName")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "sub".into()),
        scope_claim_name: option("unsecuredValidatorScopeClaimName")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "scope".into()),
        required_scope: option("unsecuredValidatorRequiredScope")
            .map(|v| {
                v.split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        clock_skew_ms,
    }))
}

/// The local path of a `file:` URL: `file:///abs/path`, `file://localhost/abs/path` or
/// `file:/abs/path`. Percent-escapes are decoded for the common case of spaces (`%20`).
fn file_url_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file:")?;
    let path = if let Some(authority_and_path) = rest.strip_prefix("//") {
        let (authority, path) = authority_and_path.split_at(authority_and_path.find('/')?);
        if !(authority.is_empty() || authority == "localhost") {
            return None;
        }
        path
    } else {
        rest
    };
    if !path.starts_with('/') {
        return None;
    }
    Some(PathBuf::from(path.replace("%20", " ")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_validator_class_with_a_file_jwks_gives_secured_settings_with_kafkas_defaults() {
        let s = settings(&[
            (
                "listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class",
                VALIDATOR_CALLBACK_HANDLER,
            ),
            (
                "sasl.oauthbearer.jwks.endpoint.url",
                "file:///etc/jwks.json",
            ),
            ("sasl.oauthbearer.expected.audience", "kafka, other"),
        ]);
        let OAuthBearerSettings::Secured(secured) = resolve(&s, "listener.name.sasl_ssl.").unwrap()
        else {
            panic!("not secured");
        };
        assert_eq!(secured.jwks_path, PathBuf::from("/etc/jwks.json"));
        assert_eq!(secured.expected_audience, ["kafka", "other"]);
        assert_eq!(secured.clock_skew_seconds, 30);
        assert_eq!(secured.sub_claim_name, "sub");
        assert!(is_oauthbearer_setting(
            "listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class"
        ));
        assert!(is_oauthbearer_setting(
            "sasl.oauthbearer.clock.skew.seconds"
        ));
        assert!(!is_oauthbearer_setting("sasl.oauthbearer.clock.skew"));
    }

    #[test]
    fn unsecured_needs_kafkas_login_module_and_secured_needs_a_file_jwks() {
        let unsecured = settings(&[(
            "listener.name.dev.oauthbearer.sasl.jaas.config",
            &format!("{LOGIN_MODULE} required unsecuredValidatorRequiredScope=\"a b\";"),
        )]);
        assert!(matches!(
            resolve(&unsecured, "listener.name.dev.").unwrap(),
            OAuthBearerSettings::Unsecured(UnsecuredSettings { ref required_scope, .. }) if required_scope == &["a", "b"]
        ));
        assert!(resolve(&settings(&[]), "listener.name.dev.").is_err());
        for url in [
            "https://idp/jwks",
            "/etc/jwks.json",
            "file://host/jwks.json",
        ] {
            let s = settings(&[
                (CALLBACK_HANDLER_CLASS, VALIDATOR_CALLBACK_HANDLER),
                (JWKS_ENDPOINT_URL, url),
            ]);
            assert!(resolve(&s, "listener.name.x.").is_err(), "{url}");
        }
        let s = settings(&[(CALLBACK_HANDLER_CLASS, "com.example.Custom")]);
        assert!(resolve(&s, "listener.name.x.").is_err());
    }
}
