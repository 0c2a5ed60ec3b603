//! The records of `__transaction_state`, in Kafka's layout (`TransactionLogKey` and
//! `TransactionLogValue` version 0), so a Kafka tool reading the topic understands them.
//!
//! Key: version `i16` (0), transactional id (`i16` length + UTF-8). Value: version `i16` (0),
//! producer id `i64`, producer epoch `i16`, timeout `i32`, state `i8`, partitions (`i32`
//! count of topics, each topic name and `i32` count of `i32` partitions), last update time
//! `i64`, start time `i64`. Decoding is checked throughout: a damaged record is skipped, never
//! a panic.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::state::{TxnMetadata, TxnState};

/// Encodes the key of a transactional id.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(0);
    put_string(&mut b, transactional_id);
    b.freeze()
}

/// Decodes a key; `None` if it is not a version-0 transaction log key.
pub fn decode_key(bytes: &[u8]) -> Option<String> {
    let mut r = Reader(bytes);
    if r.i16()? != 0 {
        return None;
    }
    r.string()
}

/// Encodes a transaction's state.
pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.id());
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &m.partitions {
        match topics.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*partition),
            _ => topics.push((topic.as_str(), vec![*partition])),
        }
    }
    b.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        put_string(&mut b, topic);
        b.put_i32(partitions.len() as i32);
        for p in partitions {
            b.put_i32(p);
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

/// Decodes a value for `transactional_id`; `None` if damaged.
pub fn decode_value(transactional_id: &str, bytes: &[u8]) -> Option<TxnMetadata> {
    let mut r = Reader(bytes);
    if r.i16()? != 0 {
        return None;
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_id(r.i8()?)?;
    let mut partitions = BTreeSet::new();
    for _ in 0..r.count()? {
        let topic = r.string()?;
        for _ in 0..r.count()? {
            partitions.insert((topic.clone(), r.i32()?));
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    Some(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
    })
}

fn put_string(b: &mut BytesMut, s: &str) {
    // Transactional ids and topic names are far below 32 KiB (requests bound them).
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

/// Bounds-checked big-endian reads.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let head = self.0.get(..N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(head);
        self.0 = &self.0[N..];
        Some(a)
    }
    fn i8(&mut self) -> Option<i8> {
        self.take::<1>().map(|a| a[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
    /// An array length, bounded by the bytes left (each element takes at least 2 bytes).
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n <= self.0.len() / 2).then_some(n)
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        let s = self.0.get(..len)?;
        let s = std::str::from_utf8(s).ok()?.to_string();
        self.0 = &self.0[len..];
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let m = TxnMetadata {
            transactional_id: "tx".into(),
            producer_id: 42,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into(),
            start_ms: 10,
            last_update_ms: 20,
        };
        let v = encode_value(&m);
        assert_eq!(decode_value("tx", &v), Some(m));
        assert_eq!(decode_key(&encode_key("tx")).as_deref(), Some("tx"));
        for cut in 0..v.len() {
            assert_eq!(decode_value("tx", &v[..cut]), None);
        }
    }
}
