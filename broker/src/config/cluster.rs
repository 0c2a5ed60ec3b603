//! The cluster's shape as one node sees it: its listeners, which of them the quorum and the
//! other brokers use, and the quorum's voters. Resolved together because Kafka's rules tie
//! these settings to each other and to `process.roles`; each rule's error names the setting a
//! user has to change.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::listeners::{
    default_security_protocol_map, parse_listener_name, parse_listener_names, parse_listeners,
    parse_security_protocol_map, ports_clash, Listener, SecurityProtocol, CONTROLLER, PLAINTEXT,
};
use super::process_roles::ProcessRoles;
use super::quorum_voters::{self, parse_quorum_voters, QuorumVoter};
use super::{invalid, ConfigError};

const LISTENERS: &str = "listeners";
const ADVERTISED: &str = "advertised.listeners";
const PROTOCOL_MAP: &str = "listener.security.protocol.map";
const CONTROLLER_NAMES: &str = "controller.listener.names";
const INTER_BROKER: &str = "inter.broker.listener.name";

/// The resolved network and quorum settings.
pub(super) struct ClusterNetwork {
    pub listeners: Vec<Listener>,
    /// One per listener, in the same order.
    pub advertised_listeners: Vec<Listener>,
    pub security_protocol_map: BTreeMap<String, SecurityProtocol>,
    pub controller_listener_names: Vec<String>,
    pub inter_broker_listener_name: String,
    pub quorum_voters: Vec<QuorumVoter>,
}

