//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
//! partition (single key up to v3, batched v4).

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::client_endpoint;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::group::OFFSETS_TOPIC;

/// Key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

/// Where a coordinator is: node id, host, port.
type Found = (i32, StrBytes, i32);

/// Answers a FindCoordinator request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: FindCoordinatorRequest = ctx.decode(&mut body)?;
    let response = if ctx.version >= 4 {
        let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
        for key in &request.coordinator_keys {
            let found = lookup(broker, request.key_type, key).await;
            let (error, message) = found.clone().err().unzip();
            let (node, host, port) = found.unwrap_or((-1, str_bytes(""), -1));
            coordinators.push(
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(error_code(error))
                    .with_error_message(message.map(str_bytes)),
            );
        }
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let found = lookup(broker, request.key_type, &request.key).await;
        let (error, message) = found.clone().err().unzip();
        let response = FindCoordinatorResponse::default().with_error_code(error_code(error));
        let response = if ctx.version >= 1 {
            response.with_error_message(message.map(str_bytes))
        } else {
            response
        };
        let (node, host, port) = found.unwrap_or((-1, str_bytes(""), -1));
        response
            .with_node_id(BrokerId(node))
            .with_host(host)
            .with_port(port)
    };
    ctx.respond(&response.with_throttle_time_ms(0))
}

/// The coordinator of one key, or the error with its message.
async fn lookup(
    broker: &Broker,
    key_type: i8,
    key: &str,
) -> Result<Found, (ResponseError, String)> {
    if key_type != KEY_TYPE_GROUP {
        return Err((
            ResponseError::CoordinatorNotAvailable,
            "transactions are not supported yet".to_string(),
        ));
    }
    if key.is_empty() {
        return Err((ResponseError::InvalidRequest, "empty group id".to_string()));
    }
    // Creating the offsets topic here, as Kafka does, makes the first commit fast.
    let partitions = broker.offsets.ensure_topic().await.map_err(|e| {
        (
            ResponseError::from(e),
            "offsets topic unavailable".to_string(),
        )
    })?;
    // A topic just created is led here (or elsewhere) before the group timer notices.
    broker.offsets.sync_coordination(&broker.groups);
    let partition = broker.offsets.partition_of(key, partitions);
    broker.controller.with_image(|image| {
        let leader = image
            .topic(OFFSETS_TOPIC)
            .and_then(|t| t.partition(partition))
            .map_or(-1, |p| p.leader);
        let endpoint = image
            .broker(leader)
            .filter(|b| !b.fenced)
            .and_then(client_endpoint);
        match endpoint {
            Some(e) => Ok((leader, str_bytes(e.host.clone()), i32::from(e.port))),
            None => Err((
                ResponseError::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC}-{partition} has no leader right now"),
            )),
        }
    })
}
