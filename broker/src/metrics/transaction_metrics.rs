//! The transaction coordinator's outcomes: transactions completed (committed or aborted) and
//! those aborted because they outlived `transaction.timeout.ms`. Kafka has no MBean for these
//! counts; operators of transactional pipelines ask for them (an abort rate is the first sign
//! of a fenced or crashing producer), so they carry our prefix. How many transactions are in
//! each state now is a scrape-time gauge ([`super::snapshot`]).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::MetricsError;

/// Counters of the transactions this broker coordinated.
pub struct TransactionMetrics {
    committed: IntCounter,
    aborted: IntCounter,
    timed_out: IntCounter,
}

impl TransactionMetrics {
    /// Registers the counters.
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let completed = IntCounterVec::new(
            Opts::new(
                "millrace_transactions_completed_total",
                "Transactions this broker completed as their coordinator, by result (commit, abort)",
            ),
            &["result"],
        )?;
        let timed_out = IntCounter::new(
            "millrace_transactions_timed_out_total",
            "Transactions this broker aborted because they outlived transaction.timeout.ms",
        )?;
        registry.register(Box::new(completed.clone()))?;
        registry.register(Box::new(timed_out.clone()))?;
        Ok(TransactionMetrics {
            committed: completed.with_label_values(&["commit"]),
            aborted: completed.with_label_values(&["abort"]),
            timed_out,
        })
    }

    /// Counts a transaction whose markers are written and whose completion is recorded.
    pub fn completed(&self, committed: bool) {
        if committed {
            self.committed.inc();
        } else {
            self.aborted.inc();
        }
    }

    /// Counts a transaction aborted for its timeout (it is counted as aborted on completion).
    pub fn timed_out(&self) {
        self.timed_out.inc();
    }
}
