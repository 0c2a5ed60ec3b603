//! `millrace demo`: the activity-tracking pipeline in one process (see `millrace::activity`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use millrace::activity::demo::{Demo, DemoOptions};
use millrace::activity::generator::{
    BOT_CAMPAIGN, CONTROL_USER, FAILING_SERVICE, SLOW_PAGE, VICTIMS,
};

use crate::StopSignals;

/// `millrace demo` options.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Broker data directory (and the Parquet export under `export/`) [default: a temporary
    /// directory, removed at exit].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the embedded broker listens (any Kafka client can connect); with `--brokers N`,
    /// the first of N consecutive ports (controllers listen 100 ports above).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Embedded brokers: 3 runs the pipeline on a cluster with every topic replicated three
    /// times (min.insync.replicas 2).
    #[arg(long, value_name = "N", default_value_t = 1)]
    brokers: u16,
    /// Where the dashboard listens.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Events generated per second.
    #[arg(long, value_name = "EVENTS_PER_S", default_value_t = 2000.0)]
    rate: f64,
    /// Seed of the simulated site.
    #[arg(long, value_name = "N", default_value_t = 42)]
    seed: u64,
    /// Run event time this many times faster than the wall clock.
    #[arg(long, value_name = "X", default_value_t = 10.0)]
    speedup: f64,
    /// End generation after N events; the jobs then close every window and the dashboard
    /// keeps serving until Ctrl-C.
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Partitions per topic.
    #[arg(long, value_name = "N", default_value_t = 3)]
    partitions: i32,
}

/// Runs the demo until SIGINT or SIGTERM.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of events per second");
    }
    if !(args.speedup.is_finite() && args.speedup > 0.0) {
        bail!("--speedup must be a positive number");
    }
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    if args.brokers < 1 {
        bail!("--brokers must be at least 1");
    }
    let mut stop = StopSignals::install()?;
    let options = DemoOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        brokers: args.brokers,
        http: args.http,
        rate: args.rate,
        seed: args.seed,
        speedup: args.speedup,
        events: args.events,
        partitions: args.partitions,
        ..DemoOptions::default()
    };
    let started = Instant::now();
    let mut demo = Demo::start(options).await?;
    print_tour(&demo, args.speedup);

    let stats = demo.generator_stats();
    if args.events.is_some() {
        let generated = tokio::select! {
            generated = demo.wait_generated() => Some(generated?),
            () = stop.wait() => None,
        };
        if let Some(generated) = generated {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "generated {generated} events in {seconds:.1} s ({:.0} events/s); closing every window",
                generated as f64 / seconds
            );
            let drained = tokio::select! {
                drained = demo.end_input() => Some(drained),
                () = stop.wait() => None,
            };
            if let Some(drained) = drained {
                if let Err(error) = drained {
                    // The stopped job's own error says more than "it stopped".
                    return Err(demo.shutdown().await.err().unwrap_or(error));
                }
                println!(
                    "input ended: every window is closed and emitted (after {:.1} s); \
                     the dashboard keeps serving until Ctrl-C",
                    started.elapsed().as_secs_f64()
                );
                stop.wait().await;
            }
        }
    } else {
        let mut ticker = tokio::time::interval(Duration::from_secs(10));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let jobs = demo.jobs();
                    let lag: i64 = jobs.iter().map(|j| j.metrics.snapshot().lag).sum();
                    println!(
                        "{} events generated ({:.0}/s), jobs' input lag {lag} records",
                        stats.acknowledged.load(Ordering::Relaxed),
                        stats.acknowledged.load(Ordering::Relaxed) as f64
                            / started.elapsed().as_secs_f64(),
                    );
                }
                () = stop.wait() => break,
            }
        }
    }
    println!("stopping");
    demo.shutdown().await.context("stopping the demo")
}

fn print_tour(demo: &Demo, speedup: f64) {
    println!("Millrace demo: activity tracking, end to end");
    println!();
    println!("  dashboard     {}", demo.dashboard_url());
    println!(
        "  broker        {}  (any Kafka client works)",
        demo.bootstrap()
    );
    println!("  data          {}", demo.data_dir().display());
    println!();
    println!("Event time runs {speedup}x faster than the clock; per-minute windows close about");
    println!("a minute of event time after they end. What to look at:");
    println!("  - Aggregates: page_views_per_minute (top pages), ad_stats_per_minute (CTR),");
    println!("    also_viewed (recommendations), page_load_stats (p50/p99 load times)");
    println!(
        "  - login_anomalies: credential stuffing against {} in minute 6 of every 20;",
        VICTIMS.join(" and ")
    );
    println!("    {CONTROL_USER} fails one login a minute and never alerts");
    println!("  - error_rate: {FAILING_SERVICE} fails half its requests in minute 7 of every 20");
    println!(
        "  - {SLOW_PAGE} loads ten times slower in minutes 5-7; a bot clicks {BOT_CAMPAIGN}'s ad"
    );
    println!(
        "  - SQL: SELECT key AS page, SUM(views) AS views FROM page_views_per_minute GROUP BY key ORDER BY views DESC"
    );
    println!(
        "  - the raw events land as Parquet under {}/export",
        demo.data_dir().display()
    );
    println!();
    println!("Press Ctrl-C to stop.");
}
