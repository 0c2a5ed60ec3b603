//! DeleteRecords: raise a partition's log start offset.

use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};

/// Answers a DeleteRecords request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DeleteRecordsRequest = ctx.decode(&mut body)?;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let Some(replica) = broker.replicas.replica(&topic.name, p.partition_index)
                    else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    if let Err((error, _)) = replica.check_leader(-1) {
                        return result.with_error_code(error.code());
                    }
                    let log = replica.log();
                    // -1 means "up to the high watermark"; beyond it is out of range, as in
                    // Kafka (followers may not have those records yet).
                    let high_watermark = replica.high_watermark();
                    let offset = if p.offset == -1 {
                        high_watermark
                    } else {
                        p.offset
                    };
                    if offset < 0 || offset > high_watermark {
                        return result.with_error_code(ResponseError::OffsetOutOfRange.code());
                    }
                    match log.delete_records_before(offset) {
                        Ok(low_watermark) => result
                            .with_error_code(NONE)
                            .with_low_watermark(low_watermark),
                        Err(error) => result.with_error_code(ResponseError::from(&error).code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    let response = DeleteRecordsResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics);
    ctx.respond(&response)
}
