//! "People who viewed this also viewed": item co-occurrence within user sessions, with time
//! decay and a bounded list of neighbours per item.
//!
//! The pipeline ([`also_viewed`] wires it):
//! 1. views keyed by user go into **session windows** (per user, closed after an inactivity
//!    gap); each session collects its distinct items in a [`SessionItems`] accumulator
//!    (at most `max_session_items`, the first ones viewed, so one crawler session cannot
//!    produce millions of pairs);
//! 2. when a session closes, the [`AlsoViewed`] operator counts every ordered pair of distinct
//!    items in it once (item → neighbour, weight 1) and emits, for each item of the session,
//!    its top-K neighbours as a [`Related`] record: item, and `related` as `(item, score)`
//!    sorted by score, highest first (ties by item).
//!
//! **Time decay.** A co-view's weight halves every `half_life` of event time (the session's
//! end), so what people view together now outweighs last month's pattern. Each item keeps its
//! neighbours' scores as of the latest co-view it saw: a newer co-view first scales every
//! score down by `2^-(elapsed / half_life)`, an older one (out of order) is added with its
//! weight already decayed. Decay multiplies all of an item's scores by the same factor, so it
//! never changes their order, only their size relative to new co-views.
//!
//! **Bounded memory.** Each item keeps at most `max_candidates` neighbours, managed as in the
//! Space-Saving algorithm (Metwally et al., 2005): a new neighbour arriving at a full list
//! replaces the one with the lowest score and inherits that score as its starting point
//! (an overestimate, bounded by the inherited amount, which is remembered as its `error`).
//! Any neighbour whose true decayed score exceeds `1 / max_candidates` of the item's total is
//! guaranteed to be in the list, so the top-K is right whenever the top-K stand out from the
//! long tail; keep `max_candidates` a few times `top_k` (default 50 for a top 10). The number
//! of items is that of the catalogue; state per item is `max_candidates` entries.
//!
//! **Where state lives.** Each item's list is one entry of the operator's store and changelog
//! (`item` -> neighbours), kept where the pipeline's or stream's
//! [`StateBackend`] says (see [`crate::state::backend`]), or where
//! [`AlsoViewed::with_backend`] chose (which [`also_viewed`] applies to its session step too):
//! in a hash map, or on disk, read and written through the store for every item of a closed
//! session, so that a large catalogue need not fit in memory. The changelog is the same either
//! way, so a job can switch backends between runs.
//!
//! ```
//! use std::time::Duration;
//! use millrace_streams::operators::{also_viewed, AlsoViewed};
//! use millrace_streams::{Pipeline, Record, Stream, Windows};
//!
//! // Page views keyed by user; sessions end after 30 minutes without a view.
//! let mut job = Pipeline::new(|views: Stream<String, String>| {
//!     also_viewed(
//!         views,
//!         Windows::session(Duration::from_secs(30 * 60)).no_grace(),
//!         AlsoViewed::new("also-viewed").top_k(3),
//!     )
//! });
//! // Two users view tents with stoves, one tents with boots.
//! for (user, pages) in [("ann", ["/tents", "/stoves"]), ("bob", ["/tents", "/stoves"]),
//!                       ("cy", ["/tents", "/boots"])] {
//!     for page in pages {
//!         job.push(Record::new(user.to_string(), page.to_string(), 0));
//!     }
//! }
//! job.finish();
//! // Each closed session updates its items; the last update for /tents has both neighbours.
//! let latest = job.take_output().into_iter().rfind(|r| r.key == "/tents").unwrap();
//! let related: Vec<(&str, f64)> =
//!     latest.value.related.iter().map(|(page, score)| (page.as_str(), *score)).collect();
//! assert_eq!(related, vec![("/stoves", 2.0), ("/boots", 1.0)]);
//! ```

use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dsl::Stream;
use crate::error::StreamsError;
use crate::operator::{stateful_operator, Context, Operator, StatefulStep, StepParts};
use crate::record::{Record, Windowed};
use crate::state::backend::StateBackend;
use crate::state::keyed::KeyedState;
use crate::state::store::KeyValueStore;
use crate::time::{millis, Timestamp};
use crate::windows::EmitMode;
use crate::windows::SessionWindows;

/// The distinct items of one session, in first-view order, at most `cap` of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionItems<I> {
    items: Vec<I>,
    cap: usize,
}

