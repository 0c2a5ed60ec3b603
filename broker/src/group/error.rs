//! Why the group coordinator refuses a request, in Kafka's terms; each variant becomes the
//! Kafka error of the same name (see `crate::error`).

/// A refusal of the group coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The request's generation is not the group's.
    #[error("the generation is not the group's current one")]
    IllegalGeneration,
    /// Protocol type or strategies do not fit the group.
    #[error("the protocol type or strategies do not fit the group")]
    InconsistentGroupProtocol,
    /// Empty or otherwise unusable group id.
    #[error("invalid group id")]
    InvalidGroupId,
    /// The member is not (or no longer) in the group.
    #[error("unknown member id")]
    UnknownMemberId,
    /// Session timeout outside the broker's bounds.
    #[error("session timeout outside the broker's bounds")]
    InvalidSessionTimeout,
    /// A rebalance is under way: rejoin.
    #[error("a rebalance is in progress")]
    RebalanceInProgress,
    /// DeleteGroups on a group with members.
    #[error("the group has members")]
    NonEmptyGroup,
    /// No such group.
    #[error("no such group")]
    GroupIdNotFound,
    /// KIP-394: join again with the member id in this response.
    #[error("join again with the given member id")]
    MemberIdRequired,
    /// Another member holds this static instance id.
    #[error("another member holds this group instance id")]
    FencedInstanceId,
    /// OffsetDelete of a topic the group's members consume.
    #[error("the group's members consume this topic")]
    GroupSubscribedToTopic,
    /// The group's `__consumer_offsets` partition cannot be read or written.
    #[error("the offsets topic is not available")]
    CoordinatorNotAvailable,
    /// Another broker leads the group's `__consumer_offsets` partition (NOT_COORDINATOR).
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    /// This broker just became the group's coordinator and is still reading the group's
    /// partition (COORDINATOR_LOAD_IN_PROGRESS: retry here shortly).
    #[error("the group coordinator is loading the group")]
    CoordinatorLoadInProgress,
}
