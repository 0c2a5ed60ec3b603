//! `millrace demo`: the activity-tracking pipeline in one process (see `millrace::activity`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use millrace::activity::demo::{Demo, DemoOptions};
use millrace::activity::generator::{
    GeneratorStats, BOT_CAMPAIGN, CONTROL_USER, FAILING_SERVICE, SLOW_PAGE, VICTIMS,
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
    /// Seconds between progress reports (events generated, rate over the interval, lag).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    report_every: f64,
    /// `sasl_ssl`: the brokers listen with TLS (a throw-away CA under DATA_DIR/security) and
    /// SASL PLAIN; every part of the pipeline, and you, connect as the demo user.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["plaintext", "sasl_ssl"], default_value = "plaintext")]
    security: String,
}

/// The periodic progress line: the rate is that of the last interval, not the average since
/// start, which would include the startup and climb for minutes.
struct RateReport {
    stats: Arc<GeneratorStats>,
    last_count: u64,
    last_at: Instant,
}

impl RateReport {
    fn new(stats: Arc<GeneratorStats>) -> Self {
        RateReport {
            last_count: stats.acknowledged.load(Ordering::Relaxed),
            stats,
            last_at: Instant::now(),
        }
    }

    fn print(&mut self, demo: &Demo) {
        let count = self.stats.acknowledged.load(Ordering::Relaxed);
        let now = Instant::now();
        let seconds = now.duration_since(self.last_at).as_secs_f64();
        let rate = count.saturating_sub(self.last_count) as f64 / seconds.max(f64::EPSILON);
        let lag: i64 = demo.jobs().iter().map(|j| j.metrics.snapshot().lag).sum();
        println!(
            "{count} events generated, {rate:.0}/s over the last {seconds:.1} s; \
             jobs' input lag {lag} records"
        );
        self.last_count = count;
        self.last_at = now;
    }
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
    if !(args.report_every.is_finite() && args.report_every >= 0.1) {
        bail!("--report-every must be at least 0.1 seconds");
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
        secure: args.security == "sasl_ssl",
        ..DemoOptions::default()
    };
    let started = Instant::now();
    println!("Starting the demo:");
    let demo = Demo::start_reporting(options, |step| {
        println!("  {:>5.1} s  {step}", started.elapsed().as_secs_f64());
    })
    .await?;
    println!();
    print_tour(&demo, args.speedup);

    let mut report = RateReport::new(demo.generator_stats());
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.report_every));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut assigned = false;
    let mut generated = None;
    loop {
        tokio::select! {
            result = demo.wait_jobs_assigned(), if !assigned => {
                if let Err(error) = result {
                    // The stopped job's own error says more than "it stopped".
                    return Err(demo.shutdown().await.err().unwrap_or(error));
                }
                assigned = true;
                println!(
                    "all {} jobs have their partitions ({:.1} s after start); results appear \
                     as windows close",
                    demo.jobs().len(),
                    started.elapsed().as_secs_f64()
                );
            }
            result = demo.wait_generated(), if args.events.is_some() && generated.is_none() => {
                generated = Some(result?);
                break;
            }
            _ = ticker.tick() => report.print(&demo),
            () = stop.wait() => break,
        }
    }
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
    if let Some(properties) = demo.client_properties() {
        println!(
            "  security      SASL_SSL; connect with --command-config {}  (kcat: -F {})",
            properties.display(),
            properties.display()
        );
    }
    for url in demo.metrics_urls() {
        println!("  metrics       {url}  (Prometheus; /health/ready beside it)");
    }
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
    println!("  - SQL (the dashboard's SQL page). Windows still open, from a job's live state:");
    println!(
        "      SELECT key AS page, SUM(views) AS views FROM page_views_per_minute GROUP BY key ORDER BY views DESC"
    );
    println!(
        "    Windows closed and emitted, from the job's output topic (its newest 10,000 results):"
    );
    println!(
        "      SELECT page, SUM(views) AS views, MIN(window_start) AS since FROM page_views_per_minute_results GROUP BY page ORDER BY views DESC"
    );
    println!(
        "  - the raw events land as Parquet under {}/export",
        demo.data_dir().display()
    );
    println!();
    println!("Press Ctrl-C to stop.");
}
