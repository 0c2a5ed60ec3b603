//! Cluster metadata: topics, partitions and settings as a log of records replayed into a
//! state machine.
//!
//! Today the log is a local file with one writer. The cluster issue puts the same records under
//! an openraft quorum; nothing else needs to change, because every reader goes through the
//! [`MetadataImage`] and every writer through [`MetadataStore::commit`].

pub mod image;
pub mod log;
pub mod records;

use std::path::Path;

pub use image::{MetadataImage, TopicImage};
pub use log::{MetadataLog, MetadataLogError};
pub use records::MetadataRecord;

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
