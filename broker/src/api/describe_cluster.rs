//! DescribeCluster: cluster id, controller and brokers.

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::NONE;

/// Answers a DescribeCluster request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeClusterRequest = ctx.decode(&mut body)?;
    let node_id = broker.config.node_id;
    let response = DescribeClusterResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(NONE)
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(broker.controller.cluster_id()))
        .with_controller_id(BrokerId(node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(node_id))
            .with_host(str_bytes(broker.config.advertised_host.clone()))
            .with_port(i32::from(broker.config.advertised_port))]);
    ctx.respond(&response)
}
