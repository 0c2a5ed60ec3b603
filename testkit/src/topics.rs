//! Topic creation through the admin client.

use millrace_client::admin::NewTopic;
use millrace_client::{Admin, ClientConfig};

/// Creates `topic` with `partitions` partitions and the broker's default configs.
pub async fn create_topic(client: &ClientConfig, topic: &str, partitions: i32) {
    create_topic_with(client, NewTopic::new(topic, partitions)).await;
}

/// Creates a topic as `new` describes it (configs included).
pub async fn create_topic_with(client: &ClientConfig, new: NewTopic) {
    let admin = Admin::connect(client.clone())
        .await
        .expect("an admin client for the test broker");
    admin.create_topic(new).await.expect("the topic is created");
}
