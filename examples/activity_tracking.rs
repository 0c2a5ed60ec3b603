//! The activity-tracking example against any Kafka-protocol cluster: creates the topics,
//! starts the stream jobs, the Parquet export and the dashboard, and generates a simulated
//! site's events.
//!
//! ```text
//! cargo run --release --example activity_tracking -- --bootstrap HOST:PORT
//! ```
//!
//! `millrace demo` runs the same with an embedded broker.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use millrace::activity::demo::{Demo, DemoOptions};

/// Activity tracking: generator, stream jobs, Parquet export and dashboard.
#[derive(Parser)]
struct Args {
    /// The cluster to use.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: String,
    /// Where the Parquet export goes (under `export/`) [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the dashboard listens.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Events generated per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seed of the simulated site.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run event time this many times faster than the wall clock.
    #[arg(long, default_value_t = 10.0)]
    speedup: f64,
    /// End generation after N events and close every window.
    #[arg(long)]
    events: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let demo = Demo::start(DemoOptions {
        bootstrap: Some(args.bootstrap),
        data_dir: args.data_dir,
        http: args.http,
        rate: args.rate,
        seed: args.seed,
        speedup: args.speedup,
        events: args.events,
        ..DemoOptions::default()
    })
    .await?;
    println!("dashboard at {}; Ctrl-C stops", demo.dashboard_url());
    if args.events.is_some() {
        tokio::select! {
            generated = demo.wait_generated() => {
                println!("generated {} events; closing every window", generated?);
                demo.end_input().await?;
                println!("input ended: every window is closed and emitted");
                tokio::signal::ctrl_c().await?;
            }
            result = tokio::signal::ctrl_c() => result?,
        }
    } else {
        tokio::signal::ctrl_c().await?;
    }
    demo.shutdown().await
}
