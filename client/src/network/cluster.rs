//! Connections to every broker of a cluster and the metadata cache that says which broker
//! leads what.
//!
//! One connection per broker, opened on first use and reopened (with exponential backoff) once
//! it breaks. Metadata is fetched from any reachable broker, kept as an immutable snapshot, and
//! refreshed when it gets older than `metadata_max_age` or when a caller reports an error that
//! means it is stale (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};

use super::connection::BrokerConnection;
use super::metadata::Metadata;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

/// Where a connection goes: a known broker, or a bootstrap address (before its id is known).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Node(i32),
    /// A second connection to a broker, for a transaction's coordinator requests: a broker
    /// answers one connection's requests in order, so an AddPartitionsToTxn sent behind
    /// megabytes of Produce requests would wait for all of them (and their fsyncs) while the
    /// partition's records wait for it.
    Coordinator(i32),
    Bootstrap(String),
}

/// Reconnect bookkeeping for one target.
#[derive(Debug, Default, Clone, Copy)]
struct Backoff {
    failures: u32,
    last_failure: Option<Instant>,
}

/// A slot per target so that concurrent callers wait for one connect instead of racing.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<BrokerConnection>>>>;

/// Shared by the producer, consumer and admin of one client: connections plus metadata.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) config: ClientConfig,
    metadata: RwLock<Arc<Metadata>>,
    slots: Mutex<HashMap<Target, Slot>>,
    backoff: Mutex<HashMap<Target, Backoff>>,
    /// One refresh at a time; callers that wanted one while it ran reuse its result.
    refresh: tokio::sync::Mutex<()>,
    /// Topics the owner uses; periodic refreshes ask for these.
    interest: Mutex<HashSet<String>>,
    /// Whether Metadata requests may create topics (the producer's and consumer's default in
    /// Kafka; never for admin calls).
    pub(crate) allow_auto_topic_creation: bool,
}

impl Cluster {
    /// Creates the cluster handle and fetches metadata from the first reachable bootstrap
    /// server.
    pub(crate) async fn connect(
        config: ClientConfig,
        allow_auto_topic_creation: bool,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        let cluster = Arc::new(Cluster {
            config,
            metadata: RwLock::new(Arc::new(Metadata::default())),
            slots: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            refresh: tokio::sync::Mutex::new(()),
            interest: Mutex::new(HashSet::new()),
            allow_auto_topic_creation,
        });
        cluster.refresh_metadata(Some(&[])).await?;
        Ok(cluster)
    }

    /// The current metadata snapshot.
    pub(crate) fn metadata(&self) -> Arc<Metadata> {
        self.metadata
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds topics to those refreshed periodically.
    pub(crate) fn add_interest<'a>(&self, topics: impl IntoIterator<Item = &'a str>) {
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        for topic in topics {
            if !interest.contains(topic) {
                interest.insert(topic.to_string());
            }
        }
    }

    /// The metadata, refreshed first if older than `metadata_max_age`.
    pub(crate) async fn fresh_metadata(&self) -> Result<Arc<Metadata>> {
        let metadata = self.metadata();
        match metadata.refreshed_at {
            Some(at) if at.elapsed() < self.config.metadata_max_age => Ok(metadata),
            _ => self.refresh_interest().await,
        }
    }

    /// Refreshes the topics of interest.
    pub(crate) async fn refresh_interest(&self) -> Result<Arc<Metadata>> {
        let topics: Vec<String> = self
            .interest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        self.refresh_metadata(Some(&topics)).await
    }

