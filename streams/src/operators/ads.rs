//! Ad counters: impressions, clicks, click-through rate and distinct users per campaign per
//! window, after duplicate removal.
//!
//! Ad traffic repeats itself: trackers retry, browsers double-fire, and at-least-once
//! delivery replays. Each event carries an id, and [`ad_stats`] first drops events whose id was
//! already seen within a horizon (the engine's `dedupe`; impressions too, since a replayed
//! impression inflates the CTR's denominator just as a repeated click inflates its
//! numerator), then folds each campaign's window into an [`AdCounters`] accumulator:
//! impressions, clicks, and a HyperLogLog of the users seen ([`DistinctCount`]). The output,
//! [`AdStats`], has `ctr = clicks / impressions` of the same window (0 with no impressions).
//!
//! The dedupe step judges an event older than the watermark whose id it does not remember as
//! late (its id may have expired); such events are counted and reported, not counted twice.
//! So give the pipeline an out-of-orderness that covers the input's disorder, and a horizon
//! longer than the time over which duplicates arrive.
//!
//! [`AdCounters`] is a plain accumulator, so other shapes work too: per ad instead of per
//! campaign, hopping windows, or merging minutes into hours with [`AdCounters::merge`].
//!
//! ```
//! use std::time::Duration;
//! use millrace_streams::operators::{ad_stats, AdEvent, AdEventKind};
//! use millrace_streams::{Pipeline, Record, Stream, Windows};
//!
//! let mut job = Pipeline::new(|events: Stream<String, AdEvent>| {
//!     ad_stats(
//!         events,
//!         "ad-stats",
//!         Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(5)),
//!         Duration::from_secs(600),
//!     )
//! });
//! let event = |id: &str, user: &str, kind| AdEvent {
//!     event_id: id.into(), campaign_id: "spring".into(), user_id: user.into(), kind,
//! };
//! for (e, t) in [(event("i1", "ann", AdEventKind::Impression), 1_000),
//!                (event("i2", "bob", AdEventKind::Impression), 2_000),
//!                (event("c1", "ann", AdEventKind::Click), 3_000),
//!                (event("c1", "ann", AdEventKind::Click), 3_500)] {
//!     job.push(Record::new("spring".to_string(), e, t));
//! }
//! job.finish();
//! let stats = job.take_output().remove(0).value;
//! assert_eq!((stats.impressions, stats.clicks, stats.ctr, stats.unique_users), (2, 1, 0.5, 2));
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dsl::Stream;
use crate::operators::distinct::DistinctCount;
use crate::record::Windowed;
use crate::windows::EmitMode;
use crate::windows::Windows;

/// What happened to an ad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdEventKind {
    /// The ad was shown.
    Impression,
    /// The ad was clicked.
    Click,
}

/// One ad event. Deserializes from JSON such as
/// `{"event_id":"e1","campaign_id":"spring","user_id":"ann","kind":"click"}`; other fields
/// (timestamps, ad ids) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdEvent {
    /// Unique per event; repeats are duplicates.
    pub event_id: String,
    /// The campaign the counters are grouped by.
    pub campaign_id: String,
    /// Who saw or clicked the ad.
    pub user_id: String,
    /// Impression or click.
    pub kind: AdEventKind,
}

/// The accumulator: impressions, clicks and distinct users of one campaign and window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdCounters {
    /// Impressions counted.
    pub impressions: u64,
    /// Clicks counted.
    pub clicks: u64,
    /// Distinct users over impressions and clicks.
    pub users: DistinctCount,
}

/// A window's ad statistics: the output of [`ad_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdStats {
    /// Impressions in the window.
    pub impressions: u64,
    /// Clicks in the window.
    pub clicks: u64,
    /// `clicks / impressions` of the window; 0 when there were no impressions. Can exceed 1
    /// when clicks arrive in a later window than their impressions.
    pub ctr: f64,
    /// Estimated distinct users (HyperLogLog; exact for small counts).
    pub unique_users: u64,
}

impl AdCounters {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one event.
    pub fn add(&mut self, event: &AdEvent) {
        self.record(event.kind, &event.user_id);
    }

    /// Counts one event given by its kind and user.
    pub fn record(&mut self, kind: AdEventKind, user_id: &str) {
        match kind {
            AdEventKind::Impression => self.impressions += 1,
            AdEventKind::Click => self.clicks += 1,
        }
        self.users.insert(user_id);
    }

    /// Adds another window's counters (minutes into hours, or partitions into a total).
    pub fn merge(&mut self, other: &AdCounters) {
        self.impressions += other.impressions;
        self.clicks += other.clicks;
        self.users.merge(&other.users);
    }

    /// The statistics: counts, CTR and distinct users.
    pub fn stats(&self) -> AdStats {
        let ctr = if self.impressions == 0 {
            0.0
        } else {
            self.clicks as f64 / self.impressions as f64
        };
        AdStats {
            impressions: self.impressions,
            clicks: self.clicks,
            ctr,
            unique_users: self.users.estimate(),
        }
    }
}