impl<I: PartialEq + Clone> SessionItems<I> {
    /// An empty session keeping at most `cap` distinct items (at least 2).
    pub fn new(cap: usize) -> Self {
        Self {
            items: Vec::new(),
            cap: cap.max(2),
        }
    }

    /// Adds an item unless it is already there or the session is full.
    pub fn add(&mut self, item: &I) {
        // A linear scan: sessions hold tens of items, where it beats hashing.
        if self.items.len() < self.cap && !self.items.contains(item) {
            self.items.push(item.clone());
        }
    }

    /// Adds the items of `other` (when a view bridges two sessions of the same user).
    pub fn merge(&mut self, other: SessionItems<I>) {
        for item in &other.items {
            self.add(item);
        }
    }

    /// The items, in first-view order.
    pub fn items(&self) -> &[I] {
        &self.items
    }
}

/// An item's most related items: the output of [`AlsoViewed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Related<I> {
    /// The item.
    pub item: I,
    /// Up to top-K neighbours with their decayed co-view scores, highest first.
    pub related: Vec<(I, f64)>,
}

/// One candidate neighbour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Candidate<I> {
    item: I,
    /// Decayed co-view score as of the list's `as_of` (an upper bound, Space-Saving style).
    score: f64,
    /// How much of `score` was inherited from the neighbour it replaced.
    error: f64,
}

/// The bounded neighbour list of one item, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Neighbours<I> {
    /// Event time the scores are decayed to.
    as_of: Timestamp,
    candidates: Vec<Candidate<I>>,
}

impl<I: PartialEq + Ord + Clone> Neighbours<I> {
    fn new(as_of: Timestamp) -> Self {
        Self {
            as_of,
            candidates: Vec::new(),
        }
    }

    /// Adds one co-view of `item` at event time `t`.
    fn add(&mut self, item: &I, t: Timestamp, half_life: f64, max: usize) {
        let weight = if t > self.as_of {
            let factor = decay(t - self.as_of, half_life);
            for c in &mut self.candidates {
                c.score *= factor;
                c.error *= factor;
            }
            self.as_of = t;
            1.0
        } else {
            decay(self.as_of - t, half_life)
        };
        if let Some(c) = self.candidates.iter_mut().find(|c| &c.item == item) {
            c.score += weight;
        } else if self.candidates.len() < max {
            self.candidates.push(Candidate {
                item: item.clone(),
                score: weight,
                error: 0.0,
            });
        } else if let Some(min) = self.candidates.iter_mut().min_by(|a, b| {
            a.score
                .total_cmp(&b.score)
                .then_with(|| b.item.cmp(&a.item))
        }) {
            // Space-Saving: the newcomer takes the weakest slot and its score, since it may
            // have been counted there before and been evicted.
            let inherited = min.score;
            *min = Candidate {
                item: item.clone(),
                score: inherited + weight,
                error: inherited,
            };
        }
    }

    /// The `k` highest scores, highest first, ties by item.
    fn top(&self, k: usize) -> Vec<(I, f64)> {
        let mut all: Vec<&Candidate<I>> = self.candidates.iter().collect();
        all.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.item.cmp(&b.item))
        });
        all.into_iter()
            .take(k)
            .map(|c| (c.item.clone(), c.score))
            .collect()
    }
}

/// `2^-(elapsed / half_life)`.
fn decay(elapsed_ms: i64, half_life_ms: f64) -> f64 {
    (-(elapsed_ms as f64) / half_life_ms).exp2()
}

/// The co-occurrence operator: consumes closed sessions (`Windowed<user>` → [`SessionItems`])
/// and emits [`Related`] records keyed by item. Settings are builder methods.
///
/// Each item's neighbour list is one state entry (`item` -> neighbours), kept where the
/// backend says (see [`crate::state::backend`]): in a hash map, or read and written through the
/// operator's store for every item of a closed session. It needs no time index.
pub struct AlsoViewed<I> {
    top_k: usize,
    max_candidates: usize,
    max_session_items: usize,
    half_life_ms: f64,
    /// Each item's neighbours; no index (nothing expires by time).
    parts: StepParts<Items<I>, ()>,
    /// The backend chosen when building the operator, which the stream's does not override
    /// (and which [`also_viewed`] gives its session step).
    backend: Option<StateBackend>,
    /// Whether [`AlsoViewed::with_store`] chose the store (then the stream's backend does not
    /// apply to this operator, but still does to the session step).
    own_store: bool,
}

