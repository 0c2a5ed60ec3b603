//! DescribeLogDirs: the data directory and the size on disk of each partition.

use bytes::Bytes;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a DescribeLogDirs request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeLogDirsRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::Describe, Resource::cluster()) {
        // v3+ says why; earlier versions just see no log dirs.
        let error = if ctx.version >= 3 {
            ResponseError::ClusterAuthorizationFailed.code()
        } else {
            NONE
        };
        return ctx.respond(
            &DescribeLogDirsResponse::default()
                .with_throttle_time_ms(0)
                .with_error_code(error),
        );
    }
    let wanted: Vec<(String, Option<Vec<i32>>)> = match request.topics {
        None => broker
            .replicas
            .all()
            .into_iter()
            .map(|(name, _)| (name, None))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), Some(t.partitions)))
            .collect(),
    };
    let mut topics = Vec::new();
    for (name, partitions) in wanted {
        let Some(hosted) = broker.replicas.topic(&name) else {
            continue; // Kafka leaves out partitions the broker does not host.
        };
        let partitions = hosted
            .partitions
            .iter()
            .filter_map(|(&index, log)| {
                if let Some(only) = &partitions {
                    if !only.contains(&index) {
                        return None;
                    }
                }
                Some(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(index)
                        .with_partition_size(
                            i64::try_from(log.log().size_bytes()).unwrap_or(i64::MAX),
                        )
                        .with_offset_lag(0)
                        .with_is_future_key(false),
                )
            })
            .collect();
        topics.push(
            DescribeLogDirsTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(partitions),
        );
    }
    let dir = std::fs::canonicalize(broker.replicas.data_dir())
        .unwrap_or_else(|_| broker.replicas.data_dir().to_path_buf());
    let response = DescribeLogDirsResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(NONE)
        .with_results(vec![DescribeLogDirsResult::default()
            .with_error_code(NONE)
            .with_log_dir(str_bytes(dir.display().to_string()))
            .with_topics(topics)
            // Volume sizes are unknown without statvfs; -1 is the protocol's "unknown".
            .with_total_bytes(-1)
            .with_usable_bytes(-1)]);
    ctx.respond(&response)
}
