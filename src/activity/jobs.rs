//! The stream jobs of the activity example, written with `millrace-streams` as a user would.
//! Each job is its own application (consumer group `activity-<job>`), writes its output topic
//! (JSON values, `window_start`/`window_end` in ms since the epoch) and exposes its state
//! stores for queries.

use std::sync::Arc;
use std::time::Duration;

use millrace_client::ClientConfig;
use millrace_streams::operators::{
    ad_stats, also_viewed, AdEvent, AdEventKind, AlsoViewed, AnomalyEmit, Detector, DistinctCount,
    QuantileSketch,
};
use millrace_streams::query::QueryableState;
use millrace_streams::runtime::{EndOfInput, Job, JobMetrics, Sink, Source, StreamsConfig};
use millrace_streams::{EmitMode, GlobalTable, StreamsError, Windows};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinHandle;

use super::events::{AdEventRecord, AppLog, Item, Login, Notification, PageView, Social};
use super::topics;

/// Window length of every per-minute job.
pub const MINUTE: Duration = Duration::from_secs(60);
/// Bounded out-of-orderness of event time: covers the generator's disorder.
pub const OUT_OF_ORDERNESS: Duration = Duration::from_secs(5);
/// How long a window stays open after its end, in event time. Generous because a job that
/// catches up on a backlog interleaves its source partitions coarsely, and records of a
/// repartitioned job can arrive that far out of order; final results come this much later.
pub const GRACE: Duration = Duration::from_secs(60);
/// A user's visit ends after this long without a page view.
pub const SESSION_GAP: Duration = Duration::from_secs(5 * 60);
/// Ad clicks repeated within this horizon are duplicates.
pub const DUPLICATE_HORIZON: Duration = Duration::from_secs(10 * 60);

/// A running job: its state for the dashboard and its control handles.
pub struct RunningJob {
    /// The job (and output topic) name.
    pub name: &'static str,
    /// Its live state stores.
    pub state: QueryableState,
    /// Its counters.
    pub metrics: Arc<JobMetrics>,
    /// Tells it that the input has ended.
    pub end_of_input: EndOfInput,
    /// The job itself; ends after shutdown.
    pub task: JoinHandle<Result<(), StreamsError>>,
}

/// Views and distinct viewers of a page in a window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PageViewCounts {
    /// Views in the window.
    pub views: u64,
    /// Distinct users (HyperLogLog).
    pub users: DistinctCount,
}

/// Requests and errors of a service in a window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Log lines (requests).
    pub total: u64,
    /// Lines at level `error`.
    pub errors: u64,
}

impl ErrorCounts {
    /// Errors per request (0 without requests).
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.errors as f64 / self.total as f64
        }
    }
}

fn window() -> Windows {
    Windows::tumbling(MINUTE).grace(GRACE)
}

/// The application id of a job.
pub fn application_id(job: &str) -> String {
    format!("activity-{job}")
}

/// What every job of the example shares: the cluster, the commit interval, the stop signal.
#[derive(Clone)]
pub struct JobContext {
    /// How to reach the cluster.
    pub client: ClientConfig,
    /// How often jobs commit.
    pub commit_interval: Duration,
    /// Set to true to stop the jobs (they commit and leave their groups).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl JobContext {
    fn config(&self, job: &str) -> StreamsConfig {
        // Exactly-once (the default, stated here because the demo shows it off): the Parquet
        // sink exports the outputs with read_committed.
        StreamsConfig::new(application_id(job), self.client.clone())
            .exactly_once()
            .commit_interval(self.commit_interval)
            .event_time(OUT_OF_ORDERNESS, Some(Duration::from_secs(30)))
            .dead_letter_topic(topics::DEAD_LETTERS)
            .late_topic(topics::LATE)
            .session_timeout(Duration::from_secs(10))
    }

    /// Runs `job` on its own task until the shutdown signal.
    fn start<K0, V0, K, V>(&self, name: &'static str, job: Job<K0, V0, K, V>) -> RunningJob
    where
        K0: Send + 'static,
        V0: Send + 'static,
        K: Send + 'static,
        V: Send + 'static,
    {
        let state = job.state();
        let metrics = job.metrics();
        let end_of_input = job.end_of_input();
        let mut shutdown = self.shutdown.clone();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            let result = job.run(stop).await;
            if let Err(error) = &result {
                tracing::error!(job = name, %error, "stream job stopped");
            }
            result
        });
        RunningJob {
            name,
            state,
            metrics,
            end_of_input,
            task,
        }
    }
}