/// Every item's neighbours.
type Items<I> = KeyedState<I, (), Neighbours<I>>;

impl<I> AlsoViewed<I>
where
    I: Hash + Eq + Clone + Serialize + DeserializeOwned,
{
    /// An operator named `name` (its store's name) with the defaults: top 10, 50 candidates
    /// per item, 50 items per session, half-life 7 days. Its state follows the backend of the
    /// stream it is added to unless [`AlsoViewed::with_backend`] says otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let state = KeyedState::new(&name, &StateBackend::InMemory);
        Self {
            parts: StepParts::new(name, state, ()),
            top_k: 10,
            max_candidates: 50,
            max_session_items: 50,
            half_life_ms: millis(Duration::from_secs(7 * 24 * 3600)) as f64,
            backend: None,
            own_store: false,
        }
    }

    /// Number of related items emitted per item (at least 1).
    #[must_use]
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k.max(1);
        self.max_candidates = self.max_candidates.max(self.top_k);
        self
    }

    /// Neighbours kept per item (at least top-K); see the module docs on accuracy.
    #[must_use]
    pub fn max_candidates(mut self, m: usize) -> Self {
        self.max_candidates = m.max(self.top_k);
        self
    }

    /// Distinct items kept per session (used by [`also_viewed`]'s session accumulator).
    #[must_use]
    pub fn max_session_items(mut self, n: usize) -> Self {
        self.max_session_items = n.max(2);
        self
    }

    /// Time for a co-view's weight to halve (at least 1 ms).
    #[must_use]
    pub fn half_life(mut self, half_life: Duration) -> Self {
        self.half_life_ms = millis(half_life).max(1) as f64;
        self
    }

    /// Keeps the state where `backend` says, whatever the backend of the stream the operator
    /// is added to; [`also_viewed`] keeps its session step there too.
    #[must_use]
    pub fn with_backend(mut self, backend: StateBackend) -> Self {
        self.parts.state = KeyedState::new(&self.parts.name, &backend);
        self.backend = Some(backend);
        self.own_store = false;
        self
    }

    /// Keeps the state in memory, written to `store` at each checkpoint (and restored from
    /// it), whatever the stream's backend. For state read and written on disk, use
    /// [`AlsoViewed::with_backend`] with [`StateBackend::OnDisk`].
    #[must_use]
    pub fn with_store(mut self, store: Box<dyn KeyValueStore>) -> Self {
        self.parts.state = KeyedState::in_memory(&self.parts.name, store);
        self.backend = None;
        self.own_store = true;
        self
    }
}

impl<U, I> Operator<Windowed<U>, SessionItems<I>> for AlsoViewed<I>
where
    U: Send,
    I: Hash + Ord + Clone + Serialize + DeserializeOwned + Send,
{
    type OutKey = I;
    type OutValue = Related<I>;

    stateful_operator!(Windowed<U>, SessionItems<I>);

    fn adopt_backend(&mut self, backend: &StateBackend) {
        if self.backend.is_none() && !self.own_store {
            self.parts.state = KeyedState::new(&self.parts.name, backend);
        }
    }
}

