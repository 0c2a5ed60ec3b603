//! One module per `millrace` subcommand. Each parses nothing itself (clap does) and holds no
//! logic beyond calling the crates and printing their results.

pub mod acls;
pub mod bench;
pub mod cluster;
pub mod connect;
pub mod consume;
pub mod dashboard;
pub mod demo;
pub mod export;
pub mod groups;
pub mod produce;
pub mod progress;
pub mod quotas;
pub mod sql;
pub mod topics;
pub mod transactions;
pub mod users;

use std::collections::BTreeMap;

use millrace_client::{Admin, ClientConfig, ClientError, OffsetSpec, TopicPartition};

/// Options every client command takes.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Broker to bootstrap from (a comma-separated list is fine).
    #[arg(
        long,
        short = 'b',
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// Give up (non-zero exit) when the cluster makes no progress for this many seconds,
    /// saying what it answered meanwhile.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, global = true)]
    pub timeout: u64,
    /// A client setting with Kafka's name, as kcat's `-X`: `-X security.protocol=SASL_SSL
    /// -X sasl.mechanism=SCRAM-SHA-512 -X sasl.username=alice -X sasl.password=...`.
    /// Repeatable; wins over `--command-config`.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = key_value, global = true)]
    pub properties: Vec<(String, String)>,
    /// A file of client settings, one `key=value` per line (`#` comments), as Kafka's tools'
    /// `--command-config`; keeps the password off the command line.
    #[arg(long, value_name = "FILE", global = true)]
    pub command_config: Option<std::path::PathBuf>,
}

impl ConnectArgs {
    /// The client configuration for these options.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut builder = ClientConfig::builder(self.bootstrap.split(',').map(str::trim))
            .client_id("millrace-cli");
        for (name, value) in self.settings()? {
            builder = builder.set(&name, &value)?;
        }
        Ok(builder.build()?)
    }

    /// The client settings of `--command-config`, then `-X`, in that order.
    pub fn settings(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut settings = Vec::new();
        if let Some(path) = &self.command_config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--command-config {}: {e}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let (name, value) = key_value(line).map_err(|e| {
                    anyhow::anyhow!(
                        "--command-config {} line {}: {e}",
                        path.display(),
                        number + 1
                    )
                })?;
                settings.push((name, value.trim().to_string()));
            }
        }
        settings.extend(self.properties.iter().cloned());
        Ok(settings)
    }

    /// How long a command waits without progress before it gives up.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout.max(1))
    }

    /// An admin client.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        Ok(Admin::connect(self.client_config()?).await?)
    }
}

/// Parses `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// The offsets `spec` names for each partition (-1 where the broker had none).
pub async fn list_offsets(
    admin: &Admin,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    let specs: Vec<(TopicPartition, OffsetSpec)> =
        partitions.iter().map(|tp| (tp.clone(), spec)).collect();
    Ok(admin
        .list_offsets(&specs)
        .await?
        .into_iter()
        .map(|(tp, o)| (tp, o.offset))
        .collect())
}

/// True when the broker lacks an API (or every version of it this client speaks). The
/// commands work against any Kafka-protocol broker: where such an API only adds an extra
/// (sizes, configs, group members, idempotence), they skip the extra with a note instead of
/// failing.
pub fn is_unsupported(error: &ClientError) -> bool {
    matches!(error, ClientError::UnsupportedVersion { .. })
}
