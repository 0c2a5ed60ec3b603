//! `process.roles`: whether this node serves clients (broker), takes part in the metadata
//! quorum (controller), or both.

use std::fmt;

use super::{invalid, ConfigError};

/// The setting's name, for error messages.
const NAME: &str = "process.roles";

/// The roles a node plays, from `process.roles` (`broker`, `controller` or
/// `broker,controller`; Kafka's names).
///
/// Kafka has no default (a KRaft node must say); ours is both roles, so a node started without
/// settings is the self-contained single-node cluster it has always been.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessRoles {
    broker: bool,
    controller: bool,
}

impl ProcessRoles {
    /// Broker and controller in one process (the default).
    pub const COMBINED: ProcessRoles = ProcessRoles {
        broker: true,
        controller: true,
    };
    /// Serves clients and hosts partitions, and follows the quorum's metadata.
    pub const BROKER: ProcessRoles = ProcessRoles {
        broker: true,
        controller: false,
    };
    /// A member of the metadata quorum only.
    pub const CONTROLLER: ProcessRoles = ProcessRoles {
        broker: false,
        controller: true,
    };

    /// Whether the node serves clients and hosts partitions.
    pub fn is_broker(self) -> bool {
        self.broker
    }

    /// Whether the node is a voter of the metadata quorum.
    pub fn is_controller(self) -> bool {
        self.controller
    }

    /// Parses Kafka's comma-separated list; every role at most once, at least one.
    pub fn parse(value: &str) -> Result<ProcessRoles, ConfigError> {
        let mut roles = ProcessRoles {
            broker: false,
            controller: false,
        };
        for item in value.split(',').map(str::trim) {
            let slot = match item {
                "broker" => &mut roles.broker,
                "controller" => &mut roles.controller,
                "" => continue,
                other => {
                    return Err(invalid(
                        NAME,
                        value,
                        format!("unknown role `{other}`; expected broker, controller or both"),
                    ))
                }
            };
            if *slot {
                return Err(invalid(
                    NAME,
                    value,
                    format!("role `{item}` is listed twice"),
                ));
            }
            *slot = true;
        }
        if !roles.broker && !roles.controller {
            return Err(invalid(
                NAME,
                value,
                "expected broker, controller or broker,controller",
            ));
        }
        Ok(roles)
    }
}

impl Default for ProcessRoles {
    fn default() -> Self {
        ProcessRoles::COMBINED
    }
}

impl fmt::Display for ProcessRoles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.broker, self.controller) {
            (true, true) => f.write_str("broker,controller"),
            (true, false) => f.write_str("broker"),
            (false, true) => f.write_str("controller"),
            // Unreachable through `parse` and the constants; printed honestly anyway.
            (false, false) => f.write_str(""),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_parse_in_any_order() {
        assert_eq!(ProcessRoles::parse("broker").unwrap(), ProcessRoles::BROKER);
        assert_eq!(
            ProcessRoles::parse("controller").unwrap(),
            ProcessRoles::CONTROLLER
        );
        let both = ProcessRoles::parse("controller, broker").unwrap();
        assert!(both.is_broker() && both.is_controller());
        assert_eq!(both.to_string(), "broker,controller");
    }

    #[test]
    fn bad_roles_name_the_setting() {
        for bad in ["", "brokers", "broker,broker", "broker,zookeeper"] {
            let err = ProcessRoles::parse(bad).unwrap_err().to_string();
            assert!(err.contains("process.roles"), "{bad}: {err}");
        }
    }
}
