//! The console reads each broker's own metrics endpoint (`metrics.listener`): it finds the
//! endpoint through DescribeConfigs, scrapes it, and shows per-broker request rates, produce
//! latency and readiness with links, against a real broker under produce load.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

mod common;

use common::{dashboard, Running};
use millrace_client::{ProducerConfig, ProducerRecord};
use millrace_testkit::{create_topic, produce_all, TestBroker};
use serde_json::Value;

fn broker_entry(body: &Value, id: i64) -> Option<Value> {
    body["brokers"]
        .as_array()?
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_charts_each_broker_from_its_metrics_endpoint() {
    let broker = TestBroker::start(&["metrics.listener=http://127.0.0.1:0"]).await;
    let endpoint = format!("http://{}", broker.broker.metrics_addr().unwrap());
    create_topic(&broker.client_config("admin"), "load", 2).await;
    let running = Running::start(dashboard(broker.bootstrap())).await;

    // Found through DescribeConfigs, ready, and serving requests.
    let found = running
        .eventually(
            "broker 1's endpoint, ready",
            "/api/brokers/metrics",
            |body| {
                let b = broker_entry(body, 1)?;
                (b["ready"] == true).then_some(b)
            },
        )
        .await;
    assert_eq!(found["metrics_url"], format!("{endpoint}/metrics"));
    assert_eq!(found["health_url"], format!("{endpoint}/health/ready"));

    // Produce load until a scrape interval has seen it: the request rate, the records in and
    // a produce p99 all come from the broker's counters.
    let config = broker.client_config("load");
    let latest = running.eventually(
        "a scrape that saw produce requests",
        "/api/brokers/metrics",
        |body| {
            let b = broker_entry(body, 1)?;
            let latest = b["latest"].clone();
            (latest["messages_in_per_sec"].as_f64()? > 0.0
                && latest["produce_p99_ms"].as_f64().is_some())
            .then_some(b)
        },
    );
    let producing = async {
        let mut round = 0;
        loop {
            let records = (0..200)
                .map(|i| ProducerRecord::new("load", format!("r{round}-{i}").into_bytes()))
                .collect();
            produce_all(ProducerConfig::new(config.clone()), records).await;
            round += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let seen = tokio::select! {
        seen = latest => seen,
        () = producing => unreachable!("the load never ends"),
    };
    let latest = &seen["latest"];
    assert!(latest["requests_per_sec"].as_f64().unwrap() > 0.0, "{seen}");
    assert!(latest["rss_bytes"].as_f64().unwrap() > 1e6, "{seen}");
    let p99 = latest["produce_p99_ms"].as_f64().unwrap();
    assert!((0.0..10_000.0).contains(&p99), "produce p99 {p99}");
    assert!(
        !seen["history"].as_array().unwrap().is_empty(),
        "the charts' history: {seen}"
    );

    // The cluster view links to the endpoint too.
    let brokers = running.json("/api/brokers").await;
    let b = broker_entry(&brokers, 1).unwrap();
    assert_eq!(b["endpoint"]["metrics_url"], format!("{endpoint}/metrics"));
    assert!(b["endpoint"].get("history").is_none(), "no history there");
    running.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_without_an_endpoint_or_an_unreachable_one_is_said_so() {
    let broker = TestBroker::start(&[]).await;
    let running = Running::start(dashboard(broker.bootstrap())).await;
    let b = running
        .eventually(
            "broker 1 without an endpoint",
            "/api/brokers/metrics",
            |body| {
                let b = broker_entry(body, 1)?;
                b["error"].as_str().is_some().then_some(b)
            },
        )
        .await;
    assert!(b["metrics_url"].is_null(), "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("metrics.listener"),
        "{b}"
    );
    running.shutdown().await;

    // An endpoint given to the console that nothing serves: the scrape failure is shown.
    let closed = millrace_testkit::free_port();
    let running = Running::start(
        dashboard(broker.bootstrap()).with_broker_metrics(1, format!("http://127.0.0.1:{closed}")),
    )
    .await;
    let b = running
        .eventually("the failed scrape", "/api/brokers/metrics", |body| {
            let b = broker_entry(body, 1)?;
            b["error"].as_str().is_some().then_some(b)
        })
        .await;
    assert_eq!(
        b["metrics_url"],
        format!("http://127.0.0.1:{closed}/metrics")
    );
    assert!(
        b["error"].as_str().unwrap().contains("cannot scrape"),
        "{b}"
    );
    assert!(b["latest"].is_null(), "{b}");
    running.shutdown().await;
    broker.shutdown().await;
}
