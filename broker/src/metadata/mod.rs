//! Cluster metadata: topics, partitions, settings and producer-id blocks as a log of records
//! replayed into a state machine, and the controller that writes them.
//!
//! Today the log is a local file with one writer. The cluster issue puts the same records under
//! an openraft quorum; nothing else needs to change, because every reader goes through the
//! [`MetadataImage`] and every writer through [`MetadataStore::commit`].
//!
//! - `records.rs`, `log.rs`, `image.rs`: the records, their durable log, the state they build.
//! - `controller.rs`: the one writer; topic creation, growth, reconfiguration and deletion.
//! - `topic_config.rs`: topic-level settings, their broker-level defaults and validation.
//! - `producer_ids.rs`: producer ids handed out from blocks the controller reserves.
//! - `quorum/`: the same records replicated by a Raft quorum (openraft), applied into the image.

pub mod controller;
pub mod image;
pub mod log;
pub mod placement;
pub mod producer_ids;
pub mod publisher;
pub mod quorum;
pub mod records;
pub mod topic_config;

use std::path::Path;

pub use controller::{Controller, ControllerHandler, TopicError};
pub use image::{BrokerRegistration, MetadataImage, PartitionImage, TopicImage};
pub use log::{MetadataLog, MetadataLogError};
pub use producer_ids::ProducerIdManager;
pub use records::{BrokerEndpoint, MetadataRecord};

/// The metadata log and the image it produces, kept in step.
#[derive(Debug)]
pub struct MetadataStore {
    log: MetadataLog,
    image: MetadataImage,
}

impl MetadataStore {
    /// Opens the store in `dir`, replaying its log.
    pub fn open(dir: &Path) -> Result<Self, MetadataLogError> {
        let (log, records) = MetadataLog::open(&dir.join("metadata.log"))?;
        let mut image = MetadataImage::default();
        for record in &records {
            image.apply(record);
        }
        Ok(MetadataStore { log, image })
    }

    /// Makes records durable, then applies them: readers never see a change that a crash could
    /// take back.
    pub fn commit(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataLogError> {
        self.log.append(records)?;
        for record in records {
            self.image.apply(record);
        }
        Ok(())
    }

    /// The current state.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }
}
