//! The controller's broker decisions: registration, heartbeats, fencing and controlled
//! shutdown (Kafka's BrokerRegistration and BrokerHeartbeat, KIP-631).
//!
//! A broker registers fenced, with a new broker epoch; it is unfenced by a heartbeat once it
//! has caught up with the metadata. The active controller fences a broker whose heartbeats
//! stop for `broker.session.timeout.ms`, and a broker asking to shut down first has its
//! leaderships moved away, then is fenced and told it may stop.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::partitions::{elect_offline_leaders, leaderships, move_away_from};
use crate::metadata::{BrokerEndpoint, MetadataImage, MetadataRecord};

/// A broker's registration request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistrationRequest {
    /// `node.id`.
    pub broker_id: i32,
    /// Random per process start.
    pub incarnation_id: Uuid,
    /// Its listeners (not the controller's).
    pub listeners: Vec<BrokerEndpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
}

/// A broker's heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeatRequest {
    /// `node.id`.
    pub broker_id: i32,
    /// The epoch its registration got.
    pub broker_epoch: i64,
    /// Whether its metadata has caught up with its registration (it may then be unfenced).
    pub caught_up: bool,
    /// Set on controlled shutdown (SIGTERM).
    pub want_shutdown: bool,
}

/// The controller's answer to a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeatResponse {
    /// Whether the broker is fenced after this heartbeat.
    pub fenced: bool,
    /// Controlled shutdown: it leads nothing any more and may stop.
    pub should_shutdown: bool,
}

/// Why a broker request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BrokerRequestError {
    /// STALE_BROKER_EPOCH: the registration it names was replaced (or never existed).
    #[error("broker {broker_id}: epoch {broker_epoch} is not its current registration")]
    StaleBrokerEpoch {
        /// The broker.
        broker_id: i32,
        /// The epoch it sent.
        broker_epoch: i64,
    },
    /// DUPLICATE_BROKER_REGISTRATION: another live process registered this id.
    #[error("broker {0} is registered by another live process")]
    DuplicateRegistration(i32),
}

/// The state `records` lead to.
pub(super) fn preview(image: &MetadataImage, records: &[MetadataRecord]) -> MetadataImage {
    let mut next = image.clone();
    for record in records {
        next.apply(record);
    }
    next
}

/// Registers a broker (again): a retry of the same incarnation gets its epoch back; a new
/// incarnation (a restart) gets a new epoch, starts fenced, and what the previous process led
/// moves to other in-sync replicas.
pub(super) fn register(
    image: &MetadataImage,
    request: &BrokerRegistrationRequest,
    liveness: &Liveness,
) -> Result<(Vec<MetadataRecord>, i64), BrokerRequestError> {
    if let Some(existing) = image.broker(request.broker_id) {
        if existing.incarnation_id == request.incarnation_id {
            return Ok((Vec::new(), existing.epoch));
        }
        // Another process with this id that still heartbeats to this controller: a
        // configuration mistake (two brokers with one node.id), not a restart. One this
        // controller has not heard from (it was elected since) may be replaced.
        if !existing.fenced && liveness.heard_recently(request.broker_id) {
            return Err(BrokerRequestError::DuplicateRegistration(request.broker_id));
        }
    }
    let epoch = image.next_broker_epoch();
    let mut records = vec![MetadataRecord::RegisterBroker {
        broker_id: request.broker_id,
        incarnation_id: request.incarnation_id,
        broker_epoch: epoch,
        listeners: request.listeners.clone(),
        rack: request.rack.clone(),
        fenced: true,
    }];
    let registered = preview(image, &records);
    records.extend(move_away_from(&registered, request.broker_id));
    Ok((records, epoch))
}

