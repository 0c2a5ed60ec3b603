//! Anomaly detection: per-key baselines that score each new value and alert on outliers.
//!
//! Each key (a user, a service, a page) is a *series* of numbers: per-window counts from a
//! windowed count (failed logins per user per minute, errors per service per minute) or raw
//! measurements (latencies). For every value the detector computes a score against the
//! series' baseline *before* the value, and emits an [`Anomaly`] when the score passes the
//! threshold. Two baselines:
//!
//! - **EWMA** ([`Detector::ewma`]): exponentially weighted mean and variance with smoothing
//!   factor `alpha`; score = `(value - mean) / stddev` (the classic k-sigma control chart).
//!   The first values are averaged with weight `max(alpha, 1/n)`, which makes the baseline the
//!   plain mean and (population) variance of the first `1/alpha` values instead of starting
//!   from a single value. Cheap (three numbers per key) and quick to adapt, but a burst
//!   inflates the variance: so by default an anomalous value is kept out of the baseline, and
//!   the next burst is scored against the normal level.
//! - **Median/MAD** ([`Detector::median_mad`]): the median of the last `window` values and their
//!   median absolute deviation, scaled by 1.4826 so that it estimates the standard deviation
//!   of normal data; score = `(value - median) / (1.4826 * MAD)` (a robust z-score). The
//!   outliers themselves barely move the median and MAD, so every value enters the window, and
//!   a lasting level shift becomes the new baseline after `window / 2` values.
//!
//! Common settings: a `threshold` on the score (3 for EWMA, 3.5 for median/MAD by default), a
//! `warmup` count of values a series must have seen before it may alert (a baseline of two
//! values is noise), a `min_spread` under which the spread is not trusted (a user who failed
//! exactly one login every minute has zero variance, and a second failure must not score
//! infinity), and the [`Direction`] of interesting deviations (default: spikes up).
//!
//! The detector is an [`Operator`](crate::Operator) added with [`Stream::operator`](crate::Stream::operator).
//! It scores values in arrival order, so feed it ordered values: final window results
//! ([`EmitMode::Final`](crate::EmitMode::Final)) arrive in window order per key; raw
//! measurements are scored as they come. Windows with no records produce no value: a windowed
//! count skips the minutes in which a user did not fail at all, so by default the baseline is
//! the level of the minutes with failures (more conservative, never less). For tumbling
//! windows, [`Detector::fill_gaps`] folds a value (0 for counts) into the baseline for each
//! window missing between two results of a series, so that a user's rare failures make a
//! baseline near 0 and a burst stands out.
//!
//! State per series (the baseline and the count of values seen) is one entry of the operator's
//! store and changelog (`series` -> state), kept where the pipeline's or stream's
//! [`StateBackend`] says (see [`crate::state::backend`]), or where
//! [`AnomalyDetector::with_backend`] chose: in a hash map, or on disk, read and written
//! through the store for every value so that memory holds only the store's write buffer. The
//! changelog is the same either way, so a job can switch backends between runs. Series idle
//! for longer than [`Detector::expire_after`] are forgotten; for that the detector keeps, in
//! memory whatever the backend, one `(time of latest value, series)` entry per live series.
//!
//! ```
//! use std::time::Duration;
//! use millrace_streams::operators::Detector;
//! use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windows};
//!
//! // Failed logins per user per minute, scored against the user's own baseline.
//! let mut job = Pipeline::new(|failures: Stream<String, ()>| {
//!     failures
//!         .window(Windows::tumbling(Duration::from_secs(60)).no_grace())
//!         .emit(EmitMode::Final)
//!         .count()
//!         .operator(
//!             Detector::ewma("login-anomalies", 0.1).warmup(4).per_window(|&n: &u64| n as f64),
//!             None,
//!         )
//! });
//! // One or two failures a minute for five minutes, then forty in the sixth.
//! for (minute, n) in [(0, 1), (1, 2), (2, 1), (3, 2), (4, 1), (5, 40)] {
//!     for i in 0..n {
//!         job.push(Record::new("ann".to_string(), (), minute * 60_000 + i));
//!     }
//! }
//! job.finish();
//! let alerts = job.take_output();
//! assert_eq!(alerts.len(), 1);
//! let alert = &alerts[0].value;
//! assert_eq!((alert.key.as_str(), alert.value, alert.window_start), ("ann", 40.0, Some(300_000)));
//! assert!(alert.score > 30.0 && (alert.baseline - 1.4).abs() < 1e-9);
//! ```

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StreamsError;
use crate::operator::{stateful_operator, Context, Operator, StatefulStep, StepParts};
use crate::record::{Record, Windowed};
use crate::state::backend::StateBackend;
use crate::state::keyed::KeyedState;
use crate::state::store::KeyValueStore;
use crate::time::{millis, Timestamp};

