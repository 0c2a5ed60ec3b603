//! Transactions for operators (Kafka's `kafka-transactions.sh`): the open and recent
//! transactions of every coordinator (ListTransactions), one transactional id's state
//! (DescribeTransactions, asked of its coordinator), and the producers writing to a partition
//! with the first offset of each one's open transaction (DescribeProducers, asked of the
//! partition's leader) — what a stuck last stable offset is traced to.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, ProducerId,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::Admin;
use crate::coordinator::find_transaction_coordinator;
use crate::error::{check, ClientError, Result};
use crate::offsets::topic_name;
use crate::retry::with_retries;
use crate::types::TopicPartition;

/// One transactional id as a coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    /// The transactional id.
    pub transactional_id: String,
    /// Its current producer id.
    pub producer_id: i64,
    /// Kafka's state name: `Empty`, `Ongoing`, `PrepareCommit`, `PrepareAbort`,
    /// `CompleteCommit`, `CompleteAbort`, `Dead`, `PrepareEpochFence`.
    pub state: String,
    /// The broker coordinating it.
    pub coordinator: i32,
}

/// Which transactions [`Admin::list_transactions`] returns; empty filters match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionFilter {
    /// Only these states.
    pub states: Vec<String>,
    /// Only these producer ids.
    pub producer_ids: Vec<i64>,
    /// Only transactions running longer than this many ms (brokers with ListTransactions v1).
    pub running_longer_than_ms: Option<i64>,
}

/// One transactional id as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    /// The transactional id.
    pub transactional_id: String,
    /// The broker coordinating it.
    pub coordinator: i32,
    /// Kafka's state name (see [`TransactionListing::state`]).
    pub state: String,
    /// Producer id and epoch.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// `transaction.timeout.ms` the producer asked for.
    pub timeout_ms: i32,
    /// When the open transaction started (ms since the epoch; -1 without one).
    pub start_time_ms: i64,
    /// The partitions in the open transaction.
    pub partitions: Vec<TopicPartition>,
}

/// One producer writing to a partition, as its leader describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i32,
    /// The last sequence number written.
    pub last_sequence: i32,
    /// Timestamp of its last write (ms since the epoch).
    pub last_timestamp: i64,
    /// The coordinator epoch of its last transaction marker (-1: none).
    pub coordinator_epoch: i32,
    /// First offset of its open transaction in this partition (-1: none open).
    pub current_txn_start_offset: i64,
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

impl Admin {
    /// Every transaction the brokers coordinate that matches `filter`, sorted by id.
    pub async fn list_transactions(
        &self,
        filter: &TransactionFilter,
    ) -> Result<Vec<TransactionListing>> {
        let metadata = self.cluster.refresh_metadata(Some(&[])).await?;
        let mut nodes: Vec<i32> = metadata.brokers.keys().copied().collect();
        nodes.sort_unstable();
        let request = ListTransactionsRequest::default()
            .with_state_filters(filter.states.iter().map(|state| s(state)).collect())
            .with_producer_id_filters(
                filter
                    .producer_ids
                    .iter()
                    .map(|id| ProducerId(*id))
                    .collect(),
            )
            .with_duration_filter(filter.running_longer_than_ms.unwrap_or(-1));
        let mut listings = Vec::new();
        for node in nodes {
            let (version, response) = self.cluster.send_to(node, &request).await?;
            if filter.running_longer_than_ms.is_some() && version < 1 {
                return Err(ClientError::UnsupportedVersion {
                    api: "ListTransactions",
                    broker: format!("node {node}"),
                    needed: "v1 (a duration filter)".to_string(),
                    offered: "v0".to_string(),
                });
            }
            check(
                "ListTransactions",
                || format!("broker {node}"),
                response.error_code,
                None,
            )?;
            listings.extend(
                response
                    .transaction_states
                    .into_iter()
                    .map(|t| TransactionListing {
                        transactional_id: t.transactional_id.0.to_string(),
                        producer_id: t.producer_id.0,
                        state: t.transaction_state.to_string(),
                        coordinator: node,
                    }),
            );
        }
        listings.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(listings)
    }

    /// Describes transactional ids, each asked of its coordinator.
    pub async fn describe_transactions(
        &self,
        transactional_ids: &[&str],
    ) -> Result<Vec<TransactionDescription>> {
        let mut descriptions = Vec::with_capacity(transactional_ids.len());
        for id in transactional_ids {
            let (coordinator, state) =
                with_retries(&self.cluster, "DescribeTransactions", || async {
                    let coordinator = find_transaction_coordinator(&self.cluster, id).await?;
                    let request = DescribeTransactionsRequest::default()
                        .with_transactional_ids(vec![TransactionalId(s(id))]);
                    let (_, response) = self.cluster.send_to(coordinator, &request).await?;
                    let state =
                        response
                            .transaction_states
                            .into_iter()
                            .next()
                            .ok_or_else(|| ClientError::Protocol {
                                api: "DescribeTransactions",
                                reason: format!("no answer for {id}"),
                            })?;
                    check(
                        "DescribeTransactions",
                        || id.to_string(),
                        state.error_code,
                        None,
                    )?;
                    Ok((coordinator, state))
                })
                .await?;
            let partitions = state
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
                })
                .collect();
            descriptions.push(TransactionDescription {
                transactional_id: id.to_string(),
                coordinator,
                state: state.transaction_state.to_string(),
                producer_id: state.producer_id.0,
                producer_epoch: state.producer_epoch,
                timeout_ms: state.transaction_timeout_ms,
                start_time_ms: state.transaction_start_time_ms,
                partitions,
            });
        }
        Ok(descriptions)
    }

    /// The active producers of each partition, asked of the partition's leader.
    pub async fn describe_producers(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Vec<ProducerState>>> {
        let by_leader = self
            .by_leader(
                "DescribeProducers",
                3, // UNKNOWN_TOPIC_OR_PARTITION
                partitions.iter().map(|tp| (tp, tp.partition)),
            )
            .await?;
        let mut described = BTreeMap::new();
        for (leader, topics) in by_leader {
            let request = DescribeProducersRequest::default().with_topics(
                topics
                    .into_iter()
                    .map(|(name, indexes)| {
                        TopicRequest::default()
                            .with_name(topic_name(name))
                            .with_partition_indexes(indexes)
                    })
                    .collect(),
            );
            let (_, response) = self.cluster.send_to(leader, &request).await?;
            for topic in response.topics {
                for partition in topic.partitions {
                    let tp = TopicPartition::new(topic.name.0.as_str(), partition.partition_index);
                    check(
                        "DescribeProducers",
                        || tp.to_string(),
                        partition.error_code,
                        partition.error_message.as_ref(),
                    )?;
                    let producers = partition
                        .active_producers
                        .into_iter()
                        .map(|p| ProducerState {
                            producer_id: p.producer_id.0,
                            producer_epoch: p.producer_epoch,
                            last_sequence: p.last_sequence,
                            last_timestamp: p.last_timestamp,
                            coordinator_epoch: p.coordinator_epoch,
                            current_txn_start_offset: p.current_txn_start_offset,
                        })
                        .collect();
                    described.insert(tp, producers);
                }
            }
        }
        Ok(described)
    }
}
