//! Reading record batches from a Fetch response, keeping every header (duplicates included)
//! and slicing keys and values out of the response buffer without copying.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::compression::Decompressor;

use super::batch::BATCH_HEADER_LEN;
use super::varint::{get_varint, get_varlong};

/// One record as read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic (shared between the records of a partition, so cloning is cheap).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// Milliseconds since the epoch: creation time, or the broker's append time when the topic
    /// uses `LogAppendTime` (see `timestamp_type`).
    pub timestamp: i64,
    /// Which of the two `timestamp` is.
    pub timestamp_type: TimestampType,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order; a key may repeat.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The epoch of the partition leader that wrote the record's batch (`None` when the
    /// batch carries none, -1 on the wire). The consumer keeps the epoch of the last record
    /// it handed out with its position, to detect a log truncated by a leader change
    /// (KIP-320).
    pub leader_epoch: Option<i32>,
}

/// What a record's timestamp means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the batch.
    LogAppendTime,
}

/// Why a batch could not be read.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub(crate) offset: i64,
    pub(crate) reason: String,
}

/// What a record set held.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// The offset after the last complete batch read (the next fetch position), if any batch
    /// was complete.
    pub(crate) next_offset: Option<i64>,
    /// The leader epoch of the last complete batch read (`None` when it carried none), sent
    /// back as `last_fetched_epoch` so the broker can spot a diverging log.
    pub(crate) last_epoch: Option<i32>,
}

/// Decodes every complete batch of `data` into `out`, skipping records before `from_offset`
/// (a batch may start before the offset that was asked for) and control batches (transaction
/// markers). A batch cut off at the end of `data` is normal (the broker fills up to the size
/// limit) and ignored.
pub(crate) fn decode_record_set(
    data: &Bytes,
    topic: &Arc<str>,
    partition: i32,
    from_offset: i64,
    check_crcs: bool,
    out: &mut Vec<ConsumerRecord>,
) -> Result<Decoded, DecodeError> {
    decode_committed_record_set(data, topic, partition, from_offset, check_crcs, &[], out)
}

/// [`decode_record_set`] for a read_committed fetch: batches of the `aborted` transactions
/// (producer id, first offset; as the broker listed them) are skipped too. A producer's
/// aborted transaction starts at its first offset and ends at the producer's next control
/// batch (its abort marker), as Kafka's consumers read it.
pub(crate) fn decode_committed_record_set(
    data: &Bytes,
    topic: &Arc<str>,
    partition: i32,
    from_offset: i64,
    check_crcs: bool,
    aborted: &[(i64, i64)],
    out: &mut Vec<ConsumerRecord>,
) -> Result<Decoded, DecodeError> {
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec();
    aborted.sort_unstable_by_key(|&(_, first)| first);
    let mut upcoming = aborted.into_iter().peekable();
    // Producers whose aborted transaction the batches are in now.
    let mut aborting: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut decoded = Decoded::default();
    let mut position = 0usize;
    while data.len() - position >= 12 + 5 {
        let header = &data[position..];
        let base_offset = be_i64(&header[0..8]);
        let batch_length = be_i32(&header[8..12]);
        let error = |reason: String| DecodeError {
            offset: base_offset,
            reason,
        };
        if batch_length < (BATCH_HEADER_LEN - 12) as i32 {
            return Err(error(format!(
                "batch length {batch_length} is shorter than a batch header"
            )));
        }
        let total = 12 + batch_length as usize;
        if header.len() < total {
            break;
        }
        let magic = header[16] as i8;
        if magic != 2 {
            return Err(error(format!(
                "message format v{magic} is not supported (only record batches v2, Kafka 0.11+)"
            )));
        }
        let batch = data.slice(position..position + total);
        position += total;
        if check_crcs {
            let expected = be_i32(&batch[17..21]) as u32;
            let actual = crc32c::crc32c(&batch[21..]);
            if expected != actual {
                return Err(error(format!(
                    "CRC mismatch: header says {expected:#010x}, data has {actual:#010x}"
                )));
            }
        }
        let leader_epoch = Some(be_i32(&batch[12..16])).filter(|epoch| *epoch >= 0);
        let attributes = be_i16(&batch[21..23]);
        let last_offset_delta = be_i32(&batch[23..27]);
        let first_timestamp = be_i64(&batch[27..35]);
        let max_timestamp = be_i64(&batch[35..43]);
        let record_count = be_i32(&batch[57..61]);
        decoded.next_offset = Some(base_offset + i64::from(last_offset_delta) + 1);
        decoded.last_epoch = leader_epoch;
        let control = attributes & 0x20 != 0;
        let producer_id = be_i64(&batch[43..51]);
        let last_offset = base_offset + i64::from(last_offset_delta);
        while let Some(&(pid, _)) = upcoming.peek().filter(|&&(_, first)| first <= last_offset) {
            aborting.insert(pid);
            upcoming.next();
        }
        if control {
            // The producer's marker ends its transaction, aborted or not.
            aborting.remove(&producer_id);
            continue;
        }
        let transactional = attributes & 0x10 != 0;
        if (transactional && aborting.contains(&producer_id)) || last_offset < from_offset {
            continue;
        }
        let timestamp_type = if attributes & 0x08 != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        };
        let compressed = batch.slice(BATCH_HEADER_LEN..);
        let records = decompress(attributes & 0x07, compressed).map_err(error)?;
        let context = BatchContext {
            topic,
            partition,
            base_offset,
            first_timestamp,
            max_timestamp,
            timestamp_type,
            from_offset,
            leader_epoch,
        };
        read_records(&records, record_count, &context, out).map_err(error)?;
    }
    Ok(decoded)
}

