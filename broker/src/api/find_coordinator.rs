//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
//! partition, a transactional id's the leader of its `__transaction_state` partition (single
//! key up to v3, batched v4).

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::access::Access;
use super::metadata::client_endpoint;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::group::OFFSETS_TOPIC;
use crate::security::authorizer::{AclOperation, Resource};
use crate::txn::TRANSACTION_STATE_TOPIC;

/// Key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// Key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;

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
            let found = lookup(broker, ctx, request.key_type, key).await;
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
        let found = lookup(broker, ctx, request.key_type, &request.key).await;
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
    ctx: &RequestContext,
    key_type: i8,
    key: &str,
) -> Result<Found, (ResponseError, String)> {
    if key.is_empty() {
        return Err((ResponseError::InvalidRequest, "empty key".to_string()));
    }
    // DESCRIBE on the group or the transactional id.
    let access = Access::new(broker, ctx);
    let denied = match key_type {
        KEY_TYPE_GROUP => (!access.authorize(AclOperation::Describe, Resource::group(key)))
            .then_some(ResponseError::GroupAuthorizationFailed),
        KEY_TYPE_TRANSACTION => (!access
            .authorize(AclOperation::Describe, Resource::transactional_id(key)))
        .then_some(ResponseError::TransactionalIdAuthorizationFailed),
        _ => None,
    };
    drop(access);
    if let Some(error) = denied {
        return Err((error, format!("no DESCRIBE on `{key}`")));
    }
    // Creating the internal topic here, as Kafka does, makes the first request fast.
    let (topic, partition) = match key_type {
        KEY_TYPE_GROUP => {
            let partitions = broker.offsets.ensure_topic().await.map_err(|e| {
                (
                    ResponseError::from(e),
                    "offsets topic unavailable".to_string(),
                )
            })?;
            // A topic just created is led here (or elsewhere) before the group timer notices.
            broker.offsets.sync_coordination(&broker.groups);
            (OFFSETS_TOPIC, broker.offsets.partition_of(key, partitions))
        }
        KEY_TYPE_TRANSACTION => {
            let partitions = broker.transactions.ensure_topic(broker).await?;
            (
                TRANSACTION_STATE_TOPIC,
                broker.transactions.partition_of(key, partitions),
            )
        }
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!("unknown coordinator key type {other}"),
            ))
        }
    };
    broker.controller.with_image(|image| {
        let leader = image
            .topic(topic)
            .and_then(|t| t.partition(partition))
            .map_or(-1, |p| p.leader);
        let endpoint = image
            .broker(leader)
            .filter(|b| !b.fenced)
            .and_then(|b| client_endpoint(b, &ctx.session.listener_name));
        match endpoint {
            Some(e) => Ok((leader, str_bytes(e.host.clone()), i32::from(e.port))),
            None => Err((
                ResponseError::CoordinatorNotAvailable,
                format!("{topic}-{partition} has no leader right now"),
            )),
        }
    })
}
