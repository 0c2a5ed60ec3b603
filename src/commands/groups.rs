//! `millrace groups list|describe|reset-offsets|delete`.

use std::collections::HashMap;

use clap::Subcommand;
use millrace_client::{OffsetSpec, TopicPartition};

use super::{is_unsupported, list_offsets, ConnectArgs};

/// Consumer group administration.
#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// List consumer groups.
    List,
    /// Show a group's state, members and lag per partition.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets (the group must have no active members). Shows the
    /// plan; changes nothing without --execute, like Kafka's tool.
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose offsets to reset (all of its partitions).
        #[arg(long, short = 't')]
        topic: String,
        /// To the log start.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// To the log end.
        #[arg(long, group = "target")]
        to_latest: bool,
        /// To this offset.
        #[arg(long, group = "target", value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// To the first offset at or after this time (ms since the epoch).
        #[arg(long, group = "target", value_name = "MS")]
        to_time: Option<i64>,
        /// Move each committed offset by N (negative: back).
        #[arg(long, group = "target", value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Apply the plan.
        #[arg(long)]
        execute: bool,
    },
    /// Delete groups (they must have no active members).
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

/// Runs a `groups` subcommand.
pub async fn run(connect: &ConnectArgs, command: GroupsCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        GroupsCommand::List => {
            let mut groups = admin.list_groups().await?;
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            for g in groups {
                println!(
                    "{}\t{}\t{}",
                    g.group_id,
                    g.state.as_deref().unwrap_or("?"),
                    g.protocol_type
                );
            }
        }
        GroupsCommand::Describe { group } => {
            // State and members come from DescribeGroups; the lag (OffsetFetch and
            // ListOffsets) does not need it, so a broker without it still shows the lag.
            let members = match admin.describe_groups(&[group.as_str()]).await {
                Ok(described) => {
                    let Some(d) = described.into_iter().next() else {
                        anyhow::bail!("group `{group}` does not exist");
                    };
                    if d.state == "Dead" {
                        anyhow::bail!("group `{group}` does not exist");
                    }
                    println!(
                        "group {}  state {}  protocol {}",
                        d.group_id, d.state, d.protocol
                    );
                    d.members
                }
                Err(error) if is_unsupported(&error) => {
                    println!(
                        "group {group}  state and members not reported by this broker ({error})"
                    );
                    Vec::new()
                }
                Err(error) => return Err(error.into()),
            };
            let owner: HashMap<TopicPartition, String> = members
                .iter()
                .flat_map(|m| {
                    m.assignment
                        .iter()
                        .map(move |tp| (tp.clone(), m.client_id.clone()))
                })
                .collect();
            println!("topic\tpartition\tcommitted\tlog-end\tlag\tconsumer");
            let lags = admin.group_lag(&group).await?;
            // Assigned partitions without a commit yet are shown too, with `-` for what is
            // not known, as Kafka's tool does.
            let mut uncommitted: Vec<TopicPartition> = owner
                .keys()
                .filter(|tp| !lags.iter().any(|l| &l.partition == *tp))
                .cloned()
                .collect();
            uncommitted.sort();
            let ends = if uncommitted.is_empty() {
                Default::default()
            } else {
                list_offsets(&admin, &uncommitted, OffsetSpec::Latest).await?
            };
            for tp in &uncommitted {
                println!(
                    "{}\t{}\t-\t{}\t-\t{}",
                    tp.topic,
                    tp.partition,
                    ends.get(tp).copied().unwrap_or(-1),
                    owner.get(tp).map_or("-", String::as_str)
                );
            }
            for lag in lags {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    lag.partition.topic,
                    lag.partition.partition,
                    lag.committed,
                    lag.log_end,
                    lag.lag,
                    owner.get(&lag.partition).map_or("-", String::as_str)
                );
            }
            if !members.is_empty() {
                println!("members:");
                for m in &members {
                    let assigned: Vec<String> =
                        m.assignment.iter().map(ToString::to_string).collect();
                    println!(
                        "  {} ({} {}) {}",
                        m.member_id,
                        m.client_id,
                        m.client_host,
                        assigned.join(",")
                    );
                }
            }
        }
        GroupsCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_time,
            shift_by,
            execute,
        } => {
            let described = admin.describe_topics(&[topic.as_str()]).await?;
            let Some(t) = described.into_iter().next() else {
                anyhow::bail!("topic `{topic}` does not exist");
            };
            let partitions: Vec<TopicPartition> = t
                .partitions
                .iter()
                .map(|p| TopicPartition::new(&topic, p.id))
                .collect();
            let earliest = list_offsets(&admin, &partitions, OffsetSpec::Earliest).await?;
            let latest = list_offsets(&admin, &partitions, OffsetSpec::Latest).await?;
            let committed = admin.list_group_offsets(&group).await?;
            let mut plan: HashMap<TopicPartition, i64> = HashMap::new();
            let by_time = match to_time {
                Some(ms) => {
                    Some(list_offsets(&admin, &partitions, OffsetSpec::Timestamp(ms)).await?)
                }
                None => None,
            };
            for tp in &partitions {
                let low = earliest.get(tp).copied().unwrap_or(0);
                let high = latest.get(tp).copied().unwrap_or(0);
                let target = if to_earliest {
                    low
                } else if to_latest {
                    high
                } else if let Some(o) = to_offset {
                    o
                } else if let Some(found) = &by_time {
                    // No record at or after the time: the end, as Kafka's tool does.
                    found.get(tp).copied().filter(|o| *o >= 0).unwrap_or(high)
                } else if let Some(n) = shift_by {
                    committed.get(tp).copied().unwrap_or(low) + n
                } else {
                    anyhow::bail!("give one of --to-earliest, --to-latest, --to-offset, --to-time, --shift-by");
                };
                plan.insert(tp.clone(), target.clamp(low, high));
            }
            let mut rows: Vec<_> = plan.iter().collect();
            rows.sort();
            println!("topic\tpartition\tcurrent\tnew");
            for (tp, new) in rows {
                let current = committed
                    .get(tp)
                    .map_or("-".to_string(), ToString::to_string);
                println!("{}\t{}\t{}\t{}", tp.topic, tp.partition, current, new);
            }
            if execute {
                admin
                    .alter_group_offsets(&group, &plan)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("{e} (is the group still active? stop its consumers first)")
                    })?;
                println!("offsets reset");
            } else {
                println!("(dry run: add --execute to apply)");
            }
        }
        GroupsCommand::Delete { groups } => {
            let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
            admin.delete_groups(&refs).await?;
            for g in groups {
                println!("deleted group {g}");
            }
        }
    }
    Ok(())
}
