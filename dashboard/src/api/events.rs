//! `GET /api/events`: server-sent events, one `update` a second with the topics, groups and
//! live aggregates, so open pages refresh without polling.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;

use super::Ctx;
use crate::api::aggregates::aggregates_json;
use crate::api::cluster::{group_summary, topics_json};
use crate::sampler::now_ms;
use crate::AppState;

/// Rows per table in an update (the full tables are at `/api/aggregates`).
const EVENT_ROWS: usize = 200;

/// `GET /api/events`.
pub async fn events(Ctx(state): Ctx) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream =
        futures_util::stream::unfold((state, interval), |(state, mut interval)| async move {
            let mut stop = state.stop.clone();
            // Ends the stream when the server stops, or graceful shutdown would wait for
            // this connection forever.
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return None,
            }
            // A page left open keeps its session alive.
            if let Some(activity) = &state.activity {
                activity.touch();
            }
            let event = Event::default()
                .event("update")
                .json_data(update(&state))
                .unwrap_or_else(|_| Event::default().event("error").data("cannot encode"));
            Some((Ok(event), (state, interval)))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn update(state: &AppState) -> serde_json::Value {
    let sample = state.cluster.peek();
    json!({
        "ts": now_ms(),
        "sampled_at_ms": sample.as_ref().map(|s| s.at_ms),
        "last_error": state.cluster.last_error(),
        "topics": sample.as_ref().map(|s| topics_json(state, s)).unwrap_or_default(),
        "groups": sample
            .as_ref()
            .map(|s| s.groups.values().map(group_summary).collect::<Vec<_>>())
            .unwrap_or_default(),
        "aggregates": aggregates_json(&state.jobs, EVENT_ROWS),
    })
}
