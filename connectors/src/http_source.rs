//! The HTTP ingest endpoint: `POST /topics/{topic}` with a JSON event or a JSON array of
//! events; they are produced with acks=all and the answer (200) lists where each was written.
//!
//! ```text
//! POST /topics/page-views        {"user":"u1","path":"/"}            -> 200
//! POST /topics/page-views        [{"user":"u1"},{"user":"u2"}]        -> 200
//! {"topic":"page-views","offsets":[{"partition":0,"offset":41},{"partition":0,"offset":42}]}
//! ```
//!
//! A request is all or nothing as far as validation goes: malformed JSON, an event that is
//! not an object, or a body over `max_body_bytes` is refused before anything is produced
//! (400, 400, 413), and so is a topic that does not exist or is not in `topics` (404). Errors
//! are JSON, `{"error":"..."}`. A failure while producing answers 503; some events of that
//! request may have been written, so a client retrying on 503 gets at-least-once delivery.
//! `GET /health` answers 200 once the endpoint is up.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use millrace_client::producer::ProducerRecord;
use millrace_client::{Admin, ClientConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::error::{ConnectorError, Result};
use crate::framework::{run_source, Shutdown, Source, SourceContext};
use crate::metrics::SourceMetrics;

/// One `[[http_source]]` table of a connect configuration file.
///
/// ```toml
/// [[http_source]]
/// name = "ingest"
/// bootstrap = "127.0.0.1:9092"
/// listen = "127.0.0.1:8088"
/// topics = ["page-views", "clicks"]
/// key_field = "user"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Name of this connector (logs).
    pub name: String,
    /// Brokers to bootstrap from, comma-separated `HOST:PORT`.
    pub bootstrap: String,
    /// Kafka client settings for its connections, as Kafka Connect's worker takes them
    /// (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, ...); empty for a plaintext cluster.
    #[serde(default)]
    pub client: std::collections::BTreeMap<String, String>,
    /// Address to listen on, `HOST:PORT` (port 0: any free port). Binds loopback only unless
    /// told otherwise: there is no authentication.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Topics that may be posted to. Empty (default): any topic that exists; topics are never
    /// created by a request.
    #[serde(default)]
    pub topics: Vec<String>,
    /// JSON field whose value becomes the record key (strings as they are, other values as
    /// JSON text); events without it get no key.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Largest request body accepted (default 1 MiB); larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// `transactional.id`: write each request's events in one transaction, so read_committed
    /// consumers see all of them or none (default: plain idempotent writes). Requests then
    /// take turns.
    #[serde(default)]
    pub transactional_id: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8088".into()
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

impl HttpSourceConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.max_body_bytes == 0 {
            return Err(ConnectorError::Config(format!(
                "{}: max_body_bytes must be positive",
                self.name
            )));
        }
        Ok(())
    }

    /// Connection settings for the producer and the topic checks.
    pub fn client_config(&self) -> Result<ClientConfig> {
        crate::config::client_config(
            &self.bootstrap,
            format!("millrace-http-source-{}", self.name),
            &self.client,
        )
    }
}

/// A bound ingest endpoint. See the [module documentation](self).
pub struct HttpSource {
    config: HttpSourceConfig,
    listener: TcpListener,
    metrics: Arc<SourceMetrics>,
}

impl HttpSource {
    /// Validates `config` and binds its listen address (so the port is known, and taken,
    /// before anything else starts).
    pub async fn bind(config: HttpSourceConfig) -> Result<Self> {
        config.validate()?;
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|e| ConnectorError::Source {
                    name: config.name.clone(),
                    reason: format!("binding {}: {e}", config.listen),
                })?;
        Ok(HttpSource {
            config,
            listener,
            metrics: Arc::new(SourceMetrics::default()),
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| ConnectorError::Source {
                name: self.config.name.clone(),
                reason: format!("local address: {e}"),
            })
    }

    /// The endpoint's counters (`records`, `batches` = successful requests, `rejected` =
    /// 4xx answers, `errors` = failed produces).
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// Connects and serves until `shutdown` is triggered (requests in flight are finished).
    pub async fn run_until(self, shutdown: Shutdown) -> Result<()> {
        let client = self.config.client_config()?;
        let name = self.config.name.clone();
        let metrics = self.metrics.clone();
        let transactional_id = self.config.transactional_id.clone();
        run_source(
            self,
            name,
            client,
            None,
            metrics,
            transactional_id,
            shutdown,
        )
        .await
    }
}

