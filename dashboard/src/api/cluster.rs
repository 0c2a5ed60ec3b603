//! Cluster, topics and consumer groups, read from the sampler's cache.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query};
use axum::Json;
use serde_json::{json, Value};

use millrace_client::TopicPartition;

use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::sampler::{GroupSample, Sample, TopicSample, SIZE_NOT_REPORTED};
use crate::AppState;

/// `GET /api/cluster`: cluster id, controller, brokers, counts, and what this dashboard
/// shows (jobs, connectors, whether admin actions are allowed).
pub async fn cluster(Ctx(state): Ctx) -> ApiResult<Json<Value>> {
    let sample = state.cluster.latest().await?;
    // Counts leave out internal topics (`__consumer_offsets` alone has 50 partitions).
    let partitions: usize = sample
        .topics
        .values()
        .filter(|t| !t.internal)
        .map(|t| t.partitions.len())
        .sum();
    Ok(Json(json!({
        "cluster_id": sample.cluster.cluster_id,
        "controller_id": sample.cluster.controller_id,
        "brokers": brokers_json(&state, &sample),
        "under_replicated_partitions": sample.under_replicated_partitions(),
        "offline_partitions": sample.offline_partitions(),
        "topics": sample.topics.values().filter(|t| !t.internal).count(),
        "partitions": partitions,
        "groups": sample.groups.len(),
        "sampled_at_ms": sample.at_ms,
        "last_error": state.cluster.last_error(),
        // What the brokers could not report (optional APIs they lack), for the overview.
        "notes": sample.notes,
        "allow_admin": state.config.allow_admin,
        "jobs": state.jobs.iter().map(|j| j.name.clone()).collect::<Vec<_>>(),
        "connectors": state.connectors.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
    })))
}

/// The brokers with their state and what they lead: id, address, rack, whether fenced or
/// the controller, and how many partitions each leads and of those how many are
/// under-replicated (every topic, internal ones too); with what the broker's own metrics
/// endpoint says (its links, readiness and latest request rate and latency), when it has one.
fn brokers_json(state: &AppState, sample: &Sample) -> Vec<Value> {
    let leadership = sample.leadership();
    let scraped = state.broker_metrics.views(false);
    sample
        .cluster
        .brokers
        .iter()
        .map(|b| {
            let (leaders, under_replicated) = leadership.get(&b.id).copied().unwrap_or_default();
            json!({
                "id": b.id,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
                "fenced": b.fenced,
                "controller": b.id == sample.cluster.controller_id,
                "leader_partitions": leaders,
                "under_replicated_partitions": under_replicated,
                "endpoint": scraped.iter().find(|m| m.id == b.id),
            })
        })
        .collect()
}

/// `GET /api/brokers`: the brokers of [`cluster`] alone, with the controller id.
pub async fn brokers(Ctx(state): Ctx) -> ApiResult<Json<Value>> {
    let sample = state.cluster.latest().await?;
    Ok(Json(json!({
        "controller_id": sample.cluster.controller_id,
        "brokers": brokers_json(&state, &sample),
        "under_replicated_partitions": sample.under_replicated_partitions(),
        "offline_partitions": sample.offline_partitions(),
        "sampled_at_ms": sample.at_ms,
    })))
}

/// Query of `GET /api/brokers/metrics`.
#[derive(Debug, serde::Deserialize)]
pub struct BrokerMetricsQuery {
    /// Include each broker's history (default true).
    history: Option<bool>,
}

/// `GET /api/brokers/metrics`: what each broker's metrics endpoint says, scraped every
/// couple of seconds: links, readiness, and request rate, produce and fetch p99, bytes in
/// and out, CPU and memory over the last minutes.
pub async fn broker_metrics(
    Ctx(state): Ctx,
    Query(query): Query<BrokerMetricsQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!({
        "scrape_interval_ms": crate::broker_metrics::SCRAPE_INTERVAL.as_millis() as u64,
        "brokers": state.broker_metrics.views(query.history.unwrap_or(true)),
    })))
}

/// One topic's summary line. `size_bytes` is null, with a `size_note`, when the broker
/// cannot report sizes.
pub(crate) fn topic_summary(state: &AppState, topic: &TopicSample) -> Value {
    let mut summary = json!({
        "name": topic.name,
        "internal": topic.internal,
        "partitions": topic.partitions.len(),
        "messages": topic.messages(),
        "end_offsets": topic.end_offsets(),
        "size_bytes": topic.size_bytes(),
        "rate": state.cluster.topic_rate(&topic.name),
    });
    if !topic.sizes_reported {
        summary["size_note"] = json!(SIZE_NOT_REPORTED);
    }
    summary
}

/// Every topic's summary, internal ones last.
pub(crate) fn topics_json(state: &AppState, sample: &Sample) -> Vec<Value> {
    let mut topics: Vec<&TopicSample> = sample.topics.values().collect();
    topics.sort_by_key(|t| (t.internal, t.name.clone()));
    topics
        .into_iter()
        .map(|t| topic_summary(state, t))
        .collect()
}

