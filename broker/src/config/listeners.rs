//! Named listeners (`listeners`, `advertised.listeners`) and the security protocol each one
//! speaks (`listener.security.protocol.map`), in Kafka's syntax.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::{invalid, ConfigError};

/// The listener name a bare `HOST:PORT` stands for.
pub const PLAINTEXT: &str = "PLAINTEXT";

/// The default name of the controller listener (`controller.listener.names`).
pub const CONTROLLER: &str = "CONTROLLER";

/// One named listener: `NAME://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Listener name, upper-cased as Kafka normalizes it (`PLAINTEXT`, `CONTROLLER`, ...).
    pub name: String,
    /// Host (IPv6 literals without brackets). In `listeners` always an IP address: it is bound.
    pub host: String,
    /// Port; 0 in `listeners` means "any free port" (tests, embedding).
    pub port: u16,
}

impl Listener {
    /// `host:port`, IPv6 literals bracketed.
    pub fn address(&self) -> String {
        format_host_port(&self.host, self.port)
    }

    /// The socket address, when the host is an IP literal (always, for a bound listener).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.name, self.address())
    }
}

/// The security protocols Kafka names. Only [`SecurityProtocol::Plaintext`] is implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No encryption, no authentication.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name of the protocol.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn parse(name: &str) -> Option<SecurityProtocol> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kafka's default `listener.security.protocol.map` (each protocol maps to itself) plus
/// `CONTROLLER:PLAINTEXT`, so the conventional controller listener needs no map entry.
pub fn default_security_protocol_map() -> BTreeMap<String, SecurityProtocol> {
    [
        (PLAINTEXT, SecurityProtocol::Plaintext),
        ("SSL", SecurityProtocol::Ssl),
        ("SASL_PLAINTEXT", SecurityProtocol::SaslPlaintext),
        ("SASL_SSL", SecurityProtocol::SaslSsl),
        (CONTROLLER, SecurityProtocol::Plaintext),
    ]
    .into_iter()
    .map(|(name, protocol)| (name.to_string(), protocol))
    .collect()
}

/// Parses `listener.security.protocol.map` (`NAME:PROTOCOL,...`). As in Kafka, a value given
/// replaces the default map rather than adding to it.
pub fn parse_security_protocol_map(
    name: &str,
    value: &str,
) -> Result<BTreeMap<String, SecurityProtocol>, ConfigError> {
    let mut map = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((listener, protocol)) = entry.split_once(':') else {
            return Err(invalid(
                name,
                value,
                format!("`{entry}` is not LISTENER_NAME:PROTOCOL"),
            ));
        };
        let listener = parse_listener_name(name, value, listener)?;
        let Some(protocol) = SecurityProtocol::parse(protocol.trim()) else {
            return Err(invalid(
                name,
                value,
                format!(
                    "`{}` is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)",
                    protocol.trim()
                ),
            ));
        };
        if map.insert(listener.clone(), protocol).is_some() {
            return Err(invalid(
                name,
                value,
                format!("listener `{listener}` is mapped twice"),
            ));
        }
    }
    Ok(map)
}

/// Parses a list of listener names (`controller.listener.names`), upper-cased, each once.
pub fn parse_listener_names(name: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    let mut names: Vec<String> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let listener = parse_listener_name(name, value, item)?;
        if names.contains(&listener) {
            return Err(invalid(
                name,
                value,
                format!("listener name `{listener}` is listed twice"),
            ));
        }
        names.push(listener);
    }
    if names.is_empty() {
        return Err(invalid(name, value, "expected at least one listener name"));
    }
    Ok(names)
}

/// Checks one listener name and upper-cases it (Kafka treats names case-insensitively).
pub fn parse_listener_name(name: &str, value: &str, item: &str) -> Result<String, ConfigError> {
    let item = item.trim();
    if item.is_empty() {
        return Err(invalid(name, value, "empty listener name"));
    }
    if let Some(bad) = item
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(invalid(
            name,
            value,
            format!("listener name `{item}` contains `{bad}`"),
        ));
    }
    Ok(item.to_ascii_uppercase())
}

