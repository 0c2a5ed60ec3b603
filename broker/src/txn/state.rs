//! The state of one transactional id, as the coordinator holds it in memory and writes it to
//! `__transaction_state` (Kafka's `TransactionMetadata` and `TransactionState`).

use std::collections::BTreeSet;

/// Where a transaction is in its life (Kafka's states, with Kafka's ids and names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// No transaction open; the producer id and epoch are assigned.
    Empty,
    /// Partitions were added: records may be written.
    Ongoing,
    /// EndTxn(commit) was accepted; commit markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a fencing producer or a timeout; abort markers are being written.
    PrepareAbort,
    /// Every partition has its commit marker.
    CompleteCommit,
    /// Every partition has its abort marker.
    CompleteAbort,
    /// The transactional id expired (kept for Kafka's state ids; never entered here).
    Dead,
    /// A timed-out transaction being fenced before its abort (Kafka's; aborts go straight to
    /// PrepareAbort with the bumped epoch here).
    PrepareEpochFence,
}

impl TxnState {
    /// The id stored in `__transaction_state` values.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// The state of a stored id.
    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name, as DescribeTransactions and ListTransactions show it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Whether markers are being written: the transaction cannot change until they are.
    pub fn is_preparing(self) -> bool {
        matches!(
            self,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        )
    }
}

/// One transactional id's producer and current transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    /// The transactional id.
    pub transactional_id: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its current epoch: requests with an older one are fenced.
    pub producer_epoch: i16,
    /// `transaction.timeout.ms` of the producer.
    pub timeout_ms: i32,
    /// Where the transaction is.
    pub state: TxnState,
    /// The partitions in the transaction, by topic and partition.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the current transaction began (its first AddPartitionsToTxn), -1 without one.
    pub start_ms: i64,
    /// When this state was written.
    pub last_update_ms: i64,
    /// The transaction version its producer uses (`ClientTransactionVersion`): 2 when it ends
    /// transactions with EndTxn v5 and lets partitions join implicitly (KIP-890), so each
    /// transaction ends at a new epoch; 0 before.
    pub client_transaction_version: i16,
    /// The producer id of the transaction before this one (`PreviousProducerId`), when ending
    /// it exhausted the epochs and moved the id to a new producer id; -1 otherwise.
    pub previous_producer_id: i64,
    /// The producer id the producer continues with after this transaction
    /// (`NextProducerId`), when ending it exhausts the epochs; -1 otherwise.
    pub next_producer_id: i64,
}

impl TxnMetadata {
    /// Whether the producer uses transaction version 2 (an epoch per transaction).
    pub fn bumps_epoch_per_transaction(&self) -> bool {
        self.client_transaction_version >= 2
    }

    /// The state once the transaction has ended (`commit` or abort) at `now_ms`: complete,
    /// without partitions, on the producer id that comes next.
    pub fn completed(mut self, commit: bool, now_ms: i64) -> Self {
        self.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        self.partitions.clear();
        self.last_update_ms = now_ms;
        self.finish_epoch_change();
        self
    }

    /// Once a transaction that used up the epochs completes, the producer id moves on to the
    /// one chosen for it (epoch 0), remembering the old one for a retried EndTxn.
    pub fn finish_epoch_change(&mut self) {
        if self.next_producer_id >= 0 {
            self.previous_producer_id = self.producer_id;
            self.producer_id = self.next_producer_id;
            self.producer_epoch = 0;
            self.next_producer_id = -1;
        }
    }
}
