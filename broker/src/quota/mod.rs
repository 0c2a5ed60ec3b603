//! Client quotas enforced (Kafka's `ClientQuotaManager`): produce and fetch byte rates per
//! user and client id, as the metadata's quotas say (`producer_byte_rate`,
//! `consumer_byte_rate`). A client over its quota gets its response late, by the time its bytes
//! take at the quota rate, with that time in `throttle_time_ms` (clients back off by it,
//! KIP-219); clients sharing a quota entity share its rate.
//!
//! `request_percentage` (KIP-124) limits the time the broker spends handling an entity's
//! requests, as a percentage of one thread: each request's handling time is charged to a
//! bucket the same way, and a connection over its quota is muted (its next request is not read)
//! until the time is paid, as Kafka mutes the channel.
//!
//! Each entity has a token bucket: a request of `b` bytes costs `b / quota` seconds, and up to
//! [`BURST`] of unused time is credited, so an idle client's first burst is not delayed while
//! a sustained rate is held to the quota. (Kafka measures a rate over eleven one-second
//! windows; a bucket holds the rate as tightly, without a window's worth of overshoot.)

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metadata::client_quotas::{
    resolve, ClientQuotas, QuotaEntity, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE,
};

/// How much unused quota time an entity may save up for a burst.
pub const BURST: Duration = Duration::from_secs(1);

/// The longest a single response is held back (Kafka caps the throttle time too).
pub const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// Which rate a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaType {
    /// Bytes appended by producers (`producer_byte_rate`).
    Produce,
    /// Bytes returned to consumers (`consumer_byte_rate`).
    Fetch,
    /// Microseconds of request handling (`request_percentage`).
    Request,
}

impl QuotaType {
    fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => PRODUCER_BYTE_RATE,
            QuotaType::Fetch => CONSUMER_BYTE_RATE,
            QuotaType::Request => REQUEST_PERCENTAGE,
        }
    }
}

/// One entity's bucket: when its spent time is paid off.
struct Bucket {
    paid_until: Instant,
}

/// The buckets of every entity that has a quota.
#[derive(Default)]
pub struct ClientQuotaManager {
    buckets: Mutex<HashMap<(QuotaType, QuotaEntity), Bucket>>,
}

impl ClientQuotaManager {
    /// Counts `bytes` of `user` with `client_id` against its quota of `kind` in `quotas`;
    /// returns how long to hold the response back (zero when within the quota or when no
    /// quota applies).
    pub fn record(
        &self,
        quotas: &ClientQuotas,
        kind: QuotaType,
        user: &str,
        client_id: &str,
        bytes: usize,
    ) -> Duration {
        if quotas.is_empty() || bytes == 0 {
            return Duration::ZERO;
        }
        let Some((entity, rate)) = resolve(quotas, user, client_id, kind.key()) else {
            return Duration::ZERO;
        };
        self.charge(kind, entity, rate, bytes, Instant::now())
    }

    /// Counts `handled` (time spent handling one request) of `user` with `client_id` against
    /// its `request_percentage`; returns how long to mute its connection.
    pub fn record_request_time(
        &self,
        quotas: &ClientQuotas,
        user: &str,
        client_id: &str,
        handled: Duration,
    ) -> Duration {
        if quotas.is_empty() {
            return Duration::ZERO;
        }
        let Some((entity, percentage)) = resolve(quotas, user, client_id, REQUEST_PERCENTAGE)
        else {
            return Duration::ZERO;
        };
        // percentage% of one thread: that many hundredths of a second of handling per second.
        let micros_per_second = percentage / 100.0 * 1_000_000.0;
        let micros = usize::try_from(handled.as_micros()).unwrap_or(usize::MAX);
        self.charge(
            QuotaType::Request,
            entity,
            micros_per_second,
            micros.max(1),
            Instant::now(),
        )
    }

    fn charge(
        &self,
        kind: QuotaType,
        entity: QuotaEntity,
        rate: f64,
        bytes: usize,
        now: Instant,
    ) -> Duration {
        let cost = Duration::from_secs_f64((bytes as f64 / rate).min(MAX_THROTTLE.as_secs_f64()));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = now.checked_sub(BURST).unwrap_or(now);
        let bucket = buckets.entry((kind, entity)).or_insert(Bucket {
            paid_until: earliest,
        });
        bucket.paid_until = bucket.paid_until.max(earliest) + cost;
        bucket
            .paid_until
            .saturating_duration_since(now)
            .min(MAX_THROTTLE)
    }
}

