//! FindCoordinator: this broker coordinates every group (single key up to v3, batched v4).

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};

/// Key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

/// Answers a FindCoordinator request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: FindCoordinatorRequest = ctx.decode(&mut body)?;
    // Ok, or the error with its message.
    let lookup = |key: &str| -> Result<(), (ResponseError, String)> {
        if request.key_type != KEY_TYPE_GROUP {
            return Err((
                ResponseError::CoordinatorNotAvailable,
                "transactions are not supported yet".to_string(),
            ));
        }
        if key.is_empty() {
            return Err((ResponseError::InvalidRequest, "empty group id".to_string()));
        }
        // Creating the offsets topic here, as Kafka does, makes the first commit fast.
        match broker.offsets.offsets_log(key) {
            Ok(_) => Ok(()),
            Err(error) => Err((error.into(), "offsets topic unavailable".to_string())),
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
                let found = lookup(key);
                let (error, message) = found.clone().err().unzip();
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(if found.is_ok() { node } else { BrokerId(-1) })
                    .with_host(if found.is_ok() {
                        host.clone()
                    } else {
                        str_bytes("")
                    })
                    .with_port(if found.is_ok() { port } else { -1 })
                    .with_error_code(error_code(error))
                    .with_error_message(message.map(str_bytes))
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let found = lookup(&request.key);
        let (error, message) = found.clone().err().unzip();
        let response = FindCoordinatorResponse::default().with_error_code(error_code(error));
        let response = if ctx.version >= 1 {
            response.with_error_message(message.map(str_bytes))
        } else {
            response
        };
        if found.is_ok() {
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