/// Decides a heartbeat: unfences a caught-up broker (and elects it where it is the only
/// in-sync replica left), or runs a controlled shutdown step.
pub(super) fn heartbeat(
    image: &MetadataImage,
    request: &BrokerHeartbeatRequest,
) -> Result<(Vec<MetadataRecord>, BrokerHeartbeatResponse), BrokerRequestError> {
    let stale = BrokerRequestError::StaleBrokerEpoch {
        broker_id: request.broker_id,
        broker_epoch: request.broker_epoch,
    };
    let Some(broker) = image.broker(request.broker_id) else {
        return Err(stale);
    };
    if broker.epoch != request.broker_epoch {
        return Err(stale);
    }
    if request.want_shutdown {
        let moves = move_away_from(image, request.broker_id);
        if !moves.is_empty() {
            return Ok((
                moves,
                BrokerHeartbeatResponse {
                    fenced: broker.fenced,
                    should_shutdown: false,
                },
            ));
        }
        let done = leaderships(image, request.broker_id) == 0;
        let mut records = Vec::new();
        if done && !broker.fenced {
            records.push(fencing(request.broker_id, broker.epoch, true));
        }
        return Ok((
            records,
            BrokerHeartbeatResponse {
                fenced: done || broker.fenced,
                should_shutdown: done,
            },
        ));
    }
    if broker.fenced && request.caught_up {
        let mut records = vec![fencing(request.broker_id, broker.epoch, false)];
        let unfenced = preview(image, &records);
        records.extend(elect_offline_leaders(&unfenced));
        return Ok((
            records,
            BrokerHeartbeatResponse {
                fenced: false,
                should_shutdown: false,
            },
        ));
    }
    Ok((
        Vec::new(),
        BrokerHeartbeatResponse {
            fenced: broker.fenced,
            should_shutdown: false,
        },
    ))
}

fn fencing(broker_id: i32, broker_epoch: i64, fenced: bool) -> MetadataRecord {
    MetadataRecord::BrokerFencing {
        broker_id,
        broker_epoch,
        fenced,
    }
}

/// The records fencing every unfenced broker whose last heartbeat is older than the session
/// timeout, with their leaderships moved away.
pub(super) fn fence_expired(image: &MetadataImage, liveness: &Liveness) -> Vec<MetadataRecord> {
    let expired: Vec<(i32, i64)> = image
        .unfenced_brokers()
        .filter(|b| !liveness.is_alive(b.broker_id))
        .map(|b| (b.broker_id, b.epoch))
        .collect();
    let mut records = Vec::new();
    if expired.is_empty() {
        // Checked several times a second: no image copy when nobody expired.
        return records;
    }
    let mut next = image.clone();
    for (broker_id, epoch) in expired {
        tracing::warn!(broker_id, "broker missed its heartbeats; fencing it");
        let fenced = fencing(broker_id, epoch, true);
        next.apply(&fenced);
        records.push(fenced);
        let moves = move_away_from(&next, broker_id);
        for record in &moves {
            next.apply(record);
        }
        records.extend(moves);
    }
    records
}

/// When the active controller last heard from each broker. Kept in memory by the active
/// controller only: a new controller gives every broker a full session from its election,
/// except the broker of the previous active controller (see [`Liveness::take_over`]).
#[derive(Debug)]
pub struct Liveness {
    session_timeout: Duration,
    last_heartbeat: HashMap<i32, Instant>,
    since: Instant,
}

impl Liveness {
    /// No heartbeats yet; every broker counts as alive for one session from now.
    pub fn new(session_timeout: Duration) -> Self {
        Liveness {
            session_timeout,
            last_heartbeat: HashMap::new(),
            since: Instant::now(),
        }
    }

    /// Starts over (this node just became the active controller).
    pub fn reset(&mut self) {
        self.last_heartbeat.clear();
        self.since = Instant::now();
    }

    /// Starts over as the successor of `previous`, the node that led the quorum before and was
    /// last heard from (as Raft leader) at the given instant. Every other broker gets a full
    /// session from now, as in Kafka. The previous leader's session counts from when it was
    /// last heard from: a new election usually means it died, and giving it a fresh session
    /// would add a whole session timeout to the failover of every partition it led. It still
    /// gets at least `grace` from now to reach this controller, in case it is alive and only
    /// lost the election. A leader last heard from more than a session ago was not the
    /// previous one and gets a full session like the rest.
    pub fn take_over(&mut self, previous: Option<(i32, Instant)>, grace: Duration) {
        self.reset();
        let Some((broker_id, last_heard)) = previous else {
            return;
        };
        if self.since.saturating_duration_since(last_heard) > self.session_timeout {
            // Not the leader just before this one: treated like every other broker.
            return;
        }
        let earliest = self
            .since
            .checked_sub(self.session_timeout.saturating_sub(grace))
            .unwrap_or(self.since);
        self.last_heartbeat
            .insert(broker_id, last_heard.max(earliest).min(self.since));
    }