/// Wires the ad counters: drops events whose `event_id` was seen within `duplicate_horizon`,
/// re-keys by `campaign_id`, and emits one [`AdStats`] per campaign and window when the window
/// closes. `name` names the aggregate's store; the dedupe step's store gets the default name.
pub fn ad_stats<K>(
    events: Stream<K, AdEvent>,
    name: &str,
    windows: Windows,
    duplicate_horizon: Duration,
) -> Stream<Windowed<String>, AdStats>
where
    K: Send + 'static,
{
    events
        .dedupe(duplicate_horizon, |_, e: &AdEvent| e.event_id.clone())
        .key_by(|_, e| e.campaign_id.clone())
        .window(windows)
        .emit(EmitMode::Final)
        .named(name)
        .aggregate(AdCounters::new, AdCounters::add)
        .map_values(|counters| counters.stats())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::Record;
    use crate::state::store::{decode, encode};
    use crate::Pipeline;

    use super::AdEventKind::{Click, Impression};

    type Job = Pipeline<String, AdEvent, Windowed<String>, AdStats>;

    fn job() -> Job {
        Pipeline::new(|s: Stream<String, AdEvent>| {
            ad_stats(
                s,
                "ads",
                Windows::tumbling(Duration::from_secs(60)).no_grace(),
                Duration::from_secs(600),
            )
        })
    }

    fn push(p: &mut Job, id: &str, campaign: &str, user: &str, kind: AdEventKind, t: i64) {
        let e = AdEvent {
            event_id: id.into(),
            campaign_id: campaign.into(),
            user_id: user.into(),
            kind,
        };
        p.push(Record::new(campaign.to_string(), e, t));
    }

    fn rows(p: &mut Job) -> Vec<(String, i64, u64, u64, f64, u64)> {
        p.take_output()
            .into_iter()
            .map(|r| {
                let s = r.value;
                let k = r.key;
                (
                    k.key,
                    k.window_start,
                    s.impressions,
                    s.clicks,
                    s.ctr,
                    s.unique_users,
                )
            })
            .collect()
    }

    #[test]
    fn counts_ctr_and_unique_users_per_campaign_per_minute() {
        let mut p = job();
        // Minute 0, c1: 4 impressions by 3 users, click e5 twice (a duplicate), click e6.
        push(&mut p, "e1", "c1", "u1", Impression, 1_000);
        push(&mut p, "e2", "c1", "u2", Impression, 2_000);
        push(&mut p, "e3", "c1", "u3", Impression, 3_000);
        push(&mut p, "e4", "c1", "u1", Impression, 4_000);
        push(&mut p, "e5", "c1", "u1", Click, 5_000);
        push(&mut p, "e5", "c1", "u1", Click, 5_001);
        push(&mut p, "e6", "c1", "u2", Click, 6_000);
        // Minute 0, c2: a click without impressions.
        push(&mut p, "e7", "c2", "u9", Click, 7_000);
        // Minute 1, c1: two impressions by u4, and e6 again (a duplicate across the boundary).
        push(&mut p, "e8", "c1", "u4", Impression, 61_000);
        push(&mut p, "e9", "c1", "u4", Impression, 62_000);
        push(&mut p, "e6", "c1", "u2", Click, 63_000);
        p.finish();
        assert_eq!(
            (rows(&mut p), p.metrics().duplicates_dropped),
            (
                vec![
                    ("c1".into(), 0, 4, 2, 0.5, 3),
                    ("c2".into(), 0, 0, 1, 0.0, 1),
                    ("c1".into(), 60_000, 2, 0, 0.0, 1),
                ],
                2
            )
        );
    }

    #[test]
    fn restored_job_still_drops_duplicates_and_keeps_counts() {
        let mut p = job();
        push(&mut p, "e1", "c1", "u1", Impression, 1_000);
        push(&mut p, "e2", "c1", "u2", Click, 2_000);
        let cp = p.commit().unwrap();
        let mut q = job();
        q.restore(cp.stores).unwrap();
        push(&mut q, "e2", "c1", "u2", Click, 3_000);
        push(&mut q, "e3", "c1", "u1", Impression, 4_000);
        q.finish();
        assert_eq!(rows(&mut q), vec![("c1".into(), 0, 2, 1, 0.5, 2)]);
    }

    #[test]
    fn merged_counters_add_counts_and_union_users() {
        let (mut a, mut b) = (AdCounters::new(), AdCounters::new());
        a.record(Impression, "u1");
        a.record(Click, "u1");
        b.record(Impression, "u1");
        b.record(Impression, "u2");
        a.merge(&b);
        let s = a.stats();
        assert_eq!((s.impressions, s.clicks, s.unique_users), (3, 1, 2));
    }

    #[test]
    fn ctr_is_zero_without_impressions() {
        let mut c = AdCounters::new();
        c.record(Click, "u1");
        assert_eq!(c.stats().ctr, 0.0);
    }

    #[test]
    fn counters_round_trip_through_the_store_encoding() {
        let mut c = AdCounters::new();
        c.record(Impression, "u1");
        c.record(Click, "u2");
        let back: AdCounters = decode(&encode(&c).unwrap()).unwrap();
        assert_eq!(back.stats(), c.stats());
    }

    #[test]
    fn ad_event_reads_the_example_json() {
        let json = r#"{"event_id":"e1","ts":1,"user_id":"u","campaign_id":"c","ad_id":"a",
                       "kind":"click"}"#;
        let e: AdEvent = serde_json::from_str(json).unwrap();
        assert_eq!(e.kind, Click);
    }
}
