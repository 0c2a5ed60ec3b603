//! The crate's error type.

/// What can go wrong in the stream engine. Processing itself is infallible; errors come from
/// encoding state for the changelog and decoding it back on restore.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// State could not be encoded for the store or changelog.
    #[error("cannot encode state: {0}")]
    Encode(String),
    /// A stored or restored entry could not be decoded (corrupt changelog, or a type change
    /// between releases of the job).
    #[error("cannot decode state: {0}")]
    Decode(String),
    /// The checkpoint handed to `restore` names a store this pipeline does not have.
    #[error("unknown state store {0:?}")]
    UnknownStore(String),
}
