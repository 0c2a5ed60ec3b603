//! `millrace transactions list|describe|describe-producers`, as Kafka's
//! `kafka-transactions.sh`: which transactions are open where, one transactional id's state,
//! and which producer holds a partition's last stable offset back.

use clap::Subcommand;
use millrace_client::admin::TransactionFilter;
use millrace_client::TopicPartition;

use super::ConnectArgs;

/// Transaction administration.
#[derive(Subcommand, Debug)]
pub enum TransactionsCommand {
    /// List the transactional ids every broker coordinates (tab-separated: id, coordinator,
    /// producer id, state).
    List {
        /// Only transactions in this state (`Ongoing`, `PrepareCommit`, `CompleteAbort`, ...;
        /// repeatable).
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only this producer id (repeatable).
        #[arg(long = "producer-id", value_name = "ID")]
        producer_ids: Vec<i64>,
        /// Only transactions running longer than this many ms.
        #[arg(long = "duration-filter", value_name = "MS")]
        duration_ms: Option<i64>,
    },
    /// Show one transactional id: coordinator, state, producer id and epoch, timeout, start
    /// time and the partitions of its open transaction.
    Describe {
        /// The transactional id.
        #[arg(long = "transactional-id", value_name = "ID")]
        transactional_id: String,
    },
    /// Show the producers writing to a partition and the first offset of each one's open
    /// transaction (the offset the last stable offset waits at).
    DescribeProducers {
        /// Topic.
        #[arg(long, short = 't')]
        topic: String,
        /// Partition.
        #[arg(long, short = 'p')]
        partition: i32,
    },
}

/// Runs a `transactions` subcommand.
pub async fn run(connect: &ConnectArgs, command: TransactionsCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        TransactionsCommand::List {
            states,
            producer_ids,
            duration_ms,
        } => {
            let filter = TransactionFilter {
                states,
                producer_ids,
                running_longer_than_ms: duration_ms,
            };
            println!("TransactionalId\tCoordinator\tProducerId\tState");
            for t in admin.list_transactions(&filter).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    t.transactional_id, t.coordinator, t.producer_id, t.state
                );
            }
        }
        TransactionsCommand::Describe { transactional_id } => {
            let described = admin
                .describe_transactions(&[transactional_id.as_str()])
                .await?;
            for d in described {
                let partitions: Vec<String> =
                    d.partitions.iter().map(ToString::to_string).collect();
                println!("TransactionalId:   {}", d.transactional_id);
                println!("Coordinator:       {}", d.coordinator);
                println!("State:             {}", d.state);
                println!("ProducerId:        {}", d.producer_id);
                println!("ProducerEpoch:     {}", d.producer_epoch);
                println!("TimeoutMs:         {}", d.timeout_ms);
                println!(
                    "StartTimeMs:       {}",
                    if d.start_time_ms < 0 {
                        "-".to_string()
                    } else {
                        d.start_time_ms.to_string()
                    }
                );
                println!(
                    "Partitions:        {}",
                    if partitions.is_empty() {
                        "-".to_string()
                    } else {
                        partitions.join(",")
                    }
                );
            }
        }
        TransactionsCommand::DescribeProducers { topic, partition } => {
            let tp = TopicPartition::new(topic.as_str(), partition);
            let described = admin.describe_producers(std::slice::from_ref(&tp)).await?;
            println!("ProducerId\tProducerEpoch\tLastSequence\tLastTimestamp\tCoordinatorEpoch\tCurrentTransactionStartOffset");
            for p in described.get(&tp).into_iter().flatten() {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    p.producer_id,
                    p.producer_epoch,
                    p.last_sequence,
                    p.last_timestamp,
                    p.coordinator_epoch,
                    if p.current_txn_start_offset < 0 {
                        "None".to_string()
                    } else {
                        p.current_txn_start_offset.to_string()
                    }
                );
            }
        }
    }
    Ok(())
}
