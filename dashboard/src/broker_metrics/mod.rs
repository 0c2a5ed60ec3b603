//! The brokers' own metrics, read from their metrics endpoints (`metrics.listener`): each
//! broker is scraped every couple of seconds, as Prometheus would, for the console's
//! per-broker request rate, latency, throughput, CPU and memory charts, and its readiness.
//!
//! A broker's endpoint is what it answers for `metrics.listener` in DescribeConfigs (a
//! wildcard host replaced by the broker's advertised host), unless the console was given one
//! (`millrace dashboard --broker-metrics ID=URL`). Brokers without an endpoint are listed as
//! such; the charts derived from offsets keep working without any.

pub mod exposition;
pub mod http_get;
pub mod summary;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::Serialize;
use tokio::sync::watch;

use crate::sampler::{ClusterCache, HISTORY_LEN};
use summary::{BrokerCounters, BrokerRates};

/// How often each broker is scraped.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a broker without a known endpoint is asked for one again.
const REDISCOVER_AFTER: Duration = Duration::from_secs(30);

/// One broker's endpoint and what its scrapes said.
#[derive(Debug, Default)]
struct Scraped {
    /// `http://host:port`, once known.
    endpoint: Option<String>,
    /// Given on the command line (never replaced by discovery).
    configured: bool,
    /// When discovery was last tried.
    discovered_at: Option<Instant>,
    /// The previous scrape, for rates: (ms since the epoch, counters).
    previous: Option<(i64, BrokerCounters)>,
    /// Figures between consecutive scrapes, oldest first.
    history: VecDeque<BrokerRates>,
    /// `/health/ready`: 200 or not, and the reason it gave.
    ready: Option<bool>,
    ready_reason: Option<String>,
    /// Why the last scrape failed (cleared by a good one).
    error: Option<String>,
}

/// What the console shows of one broker's endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerMetricsView {
    /// Node id.
    pub id: i32,
    /// `http://host:port/metrics`, when the broker has an endpoint.
    pub metrics_url: Option<String>,
    /// `http://host:port/health/ready`, when the broker has an endpoint.
    pub health_url: Option<String>,
    /// Whether the broker says it is ready (`None`: not asked or no endpoint).
    pub ready: Option<bool>,
    /// The reason it gave when not ready.
    pub ready_reason: Option<String>,
    /// Why the last scrape failed, or why there is no endpoint.
    pub error: Option<String>,
    /// The latest figures.
    pub latest: Option<BrokerRates>,
    /// Figures over the last minutes, oldest first (with `history=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<BrokerRates>>,
}

