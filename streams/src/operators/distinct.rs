//! Distinct counts with a HyperLogLog sketch ([`DistinctCount`]), as an aggregate accumulator.
//!
//! Counting distinct users exactly needs memory proportional to the number of users; a
//! HyperLogLog sketch needs a fixed few kilobytes whatever the count, at a relative standard
//! error of about `1.04 / sqrt(2^precision)` (1.6 % at the default precision 12). Small counts
//! (up to a few hundred at precision 12) are kept as exact hash lists inside the sketch, so
//! they come out essentially exact. Sketches merge losslessly: the distinct users of an hour
//! are the merge of its minutes' sketches.
//!
//! The sketch is Apache DataSketches' HLL (crate `datasketches`). Its state goes to the
//! changelog in DataSketches' documented binary form, which Java and C++ DataSketches read
//! too, so the changelog does not depend on the crate's in-memory layout. Human-readable
//! formats (JSON: sinks, queryable state) get the estimate as a plain number instead, which
//! cannot be read back into a sketch.
//!
//! ```
//! use std::time::Duration;
//! use millrace_streams::operators::DistinctCount;
//! use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windows};
//!
//! // Unique visitors per page per minute: key = page, value = user id.
//! let mut job = Pipeline::new(|views: Stream<String, String>| {
//!     views
//!         .window(Windows::tumbling(Duration::from_secs(60)).no_grace())
//!         .emit(EmitMode::Final)
//!         .aggregate(DistinctCount::new, |users, user: &String| users.insert(user))
//!         .map_values(|users| users.estimate())
//! });
//! for (user, t) in [("ann", 1_000), ("bob", 2_000), ("ann", 3_000)] {
//!     job.push(Record::new("/home".to_string(), user.to_string(), t));
//! }
//! job.finish();
//! assert_eq!(job.take_output()[0].value, 2);
//! ```

use std::fmt;
use std::hash::Hash;

use datasketches::hll::{HllSketch, HllType, HllUnion};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The default precision: 2^12 registers, about 1.6 % relative standard error, at most 4 KiB.
pub const DEFAULT_PRECISION: u8 = 12;

/// The precisions DataSketches accepts (log2 of the register count).
const PRECISIONS: std::ops::RangeInclusive<u8> = 4..=21;

/// An approximate distinct count (HyperLogLog), serializable for state stores and mergeable.
///
/// Serializes as the sketch's bytes in binary formats (postcard: state stores, changelogs)
/// and as the estimate in human-readable ones (JSON).
#[derive(Clone, PartialEq)]
pub struct DistinctCount {
    sketch: HllSketch,
}

impl DistinctCount {
    /// An empty count at the default precision ([`DEFAULT_PRECISION`]).
    pub fn new() -> Self {
        Self::with_precision(DEFAULT_PRECISION)
    }

    /// An empty count with `2^precision` registers; `precision` is clamped to `4..=21`.
    /// Relative standard error is about `1.04 / sqrt(2^precision)`.
    pub fn with_precision(precision: u8) -> Self {
        let precision = precision.clamp(*PRECISIONS.start(), *PRECISIONS.end());
        // 8-bit registers: the fastest to update; the serialized form is the same size class
        // as the 4- and 6-bit ones once compacted by the changelog topic's compression.
        let sketch = HllSketch::new(precision, HllType::Hll8)
            .unwrap_or_else(|_| unreachable!("precision is clamped into the accepted range"));
        Self { sketch }
    }

    /// Adds one value (any hashable value: a user id, an IP address).
    ///
    /// Values are hashed with MurmurHash3 over their `Hash` bytes, which is the same in every
    /// process, so counts restored from a changelog keep recognising values already seen.
    pub fn insert<T: Hash + ?Sized>(&mut self, value: &T) {
        self.sketch.update(value);
    }

    /// The estimated number of distinct values, rounded to the nearest integer.
    pub fn estimate(&self) -> u64 {
        // The estimate is finite and non-negative; the cast saturates if it were not.
        self.sketch.estimate().round() as u64
    }

