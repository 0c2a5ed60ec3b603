//! The `millrace` command line: thin glue over the crates.

mod commands;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use millrace_broker::config::{parse_overrides, read_settings_file};
use millrace_broker::BrokerConfig;

/// Millrace: a real-time analytics pipeline platform that speaks the Kafka protocol.
#[derive(Parser)]
#[command(name = "millrace", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Kafka-protocol broker.
    Broker(BrokerArgs),
    /// Create, list, describe, alter and delete topics.
    Topics {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(subcommand)]
        command: commands::topics::TopicsCommand,
    },
    /// Produce one record per line of stdin.
    Produce {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(flatten)]
        args: commands::produce::ProduceArgs,
    },
    /// Print records of a topic to stdout (from the beginning, the end, an offset or a time;
    /// in a group or not).
    Consume {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(flatten)]
        args: commands::consume::ConsumeArgs,
    },
    /// Measure throughput and latency against a broker.
    Bench {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(subcommand)]
        command: commands::bench::BenchCommand,
    },
    /// List and describe consumer groups, show lag, reset offsets.
    Groups {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(subcommand)]
        command: commands::groups::GroupsCommand,
    },
    /// List and describe transactions and the producers holding a partition's last stable
    /// offset (as kafka-transactions.sh).
    Transactions {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(subcommand)]
        command: commands::transactions::TransactionsCommand,
    },
    /// Export a topic's JSON records to Hive-partitioned Parquet files, once.
    Export {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(flatten)]
        args: commands::export::ExportArgs,
    },
    /// Run the connectors (Parquet sinks) a TOML file declares, until SIGINT or SIGTERM.
    Connect(commands::connect::ConnectCommandArgs),
    /// Run SQL over a Parquet export directory and print the result.
    Sql(commands::sql::SqlArgs),
    /// Serve the web console (topics, lag, messages, SQL) until SIGINT or SIGTERM.
    Dashboard(commands::dashboard::DashboardArgs),
    /// Cluster status (brokers, controller, under-replicated and offline partitions), and a
    /// local cluster of broker processes (`cluster up`).
    Cluster {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(subcommand)]
        command: commands::cluster::ClusterCommand,
    },
    /// Add, delete and list SCRAM users (AlterUserScramCredentials,
    /// DescribeUserScramCredentials), as kafka-configs --entity-type users does.
    Users {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(subcommand)]
        command: commands::users::UsersCommand,
    },
    /// Add, remove and list ACLs (CreateAcls, DeleteAcls, DescribeAcls), as kafka-acls does.
    Acls {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(subcommand)]
        command: commands::acls::AclsCommand,
    },
    /// Set, remove and show client quotas per user and client id (AlterClientQuotas,
    /// DescribeClientQuotas), as kafka-configs --entity-type users|clients does.
    Quotas {
        #[command(flatten)]
        connect: commands::ConnectArgs,
        #[command(subcommand)]
        command: commands::quotas::QuotasCommand,
    },
    /// Run the activity-tracking demo: broker, generator, stream jobs, Parquet export and
    /// dashboard in one process.
    Demo(commands::demo::DemoArgs),
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// Address to listen on [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Directory for partition logs and metadata [default: ./millrace-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML file of settings with Kafka's names (`num.partitions = 3`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A setting that wins over the file, with Kafka's name (`-o log.retention.ms=60000`).
    #[arg(short = 'o', long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(
        if matches!(
            cli.command,
            Command::Broker(_)
                | Command::Connect(_)
                | Command::Dashboard(_)
                | Command::Cluster {
                    command: commands::cluster::ClusterCommand::Up(_),
                    ..
                }
        ) {
            "info"
        } else {
            "warn"
        },
    );
    let result = match cli.command {
        Command::Broker(args) => run_broker(args),
        Command::Topics { connect, command } => {
            run_client(async move { commands::topics::run(&connect, command).await })
        }
        Command::Produce { connect, args } => {
            run_client(async move { commands::produce::run(&connect, args).await })
        }
        Command::Consume { connect, args } => {
            run_client(async move { commands::consume::run(&connect, args).await })
        }
        Command::Bench { connect, command } => {
            run_client(async move { commands::bench::run(&connect, command).await })
        }
        Command::Acls { connect, command } => {
            run_client(async move { commands::acls::run(&connect, command).await })
        }
        Command::Quotas { connect, command } => {
            run_client(async move { commands::quotas::run(&connect, command).await })
        }
        Command::Users { connect, command } => {
            run_client(async move { commands::users::run(&connect, command).await })
        }
        Command::Groups { connect, command } => {
            run_client(async move { commands::groups::run(&connect, command).await })
        }
        Command::Transactions { connect, command } => {
            run_client(async move { commands::transactions::run(&connect, command).await })
        }
        Command::Export { connect, args } => {
            run_client(async move { commands::export::run(&connect, args).await })
        }
        Command::Cluster { connect, command } => match command {
            commands::cluster::ClusterCommand::Status { json } => {
                run_client(async move { commands::cluster::status(&connect, json).await })
            }
            commands::cluster::ClusterCommand::Up(args) => run_client(commands::cluster::up(args)),
        },
        Command::Connect(args) => run_client(commands::connect::run(args)),
        Command::Sql(args) => run_client(commands::sql::run(args)),
        Command::Dashboard(args) => run_client(commands::dashboard::run(args)),
        Command::Demo(args) => run_demo(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a client command on a small runtime.
fn run_client(job: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(job)
}

/// Runs the demo on a runtime with a thread per core: it hosts the broker and every job.
fn run_demo(args: commands::demo::DemoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(commands::demo::run(args))
}

fn init_tracing(default_level: &str) {
    // Client commands print results on stdout; their logs stay quiet unless asked for.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let mut settings = match &args.config {
        Some(path) => read_settings_file(path)?,
        None => Default::default(),
    };
    settings.extend(parse_overrides(&args.overrides)?);
    let config = BrokerConfig::from_settings(&settings, args.listen, args.data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Handlers first: a signal that arrives while the broker starts must still mean a
        // clean stop, not the default (immediate) death.
        let mut stop = StopSignals::install()?;
        if !config.process_roles.is_broker() {
            // A dedicated controller: the quorum and the controller, no client listener.
            let controller = millrace_broker::start_controller(config).await?;
            stop.wait().await;
            tracing::info!("shutting down");
            controller.shutdown().await;
            return anyhow::Ok(());
        }
        let broker = millrace_broker::start(config).await?;
        stop.wait().await;
        tracing::info!("shutting down");
        broker.shutdown().await;
        anyhow::Ok(())
    })
}

/// SIGINT and SIGTERM, registered before they are awaited.
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
        })
    }

    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