/// The scraped brokers, shared by the scraping task and the HTTP handlers.
#[derive(Debug, Default)]
pub(crate) struct BrokerMetricsCache {
    brokers: RwLock<BTreeMap<i32, Scraped>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl BrokerMetricsCache {
    /// A cache with the endpoints given on the command line (node id -> `http://host:port`).
    pub(crate) fn new(configured: &BTreeMap<i32, String>) -> Self {
        let brokers = configured
            .iter()
            .map(|(id, url)| {
                let scraped = Scraped {
                    endpoint: Some(url.trim_end_matches('/').to_string()),
                    configured: true,
                    ..Scraped::default()
                };
                (*id, scraped)
            })
            .collect();
        BrokerMetricsCache {
            brokers: RwLock::new(brokers),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i32, Scraped>> {
        self.brokers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<i32, Scraped>> {
        self.brokers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every broker scraped or known, in id order, with its history when asked.
    pub(crate) fn views(&self, with_history: bool) -> Vec<BrokerMetricsView> {
        self.read()
            .iter()
            .map(|(id, s)| BrokerMetricsView {
                id: *id,
                metrics_url: s.endpoint.as_ref().map(|e| format!("{e}/metrics")),
                health_url: s.endpoint.as_ref().map(|e| format!("{e}/health/ready")),
                ready: s.ready,
                ready_reason: s.ready_reason.clone(),
                error: s.error.clone(),
                latest: s.history.back().cloned(),
                history: with_history.then(|| s.history.iter().cloned().collect()),
            })
            .collect()
    }

    /// Scrapes every broker of the cluster every [`SCRAPE_INTERVAL`] until `stop`.
    pub(crate) async fn run(
        self: Arc<Self>,
        cluster: Arc<ClusterCache>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(SCRAPE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            self.scrape_once(&cluster).await;
        }
    }

    async fn scrape_once(&self, cluster: &ClusterCache) {
        let Ok(sample) = cluster.latest().await else {
            return;
        };
        let brokers: Vec<(i32, String)> = sample
            .cluster
            .brokers
            .iter()
            .map(|b| (b.id, b.host.clone()))
            .collect();
        self.discover(cluster, &brokers).await;
        let targets: Vec<(i32, String)> = self
            .read()
            .iter()
            .filter_map(|(id, s)| s.endpoint.clone().map(|e| (*id, e)))
            .collect();
        let scrapes = join_all(targets.into_iter().map(|(id, endpoint)| async move {
            let metrics = http_get::get(&endpoint, "/metrics", SCRAPE_TIMEOUT).await;
            let ready = http_get::get(&endpoint, "/health/ready", SCRAPE_TIMEOUT).await;
            (id, metrics, ready)
        }))
        .await;
        let at_ms = now_ms();
        let mut brokers = self.write();
        for (id, metrics, ready) in scrapes {
            let Some(scraped) = brokers.get_mut(&id) else {
                continue;
            };
            match ready {
                Ok((status, body)) => {
                    scraped.ready = Some(status == 200);
                    scraped.ready_reason =
                        (status != 200).then(|| String::from_utf8_lossy(&body).trim().to_string());
                }
                Err(_) => {
                    scraped.ready = None;
                    scraped.ready_reason = None;
                }
            }
            let counters = match metrics {
                Ok((200, body)) => exposition::parse(&String::from_utf8_lossy(&body))
                    .map(|samples| BrokerCounters::from_samples(&samples))
                    .map_err(|e| format!("unreadable metrics: {e}")),
                Ok((status, _)) => Err(format!("/metrics answered HTTP {status}")),
                Err(e) => Err(format!("cannot scrape: {e}")),
            };
            match counters {
                Ok(counters) => {
                    scraped.error = None;
                    if let Some((earlier_ms, earlier)) = &scraped.previous {
                        let rates = BrokerRates::between(earlier, *earlier_ms, &counters, at_ms);
                        if scraped.history.len() == HISTORY_LEN {
                            scraped.history.pop_front();
                        }
                        scraped.history.push_back(rates);
                    }
                    scraped.previous = Some((at_ms, counters));
                }
                Err(error) => {
                    tracing::debug!(broker = id, %error, "broker metrics scrape failed");
                    scraped.error = Some(error);
                    // A missed scrape must not make the next rate span the gap as if it
                    // were one interval of the same broker (it may have restarted).
                    scraped.previous = None;
                }
            }
        }
    }

    /// Asks brokers without a known endpoint for their `metrics.listener` (not more often
    /// than every [`REDISCOVER_AFTER`]), and forgets brokers that left the cluster.
    async fn discover(&self, cluster: &ClusterCache, brokers: &[(i32, String)]) {
        let due: Vec<(i32, String)> = {
            let mut known = self.write();
            known.retain(|id, s| s.configured || brokers.iter().any(|(b, _)| b == id));
            brokers
                .iter()
                .filter(|(id, _)| {
                    let s = known.entry(*id).or_default();
                    s.endpoint.is_none()
                        && s.discovered_at
                            .is_none_or(|at| at.elapsed() >= REDISCOVER_AFTER)
                })
                .cloned()
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let Ok(admin) = cluster.admin().await else {
            return;
        };
        for (id, host) in due {
            let found =
                tokio::time::timeout(SCRAPE_TIMEOUT, admin.describe_broker_config(id)).await;
            let endpoint = match found {
                Ok(Ok(entries)) => entries
                    .into_iter()
                    .find(|e| e.name == "metrics.listener")
                    .and_then(|e| e.value)
                    .map(|url| reachable_url(&url, &host)),
                Ok(Err(e)) => {
                    tracing::debug!(broker = id, error = %e, "cannot describe the broker's configs");
                    None
                }
                Err(_) => None,
            };
            let mut known = self.write();
            let scraped = known.entry(id).or_default();
            scraped.discovered_at = Some(Instant::now());
            if endpoint.is_none() {
                scraped.error = Some("no metrics.listener on this broker".to_string());
            }
            scraped.endpoint = endpoint;
        }
    }
}

/// `url` with a wildcard host (a broker listening on every interface) replaced by the
/// broker's advertised host, which the console can reach.
fn reachable_url(url: &str, broker_host: &str) -> String {
    let url = url.trim_end_matches('/');
    for wildcard in ["0.0.0.0", "[::]"] {
        if let Some(port) = url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_prefix(wildcard))
            .and_then(|rest| rest.strip_prefix(':'))
        {
            let host = if broker_host.contains(':') {
                format!("[{broker_host}]")
            } else {
                broker_host.to_string()
            };
            return format!("http://{host}:{port}");
        }
    }
    url.to_string()
}

/// Reads `ID=URL` pairs (`--broker-metrics`).
pub fn parse_endpoint_arg(arg: &str) -> Result<(i32, String), String> {
    let (id, url) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}` is not NODE_ID=http://HOST:PORT"))?;
    let id: i32 = id
        .trim()
        .parse()
        .map_err(|_| format!("`{id}` is not a node id"))?;
    http_get::authority(url.trim()).map_err(|e| e.to_string())?;
    Ok((id, url.trim().trim_end_matches('/').to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_become_the_brokers_host() {
        assert_eq!(
            reachable_url("http://0.0.0.0:9644", "10.0.0.5"),
            "http://10.0.0.5:9644"
        );
        assert_eq!(
            reachable_url("http://[::]:9644/", "::1"),
            "http://[::1]:9644"
        );
        assert_eq!(
            reachable_url("http://127.0.0.1:9644", "h"),
            "http://127.0.0.1:9644"
        );
    }

    #[test]
    fn endpoint_arguments_need_an_id_and_an_http_url() {
        assert_eq!(
            parse_endpoint_arg("2=http://h:9644/").unwrap(),
            (2, "http://h:9644".to_string())
        );
        for bad in ["http://h:1", "x=http://h:1", "1=h:1", "1=https://h:1"] {
            assert!(parse_endpoint_arg(bad).is_err(), "{bad}");
        }
    }
}
