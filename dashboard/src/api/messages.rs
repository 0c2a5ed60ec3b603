//! The message browser: read records of a topic from an offset or a time, optionally
//! filtered by key, value or header, with a group-less consumer.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::Json;
use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::record::ConsumerRecord;
use millrace_client::{OffsetSpec, TopicPartition};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Records returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1_000;
/// Records read at most per request, matching the filter or not: a filter that matches
/// nothing must not scan a whole topic.
pub const MAX_SCANNED: usize = 100_000;
/// How long one browse may read.
const BROWSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Query parameters of `GET /api/topics/{name}/messages`.
#[derive(Debug, Deserialize)]
pub struct BrowseParams {
    /// One partition (default: every partition).
    pub partition: Option<i32>,
    /// Start at this offset (in each chosen partition).
    pub offset: Option<i64>,
    /// Start at the first record at or after this time (ms since the epoch).
    pub timestamp: Option<i64>,
    /// Records to return, 1 to [`MAX_LIMIT`] (default [`DEFAULT_LIMIT`]). Without `offset`
    /// or `timestamp`, the newest `limit` records.
    pub limit: Option<usize>,
    /// Keep records whose key contains this text.
    pub key: Option<String>,
    /// Keep records whose value contains this text.
    pub value: Option<String>,
    /// Keep records with a header `NAME` or `NAME=TEXT` (value containing TEXT).
    pub header: Option<String>,
}

/// `GET /api/topics/{name}/messages?partition=&offset=|timestamp=&limit=&key=&value=&header=`.
pub async fn browse(
    Ctx(state): Ctx,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<BrowseParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path(topic) = name?;
    let Query(params) = params?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    if params.offset.is_some() && params.timestamp.is_some() {
        return Err(ApiError::bad_request("give offset or timestamp, not both"));
    }
    if params.offset.is_some_and(|o| o < 0) {
        return Err(ApiError::bad_request("offset must not be negative"));
    }
    // Checked against the cache first: asking the cluster about an unknown topic could
    // create it (auto.create.topics.enable), and a browser must never do that.
    let sample = state.cluster.latest().await?;
    let known = sample
        .topics
        .get(&topic)
        .ok_or_else(|| ApiError::not_found(format!("no topic named {topic:?}")))?;
    let partitions: Vec<i32> = match params.partition {
        Some(p) if known.partitions.iter().any(|kp| kp.partition == p) => vec![p],
        Some(p) => {
            return Err(ApiError::not_found(format!(
                "topic {topic:?} has no partition {p}"
            )))
        }
        None => known.partitions.iter().map(|p| p.partition).collect(),
    };
    let filter = Filter::new(&params);
    tokio::time::timeout(
        BROWSE_TIMEOUT + Duration::from_secs(5),
        read(&state, &topic, &partitions, &params, limit, &filter),
    )
    .await
    .map_err(|_| ApiError::timeout("reading messages"))?
}

/// What a record must contain to be returned.
struct Filter {
    key: Option<String>,
    value: Option<String>,
    header: Option<(String, Option<String>)>,
}

impl Filter {
    fn new(params: &BrowseParams) -> Self {
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Filter {
            key: non_empty(&params.key),
            value: non_empty(&params.value),
            header: non_empty(&params.header).map(|h| match h.split_once('=') {
                Some((name, text)) => (name.to_string(), Some(text.to_string())),
                None => (h, None),
            }),
        }
    }

    fn matches(&self, record: &ConsumerRecord) -> bool {
        let contains = |bytes: Option<&[u8]>, text: &str| {
            bytes.is_some_and(|b| String::from_utf8_lossy(b).contains(text))
        };
        if let Some(key) = &self.key {
            if !contains(record.key.as_deref(), key) {
                return false;
            }
        }
        if let Some(value) = &self.value {
            if !contains(record.value.as_deref(), value) {
                return false;
            }
        }
        if let Some((name, text)) = &self.header {
            let found = record.headers.iter().any(|(h, v)| {
                h == name && text.as_deref().is_none_or(|t| contains(v.as_deref(), t))
            });
            if !found {
                return false;
            }
        }
        true
    }
}

async fn read(
    state: &AppState,
    topic: &str,
    partitions: &[i32],
    params: &BrowseParams,
    limit: usize,
    filter: &Filter,
) -> ApiResult<Json<Value>> {
    let config = ConsumerConfig::builder(state.cluster.client_config().clone())
        .enable_auto_commit(false)
        .max_poll_records(500)
        .fetch_max_wait(Duration::from_millis(100))
        .build()
        .map_err(ApiError::cluster)?;
    let mut consumer = Consumer::connect(config).await.map_err(ApiError::cluster)?;
    let result = read_with(&mut consumer, topic, partitions, params, limit, filter).await;
    if let Err(error) = consumer.close().await {
        tracing::debug!(%error, "closing the browser's consumer");
    }
    result
}

