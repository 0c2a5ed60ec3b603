//! WriteTxnMarkers: a transaction coordinator asks this partition leader to end a producer's
//! transaction in the named partitions with commit or abort markers.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::access::Access;
use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::security::authorizer::{AclOperation, Resource};
use crate::txn::markers::write_local;

/// Answers a WriteTxnMarkers request once every marker is on the in-sync replicas (or failed).
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: WriteTxnMarkersRequest = ctx.decode(&mut body)?;
    // Only brokers (transaction coordinators) write markers: CLUSTER_ACTION on the cluster.
    let denied =
        !Access::new(broker, ctx).authorize(AclOperation::ClusterAction, Resource::cluster());
    let mut markers = Vec::with_capacity(request.markers.len());
    for marker in &request.markers {
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in &marker.topics {
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for &partition in &topic.partition_indexes {
                if denied {
                    partitions.push(
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(partition)
                            .with_error_code(ResponseError::ClusterAuthorizationFailed.code()),
                    );
                    continue;
                }
                let error = write_local(
                    broker,
                    marker.producer_id.0,
                    marker.producer_epoch,
                    marker.coordinator_epoch,
                    marker.transaction_result,
                    &topic.name.0,
                    partition,
                )
                .await;
                if let Some((error, message)) = &error {
                    tracing::debug!(topic = %topic.name.0, partition, %error, %message, "transaction marker not written");
                }
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(partition)
                        .with_error_code(error_code(error.map(|(e, _)| e))),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    ctx.respond(&WriteTxnMarkersResponse::default().with_markers(markers))
}