    /// The estimate before rounding.
    pub fn estimate_f64(&self) -> f64 {
        self.sketch.estimate()
    }

    /// Whether no value was added.
    pub fn is_empty(&self) -> bool {
        self.sketch.is_empty()
    }

    /// Adds every value of `other` (the union of the two sets). With different precisions the
    /// result has the lower one.
    pub fn merge(&mut self, other: &DistinctCount) {
        if other.is_empty() {
            return;
        }
        let precision = self.sketch.lg_config_k().max(other.sketch.lg_config_k());
        let Ok(mut union) = HllUnion::new(precision) else {
            unreachable!("both precisions come from valid sketches");
        };
        union.update(&self.sketch);
        union.update(&other.sketch);
        self.sketch = union.to_sketch(HllType::Hll8);
    }
}

impl Default for DistinctCount {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DistinctCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistinctCount")
            .field("estimate", &self.estimate_f64())
            .field("precision", &self.sketch.lg_config_k())
            .finish()
    }
}

impl Serialize for DistinctCount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_u64(self.estimate())
        } else {
            serializer.serialize_bytes(&self.sketch.serialize())
        }
    }
}

impl<'de> Deserialize<'de> for DistinctCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return Err(de::Error::custom(
                "a distinct count is written to text formats as its estimate only",
            ));
        }
        let bytes = deserializer.deserialize_byte_buf(SketchBytes)?;
        HllSketch::deserialize(&bytes)
            .map(|sketch| DistinctCount { sketch })
            .map_err(|e| de::Error::custom(format!("invalid HyperLogLog sketch: {e}")))
    }
}

/// Reads the sketch bytes, whether the format hands them over as bytes or as a sequence.
struct SketchBytes;

impl<'de> Visitor<'de> for SketchBytes {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HyperLogLog sketch bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Cap the pre-allocation: the length hint comes from the input.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::state::store::{decode, encode};

    #[test]
    fn small_sets_are_counted_exactly() {
        let mut c = DistinctCount::new();
        for user in ["ann", "bob", "cy", "ann", "bob"] {
            c.insert(user);
        }
        assert_eq!(c.estimate(), 3);
    }

    #[test]
    fn large_set_is_within_three_standard_errors() {
        let mut c = DistinctCount::new();
        for i in 0..100_000u32 {
            c.insert(&i);
            c.insert(&i);
        }
        // 1.04 / sqrt(4096) = 1.625 % relative standard error.
        let error = (c.estimate_f64() - 100_000.0).abs() / 100_000.0;
        assert!(error < 3.0 * 0.01625, "relative error {error}");
    }

    #[test]
    fn merge_counts_the_union() {
        let (mut a, mut b) = (DistinctCount::new(), DistinctCount::new());
        for i in 0..60u32 {
            a.insert(&i);
        }
        for i in 40..100u32 {
            b.insert(&i);
        }
        a.merge(&b);
        assert_eq!(a.estimate(), 100);
    }

    #[test]
    fn round_trips_through_the_store_encoding() {
        let mut c = DistinctCount::new();
        for i in 0..5_000u32 {
            c.insert(&i);
        }
        let back: DistinctCount = decode(&encode(&c).unwrap()).unwrap();
        assert_eq!(back.estimate_f64(), c.estimate_f64());
    }

    #[test]
    fn restored_count_recognises_values_already_seen() {
        let mut c = DistinctCount::new();
        c.insert("ann");
        let mut back: DistinctCount = decode(&encode(&c).unwrap()).unwrap();
        back.insert("ann");
        assert_eq!(back.estimate(), 1);
    }

    #[test]
    fn corrupt_bytes_fail_to_decode() {
        let bytes = encode(&vec![1u8, 2, 3]).unwrap();
        assert!(decode::<DistinctCount>(&bytes).is_err());
    }

    #[test]
    fn json_shows_the_estimate() {
        let mut c = DistinctCount::new();
        c.insert("ann");
        c.insert("bob");
        assert_eq!(serde_json::to_string(&c).unwrap(), "2");
    }
}
