//! `millrace topics create|list|describe|delete|alter`.

use clap::Subcommand;
use millrace_client::admin::{AlterConfigOp, ConfigSource, NewTopic};
use millrace_client::{OffsetSpec, TopicPartition};

use super::{is_unsupported, key_value, list_offsets, ConnectArgs};

/// Topic administration.
#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (the broker's `num.partitions` if not given).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replication factor (the broker's default if not given).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// A topic setting, with Kafka's name (`--config retention.ms=60000`).
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List {
        /// Include internal topics such as `__consumer_offsets`.
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions, offsets and overridden settings.
    Describe {
        /// Topic name.
        name: String,
        /// Show every setting, not only the overridden ones.
        #[arg(long)]
        all_configs: bool,
    },
    /// Delete topics.
    Delete {
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Change a topic's settings or grow its partition count.
    Alter {
        /// Topic name.
        name: String,
        /// Set a setting (`--config retention.ms=60000`).
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Revert a setting to the broker default.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
        /// New (larger) partition count.
        #[arg(long)]
        partitions: Option<i32>,
    },
}

/// Runs a `topics` subcommand.
pub async fn run(connect: &ConnectArgs, command: TopicsCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut topic = NewTopic::new(&name, partitions.unwrap_or(-1));
            if let Some(r) = replication_factor {
                topic = topic.replication_factor(r);
            }
            for (k, v) in configs {
                topic = topic.config(k, v);
            }
            admin.create_topic(topic).await?;
            println!("created topic {name}");
        }
        TopicsCommand::List { internal } => {
            let mut topics = admin.list_topics(internal).await?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                println!("{}\t{} partitions", t.name, t.partitions);
            }
        }
        TopicsCommand::Describe { name, all_configs } => {
            let described = admin.describe_topics(&[name.as_str()]).await?;
            let Some(topic) = described.into_iter().next() else {
                anyhow::bail!("topic `{name}` does not exist");
            };
            println!("topic {}  id {}", topic.name, hex_id(&topic.id));
            let partitions: Vec<TopicPartition> = topic
                .partitions
                .iter()
                .map(|p| TopicPartition::new(&name, p.id))
                .collect();
            let earliest = list_offsets(&admin, &partitions, OffsetSpec::Earliest).await?;
            let latest = list_offsets(&admin, &partitions, OffsetSpec::Latest).await?;
            // New columns go at the end, so scripts reading the first six keep working.
            println!("partition\tleader\treplicas\tisr\tstart\tend\tepoch\toffline");
            for p in &topic.partitions {
                let tp = TopicPartition::new(&name, p.id);
                println!(
                    "{}\t{}\t{:?}\t{:?}\t{}\t{}\t{}\t{:?}",
                    p.id,
                    p.leader,
                    p.replicas,
                    p.isr,
                    earliest.get(&tp).copied().unwrap_or(-1),
                    latest.get(&tp).copied().unwrap_or(-1),
                    p.leader_epoch,
                    p.offline_replicas
                );
            }
            // Settings are an extra of `describe`: a broker without DescribeConfigs still
            // shows the partitions.
            let configs = match admin.describe_topic_config(&name).await {
                Ok(configs) => configs,
                Err(error) if is_unsupported(&error) => {
                    println!("configs: not reported by this broker ({error})");
                    Vec::new()
                }
                Err(error) => return Err(error.into()),
            };
            let shown: Vec<_> = configs
                .iter()
                .filter(|c| all_configs || c.source == ConfigSource::Topic)
                .collect();
            if !shown.is_empty() {
                println!("configs:");
                for c in shown {
                    println!("  {}={}", c.name, c.value.as_deref().unwrap_or(""));
                }
            }
        }
        TopicsCommand::Delete { names } => {
            // One at a time, so the output says exactly which were deleted when one fails.
            let mut failures = Vec::new();
            for name in &names {
                match admin.delete_topics(&[name.as_str()]).await {
                    Ok(()) => println!("deleted topic {name}"),
                    Err(error) => failures.push(format!("{name}: {error}")),
                }
            }
            if !failures.is_empty() {
                anyhow::bail!("could not delete {}", failures.join("; "));
            }
        }
        TopicsCommand::Alter {
            name,
            configs,
            delete_configs,
            partitions,
        } => {
            if configs.is_empty() && delete_configs.is_empty() && partitions.is_none() {
                anyhow::bail!("nothing to change: give --config, --delete-config or --partitions");
            }
            let mut changes: Vec<AlterConfigOp> = configs
                .into_iter()
                .map(|(k, v)| AlterConfigOp::Set(k, v))
                .collect();
            changes.extend(delete_configs.into_iter().map(AlterConfigOp::Delete));
            if !changes.is_empty() {
                admin.alter_topic_config(&name, changes).await?;
                println!("altered settings of {name}");
            }
            if let Some(count) = partitions {
                admin.create_partitions(&name, count).await?;
                println!("{name} now has {count} partitions");
            }
        }
    }
    Ok(())
}

fn hex_id(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
