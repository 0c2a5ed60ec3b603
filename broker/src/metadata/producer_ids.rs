//! Producer ids for idempotent producers (InitProducerId), handed out from blocks reserved in
//! the metadata log by the active controller, as Kafka's controller does, so an id is never
//! given twice, on any broker.

use super::controller::{Controller, TopicError};

/// Ids reserved per metadata write.
const BLOCK_SIZE: i64 = 1000;

/// Hands out producer ids.
#[derive(Default)]
pub struct ProducerIdManager {
    /// Next id to give and the end of the reserved block. An async lock: reserving a block
    /// waits for the controller.
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// A manager with no block reserved yet (the first request reserves one).
    pub fn new() -> Self {
        ProducerIdManager::default()
    }

    /// A fresh producer id.
    pub async fn next_id(&self, controller: &Controller) -> Result<i64, TopicError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let start = controller.allocate_producer_ids(BLOCK_SIZE).await?;
            *block = (start, start + BLOCK_SIZE);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
