//! The activity events, as JSON values on their topics. `ts` is event time in ms since the
//! epoch everywhere.

use serde::{Deserialize, Serialize};

/// A page view (`page-views`, key `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageView {
    /// Unique per event.
    pub event_id: String,
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// Who viewed.
    pub user_id: String,
    /// The visit this view belongs to.
    pub session_id: String,
    /// Path of the page.
    pub page: String,
    /// Previous page of the session, or where the visit came from.
    pub referrer: String,
    /// Time to load the page in the browser.
    pub load_ms: u32,
}

/// A click on a page element (`clicks`, key `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Click {
    /// Unique per event.
    pub event_id: String,
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// Who clicked.
    pub user_id: String,
    /// The visit this click belongs to.
    pub session_id: String,
    /// The page clicked on.
    pub page: String,
    /// What was clicked.
    pub element: String,
}

/// A login attempt (`logins`, key `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    /// Unique per event.
    pub event_id: String,
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// The account.
    pub user_id: String,
    /// Where the attempt came from.
    pub ip: String,
    /// Whether the password was right.
    pub success: bool,
}

/// A social action on an item (`social`, key `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Social {
    /// Unique per event.
    pub event_id: String,
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// Who acted (the actor).
    pub user_id: String,
    /// `like`, `share` or `comment`.
    pub action: String,
    /// The item acted on.
    pub item_id: String,
}

/// An ad impression or click (`ad-events`, key `campaign_id`). Clicks are sometimes sent
/// twice with the same `event_id`, as trackers retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdEventRecord {
    /// Unique per event; a repeat is a duplicate.
    pub event_id: String,
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// Who saw or clicked.
    pub user_id: String,
    /// The campaign.
    pub campaign_id: String,
    /// The ad of the campaign.
    pub ad_id: String,
    /// `impression` or `click`.
    pub kind: String,
}

/// A service log line (`app-logs`, key `service`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppLog {
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// The service that logged.
    pub service: String,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The message.
    pub message: String,
    /// Time the logged request took.
    pub latency_ms: u32,
}

/// An item that users act on (`items`, a compacted table topic, key `item_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The item.
    pub item_id: String,
    /// The user who posted it: who gets notified of likes, shares and comments.
    pub owner_id: String,
    /// Its title.
    pub title: String,
}

/// A notification for an item's owner (`notifications`, key `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Who is notified: the item's owner.
    pub user_id: String,
    /// Event time of the action.
    pub ts: i64,
    /// Who acted.
    pub actor: String,
    /// `like`, `share` or `comment`.
    pub action: String,
    /// The item.
    pub item_id: String,
}
