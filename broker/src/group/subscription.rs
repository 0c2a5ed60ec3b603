//! Reading a consumer's subscription from its JoinGroup metadata (the `consumer` protocol
//! type), which OffsetDelete needs to refuse deleting offsets of topics still consumed.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;

/// The topics a subscription blob names; empty if it does not decode.
pub fn topics(metadata: &Bytes) -> Vec<String> {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    // Clients write versions newer than they may know we decode; read at most v3.
    let version = buf.get_i16().clamp(0, 3);
    match ConsumerProtocolSubscription::decode(&mut buf, version) {
        Ok(subscription) => subscription.topics.iter().map(|t| t.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}