/// Parses a listener list: `NAME://HOST:PORT,...`, where a bare `HOST:PORT` means
/// `PLAINTEXT://HOST:PORT` (how Millrace has always read `listeners`). Names must be distinct.
/// With `bind`, hosts must be IP addresses (an empty host means 127.0.0.1) and ports distinct,
/// since these are the sockets this process opens.
pub fn parse_listeners(name: &str, value: &str, bind: bool) -> Result<Vec<Listener>, ConfigError> {
    let mut listeners: Vec<Listener> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (listener_name, address) = match entry.split_once("://") {
            Some((listener_name, address)) => {
                (parse_listener_name(name, value, listener_name)?, address)
            }
            None => (PLAINTEXT.to_string(), entry),
        };
        let (host, port) = split_host_port(name, address)?;
        let listener = Listener {
            name: listener_name,
            host,
            port,
        };
        if bind && listener.socket_addr().is_none() {
            return Err(invalid(
                name,
                value,
                format!(
                    "listener {listener}: the host to bind must be an IP address (0.0.0.0 for all)"
                ),
            ));
        }
        if listeners.iter().any(|l| l.name == listener.name) {
            return Err(invalid(
                name,
                value,
                format!("listener name `{}` is defined twice", listener.name),
            ));
        }
        if bind {
            if let Some(other) = listeners.iter().find(|l| ports_clash(l, &listener)) {
                return Err(invalid(
                    name,
                    value,
                    format!(
                        "listeners {} and {} use the same port {}",
                        other.name, listener.name, listener.port
                    ),
                ));
            }
        }
        listeners.push(listener);
    }
    if listeners.is_empty() {
        return Err(invalid(name, value, "expected at least one listener"));
    }
    Ok(listeners)
}

/// Kafka's rule: bound listeners need distinct ports, except one IPv4 and one IPv6 listener
/// may share a port. Port 0 (any free port) never clashes.
pub(crate) fn ports_clash(a: &Listener, b: &Listener) -> bool {
    if a.port != b.port || a.port == 0 {
        return false;
    }
    match (a.socket_addr(), b.socket_addr()) {
        (Some(x), Some(y)) => x.is_ipv4() == y.is_ipv4(),
        _ => true,
    }
}

/// Splits `HOST:PORT` (or `NAME://HOST:PORT`, the first of a list), stripping IPv6 brackets;
/// an empty host means 127.0.0.1.
pub(crate) fn split_host_port(name: &str, value: &str) -> Result<(String, u16), ConfigError> {
    let first = value.split(',').next().unwrap_or_default().trim();
    let without_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
    let Some((host, port)) = without_scheme.rsplit_once(':') else {
        return Err(invalid(name, value, "expected HOST:PORT"));
    };
    let port = port
        .parse::<u16>()
        .map_err(|e| invalid(name, value, e.to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok((host.to_string(), port))
}

/// `host:port`, bracketing IPv6 literals.
pub(crate) fn format_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn named_and_bare_listeners_parse() {
        let listeners = parse_listeners(
            "listeners",
            "127.0.0.1:9092, controller://[::1]:19093,INTERNAL://0.0.0.0:9094",
            true,
        )
        .unwrap();
        let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["PLAINTEXT", "CONTROLLER", "INTERNAL"]);
        assert_eq!(listeners[1].host, "::1");
        assert_eq!(listeners[1].to_string(), "CONTROLLER://[::1]:19093");
        assert_eq!(
            listeners[2].socket_addr(),
            Some("0.0.0.0:9094".parse().unwrap())
        );
    }

    #[test]
    fn bound_listeners_need_ip_hosts_and_distinct_ports() {
        assert!(parse_listeners("listeners", "PLAINTEXT://localhost:9092", true).is_err());
        assert!(
            parse_listeners("advertised.listeners", "PLAINTEXT://localhost:9092", false).is_ok()
        );
        let err = parse_listeners("listeners", "A://127.0.0.1:9092,B://127.0.0.1:9092", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("same port 9092"), "{err}");
        // One IPv4 and one IPv6 listener may share a port, and port 0 never clashes.
        assert!(parse_listeners("listeners", "A://127.0.0.1:9092,B://[::1]:9092", true).is_ok());
        assert!(parse_listeners("listeners", "A://127.0.0.1:0,B://127.0.0.1:0", true).is_ok());
    }

    #[test]
    fn listener_names_are_case_insensitive_and_unique() {
        let err = parse_listeners("listeners", "a://127.0.0.1:1,A://127.0.0.1:2", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`A` is defined twice"), "{err}");
        assert!(parse_listeners("listeners", "BAD NAME://127.0.0.1:1", true).is_err());
        assert_eq!(
            parse_listener_names("controller.listener.names", "controller, Raft").unwrap(),
            ["CONTROLLER", "RAFT"]
        );
    }

    #[test]
    fn security_protocol_map_parses_and_rejects_unknown_protocols() {
        let map = parse_security_protocol_map(
            "listener.security.protocol.map",
            "internal:plaintext,EXTERNAL:SASL_SSL",
        )
        .unwrap();
        assert_eq!(map.get("INTERNAL"), Some(&SecurityProtocol::Plaintext));
        assert_eq!(map.get("EXTERNAL"), Some(&SecurityProtocol::SaslSsl));
        for bad in ["INTERNAL", "INTERNAL:TLS", "A:PLAINTEXT,A:SSL"] {
            let err = parse_security_protocol_map("listener.security.protocol.map", bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("listener.security.protocol.map"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            default_security_protocol_map().get(CONTROLLER),
            Some(&SecurityProtocol::Plaintext)
        );
    }
}
