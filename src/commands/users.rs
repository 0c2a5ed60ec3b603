//! `millrace users`: SCRAM users of the cluster. Passwords are salted and iterated by the
//! client; only the salted password travels (AlterUserScramCredentials), and the cluster
//! stores the derived keys in its metadata log.

use millrace_client::network::SaslMechanism;

use super::ConnectArgs;

/// `millrace users ...`.
#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Add a user, or change its password, for one or more SCRAM mechanisms.
    Add {
        /// The user name.
        name: String,
        /// The password; read from the MILLRACE_USER_PASSWORD environment variable when
        /// absent, so it need not appear in the process list.
        #[arg(long)]
        password: Option<String>,
        /// Mechanisms to set (repeatable).
        #[arg(long = "mechanism", value_parser = parse_mechanism, default_values = ["SCRAM-SHA-256", "SCRAM-SHA-512"])]
        mechanisms: Vec<SaslMechanism>,
        /// PBKDF2 iterations (Kafka accepts 4096 to 16384).
        #[arg(long, default_value_t = 8192)]
        iterations: i32,
    },
    /// Delete a user's credentials for one or more mechanisms.
    Delete {
        /// The user name.
        name: String,
        /// Mechanisms to delete (repeatable; default both).
        #[arg(long = "mechanism", value_parser = parse_mechanism, default_values = ["SCRAM-SHA-256", "SCRAM-SHA-512"])]
        mechanisms: Vec<SaslMechanism>,
    },
    /// List users with their mechanisms and iterations.
    List,
}

fn parse_mechanism(value: &str) -> Result<SaslMechanism, String> {
    match value.to_ascii_uppercase().as_str() {
        "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
        "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
        _ => Err(format!(
            "`{value}`: expected SCRAM-SHA-256 or SCRAM-SHA-512"
        )),
    }
}

/// Runs a `users` subcommand.
pub async fn run(connect: &ConnectArgs, command: UsersCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        UsersCommand::Add {
            name,
            password,
            mechanisms,
            iterations,
        } => {
            let password = match password {
                Some(password) => password,
                None => std::env::var("MILLRACE_USER_PASSWORD").map_err(|_| {
                    anyhow::anyhow!("give --password or set MILLRACE_USER_PASSWORD")
                })?,
            };
            for mechanism in mechanisms {
                admin
                    .upsert_scram_credential(&name, mechanism, &password, iterations)
                    .await?;
                println!("set {} credential of user {name}", mechanism.name());
            }
        }
        UsersCommand::Delete { name, mechanisms } => {
            for mechanism in mechanisms {
                admin.delete_scram_credential(&name, mechanism).await?;
                println!("deleted {} credential of user {name}", mechanism.name());
            }
        }
        UsersCommand::List => {
            let users = admin.describe_scram_users().await?;
            println!("{:<24} MECHANISMS", "USER");
            for (name, mechanisms) in users {
                let listed: Vec<String> = mechanisms
                    .iter()
                    .map(|(mechanism, iterations)| format!("{mechanism} (iterations {iterations})"))
                    .collect();
                println!("{name:<24} {}", listed.join(", "));
            }
        }
    }
    Ok(())
}
