//! PLAIN users from Kafka's JAAS line:
//! `org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="s3cret" user_alice="pw";`
//!
//! Only the PLAIN login module's `user_<name>="<password>"` options matter to a broker; the
//! others (`username`, `password`: what a broker would send to other brokers) are accepted
//! and ignored, as are SCRAM's module lines (SCRAM users live in the metadata log).

use std::collections::BTreeMap;

/// Kafka's PLAIN login module.
pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

/// Why a JAAS line could not be read. Never includes a password.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JaasError {
    /// The line does not have the `Module flag options;` shape.
    #[error("{0}")]
    Syntax(String),
}

/// One parsed login-module entry.
#[derive(Clone, PartialEq, Eq)]
pub struct JaasEntry {
    /// The login module's class name.
    pub module: String,
    /// `key=value` options, quotes removed.
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for JaasEntry {
    // Options hold passwords: never print their values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JaasEntry")
            .field("module", &self.module)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl JaasEntry {
    /// The PLAIN users (`user_<name>="<password>"`) of this entry.
    pub fn plain_users(&self) -> BTreeMap<String, String> {
        self.options
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix("user_")
                    .filter(|name| !name.is_empty())
                    .map(|name| (name.to_string(), value.clone()))
            })
            .collect()
    }
}

/// Parses one JAAS entry: `module flag key="value" key=value ...;`.
pub fn parse_jaas_config(text: &str) -> Result<JaasEntry, JaasError> {
    let mut chars = text.trim().chars().peekable();
    let mut words: Vec<String> = Vec::new();
    let mut options = BTreeMap::new();
    let mut ended = false;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == ';' {
            chars.next();
            ended = true;
            break;
        }
        let mut token = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' || c == ';' {
                break;
            }
            token.push(c);
            chars.next();
        }
        if chars.peek() == Some(&'=') {
            chars.next();
            let value = if chars.peek() == Some(&'"') {
                chars.next();
                let mut value = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        other => value.push(other),
                    }
                }
                if !closed {
                    return Err(JaasError::Syntax(format!(
                        "option `{token}`: unterminated quoted value"
                    )));
                }
                value
            } else {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value
            };
            if words.len() < 2 {
                return Err(JaasError::Syntax(
                    "expected `LoginModule flag` before the options".into(),
                ));
            }
            options.insert(token, value);
        } else if token.is_empty() {
            return Err(JaasError::Syntax("unexpected `=`".into()));
        } else if options.is_empty() && words.len() < 2 {
            words.push(token);
        } else {
            return Err(JaasError::Syntax(format!(
                "`{token}` is not a key=value option"
            )));
        }
    }
    if chars.any(|c| !c.is_whitespace()) {
        return Err(JaasError::Syntax(
            "only one login module per setting is supported".into(),
        ));
    }
    if !ended {
        return Err(JaasError::Syntax("the entry must end with `;`".into()));
    }
    let [module, flag] = words.as_slice() else {
        return Err(JaasError::Syntax(
            "expected `LoginModule flag options;`".into(),
        ));
    };
    if !matches!(
        flag.as_str(),
        "required" | "requisite" | "sufficient" | "optional"
    ) {
        return Err(JaasError::Syntax(format!(
            "`{flag}` is not a control flag (required, requisite, sufficient, optional)"
        )));
    }
    Ok(JaasEntry {
        module: module.clone(),
        options,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kafka_plain_line_gives_its_users() {
        let entry = parse_jaas_config(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required
               username="admin" password="admin-secret"
               user_admin="admin-secret" user_alice="a;b \"q\"";"#,
        )
        .unwrap();
        assert_eq!(entry.module, PLAIN_LOGIN_MODULE);
        let users = entry.plain_users();
        assert_eq!(users.get("admin").unwrap(), "admin-secret");
        assert_eq!(users.get("alice").unwrap(), "a;b \"q\"");
        assert_eq!(users.len(), 2);
        assert!(!format!("{entry:?}").contains("admin-secret"));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "",
            "Module required user_a=\"x\"",
            "Module user_a=\"x\";",
            "Module maybe user_a=\"x\";",
            "Module required user_a=\"x;",
            "Module required stray;",
            "A required; B required;",
        ] {
            assert!(parse_jaas_config(bad).is_err(), "{bad}");
        }
    }
}
