//! DescribeCluster: cluster id, controller and brokers.

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::access::Access;
use super::metadata::client_endpoint;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::NONE;
use crate::security::authorizer::{AclOperation, Resource};

/// Answers a DescribeCluster request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeClusterRequest = ctx.decode(&mut body)?;
    // Fenced brokers are listed only when asked for (v2's include_fenced_brokers).
    let brokers = broker.controller.with_image(|image| {
        image
            .brokers()
            .filter(|b| !b.fenced || request.include_fenced_brokers)
            .filter_map(|b| {
                let endpoint = client_endpoint(b, &ctx.session.listener_name)?;
                Some(
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.broker_id))
                        .with_host(str_bytes(endpoint.host.clone()))
                        .with_port(i32::from(endpoint.port))
                        .with_rack(b.rack.clone().map(str_bytes))
                        .with_is_fenced(b.fenced),
                )
            })
            .collect::<Vec<_>>()
    });
    // KIP-430: the operations the principal may do on the cluster, when asked.
    let authorized_operations = if request.include_cluster_authorized_operations {
        let access = Access::new(broker, ctx);
        if access.allowed(AclOperation::Describe, Resource::cluster()) {
            access.authorized_operations(Resource::cluster())
        } else {
            0
        }
    } else {
        i32::MIN
    };
    let response = DescribeClusterResponse::default()
        .with_throttle_time_ms(0)
        .with_cluster_authorized_operations(authorized_operations)
        .with_error_code(NONE)
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(broker.controller.cluster_id()))
        .with_controller_id(BrokerId(broker.controller.controller_id_for_clients()))
        .with_brokers(brokers);
    ctx.respond(&response)
}
