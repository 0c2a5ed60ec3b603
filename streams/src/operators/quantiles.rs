//! Quantiles per key and window ([`QuantileSketch`]): p50 and p99 page load times, request
//! latencies, payload sizes.
//!
//! Exact quantiles need every value of the window; a DDSketch keeps logarithmic buckets
//! instead and answers any quantile with a *relative* error bound: the value returned for
//! quantile `q` is within `alpha` (1 % by default) of the exact value at rank
//! `floor(q * (count - 1))` of the sorted input. That bound holds whatever the distribution,
//! which suits latencies (a 1 % error on 20 ms and on 20 s), and sketches merge exactly, so
//! per-minute sketches combine into hourly ones. Memory is at most `2048` buckets per sign;
//! when that is exceeded the lowest buckets are collapsed, so only the lowest quantiles lose
//! accuracy (p50 and above keep the bound for any realistic range of latencies).
//!
//! The sketch is the `sketches-ddsketch` crate (a port of Datadog's Go DDSketch), stored in
//! the changelog through its serde form. Human-readable formats (JSON: sinks, queryable
//! state) get the [`QuantileSummary`] instead, which cannot be read back into a sketch.
//!
//! Use it as the accumulator of a windowed aggregate:
//!
//! ```
//! use std::time::Duration;
//! use millrace_streams::operators::QuantileSketch;
//! use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windows};
//!
//! // Page load time per page per minute: key = page, value = load time in ms.
//! let mut job = Pipeline::new(|loads: Stream<String, f64>| {
//!     loads
//!         .window(Windows::tumbling(Duration::from_secs(60)).no_grace())
//!         .emit(EmitMode::Final)
//!         .aggregate(QuantileSketch::new, |sketch, ms: &f64| sketch.add(*ms))
//!         .map_values(|sketch| sketch.summary())
//! });
//! for ms in 1..=100 {
//!     job.push(Record::new("/home".to_string(), f64::from(ms), 1_000));
//! }
//! job.finish();
//! let stats = job.take_output().remove(0).value;
//! assert_eq!(stats.count, 100);
//! assert!((stats.p50 - 50.0).abs() <= 0.5 && (stats.p99 - 99.0).abs() <= 1.0);
//! ```

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sketches_ddsketch::{Config, DDSketch};

/// The default relative accuracy: quantiles within 1 % of the exact value.
pub const DEFAULT_RELATIVE_ACCURACY: f64 = 0.01;

/// At most this many buckets per sign (positive and negative values): 2048 buckets at 1 %
/// cover 1 ns to over 10^8 s without collapsing, in at most 16 KiB.
const MAX_BUCKETS: u32 = 2048;

/// Values of smaller magnitude than this count as zero.
const MIN_MAGNITUDE: f64 = 1e-9;

/// A quantile sketch (DDSketch), serializable for state stores and mergeable.
///
/// Non-finite values (NaN, infinities) are ignored and counted in [`QuantileSketch::skipped`]:
/// one bad measurement must not poison a window's quantiles.
///
/// Serializes as the sketch in binary formats (postcard: state stores, changelogs) and as its
/// [`QuantileSummary`] in human-readable ones (JSON).
#[derive(Clone)]
pub struct QuantileSketch {
    sketch: DDSketch,
    skipped: u64,
}

/// The binary form, written from a borrowed sketch.
#[derive(Serialize)]
struct StoredRef<'a> {
    sketch: &'a DDSketch,
    skipped: u64,
}

/// The binary form, read back (same fields, same order as [`StoredRef`]).
#[derive(Deserialize)]
struct Stored {
    sketch: DDSketch,
    skipped: u64,
}

impl Serialize for QuantileSketch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.summary().serialize(serializer)
        } else {
            StoredRef {
                sketch: &self.sketch,
                skipped: self.skipped,
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for QuantileSketch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return Err(D::Error::custom(
                "a quantile sketch is written to text formats as its summary only",
            ));
        }
        let Stored { sketch, skipped } = Stored::deserialize(deserializer)?;
        Ok(Self { sketch, skipped })
    }
}

