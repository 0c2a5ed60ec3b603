//! AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction, so its
//! TxnOffsetCommit offsets commit or abort with it.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::access::Access;
use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::group::OFFSETS_TOPIC;
use crate::security::authorizer::{AclOperation, Resource};

/// Answers an AddOffsetsToTxn request.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: AddOffsetsToTxnRequest = ctx.decode(&mut body)?;
    let transactional_id = request.transactional_id.0.to_string();
    let group_id = request.group_id.0.to_string();
    let access = Access::new(broker, ctx);
    let txn_allowed = access.authorize(
        AclOperation::Write,
        Resource::transactional_id(&transactional_id),
    );
    let group_allowed =
        txn_allowed && access.authorize(AclOperation::Read, Resource::group(&group_id));
    drop(access);
    let code = if !txn_allowed {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if !group_allowed {
        ResponseError::GroupAuthorizationFailed.code()
    } else if group_id.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else {
        match broker.offsets.ensure_topic().await {
            Err(error) => ResponseError::from(error).code(),
            Ok(partitions) => {
                let partition = broker.offsets.partition_of(&group_id, partitions);
                match broker
                    .transactions
                    .add_partitions(
                        broker,
                        &transactional_id,
                        request.producer_id.0,
                        request.producer_epoch,
                        &[(OFFSETS_TOPIC.to_string(), partition)],
                        0,
                    )
                    .await
                {
                    Ok(()) => NONE,
                    Err((error, message)) => {
                        tracing::debug!(%transactional_id, %error, %message, "AddOffsetsToTxn refused");
                        error.code()
                    }
                }
            }
        }
    };
    let response = AddOffsetsToTxnResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(code);
    ctx.respond(&response)
}
