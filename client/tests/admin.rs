//! Admin client against an in-process broker.
#![allow(clippy::unwrap_used)]

use millrace_client::admin::{AlterConfigOp, NewTopic};
use millrace_client::{Admin, ClientError, OffsetSpec, ResponseError, TopicPartition};
use millrace_testkit::{TestBroker, FAST_GROUPS};

#[tokio::test]
async fn create_describe_list_and_delete_topics() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let admin = Admin::connect(broker.client_config("millrace-client-test"))
        .await
        .unwrap();
    admin
        .create_topic(NewTopic::new("orders", 3).config("retention.ms", "3600000"))
        .await
        .unwrap();

    let described = admin.describe_topics(&["orders"]).await.unwrap();
    assert_eq!(described[0].partitions.len(), 3);
    assert!(described[0].partitions.iter().all(|p| p.leader >= 0));
    assert_ne!(described[0].id, [0u8; 16]);

    let names: Vec<String> = admin
        .list_topics(false)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"orders".to_string()));

    admin.delete_topics(&["orders"]).await.unwrap();
    let error = admin.describe_topics(&["orders"]).await.unwrap_err();
    assert_eq!(
        error.kafka_error(),
        Some(ResponseError::UnknownTopicOrPartition),
        "{error}"
    );
    broker.broker.shutdown().await;
}

#[tokio::test]
async fn creating_an_existing_topic_fails_without_retry() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let admin = Admin::connect(broker.client_config("millrace-client-test"))
        .await
        .unwrap();
    admin.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let error = admin.create_topic(NewTopic::new("t", 1)).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Kafka {
                error: ResponseError::TopicAlreadyExists,
                ..
            }
        ),
        "{error}"
    );
    assert!(!error.is_retriable());
}

#[tokio::test]
async fn create_partitions_and_alter_configs() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let admin = Admin::connect(broker.client_config("millrace-client-test"))
        .await
        .unwrap();
    admin.create_topic(NewTopic::new("grow", 1)).await.unwrap();
    admin.create_partitions("grow", 4).await.unwrap();
    assert_eq!(
        admin.describe_topics(&["grow"]).await.unwrap()[0]
            .partitions
            .len(),
        4
    );

    admin
        .alter_topic_config(
            "grow",
            vec![AlterConfigOp::Set("retention.ms".into(), "12345".into())],
        )
        .await
        .unwrap();
    let configs = admin.describe_topic_config("grow").await.unwrap();
    let retention = configs.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("12345"));
}

#[tokio::test]
async fn list_offsets_of_an_empty_topic_are_zero_and_cluster_is_described() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let admin = Admin::connect(broker.client_config("millrace-client-test"))
        .await
        .unwrap();
    admin.create_topic(NewTopic::new("empty", 2)).await.unwrap();
    let tp = TopicPartition::new("empty", 1);
    let offsets = admin
        .list_offsets(&[(tp.clone(), OffsetSpec::Earliest)])
        .await
        .unwrap();
    assert_eq!(offsets[&tp].offset, 0);
    let latest = admin
        .list_offsets(&[(tp.clone(), OffsetSpec::Latest)])
        .await
        .unwrap();
    assert_eq!(latest[&tp].offset, 0);

    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(cluster.brokers[0].port as u16, broker.addr().port());

    let dirs = admin.describe_log_dirs(Some(&["empty"])).await.unwrap();
    assert_eq!(dirs.iter().map(|d| d.partitions.len()).sum::<usize>(), 2);
}

#[tokio::test]
async fn describe_reports_replicas_isr_leader_epochs_and_live_brokers() {
    let broker = TestBroker::start(&[]).await;
    let admin = Admin::connect(broker.client_config("millrace-client-test"))
        .await
        .unwrap();
    admin
        .create_topic(NewTopic::new("placed", 2))
        .await
        .unwrap();

    let cluster = admin.describe_cluster().await.unwrap();
    let described = admin.describe_topics(&["placed"]).await.unwrap();

    assert_eq!(cluster.brokers.len(), 1);
    let only = &cluster.brokers[0];
    assert!(!only.fenced, "a running broker is not fenced");
    assert_eq!(
        cluster.controller_id, only.id,
        "the single broker is the controller"
    );
    for partition in &described[0].partitions {
        assert_eq!(partition.leader, only.id);
        assert!(partition.leader_epoch >= 0, "{partition:?}");
        assert_eq!(partition.replicas, vec![only.id]);
        assert_eq!(partition.isr, partition.replicas);
        assert!(partition.offline_replicas.is_empty());
        assert!(!partition.under_replicated() && !partition.offline());
    }
}
