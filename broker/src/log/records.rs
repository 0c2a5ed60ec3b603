//! Decoding and re-encoding the records inside stored batches, for the log cleaner and for
//! timestamp lookups. Never used on the append path.
//!
//! Stored batches came from clients, so their insides are untrusted: before handing a batch to
//! `RecordBatchDecoder` (which reserves memory by the counts it reads) every record's framing is
//! walked and bounded here, so a hostile record count or header count cannot make it allocate
//! more than the batch's own size.

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use super::batch::{self, BatchHeader, HEADER_SIZE, TIMESTAMP_TYPE_BIT};
use super::error::LogError;

/// A stored batch with its records decoded.
#[derive(Debug)]
pub(crate) struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
}

fn corrupt(msg: impl std::fmt::Display) -> LogError {
    LogError::CorruptRecord(msg.to_string())
}

fn codec(id: i16) -> Result<Compression, LogError> {
    Ok(match id {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => return Err(corrupt(format!("unknown compression codec {other}"))),
    })
}

/// The batch's record area, decompressed.
fn record_area(batch: &Bytes, header: &BatchHeader) -> Result<Bytes, LogError> {
    let mut payload = batch.slice(HEADER_SIZE..);
    let take = |b: &mut Bytes| Ok(b.split_off(0));
    let out = match codec(header.compression())? {
        Compression::None => return Ok(payload),
        Compression::Gzip => Gzip::decompress(&mut payload, take),
        Compression::Snappy => Snappy::decompress(&mut payload, take),
        Compression::Lz4 => Lz4::decompress(&mut payload, take),
        Compression::Zstd => Zstd::decompress(&mut payload, take),
    };
    out.map_err(|e| corrupt(format!("cannot decompress batch: {e:#}")))
}

/// A cursor over Kafka's zigzag varints.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn varlong(&mut self) -> Result<i64, LogError> {
        let mut raw = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or_else(|| corrupt("truncated varint"))?;
            self.0 = rest;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(corrupt("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, LogError> {
        i32::try_from(self.varlong()?).map_err(|_| corrupt("varint out of range"))
    }

    fn skip(&mut self, n: usize) -> Result<(), LogError> {
        if n > self.0.len() {
            return Err(corrupt("field runs past the record"));
        }
        self.0 = &self.0[n..];
        Ok(())
    }

    /// A length-prefixed field; `allow_null` accepts -1.
    fn skip_field(&mut self, allow_null: bool) -> Result<(), LogError> {
        match self.varint()? {
            -1 if allow_null => Ok(()),
            n if n >= 0 => self.skip(n as usize),
            n => Err(corrupt(format!("negative field length {n}"))),
        }
    }
}

/// Walks the framing of `count` records so the decoder's allocations stay bounded by the bytes.
fn check_framing(area: &[u8], count: i32) -> Result<(), LogError> {
    let count = usize::try_from(count).map_err(|_| corrupt("negative record count"))?;
    if count.saturating_mul(7) > area.len() {
        return Err(corrupt(format!(
            "{count} records cannot fit in {} bytes",
            area.len()
        )));
    }
    let mut c = Cursor(area);
    for _ in 0..count {
        let len = usize::try_from(c.varint()?).map_err(|_| corrupt("negative record size"))?;
        if len > c.0.len() {
            return Err(corrupt("record runs past the batch"));
        }
        let mut r = Cursor(&c.0[..len]);
        c.0 = &c.0[len..];
        r.skip(1)?; // attributes
        r.varlong()?; // timestamp delta
        r.varint()?; // offset delta
        r.skip_field(true)?; // key
        r.skip_field(true)?; // value
        let headers = r.varint()?;
        // A header takes at least two bytes (key length and value length).
        if headers < 0 || headers as usize > r.0.len() / 2 {
            return Err(corrupt(format!("implausible header count {headers}")));
        }
        for _ in 0..headers {
            r.skip_field(false)?;
            r.skip_field(true)?;
        }
    }
    Ok(())
}

/// Decodes one whole stored batch. For LogAppendTime batches every record gets the batch's max
/// timestamp, which is what Kafka defines their timestamp to be.
pub(crate) fn decode_batch(batch: &Bytes) -> Result<DecodedBatch, LogError> {
    let header = BatchHeader::parse(batch).ok_or_else(|| corrupt("short batch"))?;
    if header.total_size() != Some(batch.len()) {
        return Err(corrupt("batch length does not match its bytes"));
    }
    let area = record_area(batch, &header)?;
    check_framing(&area, header.record_count)?;
    let mut input = batch.clone();
    let set = RecordBatchDecoder::decode_with_custom_compression(
        &mut input,
        Some(move |_: &mut Bytes, _: Compression| Ok(area.clone())),
    )
    .map_err(|e| corrupt(format!("cannot decode batch: {e:#}")))?;
    let mut records = set.records;
    if header.is_log_append_time() {
        for r in &mut records {
            r.timestamp = header.max_timestamp;
        }
    }
    Ok(DecodedBatch { header, records })
}