/// Scales the MAD to estimate the standard deviation of normally distributed data
/// (1 / the 0.75 quantile of the standard normal distribution).
const MAD_TO_STDDEV: f64 = 1.4826;

/// Which deviations from the baseline count as anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Values far above the baseline (bursts, spikes, slowdowns).
    #[default]
    Above,
    /// Values far below the baseline (traffic drops).
    Below,
    /// Both.
    Both,
}

/// How the baseline of a series is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Baseline {
    /// Exponentially weighted mean and variance with smoothing factor `alpha` in `(0, 1]`.
    Ewma {
        /// Weight of the newest value.
        alpha: f64,
    },
    /// Median and MAD of the last `window` values.
    MedianMad {
        /// Number of values kept per series.
        window: usize,
    },
}

/// What the detector emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnomalyEmit {
    /// Only values scored as anomalies.
    #[default]
    Alerts,
    /// Every value with its score (for charts); anomalies have `is_anomaly` set.
    EveryScore,
}

/// An alert (or, with [`AnomalyEmit::EveryScore`], any scored value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly<S> {
    /// The series (user, service, page).
    pub key: S,
    /// The value scored.
    pub value: f64,
    /// `(value - baseline) / spread`: how many standard deviations (or robust equivalents)
    /// the value is from the baseline. 0 for a series' first value.
    pub score: f64,
    /// The baseline before this value: the EWMA mean or the window median.
    pub baseline: f64,
    /// The spread the score was divided by: the EWMA standard deviation or `1.4826 * MAD`,
    /// raised to the detector's `min_spread`.
    pub spread: f64,
    /// Whether the score passed the threshold (after warm-up). Always true with
    /// [`AnomalyEmit::Alerts`].
    pub is_anomaly: bool,
    /// Number of values the baseline was built from.
    pub observations: u64,
    /// Event time of the value (for a final window result: the window's last millisecond).
    pub timestamp: Timestamp,
    /// Start of the window the value was computed over, for windowed input.
    pub window_start: Option<Timestamp>,
    /// End of that window.
    pub window_end: Option<Timestamp>,
}

/// Settings of an anomaly detector; turn them into an operator with [`Detector::per_key`],
/// [`Detector::per_window`] or [`Detector::by`].
#[derive(Debug, Clone)]
pub struct Detector {
    name: String,
    baseline: Baseline,
    threshold: f64,
    warmup: u64,
    min_spread: f64,
    direction: Direction,
    emit: AnomalyEmit,
    learn_from_anomalies: bool,
    expire_after: Option<i64>,
    fill_gaps: Option<f64>,
}

impl Detector {
    /// An EWMA detector named `name` (its store's name) with smoothing factor `alpha`
    /// (clamped to `[0.001, 1]`); threshold 3, warm-up 10 values, minimum spread 1.
    pub fn ewma(name: impl Into<String>, alpha: f64) -> Self {
        let alpha = if alpha.is_nan() {
            0.1
        } else {
            alpha.clamp(0.001, 1.0)
        };
        Self::with(name.into(), Baseline::Ewma { alpha }, 3.0, false)
    }

    /// A median/MAD detector named `name` over the last `window` values (at least 3) of each
    /// series; threshold 3.5, warm-up 10 values, minimum spread 1.
    pub fn median_mad(name: impl Into<String>, window: usize) -> Self {
        let window = window.max(3);
        Self::with(name.into(), Baseline::MedianMad { window }, 3.5, true)
    }

    fn with(name: String, baseline: Baseline, threshold: f64, learn: bool) -> Self {
        Self {
            name,
            baseline,
            threshold,
            warmup: 10,
            min_spread: 1.0,
            direction: Direction::Above,
            emit: AnomalyEmit::Alerts,
            learn_from_anomalies: learn,
            expire_after: None,
            fill_gaps: None,
        }
    }

    /// Alerts when the score's magnitude reaches `threshold` (in standard deviations).
    #[must_use]
    pub fn threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// Number of values a series must have seen before it may alert.
    #[must_use]
    pub fn warmup(mut self, values: u64) -> Self {
        self.warmup = values;
        self
    }

    /// The smallest spread a score is divided by, in the unit of the values. The default, 1,
    /// suits counts and milliseconds; lower it for values much smaller than 1 (rates).
    #[must_use]
    pub fn min_spread(mut self, spread: f64) -> Self {
        self.min_spread = if spread.is_finite() {
            spread.max(f64::MIN_POSITIVE)
        } else {
            1.0
        };
        self
    }

