//! Finding a consumer group's or a transactional id's coordinator (FindCoordinator).

use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest};
use kafka_protocol::protocol::StrBytes;

use crate::error::{check, Result};
use crate::network::cluster::Cluster;
use crate::retry::with_retries;

/// The node id of the broker coordinating `group`, retried while the coordinator is loading
/// or not yet available.
pub(crate) async fn find_group_coordinator(cluster: &Cluster, group: &str) -> Result<i32> {
    find_coordinator(cluster, 0, group).await
}

/// The node id of the broker coordinating `transactional_id` (FindCoordinator key type 1).
pub(crate) async fn find_transaction_coordinator(
    cluster: &Cluster,
    transactional_id: &str,
) -> Result<i32> {
    find_coordinator(cluster, 1, transactional_id).await
}

/// FindCoordinator for `key` of `key_type` (0 group, 1 transactional id), retried while the
/// coordinator is loading or not yet available.
async fn find_coordinator(cluster: &Cluster, key_type: i8, key: &str) -> Result<i32> {
    let kind = if key_type == 0 {
        "group"
    } else {
        "transactional id"
    };
    with_retries(cluster, "FindCoordinator", || async {
        let connection = cluster.any_connection().await?;
        let version = connection.version(ApiKey::FindCoordinator)?;
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(key.to_string()))
            .with_key_type(key_type);
        let response = connection
            .send_at(&request, version, cluster.config.request_timeout)
            .await?;
        check(
            "FindCoordinator",
            || format!("{kind} {key}"),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let node = response.node_id.0;
        // The coordinator may be a broker this client has not seen yet.
        if !cluster.metadata().brokers.contains_key(&node) {
            cluster.refresh_interest().await?;
        }
        Ok(node)
    })
    .await
}