impl<U, I> StatefulStep<Windowed<U>, SessionItems<I>> for AlsoViewed<I>
where
    U: Send,
    I: Hash + Ord + Clone + Serialize + DeserializeOwned + Send,
{
    type State = Items<I>;
    type Index = ();

    fn parts(&self) -> &StepParts<Items<I>, ()> {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut StepParts<Items<I>, ()> {
        &mut self.parts
    }

    fn apply(
        &mut self,
        record: Record<Windowed<U>, SessionItems<I>>,
        _cx: &mut Context<'_>,
        out: &mut Vec<Record<I, Related<I>>>,
    ) -> Result<Option<Record<Windowed<U>, SessionItems<I>>>, StreamsError> {
        let items = record.value.items();
        if items.len() < 2 {
            return Ok(None);
        }
        let t = record.timestamp;
        let (half_life, max, k) = (self.half_life_ms, self.max_candidates, self.top_k);
        for item in items {
            let related = self.parts.state.update(item, |g| {
                if !g.contains(&()) {
                    g.insert((), Neighbours::new(t));
                }
                // Present: inserted just above if it was not.
                g.get_mut(&())
                    .map(|neighbours| {
                        for other in items.iter().filter(|&o| o != item) {
                            neighbours.add(other, t, half_life, max);
                        }
                        neighbours.top(k)
                    })
                    .unwrap_or_default()
            })?;
            out.push(Record {
                key: item.clone(),
                value: Related {
                    item: item.clone(),
                    related,
                },
                timestamp: t,
                partition: record.partition,
                offset: record.offset,
            });
        }
        Ok(None)
    }

    fn advance(
        &mut self,
        _cx: &mut Context<'_>,
        _out: &mut Vec<Record<I, Related<I>>>,
    ) -> Result<(), StreamsError> {
        Ok(())
    }

    fn restoring(
        &mut self,
    ) -> (
        impl FnMut(&mut (), &I, &(), &Neighbours<I>) -> Result<(), StreamsError>,
        &mut StepParts<Items<I>, ()>,
    ) {
        (
            |_: &mut (), _: &I, _: &(), _: &Neighbours<I>| Ok(()),
            &mut self.parts,
        )
    }

    /// One row per item: `item`, `related` (the top-K as `[item, score]` pairs) and `as_of`.
    /// With the on-disk backend, at most [`SNAPSHOT_ROW_CAP`](crate::state::SNAPSHOT_ROW_CAP)
    /// items (see [`crate::state::backend`]).
    fn row(&self, item: &I, _: &(), neighbours: &Neighbours<I>) -> serde_json::Value {
        serde_json::json!({
            "item": serde_json::to_value(item).unwrap_or(serde_json::Value::Null),
            "related": serde_json::to_value(neighbours.top(self.top_k))
                .unwrap_or(serde_json::Value::Null),
            "as_of": neighbours.as_of,
        })
    }
}

/// Wires the whole "also viewed" job: `views` (keyed by user, valued by item) into
/// `sessions`, each closed session into `operator`. The session step's store is named
/// after the operator with a `-sessions` suffix. Both steps keep their state where `views`'
/// backend says, or where [`AlsoViewed::with_backend`] chose.
pub fn also_viewed<U, I>(
    views: Stream<U, I>,
    sessions: SessionWindows,
    operator: AlsoViewed<I>,
) -> Stream<I, Related<I>>
where
    U: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    I: Hash + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
{
    let cap = operator.max_session_items;
    let sessions = views
        .session_window(sessions)
        .emit(EmitMode::Final)
        .named(format!("{}-sessions", operator.parts.name));
    let sessions = match &operator.backend {
        None => sessions,
        Some(StateBackend::InMemory) => sessions.in_memory(),
        Some(StateBackend::OnDisk(dir)) => sessions.on_disk(dir.clone()),
    };
    sessions
        .aggregate(
            move || SessionItems::new(cap),
            |session: &mut SessionItems<I>, item: &I| session.add(item),
            |session, other| session.merge(other),
        )
        .operator(operator, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Pipeline, Windows};

    const HOUR: i64 = 3_600_000;

    type Job = Pipeline<String, String, String, Related<String>>;

    fn job(config: impl FnOnce() -> AlsoViewed<String> + Send + 'static) -> Job {
        Pipeline::new(move |s: Stream<String, String>| {
            also_viewed(
                s,
                Windows::session(Duration::from_secs(1_800)).no_grace(),
                config(),
            )
        })
    }

    fn view(p: &mut Job, user: &str, item: &str, t: Timestamp) {
        p.push(Record::new(user.to_string(), item.to_string(), t));
    }

    /// The last `related` list emitted for `item`.
    fn latest(out: &[Record<String, Related<String>>], item: &str) -> Vec<(String, f64)> {
        out.iter()
            .rfind(|r| r.key == item)
            .map(|r| r.value.related.clone())
            .unwrap_or_default()
    }

    fn pairs(list: &[(&str, f64)]) -> Vec<(String, f64)> {
        list.iter().map(|(i, s)| (i.to_string(), *s)).collect()
    }

    #[test]
    fn items_of_one_session_are_related_both_ways() {
        let mut p = job(|| AlsoViewed::new("av"));
        view(&mut p, "u1", "A", 0);
        view(&mut p, "u1", "B", 1_000);
        view(&mut p, "u1", "A", 2_000);
        p.finish();
        let out = p.take_output();
        assert_eq!(
            (latest(&out, "A"), latest(&out, "B")),
            (pairs(&[("B", 1.0)]), pairs(&[("A", 1.0)]))
        );
    }

    #[test]
    fn views_in_different_sessions_are_not_related() {
        let mut p = job(|| AlsoViewed::new("av"));
        view(&mut p, "u1", "A", 0);
        view(&mut p, "u1", "B", HOUR);
        view(&mut p, "u2", "C", 0);
        p.finish();
        assert!(p.take_output().is_empty());
    }

    #[test]
    fn co_views_decay_by_half_life_and_sort_by_score() {
        // u1 co-views A and B at 0; u2 and u3 co-view A and C one half-life later: as of then,
        // B scores 1 * 0.5 and C scores 2.
        let mut p = job(|| AlsoViewed::new("av").half_life(Duration::from_secs(3_600)));
        view(&mut p, "u1", "A", 0);
        view(&mut p, "u1", "B", 0);
        for user in ["u2", "u3"] {
            view(&mut p, user, "A", HOUR);
            view(&mut p, user, "C", HOUR);
        }
        p.finish();
        assert_eq!(
            latest(&p.take_output(), "A"),
            pairs(&[("C", 2.0), ("B", 0.5)])
        );
    }

    #[test]
    fn only_top_k_are_emitted() {
        let mut p = job(|| AlsoViewed::new("av").top_k(2));
        for (user, items) in [("u1", "ABCD"), ("u2", "ABC"), ("u3", "AB")] {
            for item in items.chars() {
                view(&mut p, user, &item.to_string(), 0);
            }
        }
        p.finish();
        assert_eq!(
            latest(&p.take_output(), "A"),
            pairs(&[("B", 3.0), ("C", 2.0)])
        );
    }

    #[test]
    fn full_list_replaces_the_weakest_neighbour_space_saving_style() {
        let mut n = Neighbours::new(0);
        for item in ["B", "B", "B", "C", "D"] {
            n.add(&item.to_string(), 0, 1e9, 2);
        }
        // D arrives with B (3) and C (1) kept: it takes C's slot, score 1 + 1, error 1.
        let d = n.candidates.iter().find(|c| c.item == "D").unwrap();
        assert_eq!((n.top(2), d.error), (pairs(&[("B", 3.0), ("D", 2.0)]), 1.0));
    }

    #[test]
    fn older_co_view_is_added_with_its_decayed_weight() {
        let mut n = Neighbours::new(0);
        n.add(&"B".to_string(), 2 * HOUR, HOUR as f64, 10);
        n.add(&"C".to_string(), HOUR, HOUR as f64, 10);
        assert_eq!(n.top(2), pairs(&[("B", 1.0), ("C", 0.5)]));
    }

    #[test]
    fn session_keeps_at_most_its_cap_of_items() {
        let mut s = SessionItems::new(2);
        for item in ["A", "B", "A", "C"] {
            s.add(&item.to_string());
        }
        assert_eq!(s.items(), ["A".to_string(), "B".to_string()]);
    }

    #[test]
    fn snapshot_shows_each_item_top_k() {
        let mut p = job(|| AlsoViewed::new("av"));
        view(&mut p, "u1", "A", 0);
        view(&mut p, "u1", "B", 0);
        p.finish();
        let store = p.snapshot().into_iter().find(|s| s.store == "av").unwrap();
        let mut rows = store.rows;
        rows.sort_by_key(|r| r["item"].to_string());
        assert_eq!(
            rows,
            vec![
                serde_json::json!({"item": "A", "related": [["B", 1.0]], "as_of": 0}),
                serde_json::json!({"item": "B", "related": [["A", 1.0]], "as_of": 0}),
            ]
        );
    }

    #[test]
    fn restored_operator_keeps_co_view_counts() {
        let config = || AlsoViewed::new("av");
        let mut p = job(config);
        view(&mut p, "u1", "A", 0);
        view(&mut p, "u1", "B", 0);
        view(&mut p, "u9", "Z", HOUR);
        let cp = p.commit().unwrap();
        let mut q = job(config);
        q.restore(cp.stores).unwrap();
        view(&mut q, "u2", "A", HOUR);
        view(&mut q, "u2", "B", HOUR);
        q.finish();
        let got = latest(&q.take_output(), "A");
        assert!(
            got.len() == 1
                && got[0].0 == "B"
                && (got[0].1 - 1.0 - 0.5f64.powf(1.0 / 168.0)).abs() < 1e-9,
            "{got:?}"
        );
    }
}