    /// Which deviations alert (default: [`Direction::Above`]).
    #[must_use]
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// What to emit (default: [`AnomalyEmit::Alerts`]).
    #[must_use]
    pub fn emit(mut self, emit: AnomalyEmit) -> Self {
        self.emit = emit;
        self
    }

    /// Whether anomalous values enter the baseline (default: no for EWMA, yes for median/MAD;
    /// see the module docs).
    #[must_use]
    pub fn learn_from_anomalies(mut self, learn: bool) -> Self {
        self.learn_from_anomalies = learn;
        self
    }

    /// Forgets a series once the watermark is `idle` past its last value, which bounds state
    /// for key spaces that churn (users); a forgotten series warms up again.
    #[must_use]
    pub fn expire_after(mut self, idle: Duration) -> Self {
        self.expire_after = Some(millis(idle));
        self
    }

    /// For windowed input ([`Detector::per_window`]) over tumbling windows: folds `value` into
    /// the baseline once for every window missing between a series' consecutive results, as
    /// if those windows had been emitted with `value` (0 for counts). Only the fills that can
    /// still matter are folded: the last `window` for median/MAD, the last `20 / alpha` for
    /// EWMA (older ones weigh less than e^-20). Fills count towards the warm-up.
    #[must_use]
    pub fn fill_gaps(mut self, value: f64) -> Self {
        self.fill_gaps = value.is_finite().then_some(value);
        self
    }

    /// A detector over `Record<K, V>` with one series per record key.
    pub fn per_key<K, V>(
        self,
        value: impl Fn(&V) -> f64 + Send + 'static,
    ) -> AnomalyDetector<K, V, K>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        V: 'static,
    {
        self.by(|k: &K, _: &V| k.clone(), move |_, v| value(v))
    }

    /// A detector over windowed results (`Record<Windowed<S>, V>`, what a windowed
    /// aggregate emits) with one series per grouping key; alerts carry the window bounds.
    pub fn per_window<S, V>(
        self,
        value: impl Fn(&V) -> f64 + Send + 'static,
    ) -> AnomalyDetector<Windowed<S>, V, S>
    where
        S: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        V: 'static,
    {
        AnomalyDetector::new(
            self,
            Box::new(move |k: &Windowed<S>, v: &V| Observation {
                series: k.key.clone(),
                value: value(v),
                window: Some((k.window_start, k.window_end)),
            }),
        )
    }

    /// A detector with the series and the value taken from each record by `series` and
    /// `value`.
    pub fn by<K, V, S>(
        self,
        series: impl Fn(&K, &V) -> S + Send + 'static,
        value: impl Fn(&K, &V) -> f64 + Send + 'static,
    ) -> AnomalyDetector<K, V, S>
    where
        K: 'static,
        V: 'static,
        S: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
    {
        AnomalyDetector::new(
            self,
            Box::new(move |k: &K, v: &V| Observation {
                series: series(k, v),
                value: value(k, v),
                window: None,
            }),
        )
    }
}

/// What the detector reads from one record.
struct Observation<S> {
    series: S,
    value: f64,
    window: Option<(Timestamp, Timestamp)>,
}

type ExtractFn<K, V, S> = Box<dyn Fn(&K, &V) -> Observation<S> + Send>;

/// The baseline of one series, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum BaselineState {
    Ewma { mean: f64, variance: f64 },
    Window { values: VecDeque<f64> },
}

/// One series' state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SeriesState {
    /// Values folded into the baseline.
    seen: u64,
    /// Event time of the latest value (for expiry).
    last: Timestamp,
    /// Start of the latest window seen, for windowed input (gap filling).
    last_window: Option<Timestamp>,
    baseline: BaselineState,
}

/// The anomaly detection operator (see the module docs). Output records are keyed by series.
///
/// Each series is one state entry (`series` -> baseline), kept where the backend says (see
/// [`crate::state::backend`]): in a hash map, or read and written through the operator's store on
/// every value. With [`Detector::expire_after`], memory also holds one `(time, series)` entry
/// per live series (the event time of its latest value), whichever the backend.
pub struct AnomalyDetector<K, V, S> {
    config: Detector,
    extract: ExtractFn<K, V, S>,
    /// The backend chosen when building the operator, which the stream's does not override.
    backend: Option<StateBackend>,
    /// The series; their index (with expiry on) is each live series under the event time of
    /// its latest value, in memory whatever the backend.
    parts: StepParts<Series<S>, Expiry<S>>,
}

/// Every series' state.
type Series<S> = KeyedState<S, (), SeriesState>;