/// How long the client of `ctx` must wait for an answer carrying `bytes` under its quota of
/// `kind` (zero without one): its user is the session's principal, its client id the
/// request header's.
pub(crate) fn delay_for(
    broker: &crate::Broker,
    ctx: &crate::api::RequestContext,
    kind: QuotaType,
    bytes: usize,
) -> Duration {
    let user = &ctx.session.principal.name;
    let client_id = ctx.client_id.as_deref().unwrap_or("");
    broker.controller.with_image(|image| {
        broker
            .quotas
            .record(image.client_quotas(), kind, user, client_id, bytes)
    })
}

/// How long to mute the connection of `user`/`client_id` after a request that took `handled`
/// to handle (zero without a `request_percentage` quota).
pub(crate) fn request_delay(
    broker: &crate::Broker,
    user: &str,
    client_id: &str,
    handled: Duration,
) -> Duration {
    broker.controller.with_image(|image| {
        broker
            .quotas
            .record_request_time(image.client_quotas(), user, client_id, handled)
    })
}

/// Whether a request is exempt from `request_percentage`: what brokers send each other
/// (replication, transaction markers, KIP-890 verification), from a principal allowed
/// CLUSTER_ACTION, as Kafka exempts them.
pub(crate) fn exempt_from_request_quota(
    broker: &crate::Broker,
    ctx: &crate::api::RequestContext,
    body: &bytes::Bytes,
) -> bool {
    use kafka_protocol::messages::{ApiKey, FetchRequest, OffsetForLeaderEpochRequest};
    let from_a_broker = match ctx.api_key {
        ApiKey::WriteTxnMarkers => true,
        ApiKey::AddPartitionsToTxn => ctx.version >= 4,
        ApiKey::Fetch => ctx
            .decode::<FetchRequest>(&mut body.clone())
            .is_ok_and(|r| r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0),
        ApiKey::OffsetForLeaderEpoch => ctx
            .decode::<OffsetForLeaderEpochRequest>(&mut body.clone())
            .is_ok_and(|r| r.replica_id.0 >= 0),
        _ => false,
    };
    from_a_broker
        && crate::api::access::Access::new(broker, ctx).allowed(
            crate::security::authorizer::AclOperation::ClusterAction,
            crate::security::authorizer::Resource::cluster(),
        )
}

/// A throttle time as the responses carry it.
pub fn throttle_ms(delay: Duration) -> i32 {
    i32::try_from(delay.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity() -> QuotaEntity {
        QuotaEntity {
            user: None,
            client_id: Some(Some("a".into())),
        }
    }

    #[test]
    fn a_sustained_rate_is_held_to_the_quota_after_a_burst() {
        let manager = ClientQuotaManager::default();
        let start = Instant::now() + BURST;
        // 1,000 bytes/s: the first second's worth passes, then each 100 bytes waits 100 ms.
        let first = manager.charge(QuotaType::Produce, entity(), 1000.0, 1000, start);
        assert_eq!(first, Duration::ZERO);
        let second = manager.charge(QuotaType::Produce, entity(), 1000.0, 100, start);
        assert_eq!(second, Duration::from_millis(100));
        let third = manager.charge(QuotaType::Produce, entity(), 1000.0, 100, start);
        assert_eq!(third, Duration::from_millis(200));
        // Another client id's bucket is its own; the fetch bucket too.
        let other = QuotaEntity {
            user: None,
            client_id: Some(Some("b".into())),
        };
        assert_eq!(
            manager.charge(QuotaType::Produce, other, 1000.0, 100, start),
            Duration::ZERO
        );
        assert_eq!(
            manager.charge(QuotaType::Fetch, entity(), 1000.0, 100, start),
            Duration::ZERO
        );
        // Idle long enough, the bucket is full again (but no more than one burst).
        let later = start + Duration::from_secs(60);
        assert_eq!(
            manager.charge(QuotaType::Produce, entity(), 1000.0, 1000, later),
            Duration::ZERO
        );
        assert_eq!(
            manager.charge(QuotaType::Produce, entity(), 1000.0, 500, later),
            Duration::from_millis(500)
        );
    }
}
