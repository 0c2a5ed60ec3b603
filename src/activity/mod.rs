//! The activity-tracking example: a simulated site producing page views, clicks, logins,
//! social actions, ad events and service logs ([`generator`]), the stream jobs that turn them
//! into live aggregates, alerts and recommendations ([`jobs`]), the Parquet export of the raw
//! events, and [`demo`], which runs all of it with the dashboard on an embedded broker.

pub mod demo;
pub mod events;
pub mod generator;
pub mod jobs;
pub mod secure;

use anyhow::Context;
use millrace_client::admin::{Admin, NewTopic};
use millrace_client::ClientConfig;

/// Topic names.
pub mod topics {
    /// Page views, key `user_id`.
    pub const PAGE_VIEWS: &str = "page-views";
    /// Clicks, key `user_id`.
    pub const CLICKS: &str = "clicks";
    /// Login attempts, key `user_id`.
    pub const LOGINS: &str = "logins";
    /// Likes, shares and comments, key `user_id`.
    pub const SOCIAL: &str = "social";
    /// Ad impressions and clicks, key `campaign_id`.
    pub const AD_EVENTS: &str = "ad-events";
    /// Service logs, key `service`.
    pub const APP_LOGS: &str = "app-logs";
    /// The items table (compacted), key `item_id`.
    pub const ITEMS: &str = "items";
    /// Raw event topics, exported to Parquet.
    pub const RAW: [&str; 6] = [PAGE_VIEWS, CLICKS, LOGINS, SOCIAL, AD_EVENTS, APP_LOGS];

    /// Output of the `page-views-per-minute` job.
    pub const PAGE_VIEWS_PER_MINUTE: &str = "page-views-per-minute";
    /// Output of the `page-load-stats` job.
    pub const PAGE_LOAD_STATS: &str = "page-load-stats";
    /// Output of the `login-anomalies` job.
    pub const LOGIN_ANOMALIES: &str = "login-anomalies";
    /// Output of the `also-viewed` job.
    pub const ALSO_VIEWED: &str = "also-viewed";
    /// Output of the `ad-stats-per-minute` job.
    pub const AD_STATS_PER_MINUTE: &str = "ad-stats-per-minute";
    /// Output of the `error-rate` job.
    pub const ERROR_RATE: &str = "error-rate";
    /// Output of the `notifications` job.
    pub const NOTIFICATIONS: &str = "notifications";
    /// Job outputs.
    pub const OUTPUTS: [&str; 7] = [
        PAGE_VIEWS_PER_MINUTE,
        PAGE_LOAD_STATS,
        LOGIN_ANOMALIES,
        ALSO_VIEWED,
        AD_STATS_PER_MINUTE,
        ERROR_RATE,
        NOTIFICATIONS,
    ];
    /// Records the jobs could not decode.
    pub const DEAD_LETTERS: &str = "activity-dead-letters";
    /// Records that came after their windows closed.
    pub const LATE: &str = "activity-late";
}

/// Creates the example's topics with `partitions` partitions each (the items table
/// compacted); topics that exist already are left as they are. Returns how many topics the
/// example has.
pub async fn create_topics(client: &ClientConfig, partitions: i32) -> anyhow::Result<usize> {
    let admin = Admin::connect(client.clone())
        .await
        .context("connecting to the cluster")?;
    let existing: Vec<String> = admin
        .list_topics(true)
        .await
        .context("listing topics")?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let mut wanted: Vec<NewTopic> = topics::RAW
        .iter()
        .chain(topics::OUTPUTS.iter())
        .chain([topics::DEAD_LETTERS, topics::LATE].iter())
        .map(|name| NewTopic::new(*name, partitions))
        .collect();
    wanted.push(NewTopic::new(topics::ITEMS, partitions).config("cleanup.policy", "compact"));
    let all = wanted.len();
    wanted.retain(|t| !existing.contains(&t.name));
    if !wanted.is_empty() {
        admin
            .create_topics(wanted)
            .await
            .context("creating the example's topics")?;
    }
    Ok(all)
}