/// Live series by the event time of their latest value.
type Expiry<S> = BTreeMap<Timestamp, HashSet<S>>;

impl<K, V, S> AnomalyDetector<K, V, S>
where
    S: Hash + Eq + Clone + Serialize + DeserializeOwned,
{
    fn new(config: Detector, extract: ExtractFn<K, V, S>) -> Self {
        let state = KeyedState::new(&config.name, &StateBackend::InMemory);
        let parts = StepParts::new(config.name.clone(), state, BTreeMap::new());
        Self {
            config,
            extract,
            backend: None,
            parts,
        }
    }

    /// Keeps the state where `backend` says, whatever the backend of the stream the detector
    /// is added to (by default it follows the stream's: see [`crate::Stream::state_backend`]).
    #[must_use]
    pub fn with_backend(mut self, backend: StateBackend) -> Self {
        self.parts.state = KeyedState::new(&self.config.name, &backend);
        self.backend = Some(backend);
        self
    }

    /// Keeps the state in memory, written to `store` at each checkpoint (and restored from
    /// it), whatever the stream's backend. For state read and written on disk, use
    /// [`AnomalyDetector::with_backend`] with [`StateBackend::OnDisk`].
    #[must_use]
    pub fn with_store(mut self, store: Box<dyn KeyValueStore>) -> Self {
        self.parts.state = KeyedState::in_memory(&self.config.name, store);
        self.backend = Some(StateBackend::InMemory);
        self
    }

    /// Moves `series` in the expiry index from its previous latest time to `now`.
    fn reindex(&mut self, series: S, before: Option<Timestamp>, now: Timestamp) {
        if before == Some(now) {
            return;
        }
        if let Some(old) = before {
            if let Some(set) = self.parts.index.get_mut(&old) {
                set.remove(&series);
                if set.is_empty() {
                    self.parts.index.remove(&old);
                }
            }
        }
        self.parts.index.entry(now).or_default().insert(series);
    }

    /// Forgets the series idle for longer than `idle` at `watermark`.
    fn expire(&mut self, idle: i64, watermark: Timestamp) -> Result<(), StreamsError> {
        let parts = &mut self.parts;
        while let Some(entry) = parts.index.first_entry() {
            if entry.key().saturating_add(idle) >= watermark {
                break;
            }
            let seen_at = *entry.key();
            for series in entry.remove() {
                // The index has one entry per series, at its latest value; checking again
                // costs nothing and keeps a stale entry from deleting live state.
                parts.state.update(&series, |g| {
                    if g.get(&()).is_some_and(|state| state.last == seen_at) {
                        g.remove(&());
                    }
                })?;
            }
        }
        Ok(())
    }
}

/// What scoring one value gave.
struct Scored {
    baseline: f64,
    spread: f64,
    score: f64,
    anomalous: bool,
    /// Values the baseline was built from (before this one).
    observations: u64,
    /// The series' latest event time after this value.
    last: Timestamp,
}

impl Detector {
    /// Scores `value` (seen at `t`, over `window`) against `state`, then folds it in.
    fn observe(
        &self,
        state: &mut SeriesState,
        value: f64,
        window: Option<(Timestamp, Timestamp)>,
        t: Timestamp,
    ) -> Scored {
        self.fill_missing(state, window);
        let (baseline, spread) = if state.seen == 0 {
            (value, 0.0)
        } else {
            Detector::center_and_spread(state)
        };
        let spread = spread.max(self.min_spread);
        let score = if state.seen == 0 {
            0.0
        } else {
            (value - baseline) / spread
        };
        let anomalous = state.seen >= self.warmup && self.is_anomaly(score);
        let observations = state.seen;
        if !anomalous || self.learn_from_anomalies {
            self.fold(state, value);
        }
        state.last = state.last.max(t);
        Scored {
            baseline,
            spread,
            score,
            anomalous,
            observations,
            last: state.last,
        }
    }

    fn fresh_state(&self, t: Timestamp) -> SeriesState {
        let baseline = match self.baseline {
            Baseline::Ewma { .. } => BaselineState::Ewma {
                mean: 0.0,
                variance: 0.0,
            },
            Baseline::MedianMad { window } => BaselineState::Window {
                values: VecDeque::with_capacity(window),
            },
        };
        SeriesState {
            seen: 0,
            last: t,
            last_window: None,
            baseline,
        }
    }

