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
