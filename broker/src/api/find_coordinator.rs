//! FindCoordinator: this broker coordinates every group (single key up to v3, batched v4).

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;

const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const INVALID_REQUEST: i16 = 42;
/// Key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

/// Answers a FindCoordinator request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: FindCoordinatorRequest = ctx.decode(&mut body)?;
    let lookup = |key: &str| -> (i16, Option<String>) {
        if request.key_type != KEY_TYPE_GROUP {
            return (
                COORDINATOR_NOT_AVAILABLE,
                Some("transactions are not supported yet".to_string()),
            );
        }
        if key.is_empty() {
            return (INVALID_REQUEST, Some("empty group id".to_string()));
        }
        // Creating the offsets topic here, as Kafka does, makes the first commit fast.
        match broker.offsets.offsets_log(key) {
            Ok(_) => (0, None),
            Err(code) => (code, Some("offsets topic unavailable".to_string())),
        }
    };
    let node = BrokerId(broker.config.node_id);
    let host = str_bytes(broker.config.advertised_host.clone());
    let port = i32::from(broker.config.advertised_port);
    let response = if ctx.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let (code, message) = lookup(key);
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(if code == 0 { node } else { BrokerId(-1) })
                    .with_host(if code == 0 {
                        host.clone()
                    } else {
                        str_bytes("")
                    })
                    .with_port(if code == 0 { port } else { -1 })
                    .with_error_code(code)
                    .with_error_message(message.map(str_bytes))
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let (code, message) = lookup(&request.key);
        let response = FindCoordinatorResponse::default().with_error_code(code);
        let response = if ctx.version >= 1 {
            response.with_error_message(message.map(str_bytes))
        } else {
            response
        };
        if code == 0 {
            response.with_node_id(node).with_host(host).with_port(port)
        } else {
            response
                .with_node_id(BrokerId(-1))
                .with_host(str_bytes(""))
                .with_port(-1)
        }
    };
    ctx.respond(&response.with_throttle_time_ms(0))
}