/// Resolves and cross-checks the listener and quorum settings.
///
/// `listen` (the command line's `--listen`) replaces the address of the client listener, the
/// first listener that is not a controller listener.
pub(super) fn resolve(
    settings: &BTreeMap<String, String>,
    node_id: i32,
    roles: ProcessRoles,
    listen: Option<SocketAddr>,
) -> Result<ClusterNetwork, ConfigError> {
    let get = |name: &str| settings.get(name).map(String::as_str);
    let controller_names_set = get(CONTROLLER_NAMES);
    let controller_listener_names = match controller_names_set {
        Some(v) => parse_listener_names(CONTROLLER_NAMES, v)?,
        None => vec![CONTROLLER.to_string()],
    };
    let is_controller_name = |name: &str| controller_listener_names.iter().any(|n| n == name);

    let listeners_value = get(LISTENERS).unwrap_or("PLAINTEXT://127.0.0.1:9092");
    let mut listeners = parse_listeners(LISTENERS, listeners_value, true)?;
    if let Some(addr) = listen {
        apply_listen_override(&mut listeners, addr, &is_controller_name, listeners_value)?;
    }
    let listeners_value = listeners
        .iter()
        .map(Listener::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let has_controller_listener = listeners.iter().any(|l| is_controller_name(&l.name));

    let (security_protocol_map, map_value) = match get(PROTOCOL_MAP) {
        Some(v) => (parse_security_protocol_map(PROTOCOL_MAP, v)?, Some(v)),
        None => (default_security_protocol_map(), None),
    };

    if roles.is_controller() {
        if controller_names_set.is_some() {
            if let Some(missing) = controller_listener_names
                .iter()
                .find(|n| !listeners.iter().any(|l| &&l.name == n))
            {
                return Err(invalid(
                    CONTROLLER_NAMES,
                    &controller_listener_names.join(","),
                    format!(
                        "listener `{missing}` is not defined in listeners ({listeners_value}); \
                         a node with the controller role must define every controller listener"
                    ),
                ));
            }
        }
        if !roles.is_broker() {
            if !has_controller_listener {
                return Err(invalid(
                    LISTENERS,
                    &listeners_value,
                    format!(
                        "process.roles=controller needs a controller listener (one named in \
                         controller.listener.names: {})",
                        controller_listener_names.join(",")
                    ),
                ));
            }
            if let Some(other) = listeners.iter().find(|l| !is_controller_name(&l.name)) {
                return Err(invalid(
                    LISTENERS,
                    &listeners_value,
                    format!(
                        "process.roles=controller serves no clients, so listeners may only hold \
                         controller listeners (controller.listener.names: {}), not {}",
                        controller_listener_names.join(","),
                        other.name
                    ),
                ));
            }
        }
    } else if let Some(listener) = listeners.iter().find(|l| is_controller_name(&l.name)) {
        // Kafka forbids it: on a broker-only node these names say how to dial the
        // controllers; a local listener of that name would be served by nobody.
        return Err(invalid(
            LISTENERS,
            &listeners_value,
            format!(
                "process.roles=broker must not define controller listener {} (it is named in \
                 controller.listener.names); only controllers listen on it",
                listener.name
            ),
        ));
    }

    let inter_broker_listener_name = match get(INTER_BROKER) {
        Some(v) => parse_listener_name(INTER_BROKER, v, v)?,
        None => default_inter_broker_name(&listeners, &is_controller_name),
    };
    if is_controller_name(&inter_broker_listener_name) {
        return Err(invalid(
            INTER_BROKER,
            &inter_broker_listener_name,
            format!(
                "it is a controller listener (controller.listener.names: {}); brokers replicate \
                 over a broker listener",
                controller_listener_names.join(",")
            ),
        ));
    }
    if roles.is_broker()
        && !listeners
            .iter()
            .any(|l| l.name == inter_broker_listener_name)
    {
        return Err(invalid(
            INTER_BROKER,
            &inter_broker_listener_name,
            format!("listener `{inter_broker_listener_name}` is not defined in listeners ({listeners_value})"),
        ));
    }

    // A broker-only node dials the controllers with the protocol of the first controller
    // listener name, so that name needs a protocol too.
    let mut spoken: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    if !roles.is_controller() {
        if let Some(first) = controller_listener_names.first() {
            spoken.push(first);
        }
    }
    for name in spoken {
        check_protocol(name, &security_protocol_map, map_value)?;
    }

    let advertised_listeners = resolve_advertised(get(ADVERTISED), &listeners, &listeners_value)?;

    let quorum_voters = match get(quorum_voters::NAME) {
        Some(v) => parse_quorum_voters(v)?,
        None if roles.is_controller() => {
            // A quorum of this node alone: the single-node cluster Millrace has always been.
            let own = advertised_listeners
                .iter()
                .zip(&listeners)
                .find(|(_, l)| is_controller_name(&l.name))
                .or_else(|| {
                    advertised_listeners
                        .iter()
                        .zip(&listeners)
                        .find(|(_, l)| !is_controller_name(&l.name))
                })
                .map(|(advertised, _)| advertised)
                .or(advertised_listeners.first());
            match own {
                Some(listener) => vec![QuorumVoter {
                    id: node_id,
                    host: listener.host.clone(),
                    port: listener.port,
                }],
                None => Vec::new(),
            }
        }
        None => {
            return Err(ConfigError::Missing {
                name: quorum_voters::NAME.to_string(),
                reason: "process.roles=broker needs the controllers to follow (ID@HOST:PORT,...)"
                    .to_string(),
            })
        }
    };
    let voters_value = quorum_voters
        .iter()
        .map(QuorumVoter::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let is_voter = quorum_voters.iter().any(|v| v.id == node_id);
    if roles.is_controller() {
        if !is_voter {
            return Err(invalid(
                quorum_voters::NAME,
                &voters_value,
                format!("node.id {node_id} has the controller role but is not a voter"),
            ));
        }
        if quorum_voters.len() > 1 && !has_controller_listener {
            return Err(invalid(
                LISTENERS,
                &listeners_value,
                format!(
                    "controller.quorum.voters has {} voters, so this controller needs a listener \
                     named in controller.listener.names ({}) for the other voters to reach",
                    quorum_voters.len(),
                    controller_listener_names.join(",")
                ),
            ));
        }
    } else if is_voter {
        return Err(invalid(
            quorum_voters::NAME,
            &voters_value,
            format!(
                "node.id {node_id} is a voter, but process.roles=broker; voters must have the \
                 controller role"
            ),
        ));
    }

    Ok(ClusterNetwork {
        listeners,
        advertised_listeners,
        security_protocol_map,
        controller_listener_names,
        inter_broker_listener_name,
        quorum_voters,
    })
}

/// Puts `--listen`'s address on the client listener (added as PLAINTEXT if there is none).
fn apply_listen_override(
    listeners: &mut Vec<Listener>,
    addr: SocketAddr,
    is_controller_name: &dyn Fn(&str) -> bool,
    listeners_value: &str,
) -> Result<(), ConfigError> {
    let host = addr.ip().to_string();
    match listeners.iter_mut().find(|l| !is_controller_name(&l.name)) {
        Some(client) => {
            client.host = host;
            client.port = addr.port();
        }
        None => {
            if listeners.iter().any(|l| l.name == PLAINTEXT) {
                return Err(invalid(
                    LISTENERS,
                    listeners_value,
                    "--listen adds a PLAINTEXT listener, but PLAINTEXT is a controller listener",
                ));
            }
            listeners.insert(
                0,
                Listener {
                    name: PLAINTEXT.to_string(),
                    host,
                    port: addr.port(),
                },
            );
        }
    }
    for (i, a) in listeners.iter().enumerate() {
        if let Some(b) = listeners[i + 1..].iter().find(|b| ports_clash(a, b)) {
            return Err(invalid(
                LISTENERS,
                listeners_value,
                format!(
                    "with --listen {addr}, listeners {} and {} use the same port {}",
                    a.name, b.name, a.port
                ),
            ));
        }
    }
    Ok(())
}

/// Kafka's default is the PLAINTEXT listener; without one, the first broker listener.
fn default_inter_broker_name(
    listeners: &[Listener],
    is_controller_name: &dyn Fn(&str) -> bool,
) -> String {
    let brokers = || listeners.iter().filter(|l| !is_controller_name(&l.name));
    brokers()
        .find(|l| l.name == PLAINTEXT)
        .or_else(|| brokers().next())
        .map_or_else(|| PLAINTEXT.to_string(), |l| l.name.clone())
}

/// Every listener must speak a protocol from the map (any of the four: the controller
/// listener's TLS and SASL are the quorum's, see `security::controller_security`).
fn check_protocol(
    listener: &str,
    map: &BTreeMap<String, SecurityProtocol>,
    map_value: Option<&str>,
) -> Result<(), ConfigError> {
    match map.get(listener) {
        None => Err(invalid(
            PROTOCOL_MAP,
            map_value.unwrap_or_default(),
            format!("no security protocol for listener {listener}; add {listener}:PLAINTEXT"),
        )),
        Some(_) => Ok(()),
    }
}

/// Advertised listeners: the named ones given, and every other listener as itself.
fn resolve_advertised(
    value: Option<&str>,
    listeners: &[Listener],
    listeners_value: &str,
) -> Result<Vec<Listener>, ConfigError> {
    let given = match value {
        Some(v) => parse_listeners(ADVERTISED, v, false)?,
        None => Vec::new(),
    };
    for advertised in &given {
        if !listeners.iter().any(|l| l.name == advertised.name) {
            return Err(invalid(
                ADVERTISED,
                value.unwrap_or_default(),
                format!(
                    "listener `{}` is not defined in listeners ({listeners_value})",
                    advertised.name
                ),
            ));
        }
        let unroutable = advertised
            .socket_addr()
            .is_some_and(|addr| addr.ip().is_unspecified());
        if unroutable {
            return Err(invalid(
                ADVERTISED,
                value.unwrap_or_default(),
                format!(
                    "{advertised}: {} means every interface, which clients cannot connect to",
                    advertised.host
                ),
            ));
        }
    }
    Ok(listeners
        .iter()
        .map(|listener| {
            given
                .iter()
                .find(|a| a.name == listener.name)
                .cloned()
                .unwrap_or_else(|| listener.clone())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{parse_overrides, BrokerConfig};
    use super::*;

    fn config(items: &[&str]) -> Result<BrokerConfig, ConfigError> {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        BrokerConfig::from_settings(&parse_overrides(&items).unwrap(), None, None)
    }

    /// The message of the error `items` must produce.
    fn error(items: &[&str]) -> String {
        match config(items) {
            Ok(config) => panic!("{items:?} was accepted: {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    const THREE_VOTERS: &str =
        "controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19094,3@127.0.0.1:19095";

    #[test]
    fn no_settings_mean_a_single_node_combined_cluster() {
        let config = config(&[]).unwrap();
        assert_eq!(config.process_roles, ProcessRoles::COMBINED);
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(
            config.client_listener().to_string(),
            "PLAINTEXT://127.0.0.1:9092"
        );
        assert_eq!(config.advertised_listeners, config.listeners);
        assert_eq!(config.controller_listener_names, ["CONTROLLER"]);
        assert!(config.controller_listener().is_none());
        assert_eq!(config.inter_broker_listener_name, "PLAINTEXT");
        assert_eq!(config.inter_broker_advertised(), ("127.0.0.1", 9092));
        assert_eq!(
            config.quorum_voters,
            [QuorumVoter {
                id: 1,
                host: "127.0.0.1".into(),
                port: 9092
            }]
        );
        assert!(config.is_voter());
        assert_eq!(config.broker_rack, None);
        assert_eq!(config.offsets_topic_replication_factor, 3);
        assert_eq!(config.replica_lag_time_max_ms, 30_000);
        assert_eq!(config.broker_session_timeout_ms, 2_000);
        assert_eq!(config.broker_heartbeat_interval_ms, 400);
        assert!(config.auto_leader_rebalance_enable);
        assert_eq!(config.leader_imbalance_check_interval_seconds, 300);
        assert_eq!(config.controller_quorum_election_timeout_ms, 1_000);
        assert_eq!(config.controller_quorum_fetch_timeout_ms, 2_000);
        assert_eq!(config.replica_fetch_max_bytes, 1_048_576);
        assert_eq!(config.replica_fetch_wait_max_ms, 500);
        assert_eq!(config.num_replica_fetchers, 1);
        assert_eq!(config.min_insync_replicas(), 1);
        assert!(!config.unclean_leader_election_enable());
    }

    #[test]
    fn a_combined_node_of_a_three_node_cluster_resolves() {
        let config = config(&[
            "node.id=2",
            "listeners=PLAINTEXT://0.0.0.0:9192,CONTROLLER://127.0.0.1:19094",
            "advertised.listeners=PLAINTEXT://broker2.example:9192",
            THREE_VOTERS,
            "broker.rack=rack-b",
        ])
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9192".parse().unwrap());
        assert_eq!(
            (config.advertised_host.as_str(), config.advertised_port),
            ("broker2.example", 9192)
        );
        let controller = config.controller_listener().unwrap();
        assert_eq!(controller.to_string(), "CONTROLLER://127.0.0.1:19094");
        assert_eq!(config.advertised(controller), controller);
        assert_eq!(config.inter_broker_advertised(), ("broker2.example", 9192));
        assert_eq!(config.client_listener().name, "PLAINTEXT");
        let voters = config.voter_addresses();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters.get(&2).map(String::as_str), Some("127.0.0.1:19094"));
        assert_eq!(config.broker_rack.as_deref(), Some("rack-b"));
    }

    #[test]
    fn the_default_voter_is_this_nodes_controller_listener() {
        let config = config(&[
            "node.id=7",
            "listeners=CONTROLLER://127.0.0.1:19093,PLAINTEXT://127.0.0.1:9092",
        ])
        .unwrap();
        assert_eq!(
            config.voter_addresses().get(&7).map(String::as_str),
            Some("127.0.0.1:19093")
        );
        // The client listener is the first non-controller one, wherever it is listed.
        assert_eq!(config.listen, "127.0.0.1:9092".parse().unwrap());
    }

    #[test]
    fn listen_flag_replaces_only_the_client_listener() {
        let settings = parse_overrides(&[
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093".to_string(),
        ])
        .unwrap();
        let config =
            BrokerConfig::from_settings(&settings, Some("127.0.0.1:0".parse().unwrap()), None)
                .unwrap();
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.client_listener().port, 0);
        assert_eq!(config.controller_listener().unwrap().port, 19093);
    }

    #[test]
    fn bound_port_replaces_an_advertised_port_zero() {
        let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), "d".into());
        config.set_bound_client_port(45678);
        assert_eq!(config.advertised_port, 45678);
        assert_eq!(config.inter_broker_advertised(), ("127.0.0.1", 45678));
        assert_eq!(
            config.voter_addresses().get(&1).map(String::as_str),
            Some("127.0.0.1:45678")
        );
        // A controller listener on port 0 is not the client's port: its voter keeps port 0.
        let settings = parse_overrides(&[
            "listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0".to_string(),
        ])
        .unwrap();
        let mut config = BrokerConfig::from_settings(&settings, None, None).unwrap();
        config.set_bound_client_port(45678);
        assert_eq!(config.quorum_voters[0].port, 0);
        assert_eq!(config.advertised_port, 45678);
    }

    #[test]
    fn node_ids_are_non_negative_and_agree_with_broker_id() {
        let err = error(&["node.id=-1"]);
        assert!(
            err.contains("`node.id`") && err.contains("negative"),
            "{err}"
        );
        let err = error(&["node.id=2", "broker.id=3"]);
        assert!(
            err.contains("`broker.id`") && err.contains("node.id (2)"),
            "{err}"
        );
        assert_eq!(config(&["node.id=2", "broker.id=2"]).unwrap().node_id, 2);
        assert_eq!(config(&["broker.id=5"]).unwrap().node_id, 5);
    }

    #[test]
    fn a_controller_missing_from_the_voters_is_rejected() {
        let err = error(&[
            "node.id=4",
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093",
            THREE_VOTERS,
        ]);
        assert!(err.contains("controller.quorum.voters"), "{err}");
        assert!(err.contains("node.id 4"), "{err}");
    }

    #[test]
    fn duplicate_voter_ids_are_rejected() {
        let err = error(&[
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093",
            "controller.quorum.voters=1@127.0.0.1:19093,1@127.0.0.1:19094",
        ]);
        assert!(err.contains("controller.quorum.voters"), "{err}");
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn duplicate_listener_names_and_ports_are_rejected() {
        let err = error(&["listeners=PLAINTEXT://127.0.0.1:9092,PLAINTEXT://127.0.0.1:9093"]);
        assert!(err.contains("`listeners`"), "{err}");
        assert!(err.contains("defined twice"), "{err}");
        let err = error(&["listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9092"]);
        assert!(err.contains("`listeners`"), "{err}");
        assert!(err.contains("same port 9092"), "{err}");
    }

    #[test]
    fn the_listen_flag_may_not_take_the_controller_port() {
        let settings = parse_overrides(&[
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093".to_string(),
        ])
        .unwrap();
        let err =
            BrokerConfig::from_settings(&settings, Some("127.0.0.1:19093".parse().unwrap()), None)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("`listeners`") && err.contains("same port 19093"),
            "{err}"
        );
    }

    #[test]
    fn listener_names_must_be_defined_in_listeners() {
        let err = error(&["controller.listener.names=RAFT"]);
        assert!(err.contains("`controller.listener.names`"), "{err}");
        assert!(err.contains("`RAFT` is not defined in listeners"), "{err}");

        let err = error(&["inter.broker.listener.name=INTERNAL"]);
        assert!(err.contains("`inter.broker.listener.name`"), "{err}");
        assert!(err.contains("`INTERNAL` is not defined"), "{err}");

        let err = error(&["advertised.listeners=INTERNAL://broker.example:9093"]);
        assert!(err.contains("`advertised.listeners`"), "{err}");
        assert!(err.contains("`INTERNAL` is not defined"), "{err}");
    }

    #[test]
    fn several_voters_need_a_controller_listener() {
        let err = error(&["listeners=PLAINTEXT://127.0.0.1:9092", THREE_VOTERS]);
        assert!(err.contains("`listeners`"), "{err}");
        assert!(err.contains("controller.listener.names"), "{err}");
        assert!(err.contains("3 voters"), "{err}");
    }

    #[test]
    fn a_broker_only_node_may_not_define_a_controller_listener() {
        let err = error(&[
            "process.roles=broker",
            "node.id=4",
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093",
            THREE_VOTERS,
        ]);
        assert!(err.contains("`listeners`"), "{err}");
        assert!(err.contains("process.roles=broker"), "{err}");
        assert!(err.contains("CONTROLLER"), "{err}");
    }

    #[test]
    fn a_broker_only_node_follows_explicit_voters_it_is_not_part_of() {
        let err = error(&["process.roles=broker", "node.id=4"]);
        assert!(
            err.contains("`controller.quorum.voters` must be set"),
            "{err}"
        );

        let err = error(&["process.roles=broker", "node.id=1", THREE_VOTERS]);
        assert!(err.contains("`controller.quorum.voters`"), "{err}");
        assert!(err.contains("node.id 1 is a voter"), "{err}");

        let config = config(&["process.roles=broker", "node.id=4", THREE_VOTERS]).unwrap();
        assert!(config.process_roles.is_broker() && !config.process_roles.is_controller());
        assert!(!config.is_voter());
        assert!(config.controller_listener().is_none());
    }

    #[test]
    fn a_controller_only_node_needs_a_controller_listener_and_nothing_else() {
        let err = error(&["process.roles=controller"]);
        assert!(err.contains("`listeners`"), "{err}");
        assert!(
            err.contains("process.roles=controller needs a controller listener"),
            "{err}"
        );

        let err = error(&[
            "process.roles=controller",
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093",
        ]);
        assert!(
            err.contains("`listeners`") && err.contains("not PLAINTEXT"),
            "{err}"
        );

        let config = config(&[
            "process.roles=controller",
            "listeners=CONTROLLER://127.0.0.1:19093",
            THREE_VOTERS,
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:19093".parse().unwrap());
        assert_eq!(config.controller_listener().map(|l| l.port), Some(19093));
    }

    #[test]
    fn the_inter_broker_listener_may_not_be_a_controller_listener() {
        let err = error(&[
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093",
            "inter.broker.listener.name=CONTROLLER",
        ]);
        assert!(err.contains("`inter.broker.listener.name`"), "{err}");
        assert!(err.contains("controller listener"), "{err}");
    }

    #[test]
    fn the_inter_broker_listener_defaults_to_the_first_broker_listener_without_plaintext() {
        let config = config(&[
            "listeners=CONTROLLER://127.0.0.1:19093,INTERNAL://127.0.0.1:9094,EXTERNAL://127.0.0.1:9092",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
        ])
        .unwrap();
        assert_eq!(config.inter_broker_listener_name, "INTERNAL");
        assert_eq!(config.inter_broker_advertised(), ("127.0.0.1", 9094));
    }

    #[test]
    fn a_secure_listener_asks_for_what_its_protocol_needs() {
        let err = error(&["listeners=SSL://127.0.0.1:9093"]);
        assert!(err.contains("ssl.keystore.location"), "{err}");

        // The quorum's listener takes SASL too: its members need credentials to log in with,
        // and voters log in with PLAIN (SCRAM credentials live in the metadata they agree on).
        let controller_sasl = [
            "listeners=CONTROLLER://127.0.0.1:19093,PLAINTEXT://127.0.0.1:9092",
            "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ];
        let err = error(&controller_sasl);
        assert!(
            err.contains("listener.name.controller.plain.sasl.jaas.config"),
            "{err}"
        );
        let jaas = r#"listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="c" password="p" user_c="p";"#;
        let with_jaas = [controller_sasl[0], controller_sasl[1], jaas];
        let config = config(&with_jaas).unwrap();
        let security = config.controller_security.expect("the quorum speaks SASL");
        assert_eq!(
            security.login().map(|l| l.username.as_str()),
            Some("c"),
            "{security:?}"
        );
        let scram_voter = [
            controller_sasl[0],
            controller_sasl[1],
            r#"listener.name.controller.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="c" password="p";"#,
            "sasl.mechanism.controller.protocol=SCRAM-SHA-256",
        ];
        let err = error(&scram_voter);
        assert!(
            err.contains("`sasl.mechanism.controller.protocol`"),
            "{err}"
        );
        assert!(err.contains("PLAIN"), "{err}");

        let err = error(&["listeners=INTERNAL://127.0.0.1:9093"]);
        assert!(err.contains("`listener.security.protocol.map`"), "{err}");
        assert!(
            err.contains("no security protocol for listener INTERNAL"),
            "{err}"
        );
    }

    #[test]
    fn advertising_every_interface_is_rejected() {
        let err = error(&["advertised.listeners=PLAINTEXT://0.0.0.0:9092"]);
        assert!(err.contains("`advertised.listeners`"), "{err}");
    }

    #[test]
    fn replication_timings_are_checked_against_each_other() {
        let err = error(&["replica.fetch.wait.max.ms=40000"]);
        assert!(err.contains("`replica.fetch.wait.max.ms`"), "{err}");
        assert!(err.contains("replica.lag.time.max.ms"), "{err}");
        let err = error(&["broker.heartbeat.interval.ms=2000"]);
        assert!(err.contains("`broker.heartbeat.interval.ms`"), "{err}");
        assert!(err.contains("broker.session.timeout.ms"), "{err}");
        for bad in [
            "offsets.topic.replication.factor=0",
            "offsets.topic.replication.factor=40000",
            "replica.lag.time.max.ms=0",
            "num.replica.fetchers=0",
            "replica.fetch.max.bytes=-1",
            "controller.quorum.election.timeout.ms=soon",
            "auto.leader.rebalance.enable=maybe",
            "process.roles=zookeeper",
        ] {
            let name = bad.split('=').next().unwrap();
            let err = error(&[bad]);
            assert!(err.contains(&format!("`{name}`")), "{bad}: {err}");
        }
        let config = config(&[
            "replica.lag.time.max.ms=10000",
            "replica.fetch.wait.max.ms=10000",
            "offsets.topic.replication.factor=1",
            "num.replica.fetchers=4",
            "auto.leader.rebalance.enable=false",
        ])
        .unwrap();
        assert_eq!(config.replica_fetch_wait_max_ms, 10_000);
        assert_eq!(config.offsets_topic_replication_factor, 1);
        assert_eq!(config.num_replica_fetchers, 4);
        assert!(!config.auto_leader_rebalance_enable);
    }

    #[test]
    fn min_insync_and_unclean_election_are_topic_defaults() {
        let config = config(&[
            "min.insync.replicas=2",
            "unclean.leader.election.enable=true",
        ])
        .unwrap();
        assert_eq!(config.min_insync_replicas(), 2);
        assert!(config.unclean_leader_election_enable());
        assert_eq!(
            config
                .log_defaults
                .get("min.insync.replicas")
                .map(String::as_str),
            Some("2")
        );
        let err = error(&["unclean.leader.election.enable=yes"]);
        assert!(err.contains("`unclean.leader.election.enable`"), "{err}");
        let err = error(&["min.insync.replicas=0"]);
        assert!(err.contains("`min.insync.replicas`"), "{err}");
    }
}

#[cfg(test)]
mod readme_example {
    #![allow(clippy::unwrap_used)]
    use super::super::{parse_settings_toml, BrokerConfig};

    /// The three-node example of README.md's "Cluster settings" must stay valid.
    #[test]
    fn the_readme_cluster_example_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme.find("```toml\nnode.id = 2").unwrap() + "```toml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let settings = parse_settings_toml(&readme[start..end]).unwrap();
        let config = BrokerConfig::from_settings(&settings, None, None).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.quorum_voters.len(), 3);
        assert_eq!(config.controller_listener().map(|l| l.port), Some(19094));
        assert_eq!(config.inter_broker_advertised(), ("broker2.example", 9192));
    }
}