/// `GET /api/topics`: name, partitions, messages, bytes and produce rate (records/s) per
/// topic.
pub async fn topics(Ctx(state): Ctx) -> ApiResult<Json<Value>> {
    let sample = state.cluster.latest().await?;
    Ok(Json(json!({
        "sampled_at_ms": sample.at_ms,
        "topics": topics_json(&state, &sample),
    })))
}

/// `GET /api/topics/{name}`: partitions with leaders, leader epochs, replicas, ISR, offline
/// replicas, offsets and sizes, the produce rate,
/// history, configs, and the groups reading it.
pub async fn topic(
    Ctx(state): Ctx,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let sample = state.cluster.latest().await?;
    let topic = sample
        .topics
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no topic named {name:?}")))?;
    let mut out = topic_summary(&state, topic);
    out["partitions"] = json!(topic.partitions);
    out["history"] = json!(state.cluster.topic_history(&name));
    out["groups"] = json!(sample
        .groups
        .values()
        .filter(|g| g.partitions.iter().any(|p| p.topic == name))
        .map(|g| json!({
            "group_id": g.group_id,
            "lag": g.partitions.iter().filter(|p| p.topic == name).map(|p| p.lag).sum::<i64>(),
        }))
        .collect::<Vec<_>>());
    // Configs are read live: they change rarely and only this page shows them. A cluster
    // that refuses DescribeConfigs still gets the rest of the page.
    let configs = match state.cluster.admin().await {
        Ok(admin) => tokio::time::timeout(
            crate::sampler::CLUSTER_WAIT,
            admin.describe_topic_config(&name),
        )
        .await
        .ok()
        .and_then(Result::ok),
        Err(_) => None,
    };
    out["configs"] = match configs {
        Some(entries) => json!(entries
            .into_iter()
            .filter(|e| !e.sensitive)
            .map(|e| json!({
                "name": e.name,
                "value": e.value,
                "source": format!("{:?}", e.source),
            }))
            .collect::<Vec<_>>()),
        None => Value::Null,
    };
    // Open transactions per partition, read live from the leaders (DescribeProducers): what
    // holds each partition's last stable offset back. A broker without the API leaves them
    // unknown (null), and the page says so.
    let wanted: Vec<TopicPartition> = topic
        .partitions
        .iter()
        .map(|p| TopicPartition::new(name.as_str(), p.partition))
        .collect();
    let producers = match state.cluster.admin().await {
        Ok(admin) => tokio::time::timeout(
            crate::sampler::CLUSTER_WAIT,
            admin.describe_producers(&wanted),
        )
        .await
        .map_err(|_| "DescribeProducers timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string())),
        Err(e) => Err(e.message),
    };
    if let Some(partitions) = out["partitions"].as_array_mut() {
        for (entry, tp) in partitions.iter_mut().zip(&wanted) {
            let open: Option<Vec<i64>> = producers.as_ref().ok().map(|by_partition| {
                by_partition
                    .get(tp)
                    .into_iter()
                    .flatten()
                    .map(|p| p.current_txn_start_offset)
                    .filter(|offset| *offset >= 0)
                    .collect()
            });
            entry["open_transactions"] = json!(open.as_ref().map(Vec::len));
            entry["oldest_open_transaction_offset"] =
                json!(open.and_then(|offsets| offsets.into_iter().min()));
        }
    }
    out["transactions_note"] = json!(producers.err());
    out["sampled_at_ms"] = json!(sample.at_ms);
    Ok(Json(out))
}

/// One group's summary line.
pub(crate) fn group_summary(group: &GroupSample) -> Value {
    let mut topics: Vec<&str> = group.partitions.iter().map(|p| p.topic.as_str()).collect();
    topics.dedup();
    json!({
        "group_id": group.group_id,
        "state": group.state,
        "protocol_type": group.protocol_type,
        "members": group.members.len(),
        "topics": topics,
        "lag": group.lag(),
    })
}

/// `GET /api/groups`: id, state, members, topics and total lag per group.
pub async fn groups(Ctx(state): Ctx) -> ApiResult<Json<Value>> {
    let sample = state.cluster.latest().await?;
    Ok(Json(json!({
        "sampled_at_ms": sample.at_ms,
        "groups": sample.groups.values().map(group_summary).collect::<Vec<_>>(),
    })))
}

/// `GET /api/groups/{id}`: members and assignments, committed offset and lag per partition,
/// and the lag history (one point a second, the last five minutes).
pub async fn group(
    Ctx(state): Ctx,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = id?;
    let sample = state.cluster.latest().await?;
    let group = sample
        .groups
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no consumer group named {id:?}")))?;
    let mut out = group_summary(group);
    out["protocol"] = json!(group.protocol);
    out["members"] = json!(group.members);
    out["partitions"] = json!(group.partitions);
    out["history"] = json!(state.cluster.group_history(&id));
    out["sampled_at_ms"] = json!(sample.at_ms);
    Ok(Json(out))
}