    /// The baseline and raw spread of a series that has seen at least one value.
    fn center_and_spread(state: &SeriesState) -> (f64, f64) {
        match &state.baseline {
            BaselineState::Ewma { mean, variance } => (*mean, variance.max(0.0).sqrt()),
            BaselineState::Window { values } => {
                let mut sorted: Vec<f64> = values.iter().copied().collect();
                let center = median(&mut sorted);
                let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - center).abs()).collect();
                (center, MAD_TO_STDDEV * median(&mut deviations))
            }
        }
    }

    fn fold(&self, state: &mut SeriesState, value: f64) {
        state.seen += 1;
        match (&mut state.baseline, self.baseline) {
            (BaselineState::Ewma { mean, variance }, Baseline::Ewma { alpha }) => {
                // Weight max(alpha, 1/n): the exact running mean and variance until n reaches
                // 1/alpha, exponential forgetting after (West's incremental update).
                let weight = alpha.max(1.0 / state.seen as f64);
                let diff = value - *mean;
                let step = weight * diff;
                *mean += step;
                *variance = (1.0 - weight) * (*variance + diff * step);
            }
            (BaselineState::Window { values }, Baseline::MedianMad { window }) => {
                while values.len() >= window {
                    values.pop_front();
                }
                values.push_back(value);
            }
            // The stored state was made by a detector of the other kind (the job changed):
            // start this series again rather than mixing two models.
            (baseline, _) => {
                *baseline = self.fresh_state(state.last).baseline;
                state.seen = 0;
                self.fold(state, value);
            }
        }
    }

    /// Folds the fill value for the windows missing between the series' previous window and
    /// `window`, then remembers `window`.
    fn fill_missing(&self, state: &mut SeriesState, window: Option<(Timestamp, Timestamp)>) {
        let Some((start, end)) = window else {
            return;
        };
        if let (Some(fill), Some(previous)) = (self.fill_gaps, state.last_window) {
            let size = end.saturating_sub(start);
            if size > 0 && start > previous {
                let missing = (start.saturating_sub(previous) / size).saturating_sub(1);
                let useful = match self.baseline {
                    Baseline::Ewma { alpha } => (20.0 / alpha).ceil() as i64,
                    Baseline::MedianMad { window } => i64::try_from(window).unwrap_or(i64::MAX),
                };
                for _ in 0..missing.min(useful) {
                    self.fold(state, fill);
                }
            }
        }
        state.last_window = Some(state.last_window.map_or(start, |w| w.max(start)));
    }

    fn is_anomaly(&self, score: f64) -> bool {
        match self.direction {
            Direction::Above => score >= self.threshold,
            Direction::Below => score <= -self.threshold,
            Direction::Both => score.abs() >= self.threshold,
        }
    }
}

/// Median of `values` (sorted in place); 0 for none.
fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl<K, V, S> Operator<K, V> for AnomalyDetector<K, V, S>
where
    K: Send,
    V: Send,
    S: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
{
    type OutKey = S;
    type OutValue = Anomaly<S>;

    stateful_operator!(K, V);

    fn adopt_backend(&mut self, backend: &StateBackend) {
        if self.backend.is_none() {
            self.parts.state = KeyedState::new(&self.config.name, backend);
        }
    }
}