/// An output record of a windowed job: `fields` (an object) with the key under `key_field`
/// and the window bounds, keyed by `key`.
fn window_output(
    key_field: &str,
    key: String,
    window_start: Option<i64>,
    window_end: Option<i64>,
    mut fields: serde_json::Value,
) -> (String, serde_json::Value) {
    if let Some(object) = fields.as_object_mut() {
        object.insert(key_field.to_string(), json!(key));
        object.insert("window_start".to_string(), json!(window_start));
        object.insert("window_end".to_string(), json!(window_end));
    }
    (key, fields)
}

/// A per-page, per-minute aggregate of `page-views` (final results): the views are re-keyed
/// by page through the repartition topic, folded with `init`/`add`, and written as the
/// window's `fields` plus `page`, `window_start` and `window_end`.
fn per_page_minute<A>(
    ctx: &JobContext,
    name: &'static str,
    init: fn() -> A,
    add: fn(&mut A, &PageView),
    fields: fn(A) -> serde_json::Value,
) -> RunningJob
where
    A: Clone + Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let job = Job::group_by(
        ctx.config(name),
        Source::json(&[topics::PAGE_VIEWS], |v: &PageView| v.ts),
        |_, v: &PageView| v.page.clone(),
        move |views| {
            views
                .window(window())
                .emit(EmitMode::Final)
                .named(name)
                .aggregate(init, add)
                .map(move |w, acc| {
                    let (start, end) = (Some(w.window_start), Some(w.window_end));
                    window_output("page", w.key, start, end, fields(acc))
                })
        },
        Sink::json_values(name),
    );
    ctx.start(name, job)
}

/// `page-views-per-minute`: views and distinct users per page per minute (final results).
pub fn page_views_per_minute(ctx: &JobContext) -> RunningJob {
    per_page_minute(
        ctx,
        topics::PAGE_VIEWS_PER_MINUTE,
        PageViewCounts::default,
        |acc, view| {
            acc.views += 1;
            acc.users.insert(&view.user_id);
        },
        |acc| json!({"views": acc.views, "unique_users": acc.users.estimate()}),
    )
}

/// `page-load-stats`: per page per minute, the count and the p50/p99 load time (DDSketch).
pub fn page_load_stats(ctx: &JobContext) -> RunningJob {
    per_page_minute(
        ctx,
        topics::PAGE_LOAD_STATS,
        QuantileSketch::new,
        |sketch, view| sketch.add(f64::from(view.load_ms)),
        |sketch| {
            json!({
                "count": sketch.count(),
                "p50_ms": sketch.quantile(0.5),
                "p99_ms": sketch.quantile(0.99),
            })
        },
    )
}

/// `login-anomalies`: failed logins per user per minute, scored against the user's own EWMA
/// baseline (minutes without failures count as 0); alerts only.
pub fn login_anomalies(ctx: &JobContext) -> RunningJob {
    let name = topics::LOGIN_ANOMALIES;
    let job = Job::new(
        ctx.config(name),
        Source::json(&[topics::LOGINS], |v: &Login| v.ts),
        |logins| {
            logins
                .filter(|_, login| !login.success)
                .window(window())
                .emit(EmitMode::Final)
                .named("login-failures")
                .count()
                .operator(
                    Detector::ewma(topics::LOGIN_ANOMALIES, 0.2)
                        .warmup(4)
                        .fill_gaps(0.0)
                        .min_spread(1.0)
                        .expire_after(Duration::from_secs(3 * 3600))
                        .per_window(|n: &u64| *n as f64),
                    None,
                )
                .map(|user, alert| {
                    let fields = json!({
                        "failures": alert.value as u64,
                        "score": alert.score,
                        "baseline": alert.baseline,
                    });
                    window_output(
                        "user_id",
                        user,
                        alert.window_start,
                        alert.window_end,
                        fields,
                    )
                })
        },
        Sink::json_values(name),
    );
    ctx.start(name, job)
}

/// `also-viewed`: per page, the pages most viewed with it in the same sessions.
pub fn also_viewed_pages(ctx: &JobContext) -> RunningJob {
    let name = topics::ALSO_VIEWED;
    let job = Job::new(
        ctx.config(name),
        Source::json(&[topics::PAGE_VIEWS], |v: &PageView| v.ts),
        |views| {
            let pages = views.map(|_, v| (v.user_id, v.page));
            also_viewed(
                pages,
                Windows::session(SESSION_GAP).grace(GRACE),
                AlsoViewed::new(topics::ALSO_VIEWED)
                    .top_k(5)
                    .half_life(Duration::from_secs(3600)),
            )
            .map(|page, related| {
                let list: Vec<serde_json::Value> = related
                    .related
                    .iter()
                    .map(|(other, score)| json!({"page": other, "score": score}))
                    .collect();
                let value = json!({"page": related.item, "related": list});
                (page, value)
            })
        },
        Sink::json_values(name),
    );
    ctx.start(name, job)
}

