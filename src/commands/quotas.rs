//! `millrace quotas alter|describe`: client quotas per user and client id, with the options
//! of Kafka's `kafka-configs.sh --entity-type users|clients` (`--entity-name`,
//! `--entity-default`, `--add-config`, `--delete-config`).

use anyhow::{bail, Context};
use millrace_client::admin::{QuotaAlteration, QuotaEntityPart, QuotaMatch};

use super::ConnectArgs;

/// Which entity: a user and/or a client id, each named or the default.
#[derive(clap::Args, Debug)]
pub struct EntityArgs {
    /// The user (a SASL user name or a certificate's subject).
    #[arg(long, conflicts_with = "user_default")]
    pub user: Option<String>,
    /// The default user (every user without a quota of its own).
    #[arg(long)]
    pub user_default: bool,
    /// The client id.
    #[arg(long, conflicts_with = "client_default")]
    pub client_id: Option<String>,
    /// The default client id.
    #[arg(long)]
    pub client_default: bool,
}

impl EntityArgs {
    fn parts(&self) -> Vec<QuotaEntityPart> {
        let mut parts = Vec::new();
        if self.user.is_some() || self.user_default {
            parts.push(("user".to_string(), self.user.clone()));
        }
        if self.client_id.is_some() || self.client_default {
            parts.push(("client-id".to_string(), self.client_id.clone()));
        }
        parts
    }
}

/// `millrace quotas ...`.
#[derive(clap::Subcommand, Debug)]
pub enum QuotasCommand {
    /// Set or remove an entity's quotas (`producer_byte_rate`, `consumer_byte_rate`,
    /// `request_percentage`).
    Alter {
        #[command(flatten)]
        entity: EntityArgs,
        /// Quotas to set: KEY=VALUE[,KEY=VALUE...].
        #[arg(long, value_name = "KEY=VALUE,...")]
        add_config: Option<String>,
        /// Quotas to remove: KEY[,KEY...].
        #[arg(long, value_name = "KEY,...")]
        delete_config: Option<String>,
    },
    /// Show quotas: of one entity, or of every entity when none is named (one line each:
    /// entity, then KEY=VALUE).
    Describe {
        #[command(flatten)]
        entity: EntityArgs,
    },
}

/// Runs a `quotas` subcommand.
pub async fn run(connect: &ConnectArgs, command: QuotasCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        QuotasCommand::Alter {
            entity,
            add_config,
            delete_config,
        } => {
            let parts = entity.parts();
            if parts.is_empty() {
                bail!("name an entity: --user NAME, --user-default, --client-id ID or --client-default");
            }
            let mut ops = Vec::new();
            for pair in add_config.iter().flat_map(|c| c.split(',')) {
                let (key, value) = pair
                    .split_once('=')
                    .with_context(|| format!("`{pair}` is not KEY=VALUE"))?;
                let value: f64 = value
                    .trim()
                    .parse()
                    .with_context(|| format!("`{value}` (of {key}) is not a number"))?;
                ops.push((key.trim().to_string(), Some(value)));
            }
            for key in delete_config.iter().flat_map(|c| c.split(',')) {
                ops.push((key.trim().to_string(), None));
            }
            if ops.is_empty() {
                bail!("nothing to change: give --add-config and/or --delete-config");
            }
            admin
                .alter_client_quotas(&[QuotaAlteration { entity: parts, ops }])
                .await?;
            println!("quotas changed");
        }
        QuotasCommand::Describe { entity } => {
            let filter: Vec<QuotaMatch> = entity
                .parts()
                .into_iter()
                .map(|(kind, name)| match name {
                    Some(name) => QuotaMatch::Exact(kind, name),
                    None => QuotaMatch::Default(kind),
                })
                .collect();
            let strict = !filter.is_empty();
            for (parts, values) in admin.describe_client_quotas(&filter, strict).await? {
                let entity: Vec<String> = parts
                    .iter()
                    .map(|(kind, name)| {
                        format!("{kind}={}", name.as_deref().unwrap_or("<default>"))
                    })
                    .collect();
                let values: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{}\t{}", entity.join(","), values.join(","));
            }
        }
    }
    Ok(())
}
