//! The broker's side of the metadata: every image the quorum applies is published to the
//! replica manager (Kafka's `BrokerMetadataPublisher`), which opens, re-roles and removes
//! replicas to match it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::quorum::MetadataQuorum;
use crate::replica::ReplicaManager;

/// Applies each new image to `replicas` until `shutdown`. Images are applied in order; one
/// that arrives while the previous is applied replaces any not yet applied (only the latest
/// state matters).
pub async fn run(
    quorum: Arc<MetadataQuorum>,
    replicas: Arc<ReplicaManager>,
    log_defaults: BTreeMap<String, String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut applied = quorum.subscribe();
    loop {
        let current = applied.borrow_and_update().clone();
        let replicas_now = replicas.clone();
        let defaults = log_defaults.clone();
        // Opening logs and truncating files is blocking work.
        let outcome = tokio::task::spawn_blocking(move || {
            let result = replicas_now.apply_image(&current.image, &defaults);
            (result, current.index)
        })
        .await;
        match outcome {
            Ok((result, index)) => {
                if let Err(error) = result {
                    tracing::error!(%error, "applying the metadata to the replicas failed");
                }
                if let Some(index) = index {
                    replicas.set_applied(index);
                }
            }
            Err(error) => tracing::error!(%error, "metadata publisher task failed"),
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