/// The usual summary of a window's values. Quantiles of an empty sketch are 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileSummary {
    /// Number of values added.
    pub count: u64,
    /// Smallest value (exact).
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value (exact).
    pub max: f64,
    /// Mean (exact up to floating-point rounding).
    pub mean: f64,
}

impl QuantileSketch {
    /// An empty sketch with 1 % relative accuracy.
    pub fn new() -> Self {
        Self::with_relative_accuracy(DEFAULT_RELATIVE_ACCURACY)
    }

    /// An empty sketch whose quantiles are within `alpha` of the exact value (relative).
    /// `alpha` is clamped to `[0.0001, 0.5]`; smaller means more buckets.
    pub fn with_relative_accuracy(alpha: f64) -> Self {
        // Outside this range the bucket mapping degenerates (alpha >= 1 has no buckets at all);
        // NaN falls back to the default.
        let alpha = if alpha.is_nan() {
            DEFAULT_RELATIVE_ACCURACY
        } else {
            alpha.clamp(1e-4, 0.5)
        };
        Self {
            sketch: DDSketch::new(Config::new(alpha, MAX_BUCKETS, MIN_MAGNITUDE)),
            skipped: 0,
        }
    }

    /// Adds one value; NaN and infinities are skipped.
    pub fn add(&mut self, value: f64) {
        if value.is_finite() {
            self.sketch.add(value);
        } else {
            self.skipped += 1;
        }
    }