/// What every request handler shares.
struct Ingest {
    ctx: SourceContext,
    admin: Admin,
    allowed: HashSet<String>,
    /// Topics seen to exist (they are not deleted often; a deleted one makes produce fail,
    /// which answers 503).
    known: Mutex<HashSet<String>>,
    key_field: Option<String>,
    max_body_bytes: usize,
}

impl Source for HttpSource {
    async fn run(self, ctx: SourceContext, mut shutdown: Shutdown) -> Result<()> {
        let admin = Admin::connect(self.config.client_config()?).await?;
        let addr = self.local_addr()?;
        let state = Arc::new(Ingest {
            ctx,
            admin,
            allowed: self.config.topics.iter().cloned().collect(),
            known: Mutex::new(HashSet::new()),
            key_field: self.config.key_field.clone(),
            max_body_bytes: self.config.max_body_bytes,
        });
        let app = Router::new()
            .route("/topics/{topic}", post(ingest))
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .with_state(state);
        tracing::info!(name = %self.config.name, %addr, "http ingest endpoint listening");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .map_err(|e| ConnectorError::Source {
                name: self.config.name.clone(),
                reason: format!("serving: {e}"),
            })
    }
}

/// A JSON error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Where one event was written.
#[derive(Serialize)]
struct Written {
    partition: i32,
    offset: i64,
}

async fn ingest(
    State(state): State<Arc<Ingest>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&state, &topic, &headers, body).await {
        Ok(written) => Json(json!({ "topic": topic, "offsets": written })).into_response(),
        Err(response) => {
            if response.status().is_client_error() {
                state.ctx.metrics().add_rejected(1);
            }
            response
        }
    }
}

async fn handle(
    state: &Ingest,
    topic: &str,
    headers: &HeaderMap,
    body: Body,
) -> std::result::Result<Vec<Written>, Response> {
    let limit = state.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {limit} bytes"),
        )
    };
    // Refuse early on the declared length; a chunked body is cut off at the limit below.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    check_topic(state, topic).await?;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let events = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(events)) => events,
        Ok(event @ Value::Object(_)) => vec![event],
        Ok(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "body must be a JSON object (an event) or an array of objects",
            ))
        }
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("malformed JSON: {e}"),
            ))
        }
    };
    let mut records = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if !event.is_object() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("event {i} is not a JSON object"),
            ));
        }
        let mut record = ProducerRecord::new(topic, event.to_string().into_bytes());
        record.key = state
            .key_field
            .as_ref()
            .and_then(|field| event.get(field))
            .and_then(|key| match key {
                Value::Null => None,
                Value::String(s) => Some(s.clone().into_bytes().into()),
                other => Some(other.to_string().into_bytes().into()),
            });
        records.push(record);
    }
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let written = state.ctx.send(records).await.map_err(|e| {
        tracing::warn!(topic, error = %e, "producing ingested events failed");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("producing failed: {e}"),
        )
    })?;
    Ok(written
        .into_iter()
        .map(|m| Written {
            partition: m.partition,
            offset: m.offset,
        })
        .collect())
}

/// 404 unless `topic` is allowed and exists.
async fn check_topic(state: &Ingest, topic: &str) -> std::result::Result<(), Response> {
    if !state.allowed.is_empty() && !state.allowed.contains(topic) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("topic {topic} is not served by this endpoint"),
        ));
    }
    let known = |state: &Ingest| {
        state
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(topic)
    };
    if known(state) {
        return Ok(());
    }
    // Listing never creates topics (a Metadata request for the name could, with the broker's
    // auto-create on).
    let topics = state.admin.list_topics(false).await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("listing topics failed: {e}"),
        )
    })?;
    state
        .known
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(topics.into_iter().map(|t| t.name));
    if known(state) {
        Ok(())
    } else {
        Err(error(
            StatusCode::NOT_FOUND,
            format!("topic {topic} does not exist"),
        ))
    }
}