async fn read_with(
    consumer: &mut Consumer,
    topic: &str,
    partitions: &[i32],
    params: &BrowseParams,
    limit: usize,
    filter: &Filter,
) -> ApiResult<Json<Value>> {
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(topic, *p))
        .collect();
    let starts = consumer
        .offsets_for(&tps, OffsetSpec::Earliest)
        .await
        .map_err(ApiError::cluster)?;
    let ends = consumer
        .offsets_for(&tps, OffsetSpec::Latest)
        .await
        .map_err(ApiError::cluster)?;
    let by_time = match params.timestamp {
        Some(ts) => Some(
            consumer
                .offsets_for(&tps, OffsetSpec::Timestamp(ts))
                .await
                .map_err(ApiError::cluster)?,
        ),
        None => None,
    };
    let tail = params.offset.is_none() && params.timestamp.is_none();
    let mut from: HashMap<TopicPartition, i64> = HashMap::new();
    let mut end_of: HashMap<TopicPartition, i64> = HashMap::new();
    for tp in &tps {
        let start = starts.get(tp).map(|o| o.offset).unwrap_or(0);
        let end = ends.get(tp).map(|o| o.offset).unwrap_or(start);
        let at = if let Some(offset) = params.offset {
            offset
        } else if let Some(found) = by_time.as_ref().and_then(|m| m.get(tp)) {
            // No record at or after the time: the log end.
            if found.offset < 0 {
                end
            } else {
                found.offset
            }
        } else if filter.is_empty() {
            end - limit as i64
        } else {
            // Newest matches: scan back at most the scan budget.
            end - MAX_SCANNED as i64 / tps.len().max(1) as i64
        };
        from.insert(tp.clone(), at.clamp(start, end));
        end_of.insert(tp.clone(), end);
    }
    let mut records: Vec<ConsumerRecord> = Vec::new();
    let mut scanned = 0usize;
    let pending: Vec<TopicPartition> = tps
        .iter()
        .filter(|tp| from[*tp] < end_of[*tp])
        .cloned()
        .collect();
    let mut next: BTreeMap<i32, i64> = tps.iter().map(|tp| (tp.partition, from[tp])).collect();
    if !pending.is_empty() {
        consumer.assign(&pending).map_err(ApiError::cluster)?;
        for tp in &pending {
            consumer.seek(tp, from[tp]).map_err(ApiError::cluster)?;
        }
        let deadline = tokio::time::Instant::now() + BROWSE_TIMEOUT;
        loop {
            let done = pending
                .iter()
                .all(|tp| consumer.position(tp).is_none_or(|p| p >= end_of[tp]));
            let enough = !tail && filter.is_empty() && records.len() >= limit * tps.len();
            if done || enough || scanned >= MAX_SCANNED {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            for record in consumer
                .poll(Duration::from_millis(200))
                .await
                .map_err(ApiError::cluster)?
            {
                let tp = TopicPartition::new(topic, record.partition);
                if record.offset >= end_of.get(&tp).copied().unwrap_or(i64::MAX) {
                    continue;
                }
                scanned += 1;
                next.insert(record.partition, record.offset + 1);
                if filter.matches(&record) {
                    records.push(record);
                }
            }
            if !tail && !filter.is_empty() && records.len() >= limit {
                break;
            }
        }
    }
    records.sort_by_key(|r| (r.timestamp, r.partition, r.offset));
    if tail {
        // The newest `limit` overall.
        let skip = records.len().saturating_sub(limit);
        records.drain(..skip);
    } else {
        // Records read past the limit are read again by the next page: it starts, per
        // partition, at the first one left out.
        for dropped in records.split_off(limit.min(records.len())) {
            let at = next.entry(dropped.partition).or_insert(dropped.offset);
            *at = (*at).min(dropped.offset);
        }
    }
    Ok(Json(json!({
        "topic": topic,
        "records": records.iter().map(record_json).collect::<Vec<_>>(),
        "scanned": scanned,
        "end_offsets": end_of.iter().map(|(tp, e)| (tp.partition.to_string(), *e)).collect::<BTreeMap<_, _>>(),
        "next_offsets": next,
    })))
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.key.is_none() && self.value.is_none() && self.header.is_none()
    }
}

/// Bytes as text when they are UTF-8, else as hex (with the encoding said).
fn bytes_json(bytes: Option<&[u8]>) -> (Value, &'static str) {
    match bytes {
        None => (Value::Null, "null"),
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => (Value::String(text.to_string()), "utf8"),
            Err(_) => (
                Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
                "hex",
            ),
        },
    }
}

fn record_json(record: &ConsumerRecord) -> Value {
    let (key, key_encoding) = bytes_json(record.key.as_deref());
    let (value, value_encoding) = bytes_json(record.value.as_deref());
    json!({
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "headers": record.headers.iter().map(|(name, v)| {
            json!({"key": name, "value": bytes_json(v.as_deref()).0})
        }).collect::<Vec<_>>(),
    })
}
