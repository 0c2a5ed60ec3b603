//! Building a record batch: records are appended as bytes into one buffer behind a reserved
//! header, and the header (offsets, timestamps, producer id, sequence, CRC) is written once the
//! batch is closed.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Compressor;

use super::varint::{put_varint, put_varlong, varint_len, varlong_len};
use crate::error::{ClientError, Result};

/// Size of the v2 batch header before the first record.
pub(crate) const BATCH_HEADER_LEN: usize = 61;
/// Offset of the CRC field; the CRC covers everything after it.
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// The codec of a record batch (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression: fastest, and best when the broker's disk and network keep up.
    #[default]
    None,
    /// gzip (deflate): smallest, slowest.
    Gzip,
    /// Snappy in the xerial framing the Java client writes (librdkafka reads both forms).
    Snappy,
    /// LZ4 frames.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec id in a batch's attributes.
    pub(crate) fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name for it: `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(ClientError::InvalidArgument(format!(
                "unknown compression {other:?}"
            ))),
        }
    }
}

/// Header-level fields of a batch that are known only when it is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchIdentity {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) base_sequence: i32,
    /// Whether the batch belongs to a transaction (attribute bit 4).
    pub(crate) transactional: bool,
}

impl BatchIdentity {
    /// A batch from a producer without idempotence.
    pub(crate) const NONE: BatchIdentity = BatchIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

/// An open batch: a header placeholder followed by the encoded records.
#[derive(Debug)]
pub(crate) struct BatchBuilder {
    buf: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

/// The encoded size of a record's body (everything after its length varint).
#[inline]
pub(crate) fn record_body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(String, Option<Bytes>)],
) -> usize {
    let mut size = 1 + varlong_len(timestamp_delta) + varint_len(offset_delta);
    size += bytes_len(key) + bytes_len(value);
    size += varint_len(headers.len() as i32);
    for (name, value) in headers {
        size += varint_len(name.len() as i32) + name.len() + bytes_len(value.as_deref());
    }
    size
}

#[inline]
fn bytes_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        Some(b) => varint_len(b.len() as i32) + b.len(),
        None => 1,
    }
}

#[inline]
fn put_bytes(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

/// An upper bound of a record's encoded size in a batch whose first timestamp is unknown (for
/// memory accounting and size checks before the record is placed).
pub(crate) fn max_record_len(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(String, Option<Bytes>)],
) -> usize {
    // Worst case deltas: 10-byte timestamp delta, 5-byte offset delta, 5-byte length prefix.
    record_body_len(i64::MIN, i32::MIN, key, value, headers) + 5
}

impl BatchBuilder {
    /// An empty batch whose buffer starts with room for `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(BATCH_HEADER_LEN + 64));
        buf.put_bytes(0, BATCH_HEADER_LEN);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// Records in the batch.
    pub(crate) fn count(&self) -> i32 {
        self.count
    }

    /// Bytes in the batch so far (header included, before compression).
    pub(crate) fn size(&self) -> usize {
        self.buf.len()
    }

    /// The encoded size `append` would add for this record.
    #[inline]
    pub(crate) fn size_of(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Bytes>)],
    ) -> usize {
        let body = self.body_len(timestamp, key, value, headers);
        varint_len(body as i32) + body
    }

    /// The size of the record's body (without its length prefix) as the next record here;
    /// what [`BatchBuilder::append_body`] takes.
    #[inline]
    pub(crate) fn body_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Bytes>)],
    ) -> usize {
        let timestamp_delta = if self.count == 0 {
            0
        } else {
            timestamp.wrapping_sub(self.base_timestamp)
        };
        record_body_len(timestamp_delta, self.count, key, value, headers)
    }

    /// Encoded size of a record whose body is `body` bytes long.
    #[inline]
    pub(crate) fn encoded_len(body: usize) -> usize {
        varint_len(body as i32) + body
    }

    /// Appends a record; returns its offset delta (its index in the batch).
    #[inline]
    pub(crate) fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Bytes>)],
    ) -> i32 {
        let body = self.body_len(timestamp, key, value, headers);
        self.append_body(body, timestamp, key, value, headers)
    }

    /// [`BatchBuilder::append`] for a caller that already has the record's
    /// [`BatchBuilder::body_len`] (computed for this batch in its current state).
    #[inline]
    pub(crate) fn append_body(
        &mut self,
        body: usize,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Bytes>)],
    ) -> i32 {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count;
        debug_assert_eq!(
            body,
            record_body_len(timestamp_delta, offset_delta, key, value, headers)
        );
        let buf = &mut self.buf;
        buf.reserve(body + 5);
        put_varint(buf, body as i32);
        buf.put_u8(0); // record attributes: unused in v2
        put_varlong(buf, timestamp_delta);
        put_varint(buf, offset_delta);
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varint(buf, headers.len() as i32);
        for (name, value) in headers {
            put_bytes(buf, Some(name.as_bytes()));
            put_bytes(buf, value.as_deref());
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
        offset_delta
    }

    /// Closes the batch: compresses the records if asked, writes the header and the CRC.
    pub(crate) fn finish(self, compression: Compression, identity: BatchIdentity) -> Result<Bytes> {
        let BatchBuilder {
            mut buf,
            count,
            base_timestamp,
            max_timestamp,
        } = self;
        if compression != Compression::None {
            let records = &buf[BATCH_HEADER_LEN..];
            let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + records.len() / 2 + 64);
            out.put_bytes(0, BATCH_HEADER_LEN);
            let copy = |tmp: &mut BytesMut| {
                tmp.extend_from_slice(records);
                Ok(())
            };
            let result = match compression {
                Compression::Gzip => kafka_protocol::compression::Gzip::compress(&mut out, copy),
                Compression::Snappy => {
                    kafka_protocol::compression::Snappy::compress(&mut out, copy)
                }
                Compression::Lz4 => kafka_protocol::compression::Lz4::compress(&mut out, copy),
                Compression::Zstd => kafka_protocol::compression::Zstd::compress(&mut out, copy),
                Compression::None => Ok(()),
            };
            result.map_err(|e| ClientError::Protocol {
                api: "Produce",
                reason: format!("{} compression failed: {e}", compression.name()),
            })?;
            buf = out;
        }
        let batch_length = (buf.len() - 12) as i32;
        let header = &mut buf[..BATCH_HEADER_LEN];
        header[0..8].copy_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        header[8..12].copy_from_slice(&batch_length.to_be_bytes());
        header[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        header[16] = 2; // magic
                        // CreateTime; bit 4 marks a transaction's batch.
        let attributes = compression.attribute() | if identity.transactional { 0x10 } else { 0 };
        header[21..23].copy_from_slice(&attributes.to_be_bytes());
        header[23..27].copy_from_slice(&(count - 1).to_be_bytes()); // last offset delta
        header[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
        header[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        header[43..51].copy_from_slice(&identity.producer_id.to_be_bytes());
        header[51..53].copy_from_slice(&identity.producer_epoch.to_be_bytes());
        header[53..57].copy_from_slice(&identity.base_sequence.to_be_bytes());
        header[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn build(compression: Compression) -> Bytes {
        let mut batch = BatchBuilder::new(1024);
        batch.append(
            1_000,
            Some(b"k1"),
            Some(b"v1"),
            &[("h".to_string(), Some(Bytes::from_static(b"x")))],
        );
        batch.append(999, None, Some(b"v2"), &[]);
        batch.append(1_005, Some(b"k3"), None, &[]);
        batch
            .finish(
                compression,
                BatchIdentity {
                    producer_id: 7,
                    producer_epoch: 1,
                    base_sequence: 42,
                    transactional: false,
                },
            )
            .unwrap()
    }

    #[test]
    fn kafka_protocols_decoder_reads_our_batches_in_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut bytes = build(compression);
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), 3, "{compression:?}");
            let r = &set.records;
            assert_eq!((r[0].offset, r[0].timestamp, r[0].sequence), (0, 1_000, 42));
            assert_eq!(r[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(
                r[0].headers
                    .get("h".as_bytes())
                    .cloned()
                    .flatten()
                    .as_deref(),
                Some(&b"x"[..])
            );
            assert_eq!(
                (r[1].offset, r[1].timestamp, r[1].key.as_ref()),
                (1, 999, None)
            );
            assert_eq!(
                (r[2].offset, r[2].timestamp, r[2].value.as_ref()),
                (2, 1_005, None)
            );
            assert_eq!(r[2].producer_id, 7);
        }
    }

    #[test]
    fn size_of_matches_what_append_writes() {
        let mut batch = BatchBuilder::new(128);
        for i in 0..300i64 {
            let headers = vec![
                ("a".to_string(), None),
                ("a".to_string(), Some(Bytes::from_static(b"dup"))),
            ];
            let expected = batch.size_of(1_000 + i * 37, Some(b"key"), Some(&[7u8; 150]), &headers);
            let before = batch.size();
            batch.append(1_000 + i * 37, Some(b"key"), Some(&[7u8; 150]), &headers);
            assert_eq!(batch.size() - before, expected);
            assert!(expected <= max_record_len(Some(b"key"), Some(&[7u8; 150]), &headers));
        }
    }
}
