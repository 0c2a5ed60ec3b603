//! The topic page shows each partition's last stable offset, how far it is behind the end
//! (records held back from read_committed consumers), and the open transactions that hold it
//! there, against a real broker with a transaction left open and then committed.
#![allow(clippy::unwrap_used)]

mod common;

use common::{dashboard, Running};
use millrace_client::admin::NewTopic;
use millrace_client::{Admin, Producer, ProducerConfig, ProducerRecord};
use millrace_testkit::TestBroker;
use serde_json::Value;

fn partition(body: &Value, index: i64) -> Option<Value> {
    body["partitions"]
        .as_array()?
        .iter()
        .find(|p| p["partition"] == index)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_topic_page_shows_the_lso_lag_and_the_open_transactions_holding_it() {
    let broker = TestBroker::start(&[]).await;
    let admin = Admin::connect(broker.client_config("admin")).await.unwrap();
    admin
        .create_topic(NewTopic::new("orders", 2))
        .await
        .unwrap();
    // Two plain records first, then a transaction of three left open on partition 0.
    let plain = Producer::connect(ProducerConfig::new(broker.client_config("plain")))
        .await
        .unwrap();
    for value in ["p1", "p2"] {
        let _delivery = plain
            .send(ProducerRecord::new("orders", value.as_bytes().to_vec()).partition(0))
            .await
            .unwrap();
    }
    plain.flush().await;
    let config = ProducerConfig::builder(broker.client_config("txn"))
        .transactional_id("orders-writer")
        .build()
        .unwrap();
    let producer = Producer::connect(config).await.unwrap();
    producer.begin_transaction().unwrap();
    for value in ["t1", "t2", "t3"] {
        let _delivery = producer
            .send(ProducerRecord::new("orders", value.as_bytes().to_vec()).partition(0))
            .await
            .unwrap();
    }
    producer.flush().await;

    let running = Running::start(dashboard(broker.bootstrap())).await;
    let open = running
        .eventually(
            "partition 0 held back by the open transaction",
            "/api/topics/orders",
            |body| {
                let p = partition(body, 0)?;
                (p["end_offset"] == 5 && p["last_stable_offset"] == 2).then_some(p)
            },
        )
        .await;
    assert_eq!(open["open_transactions"], 1, "{open}");
    assert_eq!(open["oldest_open_transaction_offset"], 2, "{open}");
    let body = running.json("/api/topics/orders").await;
    let idle = partition(&body, 1).unwrap();
    assert_eq!(idle["open_transactions"], 0, "{idle}");
    assert_eq!(idle["last_stable_offset"], idle["end_offset"], "{idle}");
    assert!(body["transactions_note"].is_null(), "{body}");

    // Committed: the marker moves the end to 6, and the LSO follows it.
    producer.commit_transaction().await.unwrap();
    let committed = running
        .eventually(
            "the LSO to reach the end after the commit",
            "/api/topics/orders",
            |body| {
                let p = partition(body, 0)?;
                (p["end_offset"] == 6 && p["last_stable_offset"] == 6).then_some(p)
            },
        )
        .await;
    assert_eq!(committed["open_transactions"], 0, "{committed}");
    assert!(
        committed["oldest_open_transaction_offset"].is_null(),
        "{committed}"
    );
    running.shutdown().await;
    broker.shutdown().await;
}