    /// The estimated value at quantile `q` (`0.5` for the median), or `None` when the sketch
    /// is empty. `q` is clamped to `[0, 1]`; `0` and `1` give the exact minimum and maximum.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        // The only error the sketch reports is a quantile outside [0, 1], excluded above.
        self.sketch.quantile(q).ok().flatten()
    }

    /// Number of values added (skipped ones excluded).
    pub fn count(&self) -> u64 {
        self.sketch.count() as u64
    }

    /// Number of non-finite values skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Adds every value of `other`. Sketches with different accuracies cannot be combined
    /// bucket by bucket; then `other` is left out and `false` is returned.
    pub fn merge(&mut self, other: &QuantileSketch) -> bool {
        self.skipped += other.skipped;
        self.sketch.merge(&other.sketch).is_ok()
    }

    /// Count, min, p50, p90, p99, max and mean.
    pub fn summary(&self) -> QuantileSummary {
        let count = self.count();
        let q = |q: f64| self.quantile(q).unwrap_or(0.0);
        let mean = match (self.sketch.sum(), count) {
            (Some(sum), n) if n > 0 => sum / n as f64,
            _ => 0.0,
        };
        QuantileSummary {
            count,
            min: self.sketch.min().unwrap_or(0.0),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: self.sketch.max().unwrap_or(0.0),
            mean,
        }
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for QuantileSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantileSketch")
            .field("summary", &self.summary())
            .field("skipped", &self.skipped)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::state::store::{decode, encode};
    use crate::{EmitMode, Pipeline, Record, Stream, Windows};

    /// Exact value at DDSketch's rank for `q`: `floor(q * (n - 1))` of the sorted values.
    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() as f64 - 1.0)).floor() as usize]
    }

    /// Within relative error `alpha` (plus floating-point rounding at bucket edges).
    fn within(estimate: f64, exact: f64, alpha: f64) -> bool {
        (estimate - exact).abs() <= alpha * exact.abs() * (1.0 + 1e-9)
    }

    #[test]
    fn quantiles_of_one_to_a_thousand_are_within_one_percent() {
        let mut s = QuantileSketch::new();
        for v in 1..=1_000 {
            s.add(f64::from(v));
        }
        // Exact: rank floor(0.5 * 999) = 499 holds 500; rank floor(0.99 * 999) = 989 holds 990.
        let (p50, p99) = (s.quantile(0.5).unwrap(), s.quantile(0.99).unwrap());
        assert!(
            within(p50, 500.0, 0.01) && within(p99, 990.0, 0.01),
            "p50 {p50}, p99 {p99}"
        );
    }

    #[test]
    fn uniform_sample_quantiles_are_within_stated_error() {
        // A fixed linear congruential generator: the same 100 000 values in [1, 1001) each run.
        let mut x: u64 = 42;
        let mut values = Vec::new();
        let mut s = QuantileSketch::new();
        for _ in 0..100_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let v = 1.0 + (x >> 11) as f64 / (1u64 << 53) as f64 * 1_000.0;
            values.push(v);
            s.add(v);
        }
        values.sort_by(f64::total_cmp);
        let bad: Vec<_> = [0.01, 0.25, 0.5, 0.9, 0.99, 0.999]
            .into_iter()
            .filter(|&q| !within(s.quantile(q).unwrap(), exact(&values, q), 0.01))
            .collect();
        assert!(bad.is_empty(), "quantiles off by more than 1 %: {bad:?}");
    }

    #[test]
    fn min_and_max_are_exact() {
        let mut s = QuantileSketch::new();
        for v in [3.7, 120.25, 42.0] {
            s.add(v);
        }
        let summary = s.summary();
        assert_eq!((summary.min, summary.max), (3.7, 120.25));
    }

    #[test]
    fn empty_sketch_has_no_quantiles() {
        let s = QuantileSketch::new();
        assert_eq!((s.quantile(0.5), s.summary().p99), (None, 0.0));
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let mut s = QuantileSketch::new();
        for v in [f64::NAN, 5.0, f64::INFINITY] {
            s.add(v);
        }
        assert_eq!((s.count(), s.skipped()), (1, 2));
    }

    #[test]
    fn merged_sketch_answers_for_both_halves() {
        let (mut a, mut b) = (QuantileSketch::new(), QuantileSketch::new());
        for v in 1..=500 {
            a.add(f64::from(v));
            b.add(f64::from(v + 500));
        }
        assert!(a.merge(&b));
        assert!(within(a.quantile(0.99).unwrap(), 990.0, 0.01));
    }

    #[test]
    fn sketches_of_different_accuracy_do_not_merge() {
        let mut a = QuantileSketch::new();
        let mut b = QuantileSketch::with_relative_accuracy(0.05);
        b.add(1.0);
        assert!(!a.merge(&b));
    }

    #[test]
    fn round_trips_through_the_store_encoding() {
        let mut s = QuantileSketch::new();
        for v in 1..=1_000 {
            s.add(f64::from(v));
        }
        let back: QuantileSketch = decode(&encode(&s).unwrap()).unwrap();
        assert_eq!(back.summary(), s.summary());
    }

    #[test]
    fn json_shows_the_summary() {
        let mut s = QuantileSketch::new();
        s.add(5.0);
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (json["count"].as_u64(), json["max"].as_f64()),
            (Some(1), Some(5.0))
        );
    }

    #[test]
    fn windowed_p50_and_p99_per_page() {
        let mut p = Pipeline::new(|s: Stream<String, f64>| {
            s.window(Windows::tumbling(Duration::from_secs(60)).no_grace())
                .emit(EmitMode::Final)
                .aggregate(QuantileSketch::new, |q, v: &f64| q.add(*v))
                .map_values(|q| q.summary())
        });
        // Minute 0: /a loads in 10..=109 ms; /b always in 7 ms.
        for (i, ms) in (10..=109).enumerate() {
            p.push(Record::new("/a".to_string(), f64::from(ms), i as i64 * 100));
            p.push(Record::new("/b".to_string(), 7.0, i as i64 * 100));
        }
        p.finish();
        let got: Vec<_> = p
            .take_output()
            .into_iter()
            .map(|r| (r.key.key, r.value.count, r.value.p50, r.value.p99))
            .collect();
        // /a exact: rank 49 holds 59, rank 98 holds 108.
        assert!(
            got.len() == 2
                && got[0].0 == "/a"
                && got[0].1 == 100
                && within(got[0].2, 59.0, 0.01)
                && within(got[0].3, 108.0, 0.01)
                && got[1].0 == "/b"
                && within(got[1].2, 7.0, 0.01)
                && within(got[1].3, 7.0, 0.01),
            "{got:?}"
        );
    }
}
