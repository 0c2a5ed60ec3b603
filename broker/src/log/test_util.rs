//! Helpers shared by the log's unit tests: batches built with the crate's own encoder, the way a
//! producer builds them.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A record as a producer would send it.
pub(crate) fn record(
    offset: i64,
    timestamp: i64,
    key: Option<&str>,
    value: Option<&str>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset as i32,
        timestamp,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Default::default(),
    }
}

/// `n` records with offsets `first..first+n`, timestamps `ts0 + i`, keys `k<i>`, values `v<i>`.
pub(crate) fn records(first: i64, n: i64, ts0: i64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let o = first + i;
            record(o, ts0 + i, Some(&format!("k{o}")), Some(&format!("v{o}")))
        })
        .collect()
}

/// Encodes `records` as one batch (offsets relative, as a producer does).
pub(crate) fn encode_batch(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// A batch of `n` records with values of `value_len` bytes and timestamps starting at `ts0`.
pub(crate) fn batch_of(n: i64, value_len: usize, ts0: i64) -> Bytes {
    let value = "x".repeat(value_len);
    let recs: Vec<Record> = (0..n)
        .map(|i| record(i, ts0 + i, Some(&format!("k{i}")), Some(&value)))
        .collect();
    encode_batch(&recs, Compression::None)
}

/// Every record from the log start to the end, fetching chunk by chunk as a consumer would.
pub(crate) fn read_all_records(log: &crate::log::PartitionLog) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let mut chunk = log.read(offset, 1 << 30).unwrap();
        assert!(!chunk.is_empty(), "empty read at {offset}");
        // Advance past the last batch, whose lastOffsetDelta may cover compacted-away records.
        let mut pos = 0;
        while pos < chunk.len() {
            let h = crate::log::batch::BatchHeader::parse(&chunk[pos..]).unwrap();
            offset = h.last_offset() + 1;
            pos += h.total_size().unwrap();
        }
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut chunk).unwrap() {
            out.extend(set.records);
        }
    }
    out
}

/// (offset, key, value) of records as strings, for compact assertions.
pub(crate) fn kv(records: &[Record]) -> Vec<(i64, String, Option<String>)> {
    records
        .iter()
        .map(|r| {
            let s = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
            (
                r.offset,
                r.key.as_ref().map(s).unwrap_or_default(),
                r.value.as_ref().map(s),
            )
        })
        .collect()
}

/// One uncompressed batch of an idempotent producer: `n` records with sequences
/// `base_seq..base_seq+n` and timestamps `ts0 + i`.
pub(crate) fn producer_batch(
    producer_id: i64,
    epoch: i16,
    base_seq: i32,
    n: i64,
    ts0: i64,
) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            producer_id,
            producer_epoch: epoch,
            sequence: base_seq.wrapping_add(i as i32),
            ..record(i, ts0 + i, Some(&format!("k{i}")), Some("v"))
        })
        .collect();
    encode_batch(&recs, Compression::None)
}
