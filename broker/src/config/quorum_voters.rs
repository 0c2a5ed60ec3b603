//! `controller.quorum.voters`: the fixed membership of the metadata quorum
//! (`1@127.0.0.1:19093,2@host:19094`, Kafka's syntax from KIP-595).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::listeners::{format_host_port, split_host_port};
use super::{invalid, ConfigError};

/// The setting's name, for error messages.
pub(crate) const NAME: &str = "controller.quorum.voters";

/// One voter of the metadata quorum: a controller's node id and where its controller
/// listener is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumVoter {
    /// The voter's `node.id`.
    pub id: i32,
    /// Host of its controller listener (IPv6 literals without brackets).
    pub host: String,
    /// Port of its controller listener.
    pub port: u16,
}

impl QuorumVoter {
    /// `host:port`, with IPv6 literals bracketed: what a socket connect or an openraft node
    /// address wants.
    pub fn address(&self) -> String {
        format_host_port(&self.host, self.port)
    }
}

impl fmt::Display for QuorumVoter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.address())
    }
}

/// Parses `ID@HOST:PORT,...`: ids non-negative and distinct, addresses distinct, ports
/// non-zero (the other voters must be able to dial it).
pub fn parse_quorum_voters(value: &str) -> Result<Vec<QuorumVoter>, ConfigError> {
    let mut voters = Vec::new();
    let mut ids = BTreeSet::new();
    let mut addresses = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, address)) = entry.split_once('@') else {
            return Err(invalid(
                NAME,
                value,
                format!("`{entry}` is not ID@HOST:PORT"),
            ));
        };
        let id: i32 = id.trim().parse().map_err(|_| {
            invalid(
                NAME,
                value,
                format!("`{entry}`: voter id `{id}` is not an integer"),
            )
        })?;
        if id < 0 {
            return Err(invalid(
                NAME,
                value,
                format!("`{entry}`: voter id must not be negative"),
            ));
        }
        let (host, port) = split_host_port(NAME, address.trim())?;
        if port == 0 {
            return Err(invalid(
                NAME,
                value,
                format!("`{entry}`: port 0 cannot be dialled by the other voters"),
            ));
        }
        if !ids.insert(id) {
            return Err(invalid(
                NAME,
                value,
                format!("voter id {id} is listed twice"),
            ));
        }
        let voter = QuorumVoter { id, host, port };
        if let Some(other) = addresses.insert(voter.address(), id) {
            return Err(invalid(
                NAME,
                value,
                format!(
                    "voters {other} and {id} share the address {}",
                    voter.address()
                ),
            ));
        }
        voters.push(voter);
    }
    if voters.is_empty() {
        return Err(invalid(NAME, value, "expected at least one ID@HOST:PORT"));
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn voters_parse_with_ipv6_and_hostnames() {
        let voters = parse_quorum_voters("1@127.0.0.1:19093, 2@[::1]:19094,3@ctl-3:19095").unwrap();
        assert_eq!(
            voters,
            vec![
                QuorumVoter {
                    id: 1,
                    host: "127.0.0.1".into(),
                    port: 19093
                },
                QuorumVoter {
                    id: 2,
                    host: "::1".into(),
                    port: 19094
                },
                QuorumVoter {
                    id: 3,
                    host: "ctl-3".into(),
                    port: 19095
                },
            ]
        );
        assert_eq!(voters[1].address(), "[::1]:19094");
        assert_eq!(voters[2].to_string(), "3@ctl-3:19095");
    }

    #[test]
    fn duplicate_voter_ids_are_rejected() {
        let err = parse_quorum_voters("1@a:1,1@b:2").unwrap_err().to_string();
        assert!(err.contains("controller.quorum.voters"), "{err}");
        assert!(err.contains("voter id 1 is listed twice"), "{err}");
    }

    #[test]
    fn malformed_voters_are_rejected() {
        for bad in [
            "",
            "1",
            "x@a:1",
            "-1@a:1",
            "1@a",
            "1@a:port",
            "1@a:0",
            "1@a:1,2@a:1",
        ] {
            let err = parse_quorum_voters(bad).unwrap_err().to_string();
            assert!(err.contains("controller.quorum.voters"), "{bad}: {err}");
        }
    }
}
