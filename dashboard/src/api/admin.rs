//! Admin actions, only with `allow_admin` (`--allow-admin`); otherwise 403.

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use millrace_client::admin::NewTopic;
use millrace_client::{OffsetSpec, TopicPartition};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::sampler::CLUSTER_WAIT;
use crate::AppState;

pub(crate) fn check_allowed(state: &AppState) -> ApiResult<()> {
    if state.config.allow_admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin actions are disabled: start the dashboard with --allow-admin",
        ))
    }
}

pub(crate) async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = millrace_client::Result<T>>,
) -> ApiResult<T> {
    tokio::time::timeout(CLUSTER_WAIT * 3, call)
        .await
        .map_err(|_| ApiError::timeout(what))?
        .map_err(ApiError::cluster)
}

/// The body of `POST /api/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Partitions (default: the broker's default).
    pub partitions: Option<i32>,
    /// Replication factor (default: the broker's default).
    pub replication_factor: Option<i16>,
    /// Topic configs, e.g. `{"retention.ms": "86400000"}`.
    #[serde(default)]
    pub configs: HashMap<String, String>,
}

/// `POST /api/topics {"name", "partitions"?, "replication_factor"?, "configs"?}` -> 201.
pub async fn create_topic(
    Ctx(state): Ctx,
    body: Result<Json<CreateTopic>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_allowed(&state)?;
    let Json(request) = body?;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("the topic name is empty"));
    }
    let mut topic = NewTopic::new(request.name.clone(), request.partitions.unwrap_or(-1))
        .replication_factor(request.replication_factor.unwrap_or(-1));
    for (name, value) in request.configs {
        topic = topic.config(name, value);
    }
    let admin = state.cluster.admin().await?;
    bounded("creating the topic", admin.create_topic(topic)).await?;
    tracing::info!(topic = %request.name, "topic created from the dashboard");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "created": request.name })),
    ))
}

/// `DELETE /api/topics/{name}`.
pub async fn delete_topic(
    Ctx(state): Ctx,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    check_allowed(&state)?;
    let Path(name) = name?;
    let admin = state.cluster.admin().await?;
    bounded("deleting the topic", admin.delete_topics(&[name.as_str()])).await?;
    tracing::info!(topic = %name, "topic deleted from the dashboard");
    Ok(Json(json!({ "deleted": name })))
}

/// Where `reset-offsets` moves a group.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetTo {
    /// The log start of each partition.
    Earliest,
    /// The log end of each partition.
    Latest,
}

/// The body of `POST /api/groups/{id}/reset-offsets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetOffsets {
    /// `earliest` or `latest`.
    pub to: ResetTo,
    /// Only this topic's partitions (default: every partition the group has committed).
    pub topic: Option<String>,
}

/// `POST /api/groups/{id}/reset-offsets {"to": "earliest"|"latest", "topic"?}`: the group must
/// have no active members (else 409).
pub async fn reset_offsets(
    Ctx(state): Ctx,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ResetOffsets>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    check_allowed(&state)?;
    let Path(group) = id?;
    let Json(request) = body?;
    let admin = state.cluster.admin().await?;
    let committed = bounded("reading offsets", admin.list_group_offsets(&group)).await?;
    let partitions: Vec<TopicPartition> = committed
        .into_keys()
        .filter(|tp| request.topic.as_ref().is_none_or(|t| *t == tp.topic))
        .collect();
    if partitions.is_empty() {
        return Err(ApiError::not_found(format!(
            "group {group:?} has no committed offsets to reset"
        )));
    }
    let spec = match request.to {
        ResetTo::Earliest => OffsetSpec::Earliest,
        ResetTo::Latest => OffsetSpec::Latest,
    };
    let specs: Vec<(TopicPartition, OffsetSpec)> =
        partitions.iter().map(|tp| (tp.clone(), spec)).collect();
    let targets = bounded("looking up offsets", admin.list_offsets(&specs)).await?;
    let offsets: HashMap<TopicPartition, i64> = targets
        .into_iter()
        .map(|(tp, listed)| (tp, listed.offset))
        .collect();
    bounded(
        "committing offsets",
        admin.alter_group_offsets(&group, &offsets),
    )
    .await?;
    tracing::info!(%group, "group offsets reset from the dashboard");
    let mut reset: Vec<Value> = offsets
        .iter()
        .map(|(tp, o)| json!({"topic": tp.topic, "partition": tp.partition, "offset": o}))
        .collect();
    reset.sort_by_key(|v| (v["topic"].to_string(), v["partition"].as_i64()));
    Ok(Json(json!({ "group": group, "reset": reset })))
}
