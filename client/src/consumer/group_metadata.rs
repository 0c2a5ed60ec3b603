//! [`ConsumerGroupMetadata`]: what a transactional producer passes along with a consumer's
//! offsets (Kafka's `ConsumerGroupMetadata`, KIP-447).

/// A consumer's place in its group: the group, the generation and the member id. A
/// transactional producer sends it with the offsets it commits
/// ([`crate::Producer::send_offsets_to_transaction_for`]), so that the group coordinator
/// refuses the offsets of a member whose generation ended (a zombie that lost its partitions
/// in a rebalance), as it refuses that member's plain offset commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// `group.id`.
    pub group_id: String,
    /// The generation the member joined, or -1 (no fencing by generation).
    pub generation_id: i32,
    /// The member id the coordinator gave, or empty.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// Metadata naming only the group: the transaction alone fences (no generation check).
    pub fn new(group_id: impl Into<String>) -> Self {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}