    /// Records a heartbeat (or registration) of `broker_id` now.
    pub fn heard_from(&mut self, broker_id: i32) {
        self.last_heartbeat.insert(broker_id, Instant::now());
    }

    /// Whether this controller itself heard from `broker_id` within the session timeout.
    pub fn heard_recently(&self, broker_id: i32) -> bool {
        self.last_heartbeat
            .get(&broker_id)
            .is_some_and(|last| last.elapsed() <= self.session_timeout)
    }

    /// Whether `broker_id` was heard from within the session timeout.
    pub fn is_alive(&self, broker_id: i32) -> bool {
        let last = self
            .last_heartbeat
            .get(&broker_id)
            .copied()
            .unwrap_or(self.since);
        last.elapsed() <= self.session_timeout
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(broker_id: i32) -> BrokerRegistrationRequest {
        BrokerRegistrationRequest {
            broker_id,
            incarnation_id: Uuid::new_v4(),
            listeners: vec![],
            rack: None,
        }
    }

    #[test]
    fn a_broker_registers_fenced_and_a_caught_up_heartbeat_unfences_it() {
        let liveness = Liveness::new(Duration::from_secs(9));
        let mut image = MetadataImage::default();
        let first = request(1);
        let (records, epoch) = register(&image, &first, &liveness).unwrap();
        image = preview(&image, &records);
        assert!(image.broker(1).unwrap().fenced);
        // A retry of the same registration changes nothing.
        assert_eq!(
            register(&image, &first, &liveness).unwrap(),
            (vec![], epoch)
        );

        let beat = |caught_up| BrokerHeartbeatRequest {
            broker_id: 1,
            broker_epoch: epoch,
            caught_up,
            want_shutdown: false,
        };
        let (records, answer) = heartbeat(&image, &beat(false)).unwrap();
        assert!(records.is_empty() && answer.fenced);
        let (records, answer) = heartbeat(&image, &beat(true)).unwrap();
        image = preview(&image, &records);
        assert!(!answer.fenced && !image.broker(1).unwrap().fenced);

        let stale = BrokerHeartbeatRequest {
            broker_epoch: epoch - 1,
            ..beat(true)
        };
        assert!(matches!(
            heartbeat(&image, &stale),
            Err(BrokerRequestError::StaleBrokerEpoch { .. })
        ));
        // Another live process with the same id is refused; after the session it may take over.
        let mut heard = Liveness::new(Duration::from_secs(9));
        assert!(
            register(&image, &request(1), &heard).is_ok(),
            "not heard from: a restart"
        );
        heard.heard_from(1);
        assert_eq!(
            register(&image, &request(1), &heard),
            Err(BrokerRequestError::DuplicateRegistration(1))
        );
        let expired = Liveness::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert!(register(&image, &request(1), &expired).is_ok());
        assert_eq!(fence_expired(&image, &expired).len(), 1);
        assert!(fence_expired(&image, &liveness).is_empty());
    }

    #[test]
    fn a_successor_counts_the_previous_leaders_session_from_its_last_contact() {
        let session = Duration::from_secs(2);
        let grace = Duration::from_millis(800);
        let now = Instant::now();
        let mut liveness = Liveness::new(session);
        // Heard from 1.9 s ago: 0.1 s of its session left, but the grace is longer.
        liveness.take_over(Some((1, now - Duration::from_millis(1_900))), grace);
        assert!(liveness.is_alive(1));
        assert!(liveness.is_alive(2), "other brokers get a full session");
        let left = |l: &Liveness| session.saturating_sub(l.last_heartbeat[&1].elapsed());
        assert!(
            left(&liveness) <= grace,
            "no more than the grace: {:?}",
            left(&liveness)
        );
        // Heard from 0.2 s ago: the rest of its own session, not a fresh one.
        liveness.take_over(Some((1, now - Duration::from_millis(200))), grace);
        assert!(left(&liveness) <= Duration::from_millis(1_800));
        assert!(left(&liveness) > grace);
        // Heard from longer ago than a session: not the previous leader; a full session.
        liveness.take_over(Some((1, now - Duration::from_secs(3))), grace);
        assert!(!liveness.last_heartbeat.contains_key(&1));
        assert!(liveness.is_alive(1));
    }
}
