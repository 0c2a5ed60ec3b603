//! DeleteGroups: only empty groups; their committed offsets are tombstoned.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::access::Access;
use super::{now_ms, Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::security::authorizer::{AclOperation, Resource};

/// Handles a DeleteGroups request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    let request: DeleteGroupsRequest = ctx.decode(&mut body)?;
    let access = Access::new(broker, ctx);
    let denied: Vec<bool> = request
        .groups_names
        .iter()
        .map(|g| !access.authorize(AclOperation::Delete, Resource::group(g)))
        .collect();
    drop(access);
    let broker = broker.clone();
    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        let mut results = Vec::with_capacity(request.groups_names.len());
        for (group_id, denied) in request.groups_names.into_iter().zip(denied) {
            if denied {
                results.push(
                    DeletableGroupResult::default()
                        .with_group_id(group_id)
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
                );
                continue;
            }
            let outcome = match broker.groups.prepare_delete(&group_id) {
                Err(error) => Err(error),
                Ok(partitions) => {
                    let tombstones = partitions.into_iter().map(|tp| (tp, None)).collect();
                    let stored = match broker
                        .offsets
                        .store(&broker.groups, &group_id, tombstones, now_ms())
                        .await
                    {
                        Ok(()) => {
                            broker
                                .offsets
                                .store_group(&broker.groups, &group_id, None)
                                .await
                        }
                        Err(error) => Err(error),
                    };
                    match stored {
                        Ok(()) => {
                            broker.groups.finish_delete(&group_id);
                            tracing::info!(group = %group_id.0, "deleted group");
                            Ok(())
                        }
                        Err(error) => Err(error),
                    }
                }
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(error_code(outcome.err())),
            );
        }
        let response = DeleteGroupsResponse::default()
            .with_throttle_time_ms(0)
            .with_results(results);
        ctx.respond(&response).ok()
    })))
}
