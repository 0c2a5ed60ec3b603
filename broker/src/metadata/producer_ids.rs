//! Producer ids for idempotent producers (InitProducerId), handed out from blocks reserved in
//! the metadata log, as Kafka's controller does, so an id is never given twice.

use std::sync::Mutex;

use super::controller::{Controller, TopicError};

/// Ids reserved per metadata write.
const BLOCK_SIZE: i64 = 1000;

/// Hands out producer ids.
pub struct ProducerIdManager {
    /// Next id to give and the end of the reserved block.
    block: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// A manager with no block reserved yet (the first request reserves one).
    pub fn new(_controller: &Controller) -> Self {
        ProducerIdManager {
            block: Mutex::new((0, 0)),
        }
    }

    /// A fresh producer id.
    pub fn next_id(&self, controller: &Controller) -> Result<i64, TopicError> {
        let mut block = self.block.lock().unwrap_or_else(|e| e.into_inner());
        if block.0 >= block.1 {
            let start = controller.allocate_producer_ids(BLOCK_SIZE)?;
            *block = (start, start + BLOCK_SIZE);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
