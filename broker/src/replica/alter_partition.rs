//! ISR changes on their way to the controller (Kafka's `AlterPartitionManager`).
//!
//! A leader never changes its ISR by itself: it proposes the new set (a follower caught up, or
//! one fell behind for `replica.lag.time.max.ms`) and the controller decides, checking the
//! leader and partition epochs and that new members are not fenced. The change takes effect
//! when it arrives in the metadata; a refused one is forgotten so it can be proposed again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::partition::Partition;
use super::replica_manager::ReplicaManager;

/// One proposed ISR change, as the controller receives it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlterPartition {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The proposing leader.
    pub leader: i32,
    /// Its broker epoch (from its registration): a proposal from an earlier incarnation of the
    /// leader is refused with STALE_BROKER_EPOCH, as Kafka's AlterPartition is.
    pub broker_epoch: i64,
    /// Its leader epoch.
    pub leader_epoch: i32,
    /// The partition epoch the proposal is based on.
    pub partition_epoch: i32,
    /// The proposed ISR.
    pub isr: Vec<i32>,
}

/// Sends a proposal to the active controller; `Err` carries why it was refused.
pub type SendAlterPartition = Arc<
    dyn Fn(AlterPartition) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// Queues ISR proposals and sends them one at a time.
pub struct AlterPartitionManager {
    queue: mpsc::UnboundedSender<(Arc<Partition>, AlterPartition)>,
    /// This broker's epoch, once registered (-1 before).
    broker_epoch: Arc<AtomicI64>,
}

impl AlterPartitionManager {
    /// Starts the sender task. Must be called inside a tokio runtime. `broker_epoch` is where
    /// the lifecycle keeps this broker's epoch (the replica fetchers read it too).
    pub fn start(send: SendAlterPartition, broker_epoch: Arc<AtomicI64>) -> Self {
        let (queue, mut proposals) = mpsc::unbounded_channel::<(Arc<Partition>, AlterPartition)>();
        tokio::spawn(async move {
            while let Some((replica, proposal)) = proposals.recv().await {
                match send(proposal.clone()).await {
                    Ok(()) => {
                        tracing::info!(topic = %replica.topic(), partition = proposal.partition, isr = ?proposal.isr, "ISR change committed");
                    }
                    Err(reason) => {
                        tracing::info!(topic = %replica.topic(), partition = proposal.partition, isr = ?proposal.isr, %reason, "ISR change refused");
                        replica.clear_pending_isr();
                    }
                }
            }
        });
        AlterPartitionManager {
            queue,
            broker_epoch,
        }
    }

    /// Where the broker's lifecycle keeps its current broker epoch, for the proposals to carry.
    pub fn broker_epoch_cell(&self) -> Arc<AtomicI64> {
        self.broker_epoch.clone()
    }

    /// Proposes `isr` for `replica`, which this broker leads.
    pub fn propose(&self, replica: Arc<Partition>, isr: Vec<i32>) {
        let proposal = AlterPartition {
            topic_id: replica.topic_id(),
            partition: replica.index(),
            leader: replica.local_id(),
            broker_epoch: self.broker_epoch.load(std::sync::atomic::Ordering::Acquire),
            leader_epoch: replica.leader_epoch(),
            partition_epoch: replica.partition_epoch(),
            isr,
        };
        // The receiver lives as long as the runtime; a send after shutdown changes nothing.
        let _ = self.queue.send((replica, proposal));
    }

    /// Every `max_lag / 2`, proposes dropping the followers that have not caught up within
    /// `max_lag` (`replica.lag.time.max.ms`) from the ISRs this broker leads.
    pub fn start_isr_expiration(
        self: &Arc<Self>,
        replicas: Arc<ReplicaManager>,
        max_lag: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let manager = self.clone();
        tokio::spawn(async move {
            let period = (max_lag / 2).max(Duration::from_millis(10));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = shutdown.changed() => return,
                }
                for replica in replicas.leaders() {
                    if let Some(isr) = replica.maybe_shrink_isr(max_lag) {
                        manager.propose(replica, isr);
                    }
                }
            }
        });
    }
}