/// `ad-stats-per-minute`: impressions, clicks, CTR and distinct users per campaign per
/// minute, after duplicate-click removal.
pub fn ad_stats_per_minute(ctx: &JobContext) -> RunningJob {
    let name = topics::AD_STATS_PER_MINUTE;
    let job = Job::new(
        ctx.config(name),
        Source::json(&[topics::AD_EVENTS], |v: &AdEventRecord| v.ts),
        |events| {
            let events = events.map_values(|e| AdEvent {
                kind: if e.kind == "click" {
                    AdEventKind::Click
                } else {
                    AdEventKind::Impression
                },
                event_id: e.event_id,
                campaign_id: e.campaign_id,
                user_id: e.user_id,
            });
            ad_stats(
                events,
                topics::AD_STATS_PER_MINUTE,
                window(),
                DUPLICATE_HORIZON,
            )
            .map(|w, stats| {
                let fields = json!({
                    "impressions": stats.impressions,
                    "clicks": stats.clicks,
                    "ctr": stats.ctr,
                    "unique_users": stats.unique_users,
                });
                let (start, end) = (Some(w.window_start), Some(w.window_end));
                window_output("campaign_id", w.key, start, end, fields)
            })
        },
        Sink::json_values(name),
    );
    ctx.start(name, job)
}

/// `error-rate`: per service per minute, the share of requests logged as errors, every
/// window scored against the service's EWMA baseline (`alert` set for anomalies).
pub fn error_rate(ctx: &JobContext) -> RunningJob {
    let name = topics::ERROR_RATE;
    let job = Job::new(
        ctx.config(name),
        Source::json(&[topics::APP_LOGS], |v: &AppLog| v.ts),
        |logs| {
            logs.window(window())
                .emit(EmitMode::Final)
                .named(topics::ERROR_RATE)
                .aggregate(ErrorCounts::default, |acc: &mut ErrorCounts, log| {
                    acc.total += 1;
                    acc.errors += u64::from(log.level == "error");
                })
                .operator(
                    Detector::ewma("error-rate-baseline", 0.3)
                        .warmup(4)
                        // A service with a few dozen requests a minute swings by several
                        // points from one error more or less: alert on clear jumps only.
                        .min_spread(0.05)
                        .emit(AnomalyEmit::EveryScore)
                        .per_window(ErrorCounts::rate),
                    None,
                )
                .map(|service, scored| {
                    let fields = json!({
                        "error_rate": scored.value,
                        "score": scored.score,
                        "baseline": scored.baseline,
                        "alert": scored.is_anomaly,
                    });
                    let (start, end) = (scored.window_start, scored.window_end);
                    window_output("service", service, start, end, fields)
                })
        },
        Sink::json_values(name),
    );
    ctx.start(name, job)
}

/// `notifications`: each like, share or comment becomes a notification to the item's owner
/// (a stream-table join of `social` with the compacted `items` topic).
pub fn notifications(ctx: &JobContext) -> RunningJob {
    let name = topics::NOTIFICATIONS;
    let items: GlobalTable<String, Item> = GlobalTable::json(topics::ITEMS);
    let job = Job::new(
        ctx.config(name),
        Source::json(&[topics::SOCIAL], |v: &Social| v.ts),
        move |actions| {
            actions
                .join_table(
                    &items,
                    |_, action: &Social| action.item_id.clone(),
                    |action, item: &Item| Notification {
                        user_id: item.owner_id.clone(),
                        ts: action.ts,
                        actor: action.user_id,
                        action: action.action,
                        item_id: action.item_id,
                    },
                )
                .map(|_, notification| (notification.user_id.clone(), notification))
        },
        Sink::json_values(name),
    );
    ctx.start(name, job)
}

/// Starts every job of the example.
pub fn start_all(ctx: &JobContext) -> Vec<RunningJob> {
    vec![
        page_views_per_minute(ctx),
        page_load_stats(ctx),
        login_anomalies(ctx),
        also_viewed_pages(ctx),
        ad_stats_per_minute(ctx),
        error_rate(ctx),
        notifications(ctx),
    ]
}
