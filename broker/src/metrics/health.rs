//! `/health/live` and `/health/ready`: whether the process serves, and whether this node
//! should be sent traffic.
//!
//! A broker is ready once it has recovered its logs, registered with the controller, been
//! unfenced, and applied the metadata it has to its replicas (so it leads and follows what it
//! should). Until then, and while it is fenced or shutting down, ready answers 503 with the
//! reason. Liveness is only "the endpoint answers": a broker busy recovering a large log is
//! alive, and a supervisor must not restart it for being slow.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metadata::Controller;
use crate::Broker;

/// How long the replicas may trail the applied metadata before the broker says it is not
/// ready: applying a change takes milliseconds, so only a long apply (opening and recovering
/// logs) or a stuck one shows; a short trail after every metadata change must not flap
/// readiness.
const METADATA_GRACE: Duration = Duration::from_secs(1);

/// Where a node is in its life, as set by the start-up and shutdown sequences.
#[derive(Debug)]
struct State {
    /// Why the node is not open yet (start-up step), or `None` once open.
    starting: Option<String>,
    shutting_down: bool,
    /// Since when the replicas have trailed the metadata, if they do.
    behind_since: Option<Instant>,
}

/// A node's readiness: the start-up step it is in, then its live state.
#[derive(Debug)]
pub struct Readiness {
    state: Mutex<State>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            state: Mutex::new(State {
                starting: Some("starting".to_string()),
                shutting_down: false,
                behind_since: None,
            }),
        }
    }
}

impl Readiness {
    /// Records the start-up step under way ("recovering partition logs", ...).
    pub fn starting(&self, step: impl Into<String>) {
        let step = step.into();
        tracing::debug!(%step, "start-up step");
        self.lock().starting = Some(step);
    }

    /// The start-up sequence is done; from now on readiness follows the node's state.
    pub fn opened(&self) {
        self.lock().starting = None;
    }

    /// A shutdown began: traffic should go elsewhere.
    pub fn shutting_down(&self) {
        self.lock().shutting_down = true;
    }

    /// `Ok` if the broker is ready, else the reason it is not.
    pub fn check_broker(&self, broker: Option<&Broker>) -> Result<(), String> {
        let mut state = self.lock();
        if state.shutting_down {
            return Err("shutting down".into());
        }
        if let Some(step) = &state.starting {
            return Err(step.clone());
        }
        let Some(broker) = broker else {
            return Err("starting".into());
        };
        if *broker.lifecycle.fenced().borrow() {
            return Err("fenced by the controller".into());
        }
        let applied_metadata = broker
            .controller
            .quorum()
            .status()
            .last_applied
            .unwrap_or(0);
        let applied_replicas = broker.replicas.applied();
        if applied_replicas < applied_metadata {
            let since = *state.behind_since.get_or_insert_with(Instant::now);
            // Until the first application of the metadata ends, the broker is opening (and
            // recovering) its logs: no grace for that.
            let first_apply = applied_replicas == 0;
            if first_apply || since.elapsed() >= METADATA_GRACE {
                return Err(format!(
                    "recovering partition logs and catching up metadata (replicas at metadata \
                     offset {applied_replicas} of {applied_metadata})"
                ));
            }
        } else {
            state.behind_since = None;
        }
        Ok(())
    }

    /// `Ok` if the controller-only node is ready (a voter that knows the active controller),
    /// else the reason it is not.
    pub fn check_controller(&self, controller: Option<&Controller>) -> Result<(), String> {
        let state = self.lock();
        if state.shutting_down {
            return Err("shutting down".into());
        }
        if let Some(step) = &state.starting {
            return Err(step.clone());
        }
        match controller {
            None => Err("starting".into()),
            Some(controller) if controller.active_controller_id() < 0 => {
                Err("no active controller: the metadata quorum has no leader".into())
            }
            Some(_) => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
