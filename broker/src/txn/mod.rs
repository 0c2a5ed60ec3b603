//! Transactions: the transaction coordinator and its state in the compacted internal topic
//! `__transaction_state` (Kafka's `coordinator/transaction` module).
//!
//! - `coordinator.rs`: the rules (InitProducerId with a transactional id, AddPartitionsToTxn,
//!   EndTxn, the timeout), the state's durability and its replay on leadership.
//! - `state.rs`: one transactional id's state; `records.rs`: its records in Kafka's layout.
//! - `markers.rs`: WriteTxnMarkers to each partition leader, and a leader writing them.
//! - `channels.rs`: the inter-broker connections those two keep open.
//! - `verification.rs`: KIP-890's check that a transactional write belongs to an open
//!   transaction.
//!
//! The log side (control batches, the last stable offset, the aborted-transaction index) is in
//! `crate::log`; read_committed fetches in `crate::api::fetch`.

pub mod channels;
pub mod coordinator;
pub mod markers;
pub mod records;
pub mod state;
pub mod verification;

pub use coordinator::{Refusal, TransactionCoordinator, TRANSACTION_STATE_TOPIC};
pub use state::{TxnMetadata, TxnState};