struct BatchContext<'a> {
    topic: &'a Arc<str>,
    partition: i32,
    base_offset: i64,
    first_timestamp: i64,
    max_timestamp: i64,
    timestamp_type: TimestampType,
    from_offset: i64,
    leader_epoch: Option<i32>,
}

fn decompress(codec: i16, mut compressed: Bytes) -> Result<Bytes, String> {
    let take = |buf: &mut Bytes| Ok(std::mem::take(buf));
    let result = match codec {
        0 => return Ok(compressed),
        1 => kafka_protocol::compression::Gzip::decompress(&mut compressed, take),
        2 => kafka_protocol::compression::Snappy::decompress(&mut compressed, take),
        3 => kafka_protocol::compression::Lz4::decompress(&mut compressed, take),
        4 => kafka_protocol::compression::Zstd::decompress(&mut compressed, take),
        other => return Err(format!("unknown compression codec {other}")),
    };
    result.map_err(|e| format!("cannot decompress (codec {codec}): {e}"))
}

fn read_records(
    records: &Bytes,
    count: i32,
    batch: &BatchContext<'_>,
    out: &mut Vec<ConsumerRecord>,
) -> Result<(), String> {
    // Every record takes at least 7 bytes; a count beyond that is corrupt, not a reason to
    // reserve gigabytes.
    out.reserve((count.max(0) as usize).min(records.len() / 7));
    let truncated = || "record truncated".to_string();
    let mut cursor: &[u8] = records;
    for _ in 0..count {
        let length = get_varint(&mut cursor).ok_or_else(truncated)?;
        if length < 0 || length as usize > cursor.len() {
            return Err(format!("record length {length} beyond the batch"));
        }
        let (mut body, rest) = cursor.split_at(length as usize);
        cursor = rest;
        body = body.get(1..).ok_or_else(truncated)?; // attributes
        let timestamp_delta = get_varlong(&mut body).ok_or_else(truncated)?;
        let offset_delta = get_varint(&mut body).ok_or_else(truncated)?;
        let key = slice_bytes(records, &mut body)?;
        let value = slice_bytes(records, &mut body)?;
        let header_count = get_varint(&mut body).ok_or_else(truncated)?;
        if header_count < 0 {
            return Err(format!("negative header count {header_count}"));
        }
        let mut headers = Vec::with_capacity((header_count as usize).min(body.len()));
        for _ in 0..header_count {
            let name =
                slice_bytes(records, &mut body)?.ok_or_else(|| "null header key".to_string())?;
            let value = slice_bytes(records, &mut body)?;
            headers.push((String::from_utf8_lossy(&name).into_owned(), value));
        }
        let offset = batch.base_offset + i64::from(offset_delta);
        if offset < batch.from_offset {
            continue;
        }
        let timestamp = match batch.timestamp_type {
            TimestampType::LogAppendTime => batch.max_timestamp,
            TimestampType::CreateTime => batch.first_timestamp.wrapping_add(timestamp_delta),
        };
        out.push(ConsumerRecord {
            topic: batch.topic.clone(),
            partition: batch.partition,
            offset,
            timestamp,
            timestamp_type: batch.timestamp_type,
            key,
            value,
            headers,
            leader_epoch: batch.leader_epoch,
        });
    }
    Ok(())
}

