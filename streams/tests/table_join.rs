//! Stream-table joins with a global table: in-process pipelines (updates, tombstones, left
//! joins of missing keys), and a job against a broker over TCP (the demo's notifications:
//! social events joined with the items table by item id).
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;

use std::time::{Duration, Instant};

use kafka::{channel_sink, produce_json, recv_n, spawn_job};
use millrace_client::admin::NewTopic;
use millrace_client::ClientConfig;
use millrace_streams::runtime::{Job, Source, StreamsConfig};
use millrace_streams::{GlobalTable, Pipeline, Record, Stream};
use millrace_testkit::{create_topic, create_topic_with, start_broker_in, FAST_GROUPS};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Social {
    event_id: String,
    ts: i64,
    user_id: String,
    action: String,
    item_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    item_id: String,
    owner_id: String,
    title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Notification {
    user_id: String,
    ts: i64,
    actor: String,
    action: String,
    item_id: String,
}

fn social(n: usize, user: &str, item: &str) -> Social {
    Social {
        event_id: format!("e{n}"),
        ts: 1_000 * n as i64,
        user_id: user.to_string(),
        action: "like".to_string(),
        item_id: item.to_string(),
    }
}

fn item(id: &str, owner: &str) -> Item {
    Item {
        item_id: id.to_string(),
        owner_id: owner.to_string(),
        title: format!("title of {id}"),
    }
}

fn notify(e: Social, item: &Item) -> Notification {
    Notification {
        user_id: item.owner_id.clone(),
        ts: e.ts,
        actor: e.user_id,
        action: e.action,
        item_id: e.item_id,
    }
}

fn owners_of<K>(out: Vec<Record<K, Notification>>) -> Vec<(String, String)> {
    out.into_iter()
        .map(|r| (r.value.item_id, r.value.user_id))
        .collect()
}

#[test]
fn a_table_update_takes_effect_for_later_records_and_a_tombstone_drops_the_key() {
    let items: GlobalTable<String, Item> = GlobalTable::json("items");
    items
        .apply(
            b"i1",
            Some(&serde_json::to_vec(&item("i1", "ann")).unwrap()),
        )
        .unwrap();
    let table = items.clone();
    let mut p = Pipeline::new(move |events: Stream<String, Social>| {
        events.join_table(&table, |_user, e| e.item_id.clone(), notify)
    });
    p.push(Record::new("bob".into(), social(1, "bob", "i1"), 1_000));
    items
        .apply(
            b"i1",
            Some(&serde_json::to_vec(&item("i1", "cid")).unwrap()),
        )
        .unwrap();
    p.push(Record::new("bob".into(), social(2, "bob", "i1"), 2_000));
    items.apply(b"i1", None).unwrap();
    p.push(Record::new("bob".into(), social(3, "bob", "i1"), 3_000));
    let out = p.take_output();
    // Key, event time and input position of the stream record are kept.
    assert_eq!((out[0].key.as_str(), out[0].timestamp), ("bob", 1_000));
    assert_eq!(
        owners_of(out),
        vec![("i1".into(), "ann".into()), ("i1".into(), "cid".into())]
    );
}

#[test]
fn a_left_join_keeps_records_whose_key_is_missing() {
    let items: GlobalTable<String, Item> = GlobalTable::json("items");
    items.insert("i1".into(), item("i1", "ann"));
    let table = items.clone();
    let mut p = Pipeline::new(move |events: Stream<String, Social>| {
        events.left_join_table(
            &table,
            |_user, e| e.item_id.clone(),
            |e, found: Option<&Item>| (e.event_id, found.map(|i| i.owner_id.clone())),
        )
    });
    p.push(Record::new("bob".into(), social(1, "bob", "i1"), 0));
    p.push(Record::new("bob".into(), social(2, "bob", "missing"), 0));
    let got: Vec<_> = p.take_output().into_iter().map(|r| r.value).collect();
    assert_eq!(
        got,
        vec![
            ("e1".to_string(), Some("ann".to_string())),
            ("e2".to_string(), None)
        ]
    );
}

#[test]
fn two_joins_with_one_table_in_a_chain_do_not_deadlock() {
    let table: GlobalTable<u32, u32> = GlobalTable::json("next");
    table.insert(1, 2);
    table.insert(2, 3);
    let t = table.clone();
    let mut p = Pipeline::new(move |s: Stream<(), u32>| {
        s.join_table(&t, |_, v| *v, |_, next| *next)
            .join_table(&t, |_, v| *v, |_, next| *next)
    });
    p.push(Record::new((), 1, 0));
    assert_eq!(p.take_output()[0].value, 3);
}

/// Polls the table handle until `check` holds: the loader applies updates on its own task
/// and says nothing when it has.
async fn until_table<K, V>(table: &GlobalTable<K, V>, check: impl Fn(&GlobalTable<K, V>) -> bool)
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check(table) {
        assert!(Instant::now() < deadline, "the table update never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_joins_social_events_with_the_items_table_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "social", 3).await;
    create_topic_with(
        &client,
        NewTopic::new("items", 2).config("cleanup.policy", "compact"),
    )
    .await;
    // The table and a first batch of events exist before the job starts: the table must be
    // loaded before the first event is joined, or events would be dropped as misses.
    let items_in: Vec<(String, Option<Item>)> = (0..20)
        .map(|i| {
            let id = format!("item-{i}");
            (id.clone(), Some(item(&id, &format!("owner-{}", i % 7))))
        })
        .collect();
    produce_json(&client, "items", &items_in).await;
    let events: Vec<(String, Option<Social>)> = (0..200)
        .map(|n| {
            let user = format!("user-{}", n % 9);
            let e = social(n, &user, &format!("item-{}", n % 20));
            (user, Some(e))
        })
        .collect();
    produce_json(&client, "social", &events).await;

    let items: GlobalTable<String, Item> = GlobalTable::json("items");
    let table = items.clone();
    let (sink, mut rx) = channel_sink();
    let job = Job::new(
        StreamsConfig::new("notifications", client.clone())
            .commit_interval(Duration::from_millis(500))
            .session_timeout(Duration::from_secs(6)),
        Source::json(&["social"], |e: &Social| e.ts),
        move |social| {
            social
                .join_table(&table, |_user, e| e.item_id.clone(), notify)
                .map(|_actor, n| (n.user_id.clone(), n))
        },
        sink,
    );
    let (stop, handle) = spawn_job(|stopped| {
        job.run(async move {
            let _ = stopped.await;
        })
    });
    let mut got: Vec<(String, String)> = recv_n(&mut rx, 200)
        .await
        .into_iter()
        .map(|r| (r.value.actor, r.value.user_id))
        .collect();
    let mut want: Vec<(String, String)> = (0..200)
        .map(|n| (format!("user-{}", n % 9), format!("owner-{}", (n % 20) % 7)))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // An update: item-3 changes owner; a tombstone: item-4 is deleted.
    produce_json(
        &client,
        "items",
        &[
            ("item-3".to_string(), Some(item("item-3", "new-owner"))),
            ("item-4".to_string(), None),
        ],
    )
    .await;
    until_table(&items, |t| {
        t.get(&"item-3".to_string())
            .is_some_and(|i| i.owner_id == "new-owner")
            && t.get(&"item-4".to_string()).is_none()
    })
    .await;
    // All from one user, so one partition, in this order: the event on the deleted item is
    // dropped, and the one after it shows it was processed.
    let later = vec![
        ("zed".to_string(), Some(social(1000, "zed", "item-3"))),
        ("zed".to_string(), Some(social(1001, "zed", "item-4"))),
        ("zed".to_string(), Some(social(1002, "zed", "item-5"))),
    ];
    produce_json(&client, "social", &later).await;
    let got: Vec<(String, String)> = recv_n(&mut rx, 2)
        .await
        .into_iter()
        .map(|r| (r.value.item_id, r.value.user_id))
        .collect();
    assert_eq!(
        got,
        vec![
            ("item-3".to_string(), "new-owner".to_string()),
            ("item-5".to_string(), "owner-5".to_string())
        ]
    );
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert!(
        rx.try_recv().is_err(),
        "the event on the deleted item was joined"
    );
    broker.shutdown().await;
}
