//! Finding a consumer group's coordinator (FindCoordinator).

use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest};
use kafka_protocol::protocol::StrBytes;

use crate::error::{check, Result};
use crate::network::cluster::Cluster;
use crate::retry::with_retries;

/// The node id of the broker coordinating `group`, retried while the coordinator is loading
/// or not yet available.
pub(crate) async fn find_group_coordinator(cluster: &Cluster, group: &str) -> Result<i32> {
    with_retries(cluster, "FindCoordinator", || async {
        let connection = cluster.any_connection().await?;
        let version = connection.version(ApiKey::FindCoordinator)?;
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let response = connection
            .send_at(&request, version, cluster.config.request_timeout)
            .await?;
        check(
            "FindCoordinator",
            || format!("group {group}"),
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