impl<K, V, S> StatefulStep<K, V> for AnomalyDetector<K, V, S>
where
    K: Send,
    V: Send,
    S: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
{
    type State = Series<S>;
    type Index = Expiry<S>;

    fn parts(&self) -> &StepParts<Series<S>, Expiry<S>> {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut StepParts<Series<S>, Expiry<S>> {
        &mut self.parts
    }

    fn apply(
        &mut self,
        record: Record<K, V>,
        _cx: &mut Context<'_>,
        out: &mut Vec<Record<S, Anomaly<S>>>,
    ) -> Result<Option<Record<K, V>>, StreamsError> {
        let obs = (self.extract)(&record.key, &record.value);
        if !obs.value.is_finite() {
            tracing::debug!(operator = %self.config.name, "skipping a non-finite value");
            return Ok(None);
        }
        let t = record.timestamp;
        let config = &self.config;
        let scored = self.parts.state.update(&obs.series, |g| {
            let before = g.get(&()).map(|state| state.last);
            if before.is_none() {
                g.insert((), config.fresh_state(t));
            }
            g.get_mut(&())
                .map(|state| (before, config.observe(state, obs.value, obs.window, t)))
        });
        let Some((before, scored)) = scored? else {
            // The entry was inserted just above.
            return Ok(None);
        };
        if scored.anomalous || self.config.emit == AnomalyEmit::EveryScore {
            out.push(Record {
                key: obs.series.clone(),
                value: Anomaly {
                    key: obs.series.clone(),
                    value: obs.value,
                    score: scored.score,
                    baseline: scored.baseline,
                    spread: scored.spread,
                    is_anomaly: scored.anomalous,
                    observations: scored.observations,
                    timestamp: t,
                    window_start: obs.window.map(|w| w.0),
                    window_end: obs.window.map(|w| w.1),
                },
                timestamp: t,
                partition: record.partition,
                offset: record.offset,
            });
        }
        if self.config.expire_after.is_some() {
            self.reindex(obs.series, before, scored.last);
        }
        Ok(None)
    }

    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        _out: &mut Vec<Record<S, Anomaly<S>>>,
    ) -> Result<(), StreamsError> {
        match self.config.expire_after {
            Some(idle) => self.expire(idle, cx.watermark),
            None => Ok(()),
        }
    }

    fn restoring(
        &mut self,
    ) -> (
        impl FnMut(&mut Expiry<S>, &S, &(), &SeriesState) -> Result<(), StreamsError>,
        &mut StepParts<Series<S>, Expiry<S>>,
    ) {
        let indexed = self.config.expire_after.is_some();
        let index_series =
            move |expiry: &mut Expiry<S>, series: &S, _: &(), state: &SeriesState| {
                if indexed {
                    expiry.entry(state.last).or_default().insert(series.clone());
                }
                Ok(())
            };
        (index_series, &mut self.parts)
    }

    /// One row per series: `key`, `observations`, `baseline`, `spread` (raw, before
    /// `min_spread`) and `last_seen`. With the on-disk backend, at most
    /// [`SNAPSHOT_ROW_CAP`](crate::state::SNAPSHOT_ROW_CAP) series (see
    /// [`crate::state::backend`]).
    fn row(&self, series: &S, _: &(), state: &SeriesState) -> serde_json::Value {
        let (baseline, spread) = if state.seen == 0 {
            (0.0, 0.0)
        } else {
            Detector::center_and_spread(state)
        };
        serde_json::json!({
            "key": serde_json::to_value(series).unwrap_or(serde_json::Value::Null),
            "observations": state.seen,
            "baseline": baseline,
            "spread": spread,
            "last_seen": state.last,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{EmitMode, Pipeline, Stream, Windows};

    type Scores = Pipeline<String, f64, String, Anomaly<String>>;

    fn detector(d: Detector) -> Scores {
        Pipeline::new(move |s: Stream<String, f64>| s.operator(d.per_key(|v: &f64| *v), None))
    }

    fn feed(p: &mut Scores, key: &str, values: &[f64]) {
        for (i, &v) in values.iter().enumerate() {
            p.push(Record::new(key.to_string(), v, i as i64 * 1_000).at(0, i as i64));
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ewma_warms_up_on_the_exact_mean_and_variance() {
        // alpha 0.25 with four values: weights 1, 1/2, 1/3, 1/4 = the plain mean (11) and
        // population variance (1) of 10, 12, 10, 12. Then 20 scores (20 - 11) / 1 = 9.
        let mut p = detector(Detector::ewma("a", 0.25).warmup(4));
        feed(&mut p, "svc", &[10.0, 12.0, 10.0, 12.0, 20.0]);
        let a = p.take_output().remove(0).value;
        assert!(
            close(a.score, 9.0) && close(a.baseline, 11.0) && close(a.spread, 1.0),
            "{a:?}"
        );
    }

    #[test]
    fn ewma_forgets_with_weight_alpha_after_warm_up() {
        // After 10, 12, 10, 12 (mean 11, variance 1), 13 enters with weight 0.25:
        // diff 2, mean 11.5, variance 0.75 * (1 + 2 * 0.5) = 1.5. Then 20 scores
        // 8.5 / sqrt(1.5).
        let mut p = detector(Detector::ewma("a", 0.25).warmup(4));
        feed(&mut p, "svc", &[10.0, 12.0, 10.0, 12.0, 13.0, 20.0]);
        let a = p.take_output().remove(0).value;
        assert!(
            close(a.baseline, 11.5) && close(a.score, 8.5 / 1.5f64.sqrt()) && a.observations == 5,
            "{a:?}"
        );
    }

    #[test]
    fn no_alert_during_warm_up() {
        let mut p = detector(Detector::ewma("a", 0.25).warmup(5));
        feed(&mut p, "svc", &[10.0, 12.0, 10.0, 12.0, 100.0]);
        assert!(p.take_output().is_empty());
    }

    #[test]
    fn values_within_threshold_do_not_alert() {
        let mut p = detector(Detector::ewma("a", 0.25).warmup(4));
        feed(&mut p, "svc", &[10.0, 12.0, 10.0, 12.0, 13.9]);
        assert!(p.take_output().is_empty());
    }

    #[test]
    fn ewma_keeps_anomalies_out_of_the_baseline() {
        let mut p = detector(Detector::ewma("a", 0.25).warmup(4));
        feed(&mut p, "svc", &[10.0, 12.0, 10.0, 12.0, 20.0, 20.0]);
        let scores: Vec<f64> = p.take_output().into_iter().map(|r| r.value.score).collect();
        assert!(
            scores.len() == 2 && close(scores[0], 9.0) && close(scores[1], 9.0),
            "{scores:?}"
        );
    }

    #[test]
    fn min_spread_bounds_the_score_of_a_constant_series() {
        // Zero variance: the spread is raised to min_spread 1, so 2 scores 1, not infinity.
        let mut p = detector(
            Detector::ewma("a", 0.25)
                .warmup(3)
                .emit(AnomalyEmit::EveryScore),
        );
        feed(&mut p, "u", &[1.0, 1.0, 1.0, 2.0]);
        let last = p.take_output().pop().unwrap().value;
        assert!(
            close(last.score, 1.0) && close(last.spread, 1.0) && !last.is_anomaly,
            "{last:?}"
        );
    }

    #[test]
    fn direction_below_alerts_on_drops() {
        let mut p = detector(
            Detector::ewma("a", 0.25)
                .warmup(4)
                .direction(Direction::Below),
        );
        feed(&mut p, "svc", &[10.0, 12.0, 10.0, 12.0, 2.0]);
        let got: Vec<f64> = p.take_output().into_iter().map(|r| r.value.value).collect();
        assert_eq!(got, vec![2.0]);
    }

    #[test]
    fn median_mad_scores_against_the_robust_baseline() {
        // Window 9, 10, 10, 10, 11, 12: median 10, deviations 1, 0, 0, 0, 1, 2 → MAD 0.5,
        // spread 1.4826 * 0.5 = 0.7413, so 100 scores 90 / 0.7413.
        let mut p = detector(Detector::median_mad("m", 6).warmup(6).min_spread(0.01));
        feed(&mut p, "svc", &[10.0, 11.0, 9.0, 10.0, 12.0, 10.0, 100.0]);
        let a = p.take_output().remove(0).value;
        assert!(
            close(a.baseline, 10.0) && close(a.spread, 0.7413) && close(a.score, 90.0 / 0.7413),
            "{a:?}"
        );
    }

    #[test]
    fn median_mad_window_keeps_only_the_last_values() {
        // Window 3: after 1, 2, 3, 50, 50 it holds 3, 50, 50 (median 50), so 51 is normal,
        // while an unbounded median (3) would have alerted.
        let mut p = detector(
            Detector::median_mad("m", 3)
                .warmup(3)
                .emit(AnomalyEmit::EveryScore),
        );
        feed(&mut p, "svc", &[1.0, 2.0, 3.0, 50.0, 50.0, 51.0]);
        let last = p.take_output().pop().unwrap().value;
        assert!(close(last.baseline, 50.0) && !last.is_anomaly, "{last:?}");
    }

    #[test]
    fn series_keep_separate_baselines() {
        let mut p = detector(Detector::ewma("a", 0.25).warmup(4));
        feed(&mut p, "quiet", &[1.0, 1.0, 1.0, 1.0, 1.0]);
        feed(&mut p, "busy", &[100.0, 100.0, 100.0, 100.0, 102.0]);
        feed(&mut p, "quiet", &[100.0]);
        let keys: Vec<String> = p.take_output().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, vec!["quiet".to_string()]);
    }

    #[test]
    fn windowed_failed_logins_alert_with_window_bounds() {
        let mut p = Pipeline::new(|s: Stream<String, ()>| {
            s.window(Windows::tumbling(Duration::from_secs(60)).no_grace())
                .emit(EmitMode::Final)
                .count()
                .operator(
                    Detector::ewma("logins", 0.2)
                        .warmup(3)
                        .per_window(|&n: &u64| n as f64),
                    None,
                )
        });
        // ann: 2, 1, 2, 1 failures a minute, then 30; bob: 1 a minute throughout.
        for (minute, ann, bob) in [(0, 2, 1), (1, 1, 1), (2, 2, 1), (3, 1, 1), (4, 30, 1)] {
            for (user, n) in [("ann", ann), ("bob", bob)] {
                for i in 0..n {
                    p.push(Record::new(user.to_string(), (), minute * 60_000 + i));
                }
            }
        }
        p.finish();
        let got: Vec<_> = p
            .take_output()
            .into_iter()
            .map(|r| {
                (
                    r.key,
                    r.value.value,
                    r.value.window_start,
                    r.value.window_end,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![("ann".to_string(), 30.0, Some(240_000), Some(300_000))]
        );
    }

    /// Failed logins per minute as (minute, failures), through a windowed count into
    /// `detector`; returns the alerts as (user, failures, baseline, window start).
    fn login_alerts(
        detector: Detector,
        failures: &[(&str, i64, u64)],
    ) -> Vec<(String, f64, f64, Option<Timestamp>)> {
        let mut p = Pipeline::new(move |s: Stream<String, ()>| {
            s.window(Windows::tumbling(Duration::from_secs(60)).no_grace())
                .emit(EmitMode::Final)
                .count()
                .operator(detector.per_window(|&n: &u64| n as f64), None)
        });
        for &(user, minute, n) in failures {
            for i in 0..n {
                p.push(Record::new(
                    user.to_string(),
                    (),
                    minute * 60_000 + i as i64,
                ));
            }
        }
        p.finish();
        p.take_output()
            .into_iter()
            .map(|r| (r.key, r.value.value, r.value.baseline, r.value.window_start))
            .collect()
    }

    /// ann fails once in minutes 0, 5 and 9, then 20 times in minute 10; bob, the quiet
    /// control user, fails once in minutes 0, 3, 7 and 10.
    const SPARSE_FAILURES: [(&str, i64, u64); 8] = [
        ("ann", 0, 1),
        ("bob", 0, 1),
        ("bob", 3, 1),
        ("ann", 5, 1),
        ("bob", 7, 1),
        ("ann", 9, 1),
        ("ann", 10, 20),
        ("bob", 10, 1),
    ];

    #[test]
    fn filled_gaps_make_a_zero_baseline_for_sparse_failures() {
        // With zeros for the missing minutes, ann's last ten values before minute 10 are
        // 1, 0, 0, 0, 0, 1, 0, 0, 0, 1: median 0, MAD 0 (spread raised to 1), so 20 scores
        // 20. bob's 1 in minute 10 scores 1: no alert.
        let d = Detector::median_mad("logins", 10).warmup(5).fill_gaps(0.0);
        assert_eq!(
            login_alerts(d, &SPARSE_FAILURES),
            vec![("ann".to_string(), 20.0, 0.0, Some(600_000))]
        );
    }

    #[test]
    fn without_gap_filling_sparse_series_stay_in_warm_up() {
        let d = Detector::median_mad("logins", 10).warmup(5);
        assert!(login_alerts(d, &SPARSE_FAILURES).is_empty());
    }

    #[test]
    fn restored_detector_keeps_its_baselines() {
        let d = || Detector::ewma("a", 0.25).warmup(4);
        let mut p = detector(d());
        feed(&mut p, "svc", &[10.0, 12.0, 10.0, 12.0]);
        let cp = p.commit().unwrap();
        let mut q = detector(d());
        q.restore(cp.stores).unwrap();
        q.push(Record::new("svc".to_string(), 20.0, 10_000).at(0, 4));
        assert!(close(q.take_output().remove(0).value.score, 9.0));
    }

    #[test]
    fn replayed_values_are_not_folded_twice() {
        let d = || Detector::ewma("a", 0.25).warmup(4);
        let mut p = detector(d());
        feed(&mut p, "svc", &[10.0, 12.0, 10.0, 12.0]);
        let cp = p.commit().unwrap();
        let mut q = detector(d());
        q.restore(cp.stores).unwrap();
        // The runtime replays from an older committed offset: those four are skipped.
        feed(&mut q, "svc", &[10.0, 12.0, 10.0, 12.0, 20.0]);
        let a = q.take_output().remove(0).value;
        assert!(close(a.score, 9.0) && a.observations == 4, "{a:?}");
    }

    #[test]
    fn snapshot_shows_each_series_baseline() {
        let mut p = detector(Detector::ewma("a", 0.25));
        feed(&mut p, "svc", &[10.0, 12.0]);
        let rows = p.snapshot().remove(0).rows;
        assert_eq!(
            (&rows[0]["key"], &rows[0]["baseline"], &rows[0]["spread"]),
            (
                &serde_json::json!("svc"),
                &serde_json::json!(11.0),
                &serde_json::json!(1.0)
            )
        );
    }

    #[test]
    fn idle_series_expire() {
        let mut p = detector(Detector::ewma("a", 0.25).expire_after(Duration::from_secs(10)));
        p.push(Record::new("old".to_string(), 1.0, 0));
        p.push(Record::new("new".to_string(), 1.0, 20_000));
        assert_eq!(p.state_len(), 1);
    }
}
