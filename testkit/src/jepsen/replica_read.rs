//! Reading one partition from one broker with raw Fetch requests: the per-broker final read.
//!
//! The client reads from whichever broker leads a partition; the checker's divergence check
//! needs what each broker holds. This reader sends Fetch (v12, topic by name) to the broker
//! at a given address and reads from the log start to the high watermark that broker reports,
//! keeping beside each value the rest of the record (key, timestamp, headers, producer id,
//! epoch, sequence and leader epoch) so that replicas are compared byte for byte.
//!
//! It fetches as a consumer (replica id -1). Today that reads the leader (a single broker
//! leads everything); once partitions are replicated, a follower answers a consumer with
//! NOT_LEADER_OR_FOLLOWER unless it serves follower fetches, and this is where a replica-level
//! read will go (a Fetch with the follower's own broker id would move the leader's view of
//! that follower, so it is not done here).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use super::history::{Partition, Recorder, ReplicaRecord};
use crate::wire::TestClient;

/// What one broker holds of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead {
    /// The records from the log start up to the high watermark, control records left out.
    pub records: Vec<ReplicaRecord>,
    /// The broker's high watermark.
    pub high_watermark: i64,
    /// The broker's log start offset.
    pub log_start_offset: i64,
}

/// Kafka's OFFSET_OUT_OF_RANGE: the log start moved past the fetch offset (retention).
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// The Fetch version: the last that names topics (v13 uses topic ids).
const FETCH_VERSION: i16 = 12;

/// Everything of a record except offset and value, in a fixed encoding: two replicas of one
/// record must agree on it byte for byte.
pub fn record_rest(record: &Record) -> Bytes {
    fn put_opt(buf: &mut BytesMut, bytes: Option<&[u8]>) {
        match bytes {
            None => buf.put_i32(-1),
            Some(b) => {
                buf.put_i32(b.len() as i32);
                buf.put_slice(b);
            }
        }
    }
    let mut buf = BytesMut::new();
    put_opt(&mut buf, record.key.as_deref());
    buf.put_i64(record.timestamp);
    buf.put_u8(record.timestamp_type as u8);
    buf.put_i64(record.producer_id);
    buf.put_i16(record.producer_epoch);
    buf.put_i32(record.sequence);
    buf.put_i32(record.partition_leader_epoch);
    buf.put_u8(u8::from(record.transactional));
    buf.put_i32(record.headers.len() as i32);
    for (name, value) in &record.headers {
        put_opt(&mut buf, Some(name.as_bytes()));
        put_opt(&mut buf, value.as_deref());
    }
    buf.freeze()
}

/// Decodes the batches of a fetched record set. A batch cut short at the end (the fetch's
/// size limit) ends the set; a bad batch before any good one is an error.
fn decode(mut bytes: Bytes) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut batches = 0;
    while !bytes.is_empty() {
        match RecordBatchDecoder::decode(&mut bytes) {
            Ok(set) => {
                batches += 1;
                records.extend(set.records);
            }
            Err(e) if batches == 0 => bail!("the first fetched batch does not decode: {e}"),
            Err(_) => break,
        }
    }
    Ok(records)
}

/// Kafka's replica id of a debugging consumer (`FetchRequest.DEBUGGING_CONSUMER_ID`).
pub const DEBUGGING_CONSUMER_ID: i32 = -2;

/// Reads partition `partition` of `topic` from the broker at `addr`, from its log start to its
/// high watermark, giving up after `within`.
pub async fn fetch_partition(
    addr: SocketAddr,
    topic: &str,
    partition: Partition,
    within: Duration,
) -> anyhow::Result<PartitionRead> {
    tokio::time::timeout(within, fetch_partition_inner(addr, topic, partition))
        .await
        .with_context(|| format!("reading {topic}-{partition} from {addr} took over {within:?}"))?
}

async fn fetch_partition_inner(
    addr: SocketAddr,
    topic: &str,
    partition: Partition,
) -> anyhow::Result<PartitionRead> {
    let mut client = TestClient::try_connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut offset = 0;
    let mut records = Vec::new();
    loop {
        // -2 is Kafka's debugging consumer: any replica answers, leader or follower, up to
        // its own high watermark, which is what comparing replicas needs.
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(DEBUGGING_CONSUMER_ID))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(4 << 20)])]);
        let response = client
            .try_call(FETCH_VERSION, &request)
            .await
            .with_context(|| format!("Fetch {topic}-{partition}@{offset} from {addr}"))?;
        if response.error_code != 0 {
            bail!(
                "Fetch from {addr} failed with error code {}",
                response.error_code
            );
        }
        let data = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .with_context(|| format!("no {topic}-{partition} in the Fetch answer of {addr}"))?;
        if data.error_code == OFFSET_OUT_OF_RANGE && offset < data.log_start_offset {
            offset = data.log_start_offset;
            continue;
        }
        if data.error_code != 0 {
            bail!(
                "Fetch {topic}-{partition}@{offset} from {addr}: error code {}",
                data.error_code
            );
        }
        let batch = decode(data.records.clone().unwrap_or_default())?;
        let before = offset;
        for record in batch {
            if record.offset < offset {
                // A batch fetched from its start holds records before the fetch offset.
                continue;
            }
            offset = record.offset + 1;
            if record.control || record.offset >= data.high_watermark {
                continue;
            }
            records.push(ReplicaRecord {
                offset: record.offset,
                rest: Some(record_rest(&record)),
                value: record.value.clone().unwrap_or_default(),
            });
        }
        if offset == before && offset < data.high_watermark {
            bail!(
                "reading {topic}-{partition} from {addr} made no progress at offset {offset} \
                 (high watermark {})",
                data.high_watermark
            );
        }
        if offset >= data.high_watermark {
            return Ok(PartitionRead {
                records,
                high_watermark: data.high_watermark,
                log_start_offset: data.log_start_offset,
            });
        }
    }
}

/// Reads every partition of `topic` from the broker at `addr` and records each read as that of
/// broker `broker`'s replica ([`super::History::record_replica_read`]).
pub async fn record_broker_reads(
    recorder: &Recorder,
    broker: i32,
    addr: SocketAddr,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    for partition in 0..partitions {
        let read = fetch_partition(addr, topic, partition, Duration::from_secs(30)).await?;
        recorder.with(|h| {
            h.record_replica_read(broker, partition, read.records, Some(read.high_watermark))
        });
    }
    Ok(())
}
