//! The topic a benchmark writes to: created with the replication asked for, or, when it
//! exists already, checked to have it (figures for RF=1 taken from an RF=3 topic would be
//! silently wrong).

use anyhow::Context;
use millrace_client::admin::NewTopic;
use millrace_client::Admin;

/// Replication options shared by the benchmarks that create their topic.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Replication {
    /// Replication factor of the topic if it has to be created (default: the broker's
    /// `default.replication.factor`); an existing topic must have this one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i16).range(1..))]
    pub replication_factor: Option<i16>,
    /// The topic's `min.insync.replicas` if it has to be created (acks=all writes need this
    /// many in-sync replicas); an existing topic must have this one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub min_insync_replicas: Option<u16>,
}

impl Replication {
    /// Refuses combinations every acks=all write would fail with.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let (Some(rf), Some(min)) = (self.replication_factor, self.min_insync_replicas) {
            anyhow::ensure!(
                i32::from(min) <= i32::from(rf),
                "--min-insync-replicas {min} is more than --replication-factor {rf}: every \
                 acks=all write would fail with NOT_ENOUGH_REPLICAS"
            );
        }
        Ok(())
    }
}

/// Creates `topic` with `partitions` partitions and `replication`, or checks that the
/// existing topic has that replication.
pub async fn ensure(
    admin: &Admin,
    topic: &str,
    partitions: i32,
    replication: &Replication,
) -> anyhow::Result<()> {
    replication.validate()?;
    let Ok(described) = admin.describe_topics(&[topic]).await else {
        let mut new = NewTopic::new(topic, partitions);
        if let Some(rf) = replication.replication_factor {
            new = new.replication_factor(rf);
        }
        if let Some(min) = replication.min_insync_replicas {
            new = new.config("min.insync.replicas", min.to_string());
        }
        return admin
            .create_topic(new)
            .await
            .with_context(|| format!("creating topic `{topic}`"));
    };
    if let Some(rf) = replication.replication_factor {
        let actual = described
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.replicas.len())
            .max()
            .unwrap_or(0);
        anyhow::ensure!(
            actual == rf as usize,
            "topic `{topic}` exists with replication factor {actual}, not \
             --replication-factor {rf}; choose another --topic or delete it"
        );
    }
    if let Some(min) = replication.min_insync_replicas {
        let configs = admin
            .describe_topic_config(topic)
            .await
            .with_context(|| format!("reading the configs of topic `{topic}`"))?;
        let actual = configs
            .iter()
            .find(|c| c.name == "min.insync.replicas")
            .and_then(|c| c.value.as_deref())
            .unwrap_or("1");
        anyhow::ensure!(
            actual.trim() == min.to_string(),
            "topic `{topic}` exists with min.insync.replicas={actual}, not \
             --min-insync-replicas {min}; choose another --topic or delete it"
        );
    }
    Ok(())
}
