//! Runs a broker inside your own program, on a free port and a temporary data dir.
//!
//! `cargo run --example embedded_broker`, then point any Kafka client at the printed address.

use millrace_broker::BrokerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("millrace-example-{}", std::process::id()));
    let config = BrokerConfig::new("127.0.0.1:0".parse()?, data_dir.clone());
    let broker = millrace_broker::start(config).await?;
    println!(
        "broker listening on {} (data in {})",
        broker.local_addr(),
        data_dir.display()
    );
    println!("press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    broker.shutdown().await;
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}