/// Reads a varint length and that many bytes, as a zero-copy slice of `whole`.
fn slice_bytes(whole: &Bytes, cursor: &mut &[u8]) -> Result<Option<Bytes>, String> {
    let length = get_varint(cursor).ok_or_else(|| "record truncated".to_string())?;
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    if length > cursor.len() {
        return Err(format!("field length {length} beyond the record"));
    }
    let start = cursor.as_ptr() as usize - whole.as_ptr() as usize;
    *cursor = &cursor[length..];
    Ok(Some(whole.slice(start..start + length)))
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8]) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::batch::{BatchBuilder, BatchIdentity, Compression};
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{self, Record, RecordBatchEncoder, RecordEncodeOptions};

    fn topic() -> Arc<str> {
        Arc::from("t")
    }

    #[test]
    fn reads_batches_written_by_kafka_protocols_encoder_in_every_codec() {
        for compression in [
            records::Compression::None,
            records::Compression::Gzip,
            records::Compression::Snappy,
            records::Compression::Lz4,
            records::Compression::Zstd,
        ] {
            let mut headers = IndexMap::new();
            headers.insert(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"v")),
            );
            let records: Vec<Record> = (0..5)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: records::TimestampType::Creation,
                    offset: 10 + i,
                    sequence: i as i32,
                    timestamp: 500 + i,
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from(format!("v{i}"))),
                    headers: headers.clone(),
                })
                .collect();
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .unwrap();
            let mut out = Vec::new();
            let decoded =
                decode_record_set(&buf.freeze(), &topic(), 0, 12, true, &mut out).unwrap();
            assert_eq!(decoded.next_offset, Some(15));
            assert_eq!(
                out.iter().map(|r| r.offset).collect::<Vec<_>>(),
                vec![12, 13, 14],
                "{compression:?}"
            );
            assert_eq!(out[0].value.as_deref(), Some(&b"v2"[..]));
            assert_eq!(out[0].timestamp, 502);
            assert_eq!(
                out[0].headers,
                vec![("h".to_string(), Some(Bytes::from_static(b"v")))]
            );
        }
    }

    #[test]
    fn keeps_duplicate_header_keys_and_ignores_a_truncated_tail() {
        let mut batch = BatchBuilder::new(256);
        let headers = vec![
            ("a".to_string(), Some(Bytes::from_static(b"1"))),
            ("a".to_string(), Some(Bytes::from_static(b"2"))),
        ];
        batch.append(1, None, Some(b"x"), &headers);
        let bytes = batch
            .finish(Compression::None, BatchIdentity::NONE)
            .unwrap();
        let mut twice = BytesMut::new();
        twice.extend_from_slice(&bytes);
        twice.extend_from_slice(&bytes[..bytes.len() - 3]);
        let mut out = Vec::new();
        decode_record_set(&twice.freeze(), &topic(), 0, 0, true, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].headers, headers);
    }

    #[test]
    fn records_carry_their_batchs_leader_epoch_and_the_last_batch_epoch_is_reported() {
        let mut bytes = BytesMut::new();
        for (epoch, base) in [(3i32, 0i64), (-1, 1), (5, 2)] {
            let mut batch = BatchBuilder::new(256);
            batch.append(1, None, Some(b"x"), &[]);
            let mut encoded = BytesMut::from(
                &batch
                    .finish(Compression::None, BatchIdentity::NONE)
                    .unwrap()[..],
            );
            // The broker stamps the offset and the leader epoch into the header; the CRC
            // starts after them, so it stays valid.
            encoded[0..8].copy_from_slice(&base.to_be_bytes());
            encoded[12..16].copy_from_slice(&epoch.to_be_bytes());
            bytes.extend_from_slice(&encoded);
        }
        let mut out = Vec::new();
        let decoded = decode_record_set(&bytes.freeze(), &topic(), 0, 0, true, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|r| r.leader_epoch).collect::<Vec<_>>(),
            vec![Some(3), None, Some(5)]
        );
        assert_eq!(decoded.last_epoch, Some(5));
        assert_eq!(decoded.next_offset, Some(3));
    }

    #[test]
    fn a_flipped_bit_fails_the_crc_check() {
        let mut batch = BatchBuilder::new(256);
        batch.append(1, None, Some(b"hello"), &[]);
        let mut bytes = BytesMut::from(
            &batch
                .finish(Compression::None, BatchIdentity::NONE)
                .unwrap()[..],
        );
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        let error =
            decode_record_set(&bytes.freeze(), &topic(), 0, 0, true, &mut Vec::new()).unwrap_err();
        assert!(error.reason.contains("CRC"), "{}", error.reason);
    }
}
