//! The Kafka APIs: request dispatch, the advertised versions, and one module per API.
//!
//! A request is decoded with the `kafka-protocol` crate, handled, and answered with a response
//! encoded at the request's version. Handlers do their ordered work (appends, topic changes)
//! before returning, and may leave waiting (fsync, long poll) to the returned future, so that
//! a connection can pipeline requests while answering them in order.

pub mod access;
pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_client_quotas;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_reassignments;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::broker::Broker;
use crate::security::Session;

/// A response still being produced (waiting for fsync or new data). `None` closes the
/// connection.
pub type PendingResponse = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

/// What a handler gives back.
pub enum Reply {
    /// The response frame, ready to send.
    Now(Bytes),
    /// A response that completes later.
    Later(PendingResponse),
    /// No response at all (acks=0 produce).
    Nothing,
}

/// A request that ends its connection: the protocol gives no way to answer it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Shorter than a request header.
    #[error("frame of {0} bytes is too short for a request header")]
    Truncated(usize),
    /// An API key Kafka does not define.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// An API or version we do not implement.
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// The request did not decode.
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// The decoder's complaint.
        reason: String,
    },
    /// The response could not be encoded (a bug: a field set that the version lacks).
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// The encoder's complaint.
        reason: String,
    },
}

/// The versions we advertise and implement, per API. Minimums follow librdkafka's feature
/// checks (see shared/KAFKA-NOTES.md); maximums stop before versions whose semantics we do
/// not implement (Produce with topic ids, tiered-storage ListOffsets).
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    // v10-11 only add answer fields and error codes we need not send; v12 is transaction
    // version 2 (KIP-890: the partition joins the transaction on its first write).
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 15),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // Transactions (KIP-98), with KIP-890's server-side verification, and transaction version
    // 2 (the `transaction.version` feature, finalized at 2): EndTxn 5 ends each transaction at
    // a new epoch, Produce 12 and TxnOffsetCommit 5 add partitions implicitly.
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    // Security (KIP-152, KIP-368, KIP-554).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The advertised `[min, max]` versions of an API, if we implement it.
pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|(_, min, max)| (*min, *max))
}

/// What every handler knows about its request.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The API.
    pub api_key: ApiKey,
    /// The request's version; the response is encoded at it.
    pub version: i16,
    /// Echoed in the response header.
    pub correlation_id: i32,
    /// The client's self-reported id, for logs.
    pub client_id: Option<String>,
    /// The client's address (DescribeGroups shows it).
    pub client_host: String,
    /// Who is asking, on which listener: the principal an authorizer checks.
    pub session: Arc<Session>,
}

impl RequestContext {
    /// Decodes the request body.
    pub fn decode<T: Decodable>(&self, body: &mut Bytes) -> Result<T, RequestError> {
        T::decode(body, self.version).map_err(|e| RequestError::Malformed {
            api: self.api_key,
            version: self.version,
            reason: e.to_string(),
        })
    }

    /// Encodes a response frame: size, header, body.
    pub fn respond<T: Encodable>(&self, body: &T) -> Result<Bytes, RequestError> {
        encode_frame(self.api_key, self.version, self.correlation_id, body)
    }
}

/// Encodes a full response frame at `version`.
pub fn encode_frame<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, RequestError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(|e| RequestError::Encode {
            api: api_key,
            version,
            reason: e.to_string(),
        })?;
    body.encode(&mut buf, version)
        .map_err(|e| RequestError::Encode {
            api: api_key,
            version,
            reason: e.to_string(),
        })?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| RequestError::Encode {
        api: api_key,
        version,
        reason: "response larger than 2 GiB".into(),
    })?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// A request frame read as far as its header.
pub enum Parsed {
    /// Answered already: an ApiVersions of a version we do not speak (KIP-511).
    Answered(Bytes),
    /// A request to dispatch: its context and its body.
    Request(RequestContext, Bytes),
}

/// Handles one request frame (without its 4-byte size) for `session`.
pub async fn handle(
    broker: &Arc<Broker>,
    frame: Bytes,
    session: &Arc<Session>,
) -> Result<Reply, RequestError> {
    match parse(frame, session)? {
        Parsed::Answered(bytes) => Ok(Reply::Now(bytes)),
        Parsed::Request(ctx, body) => dispatch(broker, ctx, body).await,
    }
}