    /// Refreshes metadata for `topics` (`None`: every topic). Concurrent callers share one
    /// request: whoever waited for the lock finds a snapshot newer than when it started
    /// waiting and uses that.
    pub(crate) async fn refresh_metadata(
        &self,
        topics: Option<&[String]>,
    ) -> Result<Arc<Metadata>> {
        let started = Instant::now();
        let _guard = self.refresh.lock().await;
        let current = self.metadata();
        if let (Some(at), Some(topics)) = (current.refreshed_at, topics) {
            if at > started && topics.iter().all(|t| current.topics.contains_key(t)) {
                return Ok(current);
            }
        }
        // A broker that dies under the request (its connection closes) is no reason to fail
        // while others answer: ask the next one, as Kafka's clients pick another node. The
        // closed connection is not open any more, so `any_connection` moves on.
        let mut attempts_left = self.config.bootstrap_servers.len().max(3);
        let response = loop {
            let connection = self.any_connection().await?;
            let version = connection.version(ApiKey::Metadata)?;
            // allow_auto_topic_creation exists from v4; before that the broker's setting
            // decides.
            let request = metadata_request(topics, self.allow_auto_topic_creation || version < 4);
            match connection
                .send_at(&request, version, self.config.request_timeout)
                .await
            {
                Ok(response) => break response,
                Err(error @ ClientError::Connection { .. }) if attempts_left > 1 => {
                    attempts_left -= 1;
                    connection.close();
                    tracing::debug!(%error, "metadata request failed; asking another broker");
                }
                Err(error) => return Err(error),
            }
        };
        let all = topics.is_none();
        let updated = Arc::new(current.merged(&response, all));
        *self.metadata.write().unwrap_or_else(|p| p.into_inner()) = updated.clone();
        tracing::debug!(
            brokers = updated.brokers.len(),
            topics = updated.topics.len(),
            "metadata refreshed"
        );
        Ok(updated)
    }

    /// Marks the metadata stale so the next [`Cluster::fresh_metadata`] refreshes it.
    pub(crate) fn invalidate_metadata(&self) {
        let mut guard = self.metadata.write().unwrap_or_else(|p| p.into_inner());
        let mut stale = (**guard).clone();
        stale.refreshed_at = None;
        *guard = Arc::new(stale);
    }

    /// Sends a request to the broker with node id `node`.
    pub(crate) async fn send_to<R: Request>(
        &self,
        node: i32,
        request: &R,
    ) -> Result<(i16, R::Response)> {
        self.send_to_with_timeout(node, request, self.config.request_timeout)
            .await
    }

    /// Like [`Cluster::send_to`] with a longer timeout for requests the broker may hold.
    pub(crate) async fn send_to_with_timeout<R: Request>(
        &self,
        node: i32,
        request: &R,
        timeout: Duration,
    ) -> Result<(i16, R::Response)> {
        let connection = self.connection(node).await?;
        connection.send(request, timeout).await
    }

    /// Sends a request to any reachable broker (one already connected if possible).
    pub(crate) async fn send_any<R: Request>(&self, request: &R) -> Result<(i16, R::Response)> {
        let connection = self.any_connection().await?;
        connection.send(request, self.config.request_timeout).await
    }

    /// Like [`Cluster::send_to`], at most at version `max` (a version that changes meaning,
    /// spoken only when the caller wants that meaning).
    pub(crate) async fn send_to_capped<R: Request>(
        &self,
        node: i32,
        request: &R,
        max: i16,
    ) -> Result<(i16, R::Response)> {
        let connection = self.connection(node).await?;
        Self::send_capped(&connection, request, max, self.config.request_timeout).await
    }

    /// [`Cluster::send_to_coordinator`] at most at version `max`.
    pub(crate) async fn send_to_coordinator_capped<R: Request>(
        &self,
        node: i32,
        request: &R,
        max: i16,
    ) -> Result<(i16, R::Response)> {
        let addr = self.node_addr(node).await?;
        let connection = self.connect_to(Target::Coordinator(node), &addr).await?;
        Self::send_capped(&connection, request, max, self.config.request_timeout).await
    }

    /// Like [`Cluster::send_to`], on the connection to `node` kept for coordinator requests
    /// (see [`Target::Coordinator`]).
    pub(crate) async fn send_to_coordinator<R: Request>(
        &self,
        node: i32,
        request: &R,
    ) -> Result<(i16, R::Response)> {
        self.send_to_coordinator_capped(node, request, i16::MAX)
            .await
    }

    async fn send_capped<R: Request>(
        connection: &BrokerConnection,
        request: &R,
        max: i16,
        timeout: Duration,
    ) -> Result<(i16, R::Response)> {
        let version = connection
            .version(crate::network::connection::api_key::<R>())?
            .min(max);
        let response = connection.send_at(request, version, timeout).await?;
        Ok((version, response))
    }

    /// The open connection to node `node`, opening one if needed.
    pub(crate) async fn connection(&self, node: i32) -> Result<Arc<BrokerConnection>> {
        let addr = self.node_addr(node).await?;
        self.connect_to(Target::Node(node), &addr).await
    }

