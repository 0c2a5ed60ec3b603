//! The broker's conversation with the active controller (Kafka's `BrokerLifecycleManager`):
//! register at start-up, heartbeat every `broker.heartbeat.interval.ms`, and on SIGTERM a
//! controlled shutdown that moves this broker's leaderships away before it stops.
//!
//! A broker starts fenced and serves only once a heartbeat has unfenced it: clients are never
//! sent to a broker the controller does not count as alive.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata::controller::brokers::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerRegistrationRequest, BrokerRequestError,
};
use crate::metadata::controller::{broker_endpoints, ControllerCallError};
use crate::metadata::Controller;

/// How long a broker waits at start-up to be registered and unfenced.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long registration may keep failing before each failure is logged as a warning (and
/// how often it is then).
const REGISTRATION_WARN_AFTER: Duration = Duration::from_secs(5);

/// The longest one controlled-shutdown step (a heartbeat asking to stop) may take.
const SHUTDOWN_STEP: Duration = Duration::from_secs(2);

/// The pause between failed controller calls.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// This broker's registration and heartbeats.
pub struct BrokerLifecycle {
    controller: Arc<Controller>,
    registration: BrokerRegistrationRequest,
    broker_epoch: Arc<AtomicI64>,
    fenced: watch::Sender<bool>,
    interval: Duration,
    /// Set when a controlled shutdown starts: from then on every heartbeat asks to stop, so
    /// that a routine heartbeat can never unfence a broker the controller fenced for stopping
    /// (which would make its restart look like a second live process).
    shutting_down: AtomicBool,
}

impl BrokerLifecycle {
    /// Registers with the active controller and heartbeats until unfenced (or fails after
    /// [`STARTUP_TIMEOUT`]), then keeps heartbeating in the background until `shutdown`. The
    /// broker epoch it is given goes into `broker_epoch` (read by the ISR proposals).
    pub async fn start(
        controller: Arc<Controller>,
        config: &BrokerConfig,
        broker_epoch: Arc<AtomicI64>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<BrokerLifecycle>, BrokerError> {
        let lifecycle = Arc::new(BrokerLifecycle {
            controller,
            registration: BrokerRegistrationRequest {
                broker_id: config.node_id,
                incarnation_id: Uuid::new_v4(),
                listeners: broker_endpoints(config),
                rack: config.broker_rack.clone(),
            },
            broker_epoch,
            fenced: watch::channel(true).0,
            interval: Duration::from_millis(config.broker_heartbeat_interval_ms),
            shutting_down: AtomicBool::new(false),
        });
        let started = tokio::time::timeout(STARTUP_TIMEOUT, async {
            let trying_since = std::time::Instant::now();
            let mut last_warned: Option<std::time::Instant> = None;
            loop {
                match lifecycle.register().await {
                    Ok(()) => {}
                    Err(ControllerCallError::Refused(error)) => {
                        return Err(BrokerError::Storage(error.to_string()))
                    }
                    Err(error) => {
                        // A short wait is normal (the quorum electing); a long one has a cause
                        // the operator should see (a refused login, a wrong address).
                        let overdue = trying_since.elapsed() >= REGISTRATION_WARN_AFTER
                            && last_warned.is_none_or(|at| at.elapsed() >= REGISTRATION_WARN_AFTER);
                        if overdue {
                            last_warned = Some(std::time::Instant::now());
                            tracing::warn!(%error, "not registered with the controller yet; retrying");
                        } else {
                            tracing::debug!(%error, "registration failed; retrying");
                        }
                        tokio::time::sleep(RETRY_BACKOFF).await;
                        continue;
                    }
                }
                match lifecycle.beat(false).await {
                    Ok(answer) if !answer.fenced => return Ok(()),
                    Ok(_) | Err(_) => tokio::time::sleep(RETRY_BACKOFF).await,
                }
            }
        })
        .await;
        match started {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(BrokerError::Storage(format!(
                    "broker {} was not registered and unfenced by the controller within {}s",
                    config.node_id,
                    STARTUP_TIMEOUT.as_secs()
                )))
            }
        }
        tokio::spawn(lifecycle.clone().heartbeat_loop(shutdown));
        Ok(lifecycle)
    }

    /// This broker's current epoch.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// Whether a controlled shutdown has started.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Whether the controller counts this broker as fenced, as it changes.
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.subscribe()
    }

    async fn register(&self) -> Result<(), ControllerCallError> {
        let epoch = self
            .controller
            .register_broker(self.registration.clone())
            .await?;
        self.broker_epoch.store(epoch, Ordering::Release);
        tracing::info!(broker_epoch = epoch, "registered with the controller");
        Ok(())
    }

    /// One heartbeat and its answer. A stale epoch (the controller replaced the registration)
    /// registers again and counts as fenced.
    async fn beat(
        &self,
        want_shutdown: bool,
    ) -> Result<BrokerHeartbeatResponse, ControllerCallError> {
        let request = BrokerHeartbeatRequest {
            broker_id: self.registration.broker_id,
            broker_epoch: self.broker_epoch(),
            // `submit` waited until this node's image holds the registration.
            caught_up: true,
            want_shutdown,
        };
        match self.controller.heartbeat(request).await {
            Ok(answer) => {
                self.fenced.send_if_modified(|fenced| {
                    let changed = *fenced != answer.fenced;
                    *fenced = answer.fenced;
                    changed
                });
                Ok(answer)
            }
            Err(ControllerCallError::Refused(BrokerRequestError::StaleBrokerEpoch { .. })) => {
                tracing::warn!(
                    "the controller no longer knows this registration; registering again"
                );
                self.fenced.send_replace(true);
                self.register().await?;
                Ok(BrokerHeartbeatResponse {
                    fenced: true,
                    should_shutdown: false,
                })
            }
            Err(error) => Err(error),
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            let want_shutdown = self.shutting_down.load(Ordering::Acquire);
            if let Err(error) = self.beat(want_shutdown).await {
                tracing::debug!(%error, "heartbeat failed");
            }
        }
    }

    /// Controlled shutdown: asks the controller to move this broker's leaderships away and
    /// waits (at most `timeout`) until it says the broker may stop.
    pub async fn controlled_shutdown(&self, timeout: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        let done = tokio::time::timeout(timeout, async {
            loop {
                // One step at a time, each bounded: the last brokers of a cluster that stops
                // have no quorum left to ask, and must not wait the whole timeout for it.
                match tokio::time::timeout(SHUTDOWN_STEP, self.beat(true)).await {
                    Ok(Ok(answer)) if answer.should_shutdown => return true,
                    Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Ok(Err(_)) | Err(_) if self.controller.quorum().leader().is_none() => {
                        return false;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "controlled shutdown heartbeat failed");
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                    Err(_) => tracing::debug!("controlled shutdown heartbeat timed out"),
                }
            }
        })
        .await;
        match done {
            Ok(true) => tracing::info!("controlled shutdown: leaderships moved away"),
            Ok(false) => tracing::warn!(
                "controlled shutdown: no active controller to move leaderships; stopping anyway"
            ),
            Err(_) => tracing::warn!("controlled shutdown did not finish in time; stopping anyway"),
        }
    }
}
