//! Record batches (format v2, "magic 2") as they travel in Produce and Fetch.
//!
//! The client writes and reads batches itself rather than through kafka-protocol's
//! `RecordBatchEncoder`/`RecordBatchDecoder`, for two reasons: those take and return its
//! `Record` struct, whose headers are an `IndexMap` and so collapse duplicate header keys (legal
//! in Kafka, and kept by every other client); and the encoder needs a `Record` per record
//! (with its own header map) built before encoding, where the producer's hot path appends each
//! record's bytes straight into the open batch. The codecs (gzip, snappy with xerial framing,
//! lz4 frames, zstd) are kafka-protocol's. Tests check both directions against its encoder and
//! decoder.

pub(crate) mod batch;
pub(crate) mod decode;
pub(crate) mod varint;

pub use batch::Compression;
pub use decode::{ConsumerRecord, TimestampType};