    /// Node `node`'s address, from the metadata (refreshed once if it does not name it).
    async fn node_addr(&self, node: i32) -> Result<String> {
        let addr = match self.metadata().brokers.get(&node) {
            Some(broker) => broker.addr(),
            None => {
                let metadata = self.refresh_interest().await?;
                metadata
                    .brokers
                    .get(&node)
                    .map(|b| b.addr())
                    .ok_or_else(|| {
                        ClientError::NoBrokerAvailable(format!(
                            "broker {node} is not in the cluster metadata"
                        ))
                    })?
            }
        };
        Ok(addr)
    }

    /// The negotiated version of `api` with node `node`.
    pub(crate) async fn version(&self, node: i32, api: ApiKey) -> Result<i16> {
        self.connection(node).await?.version(api)
    }

    /// Any usable connection: an open one first, then known brokers, then the bootstrap list.
    pub(crate) async fn any_connection(&self) -> Result<Arc<BrokerConnection>> {
        let open: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for slot in open {
            if let Ok(guard) = slot.try_lock() {
                if let Some(connection) = guard.as_ref().filter(|c| c.is_open()) {
                    return Ok(connection.clone());
                }
            }
        }
        let mut candidates: Vec<(Target, String)> = self
            .metadata()
            .brokers
            .values()
            .map(|b| (Target::Node(b.id), b.addr()))
            .collect();
        candidates.sort_by_key(|(target, _)| self.next_attempt(target));
        for server in &self.config.bootstrap_servers {
            let server = server.trim();
            if !server.is_empty() {
                candidates.push((Target::Bootstrap(server.to_string()), server.to_string()));
            }
        }
        let mut last_error = None;
        for (target, addr) in candidates {
            match self.connect_to(target, &addr).await {
                Ok(connection) => return Ok(connection),
                // Wrong credentials stay wrong: say so now rather than retry forever.
                Err(error @ ClientError::Authentication { .. }) => return Err(error),
                Err(error) => last_error = Some(error),
            }
        }
        Err(ClientError::NoBrokerAvailable(match last_error {
            Some(error) => format!("no broker reachable; last error: {error}"),
            None => "no broker known".to_string(),
        }))
    }

    fn next_attempt(&self, target: &Target) -> Option<Instant> {
        let backoff = self
            .backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .copied()
            .unwrap_or_default();
        backoff
            .last_failure
            .map(|at| at + self.backoff_delay(backoff.failures))
    }

    fn backoff_delay(&self, failures: u32) -> Duration {
        let base = self.config.retry_backoff;
        let factor = 1u32 << failures.saturating_sub(1).min(10);
        (base * factor).min(self.config.reconnect_backoff_max)
    }

    async fn connect_to(&self, target: Target, addr: &str) -> Result<Arc<BrokerConnection>> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.clone())
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some(connection) = guard.as_ref() {
            if connection.is_open() && connection.addr() == addr {
                return Ok(connection.clone());
            }
        }
        // Back off after failures so a down broker is not hammered by every caller.
        if let Some(at) = self.next_attempt(&target) {
            let now = Instant::now();
            if at > now {
                tokio::time::sleep(at - now).await;
            }
        }
        let result = BrokerConnection::connect(
            addr,
            &self.config.client_id,
            self.config.connect_timeout,
            self.config.request_timeout,
            &self.config.security,
        )
        .await;
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(connection) => {
                backoff.remove(&target);
                tracing::debug!(broker = %addr, "connected");
                let connection = Arc::new(connection);
                *guard = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                let entry = backoff.entry(target).or_default();
                entry.failures = entry.failures.saturating_add(1);
                entry.last_failure = Some(Instant::now());
                tracing::debug!(broker = %addr, %error, "connect failed");
                Err(error)
            }
        }
    }

    /// Closes every connection.
    pub(crate) fn close(&self) {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, slot)| slot)
            .collect();
        for slot in slots {
            if let Ok(guard) = slot.try_lock() {
                if let Some(connection) = guard.as_ref() {
                    connection.close();
                }
            }
        }
    }
}

/// A Metadata request for `topics` (`None`: all topics).
fn metadata_request(topics: Option<&[String]>, allow_auto_topic_creation: bool) -> MetadataRequest {
    let topics = topics.map(|topics| {
        topics
            .iter()
            .map(|t| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
            })
            .collect()
    });
    MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(allow_auto_topic_creation)
}