/// Reads a frame's API key, version and header; refuses what we do not implement.
pub fn parse(frame: Bytes, session: &Arc<Session>) -> Result<Parsed, RequestError> {
    let (Some(key), Some(ver), Some(corr)) = (frame.get(0..2), frame.get(2..4), frame.get(4..8))
    else {
        return Err(RequestError::Truncated(frame.len()));
    };
    let api_key_raw = i16::from_be_bytes([key[0], key[1]]);
    let version = i16::from_be_bytes([ver[0], ver[1]]);
    let correlation_id = i32::from_be_bytes([corr[0], corr[1], corr[2], corr[3]]);

    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|_| RequestError::UnknownApiKey(api_key_raw))?;
    let supported = supported_versions(api_key);
    let in_range = supported.is_some_and(|(min, max)| version >= min && version <= max);
    if !in_range {
        if api_key == ApiKey::ApiVersions {
            // KIP-511: answer in the v0 format with UNSUPPORTED_VERSION and our versions, so
            // the client can retry with one we know.
            return Ok(Parsed::Answered(
                api_versions::unsupported_version_response(correlation_id)?,
            ));
        }
        return Err(RequestError::UnsupportedVersion {
            api: api_key,
            version,
        });
    }

    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api_key.request_header_version(version))
        .map_err(|e| RequestError::Malformed {
            api: api_key,
            version,
            reason: e.to_string(),
        })?;
    let ctx = RequestContext {
        api_key,
        version,
        correlation_id,
        client_id: header.client_id.as_ref().map(|s| s.to_string()),
        client_host: format!("/{}", session.client_address.ip()),
        session: session.clone(),
    };
    tracing::trace!(api = ?api_key, version, correlation_id, client_id = ?ctx.client_id, principal = %session.principal, "request");
    Ok(Parsed::Request(ctx, body))
}

/// Runs the handler of a parsed request. SaslHandshake and SaslAuthenticate are the
/// connection's business (`server/connection.rs`) and never get here; every request that does
/// was admitted by the connection's authenticator and carries its `Session` in `ctx`, which is
/// what an authorizer (ACLs) will check, here or in the handlers, per Kafka's operation table.
pub async fn dispatch(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    body: Bytes,
) -> Result<Reply, RequestError> {
    let version = ctx.version;
    let api_key = ctx.api_key;
    match api_key {
        ApiKey::ApiVersions => api_versions::handle(&ctx, body).map(Reply::Now),
        ApiKey::Metadata => metadata::handle(broker, &ctx, body).await.map(Reply::Now),
        ApiKey::Produce => produce::handle(broker, &ctx, body).await,
        ApiKey::Fetch => fetch::handle(broker, &ctx, body),
        ApiKey::ListOffsets => list_offsets::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::CreateTopics => create_topics::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::DeleteTopics => delete_topics::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::CreatePartitions => create_partitions::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::DescribeConfigs => describe_configs::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::IncrementalAlterConfigs => incremental_alter_configs::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::DescribeCluster => describe_cluster::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::DescribeLogDirs => describe_log_dirs::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::DeleteRecords => delete_records::handle(broker, &ctx, body),
        ApiKey::FindCoordinator => find_coordinator::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::JoinGroup => join_group::handle(broker, &ctx, body),
        ApiKey::SyncGroup => sync_group::handle(broker, &ctx, body),
        ApiKey::Heartbeat => heartbeat::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::LeaveGroup => leave_group::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::OffsetCommit => offset_commit::handle(broker, &ctx, body),
        ApiKey::OffsetFetch => offset_fetch::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::ListGroups => list_groups::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::DescribeGroups => describe_groups::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::DeleteGroups => delete_groups::handle(broker, &ctx, body),
        ApiKey::OffsetDelete => offset_delete::handle(broker, &ctx, body),
        ApiKey::AlterPartitionReassignments => partition_reassignments::alter(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::ListPartitionReassignments => {
            partition_reassignments::list(broker, &ctx, body).map(Reply::Now)
        }
        ApiKey::ElectLeaders => elect_leaders::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::OffsetForLeaderEpoch => {
            offset_for_leader_epoch::handle(broker, &ctx, body).map(Reply::Now)
        }
        ApiKey::InitProducerId => init_producer_id::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::AddPartitionsToTxn => add_partitions_to_txn::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::EndTxn => end_txn::handle(broker, &ctx, body).await.map(Reply::Now),
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::TxnOffsetCommit => txn_offset_commit::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::DescribeProducers => describe_producers::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::DescribeTransactions => {
            describe_transactions::handle(broker, &ctx, body).map(Reply::Now)
        }
        ApiKey::ListTransactions => list_transactions::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::DescribeUserScramCredentials => {
            describe_user_scram_credentials::handle(broker, &ctx, body).map(Reply::Now)
        }
        ApiKey::AlterUserScramCredentials => {
            alter_user_scram_credentials::handle(broker, &ctx, body)
                .await
                .map(Reply::Now)
        }
        ApiKey::DescribeClientQuotas => {
            describe_client_quotas::handle(broker, &ctx, body).map(Reply::Now)
        }
        ApiKey::AlterClientQuotas => alter_client_quotas::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::CreateAcls => create_acls::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        ApiKey::DescribeAcls => describe_acls::handle(broker, &ctx, body).map(Reply::Now),
        ApiKey::DeleteAcls => delete_acls::handle(broker, &ctx, body)
            .await
            .map(Reply::Now),
        other => Err(RequestError::UnsupportedVersion {
            api: other,
            version,
        }),
    }
}

/// A `StrBytes` from a string.
pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The current wall-clock time in ms since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