/// Re-encodes the records of `original` that survived compaction as one batch with the same
/// offsets, timestamps, compression, producer fields and timestamp type. The batch keeps
/// covering the original's last offset (lastOffsetDelta is stretched), so a consumer that
/// skips it still advances past the removed records.
pub(crate) fn encode_retained(
    original: &BatchHeader,
    retained: &[Record],
) -> Result<Bytes, LogError> {
    let Some(first) = retained.first() else {
        return Err(LogError::InvalidRecord("nothing to encode".into()));
    };
    let first_offset = first.offset;
    // The encoder starts a new batch whenever (offset - sequence) changes; give it a constant
    // difference and patch the real base sequence back into the header afterwards.
    let records: Vec<Record> = retained
        .iter()
        .map(|r| Record {
            sequence: (r.offset - first_offset) as i32,
            ..r.clone()
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec(original.compression())?,
        },
    )
    .map_err(|e| LogError::InvalidRecord(format!("cannot re-encode batch: {e:#}")))?;
    let header = BatchHeader::parse(&out).ok_or_else(|| corrupt("encoder wrote no batch"))?;
    if header.total_size() != Some(out.len()) {
        return Err(LogError::InvalidRecord(
            "encoder split the retained records".into(),
        ));
    }
    batch::set_partition_leader_epoch(&mut out, original.partition_leader_epoch);
    if original.is_log_append_time() {
        batch::set_attributes(&mut out, header.attributes | TIMESTAMP_TYPE_BIT);
        batch::set_max_timestamp(&mut out, original.max_timestamp);
    }
    let base_sequence = if original.base_sequence < 0 {
        -1
    } else {
        original
            .base_sequence
            .wrapping_add((first_offset - original.base_offset) as i32)
    };
    batch::set_base_sequence(&mut out, base_sequence);
    batch::set_last_offset_delta(&mut out, (original.last_offset() - first_offset) as i32);
    batch::update_crc(&mut out);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::test_util::{encode_batch, record, records};
    use proptest::prelude::*;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn decodes_every_codec() {
        for c in CODECS {
            let b = encode_batch(&records(0, 5, 100), c);
            let d = decode_batch(&b).unwrap();
            assert_eq!(d.records.len(), 5, "{c:?}");
            assert_eq!(d.records[4].timestamp, 104);
            assert_eq!(d.records[4].value.as_deref(), Some(&b"v4"[..]));
        }
    }

    #[test]
    fn log_append_time_batches_report_the_batch_timestamp() {
        let mut b = encode_batch(&records(0, 3, 100), Compression::Gzip).to_vec();
        batch::set_log_append_time(&mut b, 5000);
        let d = decode_batch(&Bytes::from(b)).unwrap();
        assert!(d.records.iter().all(|r| r.timestamp == 5000));
    }

    #[test]
    fn retained_records_keep_offsets_and_compression() {
        for c in CODECS {
            let mut original = encode_batch(&records(0, 6, 100), c).to_vec();
            batch::set_base_offset(&mut original, 1000);
            let original = Bytes::from(original);
            let d = decode_batch(&original).unwrap();
            let keep: Vec<Record> = d
                .records
                .iter()
                .filter(|r| r.offset % 2 == 1)
                .cloned()
                .collect();
            let out = encode_retained(&d.header, &keep).unwrap();
            let h = BatchHeader::parse(&out).unwrap();
            assert_eq!(h.compression(), d.header.compression());
            assert_eq!(h.base_offset, 1001);
            assert_eq!(h.last_offset(), 1005);
            assert_eq!(h.base_sequence, 1); // the original's 0, shifted with the base offset
            let again = decode_batch(&out).unwrap();
            let got: Vec<(i64, i64)> = again
                .records
                .iter()
                .map(|r| (r.offset, r.timestamp))
                .collect();
            assert_eq!(got, vec![(1001, 101), (1003, 103), (1005, 105)], "{c:?}");
        }
    }

    #[test]
    fn null_keys_and_values_survive_re_encoding() {
        let recs = vec![
            record(0, 1, None, Some("a")),
            record(1, 2, Some("k"), None),
            record(2, 3, Some("k2"), Some("b")),
        ];
        let mut b = encode_batch(&recs, Compression::None).to_vec();
        batch::set_base_sequence(&mut b, -1);
        batch::update_crc(&mut b);
        let d = decode_batch(&Bytes::from(b)).unwrap();
        let out = encode_retained(&d.header, &d.records[..2]).unwrap();
        let again = decode_batch(&out).unwrap();
        assert_eq!(again.records[0].key, None);
        assert_eq!(again.records[1].value, None);
        let h = BatchHeader::parse(&out).unwrap();
        assert_eq!(h.last_offset(), 2);
        assert_eq!(h.base_sequence, -1);
    }

    #[test]
    fn hostile_header_count_is_rejected_not_allocated() {
        // One record whose header count claims a billion headers.
        let mut area = Vec::new();
        let body = [0u8, 0, 0, 1, 1, 0x80, 0xa8, 0xd6, 0xb9, 0x07];
        area.push((body.len() as u8) << 1);
        area.extend_from_slice(&body);
        assert!(check_framing(&area, 1).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_record_areas_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), count in -2i32..50) {
            let _ = check_framing(&bytes, count);
        }

        #[test]
        fn mutated_batches_never_panic(flips in proptest::collection::vec((61usize..200, any::<u8>()), 1..6)) {
            let mut b = encode_batch(&records(0, 5, 0), Compression::None).to_vec();
            for (at, v) in flips {
                let n = b.len();
                b[at % n] = v;
            }
            batch::update_crc(&mut b);
            let _ = decode_batch(&Bytes::from(b));
        }
    }
}
