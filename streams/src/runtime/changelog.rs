//! Changelog topics: naming, writing a checkpoint's store changes, reading them back.

use std::time::{Duration, Instant};

use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::{ClientConfig, IsolationLevel, OffsetSpec, TopicPartition};

use crate::dsl::StoreChanges;
use crate::error::StreamsError;
use crate::operator::META_KEY;
use crate::state::store::Change;

/// The compacted topic that backs `store` of application `application_id` (Kafka Streams'
/// naming: `<application.id>-<store>-changelog`).
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

/// A commit writes a store's changes and then its task metadata entry (which sorts last). A
/// crash in the middle leaves changes after the last metadata entry that belong to no
/// complete commit; they are dropped, so state and offsets always come from the same commit.
pub(crate) fn complete_commits(mut changes: Vec<Change>) -> Vec<Change> {
    match changes.iter().rposition(|c| c.key == META_KEY) {
        Some(last_meta) => {
            changes.truncate(last_meta + 1);
            changes
        }
        None => Vec::new(),
    }
}

/// Reads changelog partitions from the beginning to their current end (the last stable
/// offset: what committed transactions wrote).
pub(crate) struct ChangelogReader {
    consumer: Consumer,
}

impl ChangelogReader {
    pub(crate) async fn connect(client: ClientConfig) -> Result<Self, StreamsError> {
        // read_committed whatever the guarantee: an exactly-once job's aborted transactions
        // hold changes of no commit (a job switched to at-least-once may still have some).
        let config = ConsumerConfig::builder(client)
            .isolation_level(IsolationLevel::ReadCommitted)
            .fetch_max_wait(Duration::from_millis(50))
            .max_poll_records(100_000)
            .build()
            .map_err(|e| StreamsError::client("configuring the changelog reader", e))?;
        let consumer = Consumer::connect(config)
            .await
            .map_err(|e| StreamsError::client("connecting the changelog reader", e))?;
        Ok(ChangelogReader { consumer })
    }

    /// Every complete commit in partition `partition` of `topic`, as one batch per store.
    pub(crate) async fn read(
        &mut self,
        store: &str,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<StoreChanges, StreamsError> {
        let tp = TopicPartition::new(topic, partition);
        let context = || format!("restoring {store} from {tp}");
        let end = self
            .consumer
            .offsets_for(std::slice::from_ref(&tp), OffsetSpec::Latest)
            .await
            .map_err(|e| StreamsError::client(context(), e))?
            .get(&tp)
            .map_or(0, |o| o.offset);
        self.consumer
            .assign(std::slice::from_ref(&tp))
            .map_err(|e| StreamsError::client(context(), e))?;
        self.consumer
            .seek_to_beginning(std::slice::from_ref(&tp))
            .map_err(|e| StreamsError::client(context(), e))?;
        let deadline = Instant::now() + timeout;
        let mut changes = Vec::new();
        while self.consumer.position(&tp).is_none_or(|p| p < end) {
            if Instant::now() > deadline {
                return Err(StreamsError::Config(format!(
                    "{}: the changelog did not reach offset {end} within {timeout:?}",
                    context()
                )));
            }
            tracing::trace!(%tp, position = ?self.consumer.position(&tp), end, "restoring");
            let records = self
                .consumer
                .poll(Duration::from_millis(200))
                .await
                .map_err(|e| StreamsError::client(context(), e))?;
            for record in records {
                let Some(key) = record.key else { continue };
                changes.push(Change {
                    key: key.to_vec(),
                    value: record.value.map(|v| v.to_vec()),
                });
            }
        }
        Ok(StoreChanges {
            store: store.to_string(),
            changes: complete_commits(changes),
        })
    }

    pub(crate) async fn close(mut self) {
        if let Err(error) = self.consumer.close().await {
            tracing::debug!(%error, "closing the changelog reader");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &[u8]) -> Change {
        Change {
            key: key.to_vec(),
            value: Some(vec![0]),
        }
    }

    #[test]
    fn changes_after_the_last_metadata_entry_are_dropped() {
        let changes = vec![change(b"a"), change(META_KEY), change(b"b"), change(b"c")];
        assert_eq!(
            complete_commits(changes),
            vec![change(b"a"), change(META_KEY)]
        );
        assert!(complete_commits(vec![change(b"x")]).is_empty());
    }

    #[test]
    fn changelog_topics_follow_kafka_streams_naming() {
        assert_eq!(
            changelog_topic("clicks", "counts"),
            "clicks-counts-changelog"
        );
    }
}
