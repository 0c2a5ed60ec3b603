//! The slow-request log (`log.slow.request.ms`): a request slower than the threshold is
//! logged at WARN with its API, version, client id, the partitions it named and the time in
//! each stage, so that a latency spike has a name.
//!
//! The request is decoded a second time, only once it has turned out slow: the fast path
//! keeps nothing but a reference to its frame.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, ListOffsetsRequest, ProduceRequest, RequestHeader,
};
use kafka_protocol::protocol::Decodable;

use super::request_metrics::StageTimes;

/// Logs one slow request.
pub(crate) fn log(api: &str, version: i16, frame: &Bytes, times: &StageTimes) {
    let (client_id, partitions) = describe(frame, version);
    tracing::warn!(
        api,
        version,
        client_id = client_id.as_deref().unwrap_or(""),
        partitions = %partitions,
        total_ms = ms(times.total),
        request_queue_ms = ms(times.request_queue),
        local_ms = ms(times.local),
        response_queue_ms = ms(times.response_queue),
        remote_ms = ms(times.remote),
        response_send_ms = ms(times.response_send),
        "slow request"
    );
}

/// The client id and the `topic-partition` list of the request in `frame`, as far as they
/// decode (a frame that does not decode was refused already; it is described as empty).
fn describe(frame: &Bytes, version: i16) -> (Option<String>, String) {
    let mut body = frame.clone();
    if body.remaining() < 2 {
        return (None, String::new());
    }
    let Ok(api) = ApiKey::try_from(i16::from_be_bytes([body[0], body[1]])) else {
        return (None, String::new());
    };
    let Ok(header) = RequestHeader::decode(&mut body, api.request_header_version(version)) else {
        return (None, String::new());
    };
    let client_id = header.client_id.map(|s| s.to_string());
    let mut partitions: Vec<String> = Vec::new();
    match api {
        ApiKey::Produce => {
            if let Ok(request) = ProduceRequest::decode(&mut body, version) {
                for topic in request.topic_data {
                    for p in topic.partition_data {
                        partitions.push(format!("{}-{}", topic.name.0, p.index));
                    }
                }
            }
        }
        ApiKey::Fetch => {
            if let Ok(request) = FetchRequest::decode(&mut body, version) {
                for topic in request.topics {
                    // From v13 topics are named by id only.
                    let name = if version >= 13 {
                        topic.topic_id.to_string()
                    } else {
                        topic.topic.0.to_string()
                    };
                    for p in topic.partitions {
                        partitions.push(format!("{name}-{}", p.partition));
                    }
                }
            }
        }
        ApiKey::ListOffsets => {
            if let Ok(request) = ListOffsetsRequest::decode(&mut body, version) {
                for topic in request.topics {
                    for p in topic.partitions {
                        partitions.push(format!("{}-{}", topic.name.0, p.partition_index));
                    }
                }
            }
        }
        _ => {}
    }
    (client_id, partitions.join(","))
}

fn ms(duration: std::time::Duration) -> f64 {
    // Three decimals are enough for a log line and keep it short.
    (duration.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn a_produce_frame_is_described_by_client_and_partitions() {
        let version = 9;
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(version)
            .with_client_id(Some(StrBytes::from_static_str("loader")))
            .encode(&mut frame, ApiKey::Produce.request_header_version(version))
            .unwrap();
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("clicks")))
            .with_partition_data(vec![
                PartitionProduceData::default().with_index(0),
                PartitionProduceData::default().with_index(3),
            ]);
        ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![topic])
            .encode(&mut frame, version)
            .unwrap();
        let (client, partitions) = describe(&frame.freeze(), version);
        assert_eq!(client.as_deref(), Some("loader"));
        assert_eq!(partitions, "clicks-0,clicks-3");
    }
}
